"""Peak memory and time per meta-iteration of second-order MAML and iMAML as the number of
inner steps grows, on the Omniglot Conv4 (5-way 1-shot, 15 queries, float32).

MAML keeps the graph of every inner step for its meta-gradient, so its memory grows with
the steps; iMAML keeps none of them (its meta-gradient is (I + H/λ)⁻¹∇L by CG at the final
point), so its memory should stay flat while its time grows with the steps' gradients.

    python -m experiments.inner_steps_cost [--steps 1 5 10 20] [--meta-batch 4] [--repeats 3]
        [--out experiments/results/inner_steps_cost]

Episodes are drawn from synthetic random 28×28 images (the cost does not depend on the
pixels); the learners are those of ``experiments/omniglot.py``'s table with its 5-way
defaults. Time: median of ``--repeats`` meta-iterations after one warm-up; memory: the
tracemalloc peak of one further iteration above what was allocated before it (NumPy
reports its allocations to tracemalloc), measured by ``experiments.bench``.
"""
import time
from pathlib import Path

import numpy as np

from tinymeta.training import ArgumentParser, run_main, write_json, write_text
from tinymeta.training.config import positive_int

from . import bench, omniglot


def cost(algo, steps, meta_batch, repeats, size):
    cfg = omniglot.CONFIG.complete({"algo": algo, "ways": 5, "shots": 1, "inner_steps": steps,
                                    "meta_batch": meta_batch, **size})
    learner, batches = bench.conv_learner(cfg, (100, 20), np.float32)
    out = bench.measure(bench.learner_step(learner, batches), warmup=1, repeats=repeats, max_seconds=0,
                        flops=False, memory=True)
    return {"algo": algo, "inner_steps": steps, "seconds": out["seconds"], "times": out["times"],
            "peak_mb": out["peak_bytes"] / 1e6, "peak_method": out["peak_method"],
            "lam": cfg["lam"], "cg_steps": cfg["cg_steps"]}


def table(rows, algos, steps):
    lines = ["| inner steps | " + " | ".join(f"{a} s/iter | {a} peak MB" for a in algos) + " |",
             "|---|" + "---|---|" * len(algos)]
    by = {(r["algo"], r["inner_steps"]): r for r in rows}
    for k in steps:
        cells = [f"{by[a, k]['seconds']:.3f} | {by[a, k]['peak_mb']:.0f}" for a in algos]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    def run(argv):
        p = ArgumentParser(prog="python -m experiments.inner_steps_cost",
                           description="Memory and time per meta-iteration of MAML and iMAML against inner steps.")
        p.add_argument("--steps", type=positive_int, nargs="+", default=[1, 5, 10, 20])
        p.add_argument("--meta-batch", type=positive_int, default=4)
        p.add_argument("--repeats", type=positive_int, default=3)
        p.add_argument("--algos", nargs="+", default=["maml", "imaml"], choices=["maml", "fomaml", "imaml"])
        p.add_argument("--tiny", action="store_true", help="4 filters on 12x12 images (tests)")
        p.add_argument("--out", default="runs/inner_steps_cost")
        args = p.parse_args(argv)
        size = {"filters": 4, "image_size": 12, "query": 2} if args.tiny else {}
        t0, rows = time.perf_counter(), []
        for algo in args.algos:
            for k in args.steps:
                rows.append(cost(algo, k, args.meta_batch, args.repeats, size))
                r = rows[-1]
                print(f"{algo:6s} {k:3d} inner steps: {r['seconds']:.3f} s/iteration, peak {r['peak_mb']:.0f} MB",
                      flush=True)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        text = table(rows, args.algos, args.steps)
        write_json(out / "cost.json", {"rows": rows, "meta_batch": args.meta_batch, "tiny": args.tiny,
                                       "setting": "Omniglot Conv4 5-way 1-shot, float32, synthetic images",
                                       "seconds_total": time.perf_counter() - t0})
        write_text(out / "cost.md", text)
        print(text, end="")
        return rows
    return run_main(run, argv)


if __name__ == "__main__":
    main()
