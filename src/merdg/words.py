"""Counted nouns in messages: ``1 job``, ``3 jobs``, ``an unfinished run``."""

from __future__ import annotations

__all__ = ["a", "count"]


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and the noun in the number it takes: ``count(1, "job")`` is ``"1 job"``,
    ``count(3, "job")`` ``"3 jobs"``, ``count(2, "directory", "directories")`` ``"2
    directories"``."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def a(word: str) -> str:
    """``word`` with its indefinite article: ``"a finished"``, ``"an unfinished"``."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"
