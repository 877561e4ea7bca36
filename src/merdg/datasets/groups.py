"""Groups of samples that must stay on one side of a holdout, and the check that guesses them.

Sensor and audio data are usually cut into (overlapping) windows of longer recordings. A random
holdout of single windows then puts windows that overlap training windows into validation, and
source-validation accuracy no longer measures generalization. A *group* (recording, session or
subject id) names the samples that must stay together: :func:`merdg.datasets.base.holdout_indices`
keeps each group on one side.

When a data set declares no groups, :func:`windowed_stems` applies this heuristic to the sample
ids: an id *looks like a window* when it ends in a number and, with that number removed, shares
the rest (its *stem*, e.g. ``p01_walk_`` for ``p01_walk_17``) with at least one other id. When at
least half of the ids look like windows and they come from at least two stems, the ids look like
windows (or repetitions) of a few recordings, and ``merdg data check`` warns.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence

__all__ = ["describe_groups", "group_summary", "split_leaks", "windowed_stems", "windows_warning"]

_TRAILING_NUMBER = re.compile(r"^(.*?)(\d+)$")


def windowed_stems(ids: Sequence[str], min_share: float = 0.5) -> dict[str, list[str]]:
    """Stems shared by several ids that end in a number, when such ids are at least
    ``min_share`` of ``ids`` and come from at least two stems; else ``{}``.

    Returns:
        ``{stem: [ids]}`` of the stems with two or more ids, largest first.
    """
    stems: dict[str, list[str]] = defaultdict(list)
    for sid in ids:
        match = _TRAILING_NUMBER.match(sid)
        if match:
            stems[match.group(1)].append(sid)
    shared = {s: members for s, members in stems.items() if len(members) >= 2}
    covered = sum(len(members) for members in shared.values())
    if len(shared) < 2 or covered < min_share * len(ids):
        return {}
    return dict(sorted(shared.items(), key=lambda kv: (-len(kv[1]), kv[0])))


def windows_warning(ids: Sequence[str]) -> str | None:
    """The ``data check`` warning for a data set without groups whose ids look like windows of
    a few recordings (see the module docstring), or None."""
    stems = windowed_stems(ids)
    if not stems:
        return None
    covered = sum(len(v) for v in stems.values())
    stem, members = next(iter(stems.items()))
    example = ", ".join(members[:3]) + (", ..." if len(members) > 3 else "")
    return (f"warning: no 'group' column, and the sample ids look like windows (or repetitions) "
            f"of a few recordings: {covered} of {len(ids)} ids end in a number and share the rest "
            f"with other ids ({len(stems)} such stems, e.g. {stem!r} x {len(members)}: "
            f"{example}). The random holdout then puts windows that overlap training windows "
            "into validation, which inflates source-validation accuracy and hides differences "
            "between settings. Add a 'group' column naming each sample's recording, session or "
            "subject (e.g. the stem); the holdout keeps each group on one side")


def group_summary(domains: Sequence[str], groups: Sequence[str]) -> dict[str, tuple[int, int, int]]:
    """``{domain: (groups, smallest, largest group size)}`` of samples with these domains and
    groups (groups are counted within their domain)."""
    sizes: dict[str, Counter] = defaultdict(Counter)
    for d, g in zip(domains, groups):
        sizes[d][g] += 1
    return {d: (len(c), min(c.values()), max(c.values())) for d, c in sizes.items()}


def split_leaks(domains: Sequence[str], groups: Sequence[str], splits: Sequence[str]
                ) -> dict[str, list[str]]:
    """``{domain: [groups with rows in more than one split]}`` (only domains that have some)."""
    seen: dict[tuple[str, str], set[str]] = defaultdict(set)
    for d, g, s in zip(domains, groups, splits):
        seen[(d, g)].add(s)
    leaks: dict[str, list[str]] = defaultdict(list)
    for (d, g), used in seen.items():
        if len(used) > 1:
            leaks[d].append(g)
    return dict(leaks)


def describe_groups(summary: Mapping[str, tuple[int, int, int]], order: Sequence[str]) -> str:
    """One line: groups per domain and their sizes."""
    return "groups per domain (the holdout keeps each group on one side): " + "; ".join(
        f"{d}: {summary[d][0]} (" + (f"{summary[d][1]}" if summary[d][1] == summary[d][2]
                                     else f"{summary[d][1]}-{summary[d][2]}") + " samples each)"
        for d in order if d in summary)
