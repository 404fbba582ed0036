"""``autograd.draw``: the DOT text of a recorded graph, checked with a small parser of our
own (CI has no Graphviz); Graphviz itself renders it only where ``dot`` is installed.

Tolerances: none; these tests compare graph structure and text.
"""
import re
import shutil
import subprocess

import numpy as np
import pytest

import autograd as ag
from autograd import Tensor
from autograd import drawing
from autograd import functional as F

NODE = re.compile(r'^  (\w+) \[label="((?:[^"\\]|\\.)*)"(.*)\];$')
EDGE = re.compile(r'^  (\w+) -> (\w+)(?: \[label="(\[\d+\])", fontsize=9\])?;$')


def parse(text):
    """{name: (label, attributes)} and [(tail, head, port)] of our DOT output; asserts it is
    well formed: one digraph, braces balanced outside quoted labels, every line a node, an
    edge or a setting, and every edge endpoint declared as a node."""
    outside = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)
    assert outside.count("{") == outside.count("}") == 1
    lines = text.strip().splitlines()
    assert lines[0] == "digraph autograd {" and lines[-1] == "}"
    nodes, edges = {}, []
    for line in lines[1:-1]:
        node, edge = NODE.match(line), EDGE.match(line)
        if node:
            assert node.group(1) not in nodes, f"node {node.group(1)} declared twice"
            nodes[node.group(1)] = (node.group(2).replace("\\n", "\n"), node.group(3))
        elif edge:
            edges.append(edge.groups())
        else:
            assert re.match(r"^  (rankdir|node|edge|label)\b", line), f"unexpected DOT line: {line}"
    for tail, head, _ in edges:
        assert tail in nodes and head in nodes, f"edge {tail} -> {head} has an undeclared end"
    return nodes, edges


def by_label(nodes, label):
    found = [name for name, (text, _) in nodes.items() if text == label]
    assert found, f"no node labelled {label!r}; labels: {[t for t, _ in nodes.values()]}"
    return found


def fill(nodes, name):
    return re.search(r'fillcolor="([^"]+)"', nodes[name][1]).group(1)


def tanh_cubed():
    x = Tensor(np.array([0.5, -1.0]), requires_grad=True, name="x")
    return x, (ag.tanh(x) ** 3).sum()


# ----------------------------------------------------------------------------- the forward graph
def test_forward_graph_of_tanh_cubed_names_ops_shapes_dtypes_and_the_leaf():
    x, y = tanh_cubed()
    nodes, edges = parse(ag.draw(y))
    [leaf] = by_label(nodes, "x\n(2,) float64")
    [tanh] = by_label(nodes, "Tanh\n(2,) float64")
    [cube] = by_label(nodes, "PowConst c=3\n(2,) float64")
    [total] = by_label(nodes, "Sum\n() float64")
    [out] = by_label(nodes, "output\n() float64")
    assert set(edges) == {(leaf, tanh, None), (tanh, cube, None), (cube, total, None), (total, out, None)}
    assert fill(nodes, leaf) == drawing.LEAF and fill(nodes, tanh) == drawing.FORWARD


def test_an_unnamed_leaf_and_a_constant_are_marked_as_such():
    x = Tensor(np.ones(3), requires_grad=True)
    nodes, _ = parse(ag.draw(x * Tensor(np.full(3, 2.0)) + 1.5))
    by_label(nodes, "leaf\n(3,) float64")
    by_label(nodes, "const (3,) float64")
    by_label(nodes, "const 1.5")                        # a scalar constant shows its value


# ----------------------------------------------------------------------------- the backward graph
def test_with_base_the_graph_recorded_by_create_graph_is_coloured_apart():
    x, y = tanh_cubed()
    g = ag.grad(y, x, create_graph=True)
    nodes, edges = parse(ag.draw(g, base=y))
    [tanh] = by_label(nodes, "Tanh\n(2,) float64")      # the forward node the backward reuses
    assert fill(nodes, tanh) == drawing.FORWARD
    backward = [n for n, (label, _) in nodes.items() if label.split("\n")[0] in ("Mul", "Sub", "PowConst c=2")]
    assert len(backward) >= 4 and all(fill(nodes, n) == drawing.BACKWARD for n in backward)
    assert any(tail == tanh and head in backward for tail, head, _ in edges)   # y feeds the backward
    assert "orange: recorded by grad(..., create_graph=True)" in ag.draw(g, base=y)


def test_without_base_every_op_has_the_forward_colour():
    x, y = tanh_cubed()
    g = ag.grad(y, x, create_graph=True)
    nodes, _ = parse(ag.draw([y, g]))
    ops = [n for n, (_, attrs) in nodes.items() if "shape=box" in attrs]
    assert ops and all(fill(nodes, n) == drawing.FORWARD for n in ops)
    by_label(nodes, "output 0\n() float64")
    by_label(nodes, "output 1\n(2,) float64")


class RawSquare(ag.Function):
    def forward(self, x):
        return x * x

    def backward(self, gy):
        (x,) = self.inputs
        return (gy * Tensor(x.data * 2),)               # a raw array: cuts the path back to x


class GoodSquare(ag.Function):
    def forward(self, x):
        return x * x

    def backward(self, gy):
        (x,) = self.inputs
        return (gy * (x * 2.0),)


