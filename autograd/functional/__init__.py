"""Neural-network layers as functions of explicit tensors (no hidden state).

Every layer accepts an optional leading *task axis* on both the input and its parameters
(``x`` (T, N, ...) with ``w`` (T, ...)), so the T tasks of a meta-batch, each with its own
fast weights, run as one batched computation.
"""
from .linear import linear, linear_relu
from .conv import conv2d, conv2d_grouped, im2col, col2im
from .pooling import max_pool2d
from .batchnorm import batch_norm, batch_norm_relu
from .losses import Labels, cross_entropy, mse_loss
from ..ops import relu, softmax, log_softmax
from .recurrent import lstm_cell, lstm, bidirectional_lstm, lstm_parameters
from .memory import content_weights, read, least_used, lrua_write, usage_update

__all__ = ["linear", "linear_relu", "conv2d", "conv2d_grouped", "im2col", "col2im", "max_pool2d",
           "batch_norm", "batch_norm_relu", "Labels", "cross_entropy", "mse_loss", "relu", "softmax",
           "log_softmax", "lstm_cell", "lstm", "bidirectional_lstm", "lstm_parameters",
           "content_weights", "read", "least_used", "lrua_write", "usage_update"]
