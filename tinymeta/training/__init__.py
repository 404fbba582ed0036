"""The run layer: what every experiment does around a learner, written once.

    files (tinymeta.files)  atomic writes; ``RunFolder``: writable, locked, never overwritten
    loop                    ``Training``: the resumable loop, hooks, checkpoints, signals;
                            ``Validation(keep_best=True)`` keeps the best validated checkpoint
    evaluation              ``meta_test``: adapt k steps, score after each, in chunks
    stats                   ``mean_ci``/``summarize``: one 95% CI convention
    progress                one progress line
    config                  configurations: paper defaults, ``--config FILE.json``, resume rules
    cli                     the command-line frame: errors as one line, exit codes

An experiment script keeps only what is its own: its configurations and its figures.
"""
from ..files import RunFolder, RunFolderError, atomic_write, save_figure, write_csv, write_json, write_text
from .stats import mean_ci, summarize, CONVENTION
from .progress import Progress
from .loop import (Training, TrainingError, Diverged, Interrupted, Hook, LinearDecay, StepDecay, CosineDecay, SetIteration, Validation,
                   Log, CHECKPOINT, BEST, read as read_checkpoint, resolve as resolve_checkpoint,
                   describe as describe_checkpoint, restore_learner, run_config)
from .evaluation import meta_test, report
from .config import Config, ConfigError, Option
from .figures import draw_training_curves, pyplot
from .cli import ArgumentParser, UsageError, run_commands, run_main

__all__ = ["RunFolder", "RunFolderError", "atomic_write", "save_figure", "write_csv", "write_json", "write_text",
           "mean_ci", "summarize", "CONVENTION", "Progress",
           "Training", "TrainingError", "Diverged", "Interrupted", "Hook", "LinearDecay", "StepDecay",
           "CosineDecay", "SetIteration", "Validation", "Log", "CHECKPOINT", "BEST", "read_checkpoint",
           "resolve_checkpoint", "describe_checkpoint", "restore_learner", "run_config", "meta_test", "report",
           "Config", "ConfigError", "Option", "ArgumentParser", "UsageError", "run_main", "run_commands",
           "draw_training_curves", "pyplot"]
