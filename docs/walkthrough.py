"""A walkthrough of double backward in tinymeta's engine, to run top to bottom.

    python docs/walkthrough.py              # writes docs/walkthrough.md and docs/img/
    python docs/walkthrough.py --out DIR    # writes DIR/walkthrough.md and DIR/img/

The ``# %%`` cells below the runner are executed in order in one namespace, and
``walkthrough.md`` gets each ``# %% [markdown]`` cell's text, each code cell with what it
printed, and the pictures it drew: SVG files when Graphviz's ``dot`` program is installed,
otherwise the DOT text itself. The runner gives the cells two names: ``IMG``, the folder
for pictures, and ``picture(name, caption)``, which puts ``IMG/name.svg`` into the page.
"""
import argparse
import contextlib
import io
import os
import sys
import tempfile
from pathlib import Path

CELL = "# %%"


def cells(source):
    """(kind, text) for every cell after the runner: kind is "markdown" or "code"."""
    body = source.split("\n# %% [markdown]\n", 1)[1]
    found = []
    for chunk in ("# %% [markdown]\n" + body).split("\n" + CELL):
        header, _, text = chunk.partition("\n")
        kind = "markdown" if "[markdown]" in header else "code"
        text = text.strip("\n")
        if kind == "markdown":
            text = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in text.splitlines())
        if text.strip():
            found.append((kind, text))
    return found


