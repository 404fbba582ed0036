"""Reverse mode: walk the graph from the outputs back to the inputs, calling each node's
vector-Jacobian product once all gradient contributions to its output have arrived.

The one trick that makes double backward work: with ``create_graph=True`` the walk runs
with recording switched on, so every op a backward method uses is itself recorded into the
graph. The gradients returned are then ordinary Tensors with a ``creator``, and calling
``grad`` on them differentiates the backward pass (see autograd/README.md).
"""
from . import backend, mode
from .tensor import Tensor


def _as_tuple(x):
    return tuple(x) if isinstance(x, (list, tuple)) else (x,)


def _order(roots):
    """Tensors reachable from ``roots`` through recorded ops, children before parents (the
    visited set holds the tensors themselves: they hash by identity)."""
    order, visited = [], set()
    stack = [(root, False) for root in reversed(roots)]
    while stack:
        t, expanded = stack.pop()
        if expanded:
            order.append(t)                  # all of t's dependencies are already in order
            continue
        if t in visited:
            continue
        visited.add(t)
        stack.append((t, True))
        node = t.creator
        if node is not None:
            for x in node.saved_inputs():    # raises if a backward pass already freed them
                if x.requires_grad and x not in visited:
                    stack.append((x, False))
    return order  # post-order: every tensor after all tensors it depends on


def _seed(op, outputs, grad_outputs):
    xp = backend.xp
    if grad_outputs is None:
        seeds = []
        for y in outputs:
            if y.size != 1:
                raise ValueError(
                    f"{op}: output of shape {tuple(y.shape)} is not a scalar; pass grad_outputs "
                    "(one tensor per output, the vector in the vector-Jacobian product)")
            seeds.append(Tensor.constant(xp.ones(y.shape, dtype=y.dtype)))
        return seeds
    grad_outputs = _as_tuple(grad_outputs)
    if len(grad_outputs) != len(outputs):
        raise ValueError(f"{op}: got {len(outputs)} outputs but {len(grad_outputs)} grad_outputs")
    seeds = []
    for y, g in zip(outputs, grad_outputs):
        g = g if isinstance(g, Tensor) else Tensor(g, dtype=y.dtype)
        if g.shape != y.shape:
            raise ValueError(f"{op}: grad_output of shape {tuple(g.shape)} does not match its "
                             f"output of shape {tuple(y.shape)}")
        if g.dtype != y.dtype:
            raise TypeError(f"{op}: grad_output dtype {g.dtype} differs from its output's {y.dtype}")
        seeds.append(g)
    return seeds


def _add(total, g, create_graph):
    """Two gradient contributions to one tensor, added: recorded (an ``Add`` node) when the
    walk builds a graph, on the arrays when it does not (the values are all that is wanted,
    and the op's checks and node would cost more than the sum at small sizes)."""
    if create_graph:
        return total + g
    return Tensor.constant(total.data + g.data)


