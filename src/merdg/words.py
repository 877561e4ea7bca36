"""Words in messages: counted nouns (``1 job``, ``3 jobs``), articles (``an unfinished run``),
enumerations (``bench, demo and sweep``)."""

from __future__ import annotations

__all__ = ["a", "count", "enumeration"]


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and the noun in the number it takes: ``count(1, "job")`` is ``"1 job"``,
    ``count(3, "job")`` ``"3 jobs"``, ``count(2, "directory", "directories")`` ``"2
    directories"``."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def a(word: str) -> str:
    """``word`` with its indefinite article: ``"a finished"``, ``"an unfinished"``."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def enumeration(items: list[str]) -> str:
    """``"x"``, ``"x and y"``, ``"x, y and z"``."""
    return " and ".join([", ".join(items[:-1]), items[-1]] if len(items) > 1 else items)
