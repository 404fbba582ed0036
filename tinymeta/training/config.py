"""Configurations: an experiment's options, the papers' defaults, recipe files, resume rules.

An experiment declares its options once (``Option``: a type that parses and checks a value,
whether it changes the training trajectory, help text). A configuration is then resolved
in this order, the later winning:

    the experiment's defaults  <  a recipe file (--config FILE.json)  <  the command line

Defaults may depend on other options (the MAML paper's 5-way and 20-way settings differ),
so ``defaults(chosen)`` receives what the recipe and command line chose. On ``--resume`` the
checkpoint's configuration is used: options that change the trajectory (``matters=True``)
must not change, the others (length, validation, logging) may.
"""
import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence


class ConfigError(Exception):
    """A bad option, recipe or combination; the message is one sentence for the user."""


# --- value types: each parses a string (or a JSON value) or raises ValueError ---------------

def positive_int(value):
    v = _int(value)
    if v < 1:
        raise ValueError(f"must be >= 1, got {v}")
    return v


def non_negative_int(value):
    v = _int(value)
    if v < 0:
        raise ValueError(f"must be >= 0, got {v}")
    return v


def _int(value):
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"expected an integer, got {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected an integer, got {value!r}") from None


def _float(value):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(v):
        raise ValueError(f"expected a finite number, got {value!r}")
    return v


def positive_float(value):
    v = _float(value)
    if not v > 0:
        raise ValueError(f"must be a positive finite number, got {value!r}")
    return v


def non_negative_float(value):
    v = _float(value)
    if v < 0:
        raise ValueError(f"must be >= 0, got {value!r}")
    return v


def boolean(value):
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def choice(*names):
    def parse(value):
        if value not in names:
            raise ValueError(f"choose from {', '.join(map(str, names))}, got {value!r}")
        return value
    parse.choices = names
    return parse


@dataclass
class Option:
    type: Callable[[Any], Any]
    help: str
    matters: bool = True               # changes the training trajectory: fixed on resume
    flag: Optional[str] = None         # command-line spelling, default --name-with-dashes
    store_false: bool = False          # a flag that sets the option to False (e.g. --non-transductive)
    many: bool = False                 # takes one or more values on the command line (a list)
    negatable: bool = False            # a boolean spelt --name / --no-name on the command line


class Config:
    def __init__(self, options, defaults, checks=()):
        """``options``: name → Option; ``defaults(chosen) -> dict`` of every option's default;
        ``checks``: functions cfg → None raising ConfigError for bad combinations."""
        self.options, self.defaults, self.checks = dict(options), defaults, list(checks)

    def flag(self, name):
        return self.options[name].flag or "--" + name.replace("_", "-")

    def add_arguments(self, parser):
        parser.add_argument("--config", metavar="FILE.json",
                            help="a recipe: a JSON object of options (the command line wins)")
        for name, opt in self.options.items():
            if opt.store_false:
                parser.add_argument(self.flag(name), dest=name, action="store_const", const=False,
                                    default=None, help=opt.help)
                continue
            if opt.negatable:
                parser.add_argument(self.flag(name), dest=name, action=argparse.BooleanOptionalAction,
                                    default=None, help=opt.help)
                continue
            kw = {"choices": opt.type.choices} if hasattr(opt.type, "choices") else {}
            if opt.many:
                kw["nargs"] = "+"
            parser.add_argument(self.flag(name), dest=name, type=_argparse_type(opt.type),
                                default=None, help=opt.help, **kw)

    def explicit(self, args):
        """The options given on the command line (not None)."""
        return {k: getattr(args, k) for k in self.options if getattr(args, k, None) is not None}

    def recipe(self, path):
        """The options of a recipe file, each parsed by its type."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except OSError as e:
            raise ConfigError(f"--config {path}: cannot read it ({e.strerror or e})") from None
        except ValueError as e:
            raise ConfigError(f"--config {path}: not valid JSON ({e})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"--config {path}: expected a JSON object of options")
        data.pop("comment", None)
        out = {}
        for k, v in data.items():
            if k not in self.options:
                raise ConfigError(f"--config {path}: unknown option {k!r} (options: "
                                  f"{', '.join(self.options)})")
            out[k] = self.parse(k, v, where=f"--config {path}: {k!r}")
        return out

    def parse(self, name, value, where=None):
        try:
            return self.options[name].type(value)
        except ValueError as e:
            raise ConfigError(f"{where or self.flag(name)}: {e}") from None

    def resolve(self, args):
        """A new run's configuration from defaults, ``--config`` and the command line."""
        chosen = self.recipe(args.config) if getattr(args, "config", None) else {}
        chosen.update(self.explicit(args))
        cfg = dict(self.defaults(chosen))
        unknown = set(cfg) - set(self.options)
        if unknown:
            raise AssertionError(f"defaults name unknown options {sorted(unknown)}")
        cfg.update(chosen)
        return self.check(cfg)

    def complete(self, saved):
        """A saved configuration with the options it predates filled in by their defaults."""
        known = {k: v for k, v in saved.items() if k in self.options}
        return self.check({**self.defaults(known), **known})

    def resumed(self, saved, args):
        """The checkpoint's configuration with the options that may change applied."""
        chosen = self.recipe(args.config) if getattr(args, "config", None) else {}
        chosen.update(self.explicit(args))
        saved = self.complete(saved)
        problems, cfg = [], dict(saved)
        for k, v in chosen.items():
            if self.options[k].matters and v != saved.get(k):
                problems.append(f"{self.flag(k)}: checkpoint {saved.get(k)!r}, now {v!r}")
            else:
                cfg[k] = v
        if problems:
            raise ConfigError("--resume: the checkpoint was trained with other options that change "
                              "the training (" + "; ".join(problems) + "): leave them out (the "
                              "checkpoint's values are used) or start a new --out")
        return self.check(cfg)

    def check(self, cfg):
        for name, opt in self.options.items():
            if cfg.get(name) is not None:
                cfg[name] = self.parse(name, cfg[name])
        for check in self.checks:
            check(cfg)
        return cfg


def _argparse_type(parse):
    def convert(text):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def config_flags(config: Config, cfg, names: Sequence[str]):
    """The command-line spelling of some options of a configuration (for messages)."""
    return " ".join(f"{config.flag(k)} {cfg[k]}" for k in names if cfg.get(k) is not None)
