"""autograd: a small reverse-mode automatic differentiation engine with exact double backward.

(Not the HIPS ``autograd`` package on PyPI, which shares the import name; tinymeta never
depends on it. Install one or the other in an environment.)
"""
from . import settings               # first: reads the environment once and applies it
from .settings import SettingsError
from . import backend
from .backend import set_backend
from .mode import no_grad, enable_grad, is_grad_enabled, set_grad_enabled
from .tensor import Tensor, tensor
from .function import Function, GraphFreedError
from .engine import grad, backward
from .ops import (add, sub, mul, div, neg, pow, exp, log, sqrt, tanh, sigmoid, relu, sum, mean,
                  var, max, logsumexp, log_softmax, softmax, reshape, transpose, swapaxes,
                  broadcast_to, sum_to, astype, getitem, scatter_add, concatenate, stack, where,
                  matmul)
from .derivatives import hvp, jvp, vjp
from .gradcheck import gradcheck, gradgradcheck, GradcheckError
from . import functional
from .hvpcheck import check_hvp, HVPCheckError, HVPReport
from .drawing import draw
