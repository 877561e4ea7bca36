"""The evaluator contract: one registered object per kind of evaluation.

An evaluator owns everything about its kind of evaluation, and no other module knows its
settings or its result columns:

- its **settings**, declared the way :class:`~merdg.run.config.RunConfig` declares its fields
  (a :class:`~merdg.options.Settings` dataclass; the command line builds one flag per field,
  :meth:`~merdg.options.Settings.validate` checks them before any work);
- its **checks** before any work (:meth:`Evaluator.check`: e.g. a corruption name the dataset's
  modalities do not have);
- **when** it runs (:attr:`Evaluator.times`): after every epoch (``"epoch"``; clean accuracy,
  which the epoch-selection rules read), before the first training step (``"init"``; the
  encoders at initialization), or on a trained model (``"model"``: at the end of training on the
  weights of the epoch source validation selects, and on demand with ``merdg evaluate`` on a
  finished run's saved weights);
- its **measurement** (:meth:`Evaluator.measure`): flat result columns plus details;
- its **result columns** (:attr:`Evaluator.columns`: name, label, format, which direction is
  better), the keys of ``results.csv``, ``summary.json`` and every table;
- its **report section and figures** (:meth:`Evaluator.report`, :meth:`Evaluator.figures`),
  written through the :class:`ResultView` the experiment's report gives it.

Adding a kind of evaluation is one module with one ``@EVALUATORS.register`` class
(``docs/architecture.md`` walks through :mod:`merdg.evaluators.ood` as the example).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from merdg.options import ALL, Settings
from merdg.registry import Registry

__all__ = ["EPOCH", "EVALUATORS", "INIT", "MODEL", "Column", "Evaluator", "Measurement",
           "NoSettings", "ResultView", "column_keys", "settings_hash"]

EPOCH, INIT, MODEL = "epoch", "init", "model"

EVALUATORS: Registry[type[Evaluator]] = Registry("evaluator")


@dataclass(frozen=True)
class Column:
    """One result column.

    Attributes:
        name: The row key; for a ``family`` the prefix of ``<name>/<member>`` keys (one per
            modality, severity, ...).
        label: Table header (a family's members are appended: ``"no m0"``).
        better: ``"higher"``, ``"lower"`` or None (not a score, e.g. a threshold).
        percent: A fraction shown in % (else shown as is, 2 decimals).
        family: One column per member.
    """

    name: str
    label: str
    better: str | None = "higher"
    percent: bool = True
    family: bool = False

    def key(self, member: str | None = None) -> str:
        """The row key of the column (of ``member`` for a family)."""
        if self.family:
            if member is None:
                raise ValueError(f"column family {self.name!r} needs a member")
            return f"{self.name}/{member}"
        return self.name

    def members(self, keys: Iterable[str]) -> list[str]:
        """The members of a family present among ``keys`` (sorted)."""
        prefix = self.name + "/"
        return sorted({k[len(prefix):] for k in keys if k.startswith(prefix)})

    def format(self, value: float | None) -> str:
        """One value as a table shows it."""
        if value is None:
            return "-"
        return f"{100 * value:.2f}" if self.percent else f"{value:.2f}"


@dataclass
class Measurement:
    """What an evaluator measured on one model.

    Attributes:
        columns: ``{row key: value}`` (None: undefined, e.g. AUROC when every prediction is
            right), the keys among the evaluator's :attr:`~Evaluator.columns`.
        details: Anything else worth keeping in the evaluation file (nested results, the plan).
    """

    columns: dict[str, float | None]
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class NoSettings(Settings):
    """An evaluator without settings."""


class ResultView(Protocol):
    """The tables an experiment report offers evaluators (implemented by
    :class:`merdg.experiments.report.ExperimentView`): every method reads the rows of the
    report's runs at its epoch rule, with the report's trial choices and replicates."""

    rule: str
    reference: str
    epochs_words: str  # how the rule chose the epochs, for titles
    spread_words: str  # what the tables' ± is ("mean ± sample std"), for titles
    error: str  # "std" or "se": the spread the tables and figures show

    def at_rule(self, rule: str) -> ResultView:
        """The same view at another epoch rule."""

    def has(self, column: Column) -> bool:
        """Some run has the column (a member, for a family)."""

    def members(self, column: Column) -> list[str]:
        """The members of a family present in the rows."""

    def main_tables(self, column: Column, what: str) -> str:
        """Per-target tables of the column, titled like the main table."""

    def average_tables(self, columns: Sequence[tuple[str, str]], what: str) -> str:
        """One row per (modality set, algorithm), one column per ``(row key, header)``, each
        cell averaged over the table's targets as the main table's ``avg``."""

    def paired(self, column: Column, what: str, words: bool = False) -> str:
        """Paired differences of the column against the reference algorithm."""

    def averages(self, keys: Sequence[str]) -> dict[tuple[str, str, str], list[Any]]:
        """``{(table heading, modalities, algorithm): [avg cell of each key, or None]}`` (cells
        have ``mean``, ``std``, ``se``, ``n``) over every (dataset, settings) table."""


def settings_hash(name: str, settings: Mapping[str, Any]) -> str:
    """Short hash of an evaluator's settings (names its evaluation files)."""
    text = json.dumps({"evaluator": name, "settings": settings}, sort_keys=True)
    return hashlib.md5(text.encode()).hexdigest()[:10]


class Evaluator:
    """Base of the evaluators (module docstring).

    Class attributes:
        name: The registered name, the key of ``RunConfig.evaluations``.
        description: One line (``merdg list evaluators``).
        Settings: Its settings class (fields declared with :func:`merdg.options.setting`).
        times: When it runs: a subset of ``{"epoch", "init", "model"}``.
        always: Runs in every run it applies to, without being asked (clean accuracy,
            selective prediction, open set); the others run when asked: by their
            ``request_flag`` (a switch) or by giving their settings.
        request_flag / request_help: The switch that asks for an evaluator whose settings all
            have defaults (e.g. ``--eval-missing``), and its help text.
        columns: Its result columns.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Settings: ClassVar[type[Settings]] = NoSettings
    times: ClassVar[frozenset[str]] = frozenset({MODEL})
    always: ClassVar[bool] = False
    request_flag: ClassVar[str | None] = None
    request_help: ClassVar[str] = ""
    columns: ClassVar[tuple[Column, ...]] = ()

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings  # None: an evaluator that only reports (:meth:`reporter`)

    # --- settings --------------------------------------------------------------------------

    @classmethod
    def canonical(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        """Checked settings with defaults filled in, as stored in ``RunConfig.evaluations``.

        Raises:
            ValueError: One line naming the setting's flag, the value and what is allowed.
        """
        if not isinstance(values, Mapping):
            raise ValueError(f"evaluations[{cls.name!r}] must be a JSON object of settings, "
                             f"got {values!r}")
        known = {n for n, _, _ in cls.Settings.options()}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"evaluator {cls.name!r} has no setting {unknown}; its settings: "
                             f"{sorted(known) or 'none'}")
        required = [(n, opt.flag) for n, opt, default in cls.Settings.options()
                    if default is dataclasses.MISSING and n not in values]
        if required:
            given = [cls.Settings.option_of(n).flag for n in values]
            names = " and ".join(n for n, _ in required)
            needs = " and ".join(flag for _, flag in required)
            raise ValueError(f"{', '.join(given)} only apply with {needs} ({names} is not set)"
                             if given else f"the {cls.name} evaluation needs {needs}")
        values = {n: ALL if cls.Settings.option_of(n).all_word and v == [ALL] else v
                  for n, v in values.items()}  # the command line's list form of the word
        settings = cls.Settings(**values)
        settings.validate()
        return cls.normalize(settings.to_dict())

    @classmethod
    def normalize(cls, values: dict[str, Any]) -> dict[str, Any]:
        """One spelling per meaning (e.g. sorted severities), after validation."""
        return values

    @classmethod
    def from_settings(cls, values: Mapping[str, Any] | None = None) -> Evaluator:
        """The evaluator with checked settings."""
        return cls(cls.Settings(**cls.canonical(values or {})))

    @classmethod
    def reporter(cls, settings: Mapping[str, Any] | None = None) -> Evaluator:
        """An evaluator that writes report sections (from rows; ``settings``: canonical
        settings that word them, or None)."""
        return cls(cls.Settings(**settings) if settings is not None else None)

    @property
    def settings_dict(self) -> dict[str, Any]:
        if self.settings is None:
            raise ValueError(f"the {self.name} evaluator has no settings (a reporter)")
        return self.settings.to_dict()

    def file_key(self) -> str:
        """``<name>-<hash of the settings>``: the evaluation file's name without the model."""
        return f"{self.name}-{settings_hash(self.name, self.settings_dict)}"

    # --- the run ---------------------------------------------------------------------------

    @classmethod
    def applies(cls, run: Any) -> bool:
        """Whether the evaluation means something for this run (``run``: the
        :class:`merdg.evaluators.context.RunSpec`); an evaluation that does not apply is left
        out without a word (e.g. a modality missing from a one-modality run)."""
        return True

    def check(self, run: Any) -> None:
        """Refuse, before any work, what cannot be evaluated on this run (``run``: the
        :class:`merdg.evaluators.context.RunSpec`).

        Raises:
            ValueError: One line naming the setting and the problem.
        """

    # --- measuring -------------------------------------------------------------------------

    def measure_init(self, context: Any) -> dict[str, Any]:
        """``"init"`` evaluators: what the untrained model gives, as entries of the run's info
        (``config.json``), which its ``"model"`` measurement reads back."""
        raise NotImplementedError

    def measure_epoch(self, context: Any) -> dict[str, Any]:
        """``"epoch"`` evaluators: the record entries of one epoch."""
        raise NotImplementedError

    def epoch_columns(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """``"epoch"`` evaluators: the row columns of one epoch record."""
        raise NotImplementedError

    def measure(self, context: Any) -> Measurement:
        """``"model"`` evaluators: the columns of a trained model
        (``context``: :class:`merdg.evaluators.context.EvaluationContext`)."""
        raise NotImplementedError

    @classmethod
    def legacy_columns(cls, record: Mapping[str, Any], run: Mapping[str, Any]) -> dict[str, Any]:
        """Its columns from an epoch record of an earlier version, which kept the evaluation
        inside the record ({} when there is none)."""
        return {}

    # --- reporting -------------------------------------------------------------------------

    def headline(self, view: ResultView) -> str:
        """Markdown added to ``table.md`` after the main tables ("" by default)."""
        return ""

    def report(self, view: ResultView) -> list[str]:
        """Markdown lines of the report's section ([] when the rows hold none of its
        columns)."""
        return []

    def files(self, view: ResultView, out_dir: Path) -> list[Path]:
        """Files of its own written next to ``table.md`` (tables, figures; the report links
        them), by ``merdg bench``, ``sweep`` and ``collect``."""
        return []

    def console(self, view: ResultView) -> str:
        """What ``merdg bench``, ``sweep`` and ``collect`` print after the main tables ("" by
        default)."""
        return ""

    def describe(self) -> str:
        """One line naming the evaluation and its settings (logs)."""
        settings = ", ".join(f"{k} {v}" for k, v in self.settings_dict.items())
        return self.name + (f" ({settings})" if settings else "")


def column_keys(columns: Sequence[Column], row_keys: Iterable[str]) -> list[str]:
    """Every row key of ``columns`` present among ``row_keys`` (families expanded)."""
    keys = list(row_keys)
    out = []
    for column in columns:
        if column.family:
            out += [column.key(m) for m in column.members(keys)]
        elif column.name in keys:
            out.append(column.name)
    return out