def test_a_raw_array_in_a_backward_leaves_nothing_to_differentiate():
    x = Tensor(np.array([0.5, -1.0]), requires_grad=True, name="x")
    good = ag.grad(GoodSquare()(x).sum(), x, create_graph=True)
    raw = ag.grad(RawSquare()(x).sum(), x, create_graph=True)
    good_nodes, _ = parse(ag.draw(good))
    raw_nodes, raw_edges = parse(ag.draw(raw))
    by_label(good_nodes, "x\n(2,) float64")             # ∇f still depends on x: differentiable
    assert not any(label.startswith("x\n") for label, _ in raw_nodes.values())
    assert [label for label, _ in raw_nodes.values()] == ["const (2,) float64", "output\n(2,) float64"]


def test_multi_output_nodes_label_which_output_each_edge_carries():
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((4, 3)))
    w = Tensor(rng.standard_normal((2, 3)), requires_grad=True, name="w")
    b = Tensor(rng.standard_normal(2), requires_grad=True, name="b")
    y = (ag.tanh(F.linear(x, w, b)) ** 2).sum()
    gw, gb = ag.grad(y, [w, b], create_graph=True)
    nodes, edges = parse(ag.draw([gw, gb], base=y))
    [node] = by_label(nodes, "LinearGrad\n[0] not kept\n[1] (2, 3) float64\n[2] (2,) float64")
    ports = sorted(port for tail, _, port in edges if tail == node)
    assert ports == ["[1]", "[2]"]                      # ∂W and ∂b leave by their own outputs


def test_a_freed_node_is_drawn_as_such():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = ag.exp(x).sum()
    y.backward()
    nodes, _ = parse(ag.draw(y))
    assert any("(inputs freed by backward)" in label for label, _ in nodes.values())


# ----------------------------------------------------------------------------- files
def test_without_graphviz_the_dot_file_is_written_and_one_line_says_how_to_render(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(drawing.shutil, "which", lambda name: None)
    x, y = tanh_cubed()
    text = ag.draw(y, tmp_path / "tanh.svg")
    assert (tmp_path / "tanh.dot").read_text() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tanh.dot"]
    notice = capsys.readouterr().err.strip().splitlines()
    assert len(notice) == 1
    assert notice[0].startswith("draw: Graphviz's `dot` program is not installed")
    assert f"dot -Tsvg {tmp_path / 'tanh.dot'} -o {tmp_path / 'tanh.svg'}" in notice[0]


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot program is not installed")
def test_with_graphviz_the_picture_is_rendered(tmp_path):
    x, y = tanh_cubed()
    g = ag.grad(y, x, create_graph=True)
    ag.draw([y, g], tmp_path / "both", base=y)
    svg = (tmp_path / "both.svg").read_text()
    assert "<svg" in svg and "Tanh" in svg
    ag.draw(y, tmp_path / "forward.png", format="png")
    assert (tmp_path / "forward.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot program is not installed")
def test_graphviz_accepts_the_text_of_a_maml_inner_step():
    rng = np.random.default_rng(0)
    w = Tensor(rng.standard_normal((3, 1)), requires_grad=True, name="w")
    x, t = Tensor(rng.standard_normal((5, 1))), rng.standard_normal((5, 3))
    support = F.mse_loss(ag.tanh(F.linear(x, w)), t)
    fast = w - 0.1 * ag.grad(support, w, create_graph=True)     # θ' = θ − α∇L
    query = F.mse_loss(ag.tanh(F.linear(x, fast)), t)
    done = subprocess.run(["dot", "-Tsvg"], input=ag.draw(query, base=support).encode(),
                          capture_output=True)
    assert done.returncode == 0, done.stderr.decode()


# ----------------------------------------------------------------------------- bad input
def test_bad_arguments_are_one_sentence_each(tmp_path):
    x, y = tanh_cubed()
    with pytest.raises(ValueError, match=re.escape("draw: format must be one of ('svg', 'png', 'pdf'), got 'jpg'")):
        ag.draw(y, tmp_path / "a", format="jpg")
    with pytest.raises(TypeError, match="draw: outputs and base must be Tensors, got ndarray"):
        ag.draw(np.ones(2))
    with pytest.raises(ValueError, match="draw: the graph has 4 nodes, more than max_nodes=3"):
        ag.draw(y, max_nodes=3)


# ----------------------------------------------------------------------------- the walkthrough
@pytest.mark.parametrize("graphviz", ["as installed", "hidden"])
def test_the_walkthrough_runs_top_to_bottom_and_writes_its_page(tmp_path, graphviz):
    import os
    import sys
    from pathlib import Path
    script = Path(__file__).resolve().parents[1] / "docs" / "walkthrough.py"
    env = dict(os.environ, TINYMETA_BACKEND="numpy")       # the page shows NumPy arrays, as committed
    if graphviz == "hidden":
        env["PATH"] = ""                                    # no `dot` on PATH
    done = subprocess.run([sys.executable, str(script), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "walkthrough.md").read_text()
    for heading in ("## 1. A gradient", "## 2. A Hessian-vector product", "## 3. Checking the HVP",
                    "## 4. A MAML meta-gradient", "## 5. Checking the meta-gradient itself"):
        assert heading in page
    identity = re.search(r"^largest \|g_MAML - \(g_FO - α H_s g_FO\)\| entry: (\S+)$", page, re.M)
    assert identity and float(identity.group(1)) < 1e-12          # exact up to rounding
    assert "check_hvp: gradient_difference failed" in page         # the raw-array example fails
    names = ("tanh_forward", "tanh_backward", "square_good", "square_raw", "maml_inner_step")
    for name in names:
        assert (tmp_path / "img" / f"{name}.dot").is_file()
        if graphviz == "as installed" and shutil.which("dot"):
            assert f"](img/{name}.svg)" in page and (tmp_path / "img" / f"{name}.svg").is_file()
        else:
            assert f"dot -Tsvg img/{name}.dot" in page
