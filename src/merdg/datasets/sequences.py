"""How the arrays of one modality become one stacked array: the length policy.

The arrays of a modality share a shape, or share every axis but the first, which is then time:
sequences ``(T, C)`` or frame clips ``(T, H, W)`` of varying ``T``. To stack them, every
sequence is brought to one length by the *length policy*:

- ``"resample"`` (default): linear interpolation in time to ``length`` frames (default: the
  longest sequence), so every sample spans its whole recording at a different frame rate;
- ``"pad"``: zero-padded at the end to ``length`` frames (default: the longest); a sequence
  longer than an explicit ``length`` is cut at the end. The valid steps of each sample are
  kept, normalization is fitted on them only, padded steps stay exactly 0, and the ``tcn`` and
  ``cnn3d`` encoders (``mask_padding=True``) pool over the valid steps only;
- ``"crop"``: the middle ``length`` frames (default: the shortest sequence, so nothing is
  padded); a sequence shorter than an explicit ``length`` is an error.

:func:`plan_modality` decides the stacked shape from the arrays' shapes alone (read from the
``.npy`` headers, before any array is stacked) and :meth:`SequencePlan.describe` is what
``merdg data check`` prints.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from merdg.datasets.preprocessing import LENGTH_POLICIES, fit_time_axis
from merdg.datasets.untrusted import one_line

__all__ = ["LENGTH_POLICIES", "SequencePlan", "check_length_policy", "plan_modality"]


def check_length_policy(policy: str) -> str:
    """``policy`` if it is one of :data:`LENGTH_POLICIES`, else a ValueError naming the option."""
    if policy not in LENGTH_POLICIES:
        raise ValueError(f"dataset option length_policy must be one of {list(LENGTH_POLICIES)}, "
                         f"got {policy!r}")
    return policy


@dataclass(frozen=True)
class SequencePlan:
    """How one modality is stacked.

    Attributes:
        modality: The modality.
        policy: The length policy (``"resample"``, ``"pad"``, ``"crop"``), or ``"none"`` when
            nothing is brought to a length (vectors, or sequences that all have ``length``
            frames already).
        raw_shape: Shape of one raw sample with the time axis as ``(min, max)`` frames, e.g.
            ``((12, 40), 60, 80)``; vectors keep their shape.
        sample_shape: Shape of one stacked sample, e.g. ``(40, 60, 80)``.
        padded: Some samples are zero-padded (policy ``"pad"`` with a sequence shorter than the
            length): the encoders must mask the padded steps.
    """

    modality: str
    policy: str
    raw_shape: tuple[Any, ...]
    sample_shape: tuple[int, ...]
    padded: bool

    @property
    def length(self) -> int | None:
        """Frames of every stacked sequence (None for vectors)."""
        return self.sample_shape[0] if isinstance(self.raw_shape[0], tuple) else None

    def fit(self, array: np.ndarray) -> np.ndarray:
        """One sample brought to :attr:`sample_shape` (float32 in, float32 out)."""
        if self.policy == "none":
            return array
        return fit_time_axis(array, self.sample_shape[0], self.policy)

    def valid_steps(self, frames: int) -> int:
        """Steps of a ``frames``-long sequence that are data, not padding, once fitted."""
        return min(frames, self.sample_shape[0]) if self.padded else self.sample_shape[0]

    def describe(self) -> str:
        """One line for ``merdg data check``."""
        if not isinstance(self.raw_shape[0], tuple):
            return f"{self.modality}: sample shape {self.sample_shape}"
        lo, hi = self.raw_shape[0]
        raw = "(" + ", ".join([f"T {lo}-{hi}" if lo != hi else f"T {lo}",
                               *map(str, self.raw_shape[1:])]) + ")"
        length = self.sample_shape[0]
        if self.policy == "none":
            how = "every sample has the same length, kept as is"
        elif self.policy == "resample":
            how = f"length_policy=resample: linear interpolation to {length} frames"
        elif self.policy == "pad":
            how = (f"length_policy=pad: zero-padded at the end to {length} frames"
                   + (f", sequences over {length} cut at the end" if hi > length else "")
                   + ("; the padded steps are masked (tcn/cnn3d encoders)" if self.padded
                      else ""))
        else:
            how = f"length_policy=crop: the middle {length} frames"
        return f"{self.modality}: raw {raw} -> sample shape {self.sample_shape} ({how})"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready record of the plan (for the run's records)."""
        out = asdict(self)
        out["raw_shape"] = [list(v) if isinstance(v, tuple) else v for v in self.raw_shape]
        out["sample_shape"] = list(self.sample_shape)
        return out


def _stack_key(shape: tuple[int, ...]) -> tuple[int, ...]:
    """What must agree between samples: the rank, and every axis but the first (time) of a
    sequence (a vector's whole shape)."""
    return (len(shape), *(shape[1:] if len(shape) >= 2 else shape))


def plan_modality(shapes: Sequence[tuple[int, ...]], ids: Sequence[str], modality: str,
                  length: int | None, policy: str) -> tuple[SequencePlan | None, list[str]]:
    """Decide how the arrays of ``modality`` (their ``shapes``) stack.

    Args:
        shapes: Shape of each sample's array.
        ids: Each sample's id (for problems).
        modality: The modality's name.
        length: Frames to bring sequences to (None: the policy's default).
        policy: ``"resample"``, ``"pad"`` or ``"crop"``.

    Returns:
        (plan, []) or (None, one problem per sample that does not fit).
    """
    check_length_policy(policy)
    if length is not None and (not isinstance(length, int) or isinstance(length, bool)
                               or length < 1):
        raise ValueError(f"dataset option length for {modality!r} must be a positive integer, "
                         f"got {length!r}")
    if not shapes:
        return None, []
    keys = Counter(_stack_key(s) for s in shapes)
    if len(keys) > 1 or (len(shapes[0]) < 2 and len(set(shapes)) > 1):
        common = keys.most_common(1)[0][0]
        example = next(s for s in shapes if _stack_key(s) == common)
        return None, [f"sample {one_line(i)} ({modality}): shape {s} does not stack with the "
                      f"modality's other arrays (most have shape {example}); arrays must "
                      "share a shape, or every axis but the first"
                      for s, i in zip(shapes, ids) if _stack_key(s) != common]
    if len(shapes[0]) < 2:
        return SequencePlan(modality, "none", shapes[0], shapes[0], False), []
    frames = [s[0] for s in shapes]
    lo, hi, rest = min(frames), max(frames), shapes[0][1:]
    if length is None and lo == hi:
        return SequencePlan(modality, "none", ((lo, hi), *rest), shapes[0], False), []
    target = length or (lo if policy == "crop" else hi)
    if policy == "crop" and lo < target:
        return None, [f"sample {one_line(i)} ({modality}): {s[0]} frames, fewer than the "
                      f"{target} that length_policy=crop keeps; use length_policy=pad or "
                      "resample, or a smaller length" for s, i in zip(shapes, ids)
                      if s[0] < target]
    padded = policy == "pad" and lo < target
    return SequencePlan(modality, policy, ((lo, hi), *rest), (target, *rest), padded), []
