"""The command-line frame of every experiment: subcommands, user errors as one line, exit codes.

    error: <one sentence>                exit 2   bad option, file, data or output folder
    error: <one sentence>                exit 1   training diverged (inf/NaN)
    <stopped by SIGINT ...; resume with>  exit 130 (SIGINT) or 143 (SIGTERM), checkpoint saved
"""
import argparse
import sys

from ..checkpoint import CheckpointError
from ..files import RunFolderError
from .config import ConfigError
from .loop import Diverged, Interrupted, TrainingError


class UsageError(Exception):
    """A bad option or file, found by an experiment itself."""


class ArgumentParser(argparse.ArgumentParser):
    """An argument parser whose errors are one ``error:`` line (through ``run_main``), exit 2,
    instead of argparse's usage block."""

    def error(self, message):
        raise UsageError(f"{message} (see --help)")


USER_ERRORS = (UsageError, ConfigError, RunFolderError, TrainingError, CheckpointError)


def _is_user_error(e):
    if isinstance(e, USER_ERRORS):
        return True
    return type(e).__name__ in ("DataError", "SettingsError", "BackendUnavailable")


def run_main(main, argv=None):
    """Run ``main(argv)``; user errors become one ``error:`` line and an exit status."""
    try:
        return main(sys.argv[1:] if argv is None else list(argv))
    except Interrupted as e:
        print(str(e), file=sys.stderr, flush=True)
        raise SystemExit(128 + int(e.signum)) from None
    except Diverged as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    except Exception as e:
        if not _is_user_error(e):
            raise
        print(f"error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def run_commands(argv, commands, setup=None):
    """An experiment's command line, ``python -m experiments.X [COMMAND] ARGS...``: COMMAND is a
    key of ``commands`` (name -> function of the remaining arguments); without one, the first
    key runs (``train``). ``setup()`` runs first. Errors and exit codes as in ``run_main``."""
    def dispatch(argv):
        if setup is not None:
            setup()
        name = argv[0] if argv and argv[0] in commands else next(iter(commands))
        return commands[name](argv[1:] if argv and argv[0] == name else argv)
    return run_main(dispatch, argv)
