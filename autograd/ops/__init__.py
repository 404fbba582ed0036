"""Every primitive of the engine, each with its backward written in these same ops."""
from .arithmetic import add, sub, mul, div, neg, pow, sub_scaled
from .unary import exp, log, sqrt, tanh, sigmoid, relu
from .reduction import sum, mean, var, max, logsumexp, log_softmax, softmax
from .shape import reshape, transpose, swapaxes, broadcast_to, sum_to, astype
from .indexing import getitem, scatter_add, concatenate, stack, where
from .linalg import group_matmul, matmul