def run(out_dir):
    """Run every cell, then write ``out_dir/walkthrough.md`` atomically."""
    out_dir = Path(out_dir)
    img = out_dir / "img"
    img.mkdir(parents=True, exist_ok=True)
    pictures = []

    def picture(name, caption):
        pictures.append((name, caption))

    namespace = {"__name__": "walkthrough", "IMG": img, "picture": picture}
    page = []
    for kind, text in cells(Path(__file__).read_text()):
        if kind == "markdown":
            page.append(text)
            continue
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(text, f"{__file__} (cell)", "exec"), namespace)
        page.append(f"```python\n{text}\n```")
        if printed.getvalue().strip():
            page.append(f"```text\n{printed.getvalue().rstrip()}\n```")
        for name, caption in pictures:
            svg = img / f"{name}.svg"
            if svg.exists():
                page.append(f"![{caption}](img/{name}.svg)\n\n*{caption}*")
            else:
                dot = (img / f"{name}.dot").read_text()
                page.append(f"*{caption}* (Graphviz is not installed here: render this with "
                            f"`dot -Tsvg img/{name}.dot -o img/{name}.svg`)\n\n```dot\n{dot.rstrip()}\n```")
        pictures.clear()
    target = out_dir / "walkthrough.md"
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".walkthrough-", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)
    with os.fdopen(fd, "w") as out:
        out.write("<!-- Written by docs/walkthrough.py; edit that file, not this one. -->\n\n")
        out.write("\n\n".join(page) + "\n")
    os.replace(tmp, target)
    return target


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent),
                        help="folder for walkthrough.md and img/ (default: docs/)")
    args = parser.parse_args(argv)
    print(f"wrote {run(args.out)}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # the repository's packages
    main()
    raise SystemExit(0)                                            # the cells ran inside run()


# %% [markdown]
# # Double backward, seen and checked
#
# This page is written by `docs/walkthrough.py`: every result below was printed by the code
# above it, and every picture was drawn by `autograd.draw` from the graph the engine really
# recorded. It goes from one gradient to a MAML meta-gradient, checking each step.
#
# ## 1. A gradient
#
# f(x) = Σ tanh(xᵢ)³. Recording the forward pass stores each op with its inputs; one backward
# pass multiplies the vector-Jacobian products back to x. By hand, with t = tanh x:
# ∂f/∂x = 3t²(1 − t²).

# %%
import numpy as np

import autograd as ag
from autograd import Tensor
from autograd import functional as F

np.set_printoptions(precision=6, suppress=False)
x = Tensor(np.array([0.5, -1.0]), requires_grad=True, name="x")
y = (ag.tanh(x) ** 3).sum()
g = ag.grad(y, x, retain_graph=True)
t = np.tanh(x.data)
print("engine:", g.data)
print("by hand:", 3 * t**2 * (1 - t**2))
ag.draw(y, IMG / "tanh_forward", title="f = sum(tanh(x)**3): the forward graph")
picture("tanh_forward", "The forward graph: each box is a Function node, the edges are its stored inputs.")

# %% [markdown]
# ## 2. A Hessian-vector product
#
# With `create_graph=True` the backward pass runs with recording on, so the gradient is itself
# a graph (orange below) built on the forward one (blue). Differentiating g · v through it gives
# H v without forming H: here H is diagonal, ∂²f/∂x² = (6t − 12t³)(1 − t²).

# %%
g = ag.grad(y, x, create_graph=True)
v = np.array([1.0, 2.0])
_, (hv,) = ag.hvp(lambda x: (ag.tanh(x) ** 3).sum(), [x], [v])
print("engine H v:", hv.data)
print("by hand:   ", (6 * t - 12 * t**3) * (1 - t**2) * v)
ag.draw([y, g], IMG / "tanh_backward", base=y, title="f and its gradient, recorded with create_graph=True")
picture("tanh_backward", "Forward graph (blue) and the recorded backward graph (orange). "
        "The backward reuses the Tanh node's output y: that edge is how the second derivative "
        "reaches x.")

# %% [markdown]
# ## 3. Checking the HVP: `check_hvp`
#
# `check_hvp` runs the properties every Hessian-vector product must have on your function at
# your point: symmetry uᵀHv = vᵀHu, linearity in v, agreement with a central difference of the
# gradient along v, and, for at most 16 entries, the whole Hessian assembled from HVPs against
# second differences of f's own values. Here on a small tanh network's loss:

# %%
rng = np.random.default_rng(0)
xs, ys = rng.standard_normal((6, 1)), rng.standard_normal((6, 1))          # support set
xq, yq = rng.standard_normal((6, 1)), rng.standard_normal((6, 1))          # query set
theta = [rng.standard_normal((3, 1)), rng.standard_normal(3) * 0.5,        # a 1-3-1 tanh MLP
         rng.standard_normal((1, 3)), rng.standard_normal(1) * 0.5]


def mlp(params, x):
    w1, b1, w2, b2 = params
    return F.linear(ag.tanh(F.linear(Tensor(x), w1, b1)), w2, b2)


def support_loss(*params):
    return F.mse_loss(mlp(params, xs), ys)


print(ag.check_hvp(support_loss, theta))

# %% [markdown]
# A backward that uses a raw array where it should use a Tensor gets the first derivative
# right and silently drops a second-order term. `gradcheck` cannot see it; `check_hvp` can,
# and says which property failed:

# %%
class RawSquare(ag.Function):
    """x² whose backward multiplies by a raw array: right values, but a constant to the engine."""

    def forward(self, x):
        return x * x

    def backward(self, gy):
        (x,) = self.inputs
        return (gy * Tensor(x.data * 2),)


class GoodSquare(ag.Function):
    def forward(self, x):
        return x * x

    def backward(self, gy):
        (x,) = self.inputs
        return (gy * (x * 2.0),)


z = np.array([0.5, -1.0])
print("first order, gradcheck:", ag.gradcheck(lambda x: RawSquare()(ag.tanh(x)), [z]))
try:
    ag.check_hvp(lambda x: RawSquare()(ag.tanh(x)).sum(), [z])
except ag.HVPCheckError as failure:
    print(failure)
for name, square in (("square_good", GoodSquare), ("square_raw", RawSquare)):
    x = Tensor(z, requires_grad=True, name="x")
    y = square()(ag.tanh(x)).sum()
    ag.draw(ag.grad(y, x, create_graph=True), IMG / name, base=y, title=f"gradient of sum({square.__name__}(tanh(x)))")
picture("square_good", "GoodSquare: its backward gy·(y·2), y = tanh(x), is made of Tensor ops, so "
        "Tanh's output feeds the backward graph twice: through tanh's own backward (y·y) and "
        "through the Mul by 2. (The orange const (2,) is the incoming gradient of sum: ones.)")
picture("square_raw", "RawSquare: its whole backward gy·2y arrives as one orange constant, "
        "const (2,), with no edge back to Tanh: a second derivative never sees that it "
        "depends on x. The Mul by 2 of the picture above is gone.")

# %% [markdown]
# ## 4. A MAML meta-gradient
#
# One inner step θ' = θ − α∇L_s(θ) on the support loss, then the query loss L_q(θ'). Taking
# the inner gradient with `create_graph=True` makes θ' a differentiable function of θ, so one
# call of `grad` gives the meta-gradient through the step. By the chain rule, for one inner
# step it is exactly
#
#     g_MAML = (I − α H_s) g_FO,    g_FO = ∇L_q(θ'),  H_s = ∇²L_s(θ),
#
# the first-order (FOMAML) gradient minus α times the support Hessian applied to it, which
# `hvp` computes without forming H_s.

# %%
alpha = 0.1
params = [Tensor(p, requires_grad=True) for p in theta]
inner = ag.grad(support_loss(*params), params, create_graph=True)            # ∇L_s(θ), recorded
fast = [p - alpha * gi for p, gi in zip(params, inner)]                      # θ' = θ − α∇L_s(θ)
g_maml = ag.grad(F.mse_loss(mlp(fast, xq), yq), params)                      # d L_q(θ') / dθ

fast_values = [Tensor(p.data, requires_grad=True) for p in fast]             # θ' as a new leaf
g_fo = ag.grad(F.mse_loss(mlp(fast_values, xq), yq), fast_values)            # ∇L_q at θ'
_, h_g = ag.hvp(support_loss, theta, [gi.data for gi in g_fo])               # H_s g_FO
predicted = [gf.data - alpha * hg.data for gf, hg in zip(g_fo, h_g)]
difference = max(np.abs(gm.data - pr).max() for gm, pr in zip(g_maml, predicted))
size = max(np.abs(gm.data).max() for gm in g_maml)
print(f"largest |g_MAML| entry:                     {size:.6f}")
print(f"largest |g_MAML - (g_FO - α H_s g_FO)| entry: {difference:.1e}")
print(f"largest |g_MAML - g_FO| entry (what FOMAML drops): "
      f"{max(np.abs(gm.data - gf.data).max() for gm, gf in zip(g_maml, g_fo)):.1e}")

# %% [markdown]
# The difference is rounding, nothing else. Here is the inner step as the engine recorded it:
# the support loss's forward pass in blue; in orange its gradient (recorded because of
# `create_graph=True`, with `LinearGrad` nodes that have several outputs) and the update
# θ − α g. The meta-gradient is one backward pass through all of it.

# %%
params = [Tensor(p, requires_grad=True, name=n) for p, n in zip(theta, ("w1", "b1", "w2", "b2"))]
loss = support_loss(*params)
inner = ag.grad(loss, params, create_graph=True)
fast = [p - alpha * gi for p, gi in zip(params, inner)]
for p, f in zip(params, fast):
    f.name = p.name + "'"                                                    # w1', b1', …: θ'
ag.draw(fast, IMG / "maml_inner_step", base=loss, title="one MAML inner step: θ' = θ − α∇L_s(θ)")
picture("maml_inner_step", "One MAML inner step on a 1-3-1 tanh MLP, from θ = (w1, b1, w2, b2) "
        "at the top to the fast weights θ' at the bottom.")

# %% [markdown]
# ## 5. Checking the meta-gradient itself
#
# The meta-loss is just a function of θ, so the finite-difference checks apply. Element by
# element costs four evaluations per parameter; along random directions, four per direction,
# which is what makes a full Conv4 (112,261 parameters) checkable in seconds
# (`tests/test_directional_checks.py`). `check_hvp` on the meta-loss differentiates the inner
# step twice more: third derivatives of the loss.

# %%
def meta_loss(*params):
    inner = ag.grad(support_loss(*params), list(params), create_graph=True)
    fast = [p - alpha * gi for p, gi in zip(params, inner)]
    return F.mse_loss(mlp(fast, xq), yq)


print("element-wise gradcheck:", ag.gradcheck(meta_loss, theta))
print("directional gradcheck, 3 directions per input:", ag.gradcheck(meta_loss, theta, directions=3))
print("directional gradgradcheck:", ag.gradgradcheck(meta_loss, theta, directions=3))
print(ag.check_hvp(meta_loss, theta))
