"""The figure every classification run writes beside its log: ``curves.png``, the training
loss per iteration (with a moving mean) on the left, validation accuracy (± 95% CI) on the
right, redrawn at every checkpoint so a long run can be watched."""
import numpy as np

from ..files import save_figure


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def draw_training_curves(path, log, title, loss_label, val_label, window=100):
    """Write ``path`` from a ``Log``: ``log.loss`` per iteration and its mean over ``window``
    iterations; ``log.val_mean ± log.val_ci`` (fractions, drawn in %) at ``log.val_iteration``."""
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    loss = np.array(log.loss)
    it = np.arange(1, len(loss) + 1)
    if len(loss):
        ax1.plot(it, loss, color="tab:blue", alpha=0.25, lw=0.8, label="per iteration")
        w = min(window, len(loss))
        ax1.plot(it[w - 1:], np.convolve(loss, np.ones(w) / w, mode="valid"), color="tab:blue",
                 lw=1.6, label=f"mean of {w}")
    ax1.set_xlabel("iteration")
    ax1.set_ylabel(loss_label)
    ax1.set_title("training loss")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    if log.val_iteration:
        ax2.errorbar(log.val_iteration, 100 * np.array(log.val_mean), yerr=100 * np.array(log.val_ci),
                     color="tab:red", marker="o", ms=3, capsize=2)
    ax2.set_xlabel("iteration")
    ax2.set_ylabel(val_label)
    ax2.set_title("validation (±95% CI)")
    ax2.grid(alpha=0.3)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)
