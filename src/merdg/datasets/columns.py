"""Several candidate domain definitions in one data set, and the row filter ``where``.

Real recordings carry more than one attribute that could define the domains: the subject, the
session, the device placement, an age group. A data set that records several of them (the
``domain:NAME`` columns of a manifest, the subject and trial of UTD-MHAD) lets a run choose one
with the dataset option ``domain_column=NAME`` and select rows with ``where``, so that
"pretrain on these subjects, benchmark the placement domains on the others" is two commands on
one data set (docs/manifest.md, "Several domain definitions").

``where`` keeps the rows that satisfy every condition; a condition keeps the rows whose column
holds one of its values::

    where=subject:p01,p02            # subject is p01 or p02
    where=subject:p01,p02;session:s1 # ... and session is s1 (quote it in a shell: ';')

The same selection as JSON (``where={"subject": ["p01", "p02"], "session": "s1"}``) or, from
Python, a mapping or a list of condition strings. The syntax is checked before any file is read
(:func:`parse_where`); the columns and values against the data set's rows before any array is
read (:func:`select_rows`): an unknown column, a value that no row holds or an empty selection
is a one-line ``ValueError``.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from merdg.datasets.untrusted import one_line

__all__ = ["Where", "check_enough_domains", "describe_columns", "format_where", "natural_sorted",
           "parse_where", "select_rows"]

Where = dict[str, tuple[str, ...]]
"""``{column: accepted values}``, in the order given; a row is kept when every column holds
one of its accepted values."""

SYNTAX = "COLUMN:VALUE[,VALUE...][;COLUMN:VALUE[,VALUE...]...]"
SHOWN_VALUES = 20  # values named in an error message
LISTED_VALUES = 50  # values listed per column by `data check`


def natural_sorted(values: Sequence[str] | set[str]) -> list[str]:
    """Sorted numerically when every value is an integer, else as strings."""
    if all(re.fullmatch(r"-?[0-9]+", v) for v in values):
        return sorted(values, key=int)
    return sorted(values)


def _bad(spec: Any, why: str) -> ValueError:
    return ValueError(f"dataset option where={one_line(spec)!s}: {why} (expected {SYNTAX}, or a "
                      'JSON object such as {"subject": ["p01", "p02"]})')


def _value_text(spec: Any, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _bad(spec, f"value {value!r} is not a string or a number")
    text = str(value).strip()
    if not text:
        raise _bad(spec, "an empty value")
    return text


def _condition(spec: Any, text: str) -> tuple[str, tuple[str, ...]]:
    """``"COLUMN:V1,V2"`` -> ``("COLUMN", ("V1", "V2"))``."""
    column, colon, values = text.partition(":")
    if not colon:
        raise _bad(spec, f"condition {text.strip()!r} has no ':' between a column and its values")
    if not column.strip():
        raise _bad(spec, f"condition {text.strip()!r} names no column before ':'")
    parts = [v.strip() for v in values.split(",")]
    if not any(parts) or not all(parts):
        raise _bad(spec, f"condition {text.strip()!r} has an empty value")
    return column.strip(), tuple(parts)


def parse_where(spec: str | Mapping[str, Any] | Sequence[str] | None) -> Where:
    """The conditions of a ``where`` option (empty for None).

    Args:
        spec: ``"COLUMN:V1,V2;COLUMN2:V3"``, a mapping ``{column: value or [values]}`` (what
            ``--dataset-option where={...}`` parses to) or a list of condition strings.

    Raises:
        ValueError: Anything else, an empty condition or value, or a column named twice; the
            message shows the option and the expected syntax.
    """
    if spec is None:
        return {}
    if isinstance(spec, str):
        items = [_condition(spec, part) for part in spec.split(";")]
    elif isinstance(spec, Mapping):
        items = []
        for column, values in spec.items():
            values = values if isinstance(values, (list, tuple)) else [values]
            if not str(column).strip() or not values:
                raise _bad(spec, f"condition {column!r}: {values!r} names no column or value")
            items.append((str(column).strip(), tuple(_value_text(spec, v) for v in values)))
    elif isinstance(spec, (list, tuple)) and all(isinstance(s, str) for s in spec) and spec:
        items = [_condition(spec, s) for s in spec]
    else:
        raise _bad(spec, f"a {type(spec).__name__}")
    where: Where = {}
    for column, values in items:
        if column in where:
            raise _bad(spec, f"column {column!r} appears in two conditions; list its values in "
                       "one (COLUMN:V1,V2)")
        where[column] = tuple(dict.fromkeys(values))  # repeated values: once
    return where


def format_where(where: Mapping[str, Sequence[str]]) -> str:
    """The option text of ``where`` (``subject:p01,p02;session:s1``)."""
    return ";".join(f"{c}:{','.join(v)}" for c, v in where.items())


def _shown(values: Sequence[str]) -> str:
    names = ", ".join(one_line(v) for v in values[:SHOWN_VALUES]) or "none"
    return names + (f", ... ({len(values)} in all)" if len(values) > SHOWN_VALUES else "")


def select_rows(table: Mapping[str, Sequence[str]], where: Mapping[str, Sequence[str]],
                row: str = "row") -> list[int]:
    """Positions of the rows that satisfy every condition of ``where``, in their order.

    Args:
        table: ``{column: each row's value}`` of every column ``where`` may name.
        where: The conditions (:func:`parse_where`).
        row: What a row is, for messages (``"row"``, ``"sample"``).

    Raises:
        ValueError: A column not in ``table`` (naming those that are), a value that no row
            holds (naming the column's values) or a selection without any row.
    """
    unknown = [c for c in where if c not in table]
    if unknown:
        raise ValueError(f"dataset option where={format_where(where)}: no column "
                         f"{one_line(unknown[0])!r} to select {row}s by; the columns are "
                         f"{', '.join(table) or 'none'}")
    for column, values in where.items():
        present = set(table[column])
        missing = [v for v in values if v not in present]
        if missing:
            raise ValueError(f"dataset option where={format_where(where)}: "
                             f"{'value' if len(missing) == 1 else 'values'} "
                             f"{', '.join(one_line(v) for v in missing)} of column {column!r} "
                             f"match{'es' if len(missing) == 1 else ''} no {row}; its values "
                             f"are {_shown(natural_sorted(present))}")
    size = len(next(iter(table.values()), ()))
    accepted = {c: set(v) for c, v in where.items()}
    keep = [i for i in range(size) if all(table[c][i] in ok for c, ok in accepted.items())]
    if not keep:
        raise ValueError(f"dataset option where={format_where(where)}: no {row} "
                         "satisfies every condition")
    return keep


def check_enough_domains(domains: Sequence[str], column: str,
                         where: Mapping[str, Sequence[str]]) -> None:
    """Refuse a selection that leaves fewer than two domains (nothing to generalize to).

    Raises:
        ValueError: Naming the domains left, the domain column and the ``where`` option.
    """
    if len(domains) < 2:
        raise ValueError(f"dataset option where={format_where(where)} leaves "
                         f"{len(domains)} domain{'' if len(domains) == 1 else 's'} "
                         f"({', '.join(map(one_line, domains)) or 'none'}) in the "
                         f"domain column {column!r}; domain generalization needs at least two: "
                         "select more of its values, or choose another domain_column")


def describe_columns(table: Mapping[str, Sequence[str]], labels: Sequence[str], in_use: str,
                     selected: int | None = None, where: Mapping[str, Sequence[str]] | None = None
                     ) -> list[str]:
    """``data check`` lines: each candidate domain column's values with their samples (and,
    when a value lacks some classes, how many it has), the one in use marked.

    Args:
        table: ``{column: each row's value}`` of the candidate domain columns (the rows a run
            reads).
        labels: Each row's class.
        in_use: The domain column of the run.
        selected / where: With a ``where`` option: rows selected out of how many.
    """
    lines = ["domain columns (choose one with --dataset-option domain_column=NAME, select rows "
             "with --dataset-option where=COLUMN:VALUE,...):"]
    n_classes = len(set(labels))
    for column, values in table.items():
        counts = Counter(values)
        classes: dict[str, set[str]] = defaultdict(set)
        for value, label in zip(values, labels):
            classes[value].add(label)
        order = natural_sorted(set(counts))
        cells = [f"{one_line(v)} {counts[v]}" + (
            f" ({len(classes[v])} of {n_classes} classes)" if len(classes[v]) < n_classes
            else "") for v in order[:LISTED_VALUES]]
        more = f", ... ({len(order) - LISTED_VALUES} more)" if len(order) > LISTED_VALUES else ""
        mark = " (in use)" if column == in_use else ""
        lines.append(f"  {column}{mark}: {len(order)} values: {', '.join(cells)}{more}")
    if where:
        lines.append(f"where={format_where(where)}: {len(labels)} of {selected} rows selected")
    return lines
