#!/usr/bin/env bash
# The checks that need an NVIDIA GPU, prepared to run once on a machine that has one:
#
#   1. suite  the test suite with TINYMETA_BACKEND=cupy, stopped by `timeout -s INT` so that
#             pytest still prints its summary when the time is up;
#   2. bench  python -m experiments.bench --backend cupy --cases omniglot_maml_f32 sinusoid hvp;
#   3. peers  the PyTorch and JAX peers (shared_copy/peers) on the same workloads on the GPU,
#             where torch / jax are importable, and the ratios tinymeta / peer;
#   4. train  Omniglot 5-way 1-shot MAML (15 queries, meta-batch 32) for 1000 iterations on
#             CuPy, and its real iterations per second, beside the bench step.
#
# Usage, from anywhere:  tools/gpu_check.sh prepare          (here: fill shared_copy/)
#                        tools/gpu_check.sh [STEP ...]        (there: default all four)
#
# Only the repository travels to the GPU machine, so `prepare` copies what the steps need
# from ../shared into the git-ignored folder shared_copy/ (about 6 MB: the two Omniglot
# .npz files, Lake's runs, the peers' scripts); the device call carries it
# (carry: ["shared_copy"]). Nothing is read from ../shared at run time.
#
# Everything a step prints goes to $OUT/<step>.txt (OUT defaults to runs/gpu_check), the
# bench's JSON to $OUT/bench.json, the peers' times to $OUT/peers.json, and one line per
# step to $OUT/summary.txt, the peers' error output to $OUT/peers.err: at most eight files,
# what a device call brings back.
#
# Time: each step has its own limit (SUITE_S, BENCH_S, PEER_S for each peer run, TRAIN_S
# seconds). With the defaults, suite + bench + peers + train stay under 9.5 minutes; a
# device command may run 10, so run `suite` and `bench peers train` as two calls if the
# machine is slow to start. GPU_CHECK_QUICK=1 shrinks every step (a handful of tests, the
# bench's quick sizes, 20 training iterations): how the script is tested without a GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
SHARED="$ROOT/shared_copy"
OUT="${OUT:-$ROOT/runs/gpu_check}"
PY="${PYTHON:-python3}"
QUICK="${GPU_CHECK_QUICK:-0}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
[ -d "$SHARED/data/omniglot" ] && export TINYMETA_DATA="$SHARED/data"      # else as set by the caller

say() { echo "$*" | tee -a "$OUT/summary.txt"; }

