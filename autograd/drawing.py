"""``draw``: the graph a computation recorded, as Graphviz DOT text (and a picture when the
``dot`` program is installed).

What is drawn is exactly what the engine stores (``function.py``): each ``Function`` node,
reached from a Tensor's ``creator``, with edges from its ``inputs``. Three kinds of boxes:

* **op nodes** (rounded boxes): the Function's name, any number it keeps (``PowConst c=3``)
  and the shape and dtype of its output (one numbered line per output for a node with
  several, "not kept" for one nobody holds any more; an edge from such a node says which
  output it carries, ``[1]``);
* **leaves** (green ellipses): Tensors you made with ``requires_grad=True``, named by
  ``Tensor.name`` when set;
* **constants** (grey text): Tensors that need no gradient, a scalar shown by its value.

With ``base=`` (the forward outputs), every node and constant that cannot be reached from
``base`` was recorded later, by a ``grad(..., create_graph=True)`` call, and is coloured
orange: the backward graph that a second derivative differentiates. A constant in orange
is where a backward method used a plain array; if the array depends on an input (not a
ReLU mask or an index), that is the cut that silently drops a second-order term (see
autograd/README.md, "The bug class: raw arrays in a backward").
"""
import os
import shutil
import subprocess
import sys
import tempfile

from .tensor import Tensor

FORWARD, BACKWARD, LEAF = "#d6e6f5", "#fdd9b5", "#cdebc5"
FORMATS = ("svg", "png", "pdf")
_NODE_FIELDS = ("inputs", "output", "outputs", "several", "freed")


def _as_list(tensors):
    return list(tensors) if isinstance(tensors, (list, tuple)) else [tensors]


def _shape(t):
    return "not kept" if t is None else f"{tuple(t.shape)} {t.dtype}"


def _escape(text):
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _numbers(node):
    """The plain numbers a node keeps, e.g. 'c=3' for PowConst(3)."""
    found = [f"{k}={v:g}" for k, v in vars(node).items()
             if k not in _NODE_FIELDS and isinstance(v, (int, float)) and not isinstance(v, bool)]
    return " ".join(found)


def _outputs(node):
    """The node's output Tensors (None where one has been garbage-collected)."""
    refs = node.outputs if node.several else (node.output,)
    return [None if r is None else r() for r in refs]


def _walk(roots):
    """Everything reachable from ``roots`` through ``creator`` and ``inputs``: the nodes and the
    Tensors without a creator (leaves and constants), keyed by id, in a fixed order."""
    nodes, ends, stack = {}, {}, list(reversed(roots))
    while stack:
        t = stack.pop()
        node = t.creator
        if node is None:
            ends.setdefault(id(t), t)
            continue
        if id(node) in nodes:
            continue
        nodes[id(node)] = node
        stack.extend(reversed(node.inputs or ()))                  # freed nodes have none
    return nodes, ends


def _end_line(name, t, forward):
    """A leaf (green ellipse, its name) or a constant (grey text; orange when the backward
    pass made it), as one DOT line."""
    if t.requires_grad:
        label = f"{t.name or 'leaf'}\n{_shape(t)}"
        style = f'shape=ellipse, style=filled, fillcolor="{LEAF}"'
    else:
        value = f"{t.data.item():.4g}" if t.size == 1 else _shape(t)
        label = f"{t.name + ' ' if t.name else ''}const {value}"
        style = f'shape=plaintext, fontsize=9, fontcolor="{"grey40" if forward else "#c0561a"}"'
    return f'  {name} [label="{_escape(label)}", {style}];'


def _node_line(name, node, forward):
    """An op node: its name, its numbers, each output's shape and dtype, as one DOT line."""
    head = " ".join(filter(None, [node.name, _numbers(node)]))
    shapes = [f"[{k}] {_shape(t)}" if node.several else _shape(t) for k, t in enumerate(_outputs(node))]
    freed = ["(inputs freed by backward)"] if node.inputs is None else []
    label = "\n".join([head] + shapes + freed)
    return (f'  {name} [label="{_escape(label)}", shape=box, style="rounded,filled", '
            f'fillcolor="{FORWARD if forward else BACKWARD}"];')