def _backprop(op, outputs, grad_outputs, targets, create_graph, retain_graph):
    """Return {tensor: (tensor, gradient)} for the tensors in ``targets`` (or every leaf if None).

    Sets and dicts here are keyed by the tensors and nodes themselves: neither defines
    ``__eq__``, so they hash and compare by identity, as ``id()`` would, without the calls."""
    for y in outputs:
        if not isinstance(y, Tensor):
            raise TypeError(f"{op}: outputs must be Tensors, got {type(y).__name__}")
    seeds = _seed(op, outputs, grad_outputs)
    grads = {}
    for y, g in zip(outputs, seeds):
        if y.requires_grad:
            grads[y] = grads[y] + g if y in grads else g
    order = _order([y for y in outputs if y.requires_grad])
    wanted = None if targets is None else set(targets)
    # Only walk into tensors that lead to a target: no wasted vector-Jacobian products.
    # useful: tensors on a path to a target; expand: those whose node leads further down.
    useful, expand = set(), set()
    waiting = {}      # node -> how many of its outputs the walk below still has to pass
    for t in order:
        node = t.creator
        if node is not None:
            for x in node.inputs:
                if x in useful:
                    expand.add(t)
                    useful.add(t)
                    if node.several:
                        waiting[node] = waiting.get(node, 0) + 1
                    break
        if t in useful:
            continue
        if (node is None) if wanted is None else (t in wanted):
            useful.add(t)
    results = {}
    gathered = {}     # node -> the gradients of its outputs gathered so far
    holding = {}      # node -> its outputs the walk has passed (kept alive until it runs)
    with mode.set_grad_enabled(create_graph):
        while order:
            # Popped, and dropped from the sets below: once the walk has passed t, nothing
            # here refers to it, so a forward activation nobody else holds is freed as soon
            # as the nodes that saved it have run their backward (the walk needs no tensor
            # twice: every consumer of t comes before t in this order).
            t = order.pop()
            if t not in useful:
                continue
            useful.discard(t)
            in_expand = t in expand
            expand.discard(t)
            g = grads.pop(t, None)
            node = t.creator
            if node is not None and node.several and in_expand:
                # A node with several outputs runs once, when the walk passes the last of
                # them: every output's gradient is complete by then (its consumers came
                # earlier in this order) and none of the node's inputs has been visited.
                slots = gathered.setdefault(node, [None] * len(node.outputs))
                slots[[r() for r in node.outputs].index(t)] = g
                holding.setdefault(node, []).append(t)     # its outputs alive until it runs
                if g is not None and wanted is not None and t in wanted:
                    results[t] = (t, g)
                waiting[node] -= 1
                if waiting[node]:
                    continue
                gys = gathered.pop(node)
                if all(gy is None for gy in gys):
                    del holding[node]
                    continue
            else:
                if g is None:
                    continue
                if (node is None) if wanted is None else (t in wanted):
                    results[t] = (t, g)
                if not in_expand:
                    continue                     # nothing wanted lies beyond t: stop here
                gys = (g,)
            inputs = node.saved_inputs()
            for x, gx in zip(inputs, node.backward(*gys)):
                if gx is None:
                    continue
                if x in useful:
                    grads[x] = _add(grads[x], gx, create_graph) if x in grads else gx
            if node.several:
                del holding[node]
            if not retain_graph:
                node.release()
    return results


def grad(outputs, inputs, grad_outputs=None, create_graph=False, retain_graph=None,
         allow_unused=False):
    """Gradients of ``outputs`` with respect to ``inputs`` (a Tensor or a list of them).

    Computes the vector-Jacobian product Σₖ vₖᵀ ∂outputₖ/∂input with v = ``grad_outputs``
    (ones for scalar outputs). With ``create_graph=True`` the result is differentiable.
    An input the outputs do not depend on is an error unless ``allow_unused=True``, in which
    case its gradient is ``None``.
    """
    single = isinstance(inputs, Tensor)
    outputs, inputs = _as_tuple(outputs), _as_tuple(inputs)
    for x in inputs:
        if not isinstance(x, Tensor):
            raise TypeError(f"grad: inputs must be Tensors, got {type(x).__name__}")
        if not x.requires_grad:
            raise ValueError(f"grad: an input of shape {tuple(x.shape)} does not require grad, "
                             "so no gradient can flow to it; create it with requires_grad=True")
    if retain_graph is None:
        retain_graph = create_graph
    found = _backprop("grad", outputs, grad_outputs, inputs, create_graph, retain_graph)
    result = []
    for i, x in enumerate(inputs):
        g = found.get(x, (None, None))[1]
        if g is None and not allow_unused:
            raise ValueError(
                f"grad: input {i} (shape {tuple(x.shape)}) is not in the graph of the outputs: "
                "they do not depend on it. Pass allow_unused=True to get None for it instead")
        result.append(g)
    return result[0] if single else result


def backward(output, grad_output=None, retain_graph=False, create_graph=False):
    """Accumulate d(output)/d(leaf) into ``leaf.grad`` for every leaf that requires grad."""
    if not output.requires_grad:
        raise ValueError(f"backward: the output of shape {tuple(output.shape)} does not require "
                         "grad: no input of its computation has requires_grad=True (or it was "
                         "computed under no_grad())")
    found = _backprop("backward", (output,), None if grad_output is None else (grad_output,),
                      None, create_graph, retain_graph or create_graph)
    for leaf, g in found.values():
        if not create_graph:
            g = g.detach()
        leaf.grad = g if leaf.grad is None else leaf.grad + g