prepare() {
    # ../shared beside the checkout (CI's layout), or beside the folder of worktrees
    local from="${SHARED_FROM:-$ROOT/../shared}"
    [ -d "$from" ] || [ -n "${SHARED_FROM:-}" ] || from="$ROOT/../../shared"
    [ -d "$from/data/omniglot" ] || { echo "prepare: $from/data/omniglot is missing (set SHARED_FROM)" >&2; return 2; }
    mkdir -p "$SHARED/data/omniglot" "$SHARED/peers"
    cp "$from"/data/omniglot/{omniglot_background.npz,omniglot_evaluation.npz,all_runs.zip,LICENSE,SOURCE.md} \
        "$SHARED/data/omniglot/"
    cp "$from"/peers/*.py "$SHARED/peers/" 2>/dev/null || echo "prepare: no peers in $from/peers"
    du -sh "$SHARED"
}

suite() {
    # Tests that never touch the array backend (data preparation, splits, settings, the
    # NumPy-vs-Numba kernels) run in CI; here the time goes to the backend's tests.
    local tests=(tests)
    local skip=(--ignore=tests/test_data_omniglot_prepare.py --ignore=tests/test_data_splits.py
                --ignore=tests/test_omniglot_data.py --ignore=tests/test_data_folder.py
                --ignore=tests/test_data_cifarfs.py --ignore=tests/test_data_miniimagenet.py
                --ignore=tests/test_settings.py --ignore=tests/test_kernels.py
                --ignore=tests/test_episodic_sampler.py)
    [ "$QUICK" = 1 ] && tests=(tests/test_cupy_path.py tests/test_backend.py -k "checkpoint or device or sampler")
    TINYMETA_BACKEND=cupy timeout -s INT -k 30 "${SUITE_S:-300}" "$PY" -m pytest -q -p no:cacheprovider \
        -o addopts="" -rfEs --durations=20 "${skip[@]}" "${tests[@]}" > "$OUT/suite.txt" 2>&1
    local rc=$?
    say "suite: exit $rc ($( [ $rc = 124 ] && echo "stopped at ${SUITE_S:-300} s, " )$(grep -E '^[=]* *[0-9]+ (passed|failed)' "$OUT/suite.txt" | tail -1 | tr -d '='))"
}

bench() {
    local quick=(--repeats 20 --warmup 3)
    [ "$QUICK" = 1 ] && quick=(--quick --repeats 2 --warmup 1)
    timeout -s INT "${BENCH_S:-120}" "$PY" -m experiments.bench --backend cupy \
        --cases omniglot_maml_f32 sinusoid hvp "${quick[@]}" --out "$OUT/bench.json" > "$OUT/bench.txt" 2>&1
    local rc=$?
    say "bench: exit $rc; $("$PY" - "$OUT/bench.json" <<'EOF' 2>/dev/null || echo "no bench.json"
import json, sys
cases = json.load(open(sys.argv[1]))["cases"]
print(", ".join(f"{k} {v['seconds'] * 1e3:.2f} ms" for k, v in cases.items()))
EOF
)"
}

peers() {
    # One JSON line per peer run (sec_per_iter), then the ratios to the bench's cases.
    local dir="$SHARED/peers" iters=10 siters=50
    [ "$QUICK" = 1 ] && iters=2 && siters=3
    : > "$OUT/peers.txt"
    run_peer() {   # name, interpreter module check, script, args...
        local name=$1 module=$2 script=$3; shift 3
        if ! "$PY" -c "import $module" 2>/dev/null; then
            echo "{\"peer\": \"$name\", \"skipped\": \"$module is not importable\"}" >> "$OUT/peers.txt"; return
        fi
        if [ ! -f "$dir/$script" ]; then
            echo "{\"peer\": \"$name\", \"skipped\": \"$dir/$script is missing (tools/gpu_check.sh prepare)\"}" >> "$OUT/peers.txt"; return
        fi
        local line
        line=$(timeout -s INT "${PEER_S:-60}" "$PY" "$dir/$script" "$@" 2>>"$OUT/peers.err" | tail -1)
        echo "{\"peer\": \"$name\", \"result\": ${line:-null}}" >> "$OUT/peers.txt"
    }
    run_peer torch_omniglot_maml torch torch_gpu.py --workload omniglot --mode maml --impl loop --dtype float32 \
        --iters $iters --warmup 2
    run_peer torch_sinusoid_maml torch torch_gpu.py --workload sinusoid --mode maml --impl vmap --iters $siters --warmup 5
    JAX_PLATFORMS=cuda run_peer jax_omniglot_maml jax jax_maml.py --workload omniglot --mode maml --impl vmap \
        --iters $iters --warmup 2
    JAX_PLATFORMS=cuda run_peer jax_sinusoid_maml jax jax_maml.py --workload sinusoid --mode maml --impl vmap \
        --iters $siters --warmup 5
    say "peers: $("$PY" - "$OUT/peers.txt" "$OUT/bench.json" "$OUT/peers.json" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
try:
    ours = {k: v["seconds"] for k, v in json.load(open(sys.argv[2]))["cases"].items()}
except (OSError, ValueError, KeyError):
    ours = {}
case = {"omniglot": "omniglot_maml_f32", "sinusoid": "sinusoid_maml"}
words = []
for row in rows:
    result = row.get("result") or {}
    t = result.get("sec_per_iter")
    if t is None:
        words.append(f"{row['peer']} {row.get('skipped', 'failed')}")
        continue
    mine = ours.get(case[row["peer"].split("_")[1]])
    row["ratio_tinymeta_over_peer"] = None if mine is None else mine / t
    words.append(f"{row['peer']} {t * 1e3:.2f} ms" + ("" if mine is None else f" (tinymeta/peer {mine / t:.3f})"))
json.dump(rows, open(sys.argv[3], "w"), indent=1)
print("; ".join(words))
EOF
)"
}

train() {
    local iterations=1000 query=15 meta_batch=32
    [ "$QUICK" = 1 ] && iterations=20 query=2 meta_batch=4
    local run="${TMPDIR:-/tmp}/gpu_check_omniglot_$$"
    TINYMETA_BACKEND=cupy timeout -s INT "${TRAIN_S:-200}" "$PY" -m experiments.omniglot --algo maml --ways 5 \
        --shots 1 --query $query --meta-batch $meta_batch --iterations $iterations --val-tasks 0 --checkpoint-every 0 \
        --progress-every 10 --seed 0 --out "$run" > "$OUT/train.txt" 2>&1
    local rc=$?
    say "train: exit $rc; $("$PY" - "$run/log.csv" "$OUT/bench.json" "$QUICK" <<'EOF' 2>&1 | tail -1
import csv, json, sys
rows = list(csv.DictReader(open(sys.argv[1])))
t = [float(r["elapsed_s"]) for r in rows]
n = len(t)
skip = n // 10                                   # the first tenth pays for kernel compilation
steady = (n - skip) / (t[-1] - t[skip - 1]) if skip else n / t[-1]
text = f"{n} iterations in {t[-1]:.1f} s: {n / t[-1]:.2f} it/s overall, {steady:.2f} it/s after iteration {skip}"
try:
    assert sys.argv[3] != "1", "quick sizes: no ratio to the bench step"
    bench = json.load(open(sys.argv[2]))["cases"]["omniglot_maml_f32"]["seconds"]
    text += f"; a step is {1 / steady / bench:.2f} x the bench step ({bench * 1e3:.2f} ms)"
except (OSError, ValueError, KeyError, AssertionError):
    pass
print(text)
EOF
)"
    rm -rf "$run"
}

steps=("$@")
[ ${#steps[@]} = 0 ] && steps=(suite bench peers train)
[ "${steps[*]}" = prepare ] && { prepare; exit; }
for step in "${steps[@]}"; do
    case "$step" in
        suite|bench|peers|train) ;;
        *) echo "gpu_check: unknown step '$step' (choose suite, bench, peers, train; or prepare alone)" >&2; exit 2 ;;
    esac
done
mkdir -p "$OUT"
{ echo "gpu_check $(date -u +%FT%TZ): ${steps[*]}"; nvidia-smi -L 2>/dev/null
  "$PY" -c "import cupy, numpy; print('cupy', cupy.__version__, 'numpy', numpy.__version__)"; } | tee -a "$OUT/summary.txt"
for step in "${steps[@]}"; do
    started=$SECONDS
    "$step"
    echo "  ($step took $((SECONDS - started)) s)" | tee -a "$OUT/summary.txt"
done