def _source(x):
    """(id of what drew Tensor x: its creator or x itself, the edge's port label)."""
    node = x.creator
    if node is None:
        return id(x), ""
    if not node.several:
        return id(node), ""
    index = next(k for k, t in enumerate(_outputs(node)) if t is x)
    return id(node), f' [label="[{index}]", fontsize=9]'


def to_dot(outputs, base=None, title=None, max_nodes=2000):
    """The DOT text of the graph behind ``outputs`` (see ``draw``)."""
    roots = _as_list(outputs)
    for t in roots + ([] if base is None else _as_list(base)):
        if not isinstance(t, Tensor):
            raise TypeError(f"draw: outputs and base must be Tensors, got {type(t).__name__}")
    nodes, ends = _walk(roots)
    if len(nodes) + len(ends) > max_nodes:
        raise ValueError(f"draw: the graph has {len(nodes) + len(ends)} nodes, more than "
                         f"max_nodes={max_nodes}; pass a larger max_nodes or draw a smaller part")
    forward_nodes, forward_ends = _walk(_as_list(base)) if base is not None else (nodes, ends)
    names = {}                                               # id → n0, n1, … in drawing order

    def name_of(key):
        return names.setdefault(key, f"n{len(names)}")

    lines = ["digraph autograd {", "  rankdir=TB;", '  node [fontname="Helvetica", fontsize=11];',
             "  edge [arrowsize=0.7];"]
    lines += [_end_line(name_of(k), t, k in forward_ends) for k, t in ends.items()]
    lines += [_node_line(name_of(k), node, k in forward_nodes) for k, node in nodes.items()]
    for key, node in nodes.items():
        for x in node.inputs or ():
            source, port = _source(x)
            lines.append(f"  {name_of(source)} -> {name_of(key)}{port};")
    for k, t in enumerate(roots):
        label = f"{t.name or 'output' + (f' {k}' if len(roots) > 1 else '')}\n{_shape(t)}"
        source, port = _source(t)
        lines.append(f'  out{k} [label="{_escape(label)}", shape=ellipse, peripheries=2];')
        lines.append(f"  {name_of(source)} -> out{k}{port};")
    legend = "blue: the forward pass; orange: recorded by grad(..., create_graph=True)"
    caption = "\n".join(filter(None, [title, legend if base is not None else None]))
    if caption:
        lines.append(f'  label="{_escape(caption)}"; labelloc=b; fontname="Helvetica"; fontsize=11;')
    return "\n".join(lines + ["}"]) + "\n"


def _write_atomically(path, data):
    """Write bytes to path through a temporary file in the same folder and ``os.replace``."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".draw-", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)                  # mkstemp makes 0600; a picture is a normal file
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def draw(outputs, path=None, base=None, title=None, format="svg", max_nodes=2000):
    """The graph recorded behind ``outputs`` (a Tensor or a list of them) as DOT text.

    With ``path`` (a file name; a ``.dot``/``.svg``/``.png``/``.pdf`` ending is dropped) the
    text is written to ``path.dot`` and, when Graphviz's ``dot`` program is on PATH, rendered
    to ``path.<format>``; otherwise one line on stderr says how to render it yourself. With
    ``base`` (the forward outputs), what a ``create_graph=True`` backward pass added on top of
    the forward graph is drawn in another colour. Returns the DOT text.
    """
    if format not in FORMATS:
        raise ValueError(f"draw: format must be one of {FORMATS}, got {format!r}")
    text = to_dot(outputs, base=base, title=title, max_nodes=max_nodes)
    if path is None:
        return text
    stem = os.fspath(path)
    root, ending = os.path.splitext(stem)
    if ending in (".dot",) + tuple("." + f for f in FORMATS):
        stem = root
    dot_path, picture = stem + ".dot", f"{stem}.{format}"
    _write_atomically(dot_path, text.encode())
    program = shutil.which("dot")
    if program is None:
        print(f"draw: Graphviz's `dot` program is not installed, so only {dot_path} was written; "
              f"render it with `dot -T{format} {dot_path} -o {picture}`.", file=sys.stderr)
        return text
    done = subprocess.run([program, f"-T{format}", dot_path], capture_output=True)
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"draw: `dot -T{format} {dot_path}` failed: "
                           f"{reason[0] if reason else 'exit status ' + str(done.returncode)}")
    _write_atomically(picture, done.stdout)
    return text
