"""``Function``: one node of the graph, a primitive with its vector-Jacobian product.

A subclass implements two methods:

* ``forward(*arrays) -> array`` on raw backend arrays (fast, no graph);
* ``backward(gy) -> tuple`` giving, for each input, ``gy · ∂y/∂input`` (``None`` where the
  input needs no gradient). It is written with **differentiable Tensor ops** on
  ``self.inputs`` and ``self.output()``, never on raw arrays derived from them, so when the
  engine runs it with recording on (``create_graph=True``) the backward pass becomes part of
  the graph and can itself be differentiated: double backward for free, as in Chainer's
  ``FunctionNode``. Raw arrays are allowed only for quantities whose derivative is zero
  (ReLU masks, argmax positions, shapes), or when no graph is being recorded
  (``mode.is_grad_enabled()`` is False) and only the values are wanted.

A node may also have several outputs: ``forward`` returns a tuple of arrays, calling the
node returns a tuple of Tensors, and ``backward(*gys)`` receives one gradient per output
(``None`` for an output nothing was differentiated through) and returns Σₖ gyₖ · ∂yₖ/∂input
for each input. The engine calls it once, after every output's gradient is complete.
"""
import weakref

from .settings import recording
from .tensor import Tensor


class GraphFreedError(RuntimeError):
    pass


class Function:
    inputs = None        # tuple of input Tensors, kept for backward (None once freed)
    output = None        # weakref to the output Tensor (avoids a reference cycle)
    outputs = None       # weakrefs to all outputs, in order (nodes with several outputs only)
    several = False      # True for a node with several outputs (the engine waits for all)
    freed = False

    def forward(self, *arrays):
        raise NotImplementedError

    def backward(self, gy):
        raise NotImplementedError

    @property
    def name(self):
        return type(self).__name__

    def __call__(self, *inputs):
        y = self.forward(*[t.data for t in inputs])
        if type(y) is tuple:
            return self._several_outputs(inputs, y)
        out = Tensor.constant(y)
        if recording.enabled:
            for t in inputs:
                if t.requires_grad:
                    out.requires_grad = True
                    out.creator = self
                    self.inputs = inputs
                    self.output = weakref.ref(out)
                    break
        return out

    def _several_outputs(self, inputs, arrays):
        outs = tuple(Tensor.constant(a) for a in arrays)
        if recording.enabled and any(t.requires_grad for t in inputs):
            for out in outs:
                out.requires_grad = True
                out.creator = self
            self.inputs = inputs
            self.outputs = tuple(weakref.ref(out) for out in outs)
            self.output = self.outputs[0]
            self.several = True
        return outs

    def release(self):
        """Drop the saved inputs after a backward pass that does not retain the graph."""
        self.inputs = None
        self.freed = True

    def saved_inputs(self):
        if self.freed:
            raise GraphFreedError(
                f"backward through op '{self.name}' a second time: its saved tensors were "
                "freed after the first backward pass. Pass retain_graph=True (or "
                "create_graph=True) to the first grad()/backward() call if you need to "
                "differentiate the same graph again.")
        return self.inputs
