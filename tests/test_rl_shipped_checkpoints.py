"""The trained 2D navigation checkpoints that ship in experiments/checkpoints/ load and behave
as README says: the MAML policy knows nothing of the goal before adapting and reaches it
after a few policy-gradient steps; the oracle reaches it at once.

The bounds (10 goals, seed 2, 40 trajectories per step) are far from the measured values
(docs/navigation.md: MAML about −40 before adapting, −12 after one step and −3 after three;
oracle −0.5) and far from an untrained policy (−80 at every step): they catch a checkpoint
that no longer loads into the policy correctly, not a small change in return.
"""
import json
import os
from pathlib import Path

import pytest

from experiments import navigation
from tinymeta import checkpoint

# The RL code runs on the NumPy backend only (MAMLRL refuses another in one sentence).
pytestmark = pytest.mark.skipif(os.environ.get("TINYMETA_BACKEND", "numpy") != "numpy",
                                reason="MAML-RL runs on the numpy backend only")

SHIPPED = Path(navigation.SHIPPED)


@pytest.mark.parametrize("name, algo, iteration", [("maml", "maml", 70), ("maml_final", "maml", 500),
                                                   ("pretrained", "pretrained", 500), ("oracle", "oracle", 500)])
def test_shipped_checkpoints_are_small_float32_and_say_how_they_were_made(name, algo, iteration):
    path = SHIPPED / f"navigation_{name}.npz"
    arrays, meta = checkpoint.load(path)
    params = {k: v for k, v in arrays.items() if k.startswith("params/")}
    assert params and all(v.dtype.name == "float32" for v in params.values())
    assert path.stat().st_size < 256 * 2**10
    assert (meta["config"]["algo"], meta["iteration"]) == (algo, iteration)


def evaluate(algo, tmp_path, steps):
    navigation.main(["evaluate", str(SHIPPED / f"navigation_{algo}.npz"), "--goals", "10", "--seed", "2",
                     "--eval-steps", str(steps), "--quiet", "--out", str(tmp_path / algo)])
    return json.loads((tmp_path / algo / "evaluation.json").read_text())["return"]["mean"]


def test_shipped_maml_policy_adapts_to_the_goal(tmp_path):
    before = sorted(SHIPPED.iterdir())
    returns = evaluate("maml", tmp_path, 3)
    assert sorted(SHIPPED.iterdir()) == before, "evaluate wrote beside the checkpoint"
    assert returns[0] < -25 and returns[1] > -25 and returns[3] > -10, returns


def test_shipped_oracle_reaches_the_goal(tmp_path):
    assert evaluate("oracle", tmp_path, 0)[0] > -3
