"""Declared settings: one :class:`Option` per dataclass field, checked in one place.

A settings class is a dataclass whose fields are made with :func:`setting` (help text,
command-line flag, type, range). From the declarations:

- the command line builds its options (:mod:`merdg.cli.options`), so a new setting is one new
  field;
- :meth:`Settings.validate` checks every value before any work starts, naming the field, its
  flag, the value and what is allowed.

:class:`~merdg.run.config.RunConfig` (one run) and every evaluator's settings
(:mod:`merdg.evaluators`) are declared this way. This module imports neither torch nor numpy.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ALL", "KINDS", "Option", "Settings", "check_value", "describe_range", "setting"]

KINDS = ("str", "int", "float", "bool", "list", "ints", "json", "pairs")
ALL = "all"  # the word a list option declared with ``all_word`` accepts for "every name"
DEVICE_PATTERN = re.compile(r"^(cpu|auto|mps|cuda(:\d+)?)$")


@dataclass(frozen=True)
class Option:
    """How one settings field is given and checked.

    Attributes:
        help: What the setting does (the command-line help text).
        flag: Its command-line flag.
        kind: ``"str"``, ``"int"``, ``"float"``, ``"bool"`` (a switch), ``"list"`` (of strings),
            ``"ints"`` (a list of integers), ``"json"`` (a JSON object) or ``"pairs"``
            (repeatable ``KEY=VALUE``).
        choices: Allowed values (None: any value of the kind); for a ``"list"``, allowed items.
        low / high: Inclusive bounds of numbers (of each integer of an ``"ints"`` list);
            ``low_open`` / ``high_open`` make them strict.
        nullable: None is allowed (meaning "not set"; the help says what that means).
        identity: The setting changes what the run computes, so it is part of the run's
            identity (:func:`merdg.run.config.config_identity`); False for where or how fast it
            computes, and for what is evaluated after training.
        axis: The experiment option that sets this field per run in ``merdg bench`` and
            ``merdg sweep`` (e.g. ``"targets"``); None when the experiment passes it through.
        metavar: Placeholder in the help text.
        all_word: A ``"list"`` that may instead be the word ``"all"`` (given alone).
        cli: The command line offers the flag (False for a field its own options fill, e.g.
            ``RunConfig.evaluations`` from every evaluator's flags).
    """

    help: str
    flag: str
    kind: str
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    nullable: bool = False
    identity: bool = True
    axis: str | None = None
    metavar: str | None = None
    all_word: bool = False
    cli: bool = True


def setting(default: Any = dataclasses.MISSING, **option: Any) -> Any:
    """A dataclass field carrying its :class:`Option` (mutable defaults get a factory)."""
    meta = {"option": Option(**option)}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Settings:
    """Base of declared settings classes (see the module docstring)."""

    @classmethod
    def options(cls) -> list[tuple[str, Option, Any]]:
        """``(field name, option, default)`` for every field, in declaration order
        (``dataclasses.MISSING`` for a field without default)."""
        out = []
        for f in dataclasses.fields(cls):
            default = (f.default_factory() if f.default_factory is not dataclasses.MISSING
                       else f.default)
            out.append((f.name, f.metadata["option"], default))
        return out

    @classmethod
    def option_of(cls, name: str) -> Option:
        """The :class:`Option` of field ``name``."""
        for f in dataclasses.fields(cls):
            if f.name == name:
                return f.metadata["option"]
        raise KeyError(f"{cls.__name__} has no field {name!r}")

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """``{field: default}`` of the fields that have one."""
        return {name: default for name, _, default in cls.options()
                if default is not dataclasses.MISSING}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> Settings:
        """Check every field's type and range; returns self.

        Raises:
            ValueError: One line naming the field (and its flag), the value and what is
                allowed.
        """
        for f in dataclasses.fields(self):
            check_value(f.name, getattr(self, f.name), f.metadata["option"])
        return self


def describe_range(opt: Option) -> str:
    """What an option allows, in words (``"one of 'a', 'b'"``, ``">= 0 and < 1"``)."""
    if opt.choices is not None:
        return "one of " + ", ".join(map(repr, opt.choices))
    parts = []
    if opt.low is not None:
        parts.append(f"{'>' if opt.low_open else '>='} {opt.low:g}")
    if opt.high is not None:
        parts.append(f"{'<' if opt.high_open else '<='} {opt.high:g}")
    return " and ".join(parts)


def type_ok(value: Any, kind: str) -> bool:
    """Whether ``value`` has the type of an option of ``kind``."""
    if kind == "ints":
        return (isinstance(value, list) and len(value) > 0
                and all(type_ok(v, "int") for v in value))
    if kind == "str":
        return isinstance(value, str) and value != ""
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value))
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "list":
        return (isinstance(value, list) and len(value) > 0
                and all(isinstance(v, str) and v for v in value))
    return isinstance(value, dict)  # json, pairs


KIND_WORDS = {"str": "a non-empty string", "int": "an integer", "float": "a finite number",
              "bool": "true or false", "list": "a non-empty list of names",
              "ints": "a non-empty list of integers",
              "json": "a JSON object", "pairs": "KEY=VALUE pairs"}


def check_value(name: str, value: Any, opt: Option) -> None:
    """Check one value against its option.

    Raises:
        ValueError: One line naming the field, its flag, the value and what is allowed.
    """
    where = f"{name} ({opt.flag})"
    if value is None:
        if not opt.nullable:
            raise ValueError(f"{where} is required")
        return
    if opt.all_word and value == ALL:
        return
    if not type_ok(value, opt.kind):
        words = KIND_WORDS[opt.kind] + (f" or {ALL!r}" if opt.all_word else "")
        raise ValueError(f"{where} must be {words}, got {value!r}")
    if opt.all_word and ALL in value:
        raise ValueError(f"{where}: {ALL!r} stands alone (it means every name), got {value}")
    if opt.kind in ("list", "ints") and len(set(value)) != len(value):
        raise ValueError(f"{where} lists a {'value' if opt.kind == 'ints' else 'name'} twice: "
                         f"{value}")
    if opt.choices is not None:
        items = value if opt.kind == "list" else [value]
        bad = [v for v in items if v not in opt.choices]
        if bad:
            shown = bad[0] if opt.kind != "list" else value
            raise ValueError(f"{where} must be {describe_range(opt)}, got {shown!r}")
    numbers = value if opt.kind == "ints" else [value] if opt.kind in ("int", "float") else []
    for number in numbers:
        low_bad = opt.low is not None and (number <= opt.low if opt.low_open
                                           else number < opt.low)
        high_bad = opt.high is not None and (number >= opt.high if opt.high_open
                                              else number > opt.high)
        if low_bad or high_bad:
            each = " values" if opt.kind == "ints" else ""
            raise ValueError(f"{where}{each} must be {describe_range(opt)}, got {value!r}")
    if name == "device" and not DEVICE_PATTERN.match(value):
        raise ValueError(f"{where} must be cpu, cuda, cuda:N, mps or auto, got {value!r}")
