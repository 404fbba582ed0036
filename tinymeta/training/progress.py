"""One progress line for every long run.

    omniglot maml | iter 1200/60000 | loss 0.4123 | acc 86.1% | 2.85 it/s | ETA 5h31m
"""
import math
import time


def format_duration(seconds):
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Progress:
    """Prints at most one line every ``every_s`` seconds (and at the last iteration): the
    running means of the loss and accuracy over the last ``window`` iterations, the rate of
    this session and the time left at that rate."""

    def __init__(self, label, total, start, every_s=5.0, window=100, say=print):
        self.label, self.total, self.start, self.every_s, self.window = label, total, start, every_s, window
        self.say = say
        self.t0 = self.last = time.perf_counter()

    def update(self, iteration, log, force=False):
        now = time.perf_counter()
        if self.say is None or (not force and now - self.last < self.every_s):
            return
        self.last = now
        rate = (iteration - self.start) / max(now - self.t0, 1e-9)
        left = (self.total - iteration) / rate if rate > 0 else float("nan")
        losses = log.loss[-self.window:]
        accs = [a for a in log.accuracy[-self.window:] if math.isfinite(a)]
        text = f"{self.label} | iter {iteration}/{self.total} | loss {sum(losses) / len(losses):.4f}"
        if accs:
            text += f" | acc {100 * sum(accs) / len(accs):.1f}%"
        self.say(f"{text} | {rate:.2f} it/s | ETA {format_duration(left)}")
