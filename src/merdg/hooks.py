"""Attach MER-DG to an existing model: capture named submodules' outputs with forward hooks.

Example (a plain two-encoder PyTorch model, three added lines)::

    mer = merdg.MERLoss()
    tap = merdg.FeatureTap(model, {"video": "video_encoder", "audio": "audio_encoder"})
    loss = F.cross_entropy(model(x), y) + 3.0 * mer(tap.features)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor, nn

__all__ = ["FeatureTap", "POOLS"]


def _pool_none(out: Tensor) -> Tensor:
    return out


def _pool_flatten(out: Tensor) -> Tensor:
    return out.flatten(1)  # (N, ...) -> (N, prod(...))


def _pool_avg(out: Tensor) -> Tensor:
    """(N, C, *spatial) -> (N, C): mean over every dim after the channel dim (CNN feature maps)."""
    return out.flatten(2).mean(dim=2) if out.ndim > 2 else out


def _pool_tokens(out: Tensor) -> Tensor:
    """(N, L, C) -> (N, C): mean over the sequence dim (transformer tokens, RNN outputs)."""
    return out.mean(dim=1) if out.ndim == 3 else out


POOLS: dict[str, Callable[[Tensor], Tensor]] = {
    "none": _pool_none,
    "flatten": _pool_flatten,
    "avg": _pool_avg,
    "tokens": _pool_tokens,
}


class FeatureTap:
    """Record the outputs of named submodules on every forward pass of ``model``.

    Args:
        model: The user's model. Its structure is not changed; hooks are added and removable.
        modules: ``{modality: submodule name}``, names as in ``model.named_modules()``
            (e.g. ``"backbone.rgb"``).
        pool: How to turn each captured output into (batch, dim): ``"none"`` (default; the output
            must already be 2-D), ``"flatten"``, ``"avg"`` (mean over dims after the channel dim,
            for (N, C, T, H, W) maps), ``"tokens"`` (mean over dim 1 of (N, L, C)), a callable, or a
            mapping ``{modality: one of those}``. Pooling is never guessed.
        select: Optional callable applied to a submodule's raw output before pooling, for modules
            returning tuples or dicts (e.g. ``lambda out: out[1]``).

    The captured features are reset at the start of every forward pass of ``model``, so a
    feature can never be stale. Use as a context manager or call :meth:`remove`.

    Raises:
        KeyError: A submodule name does not exist in ``model`` (the message lists close names).
        ValueError: ``pool`` names an unknown pooling.
    """

    def __init__(
        self,
        model: nn.Module,
        modules: Mapping[str, str],
        pool: str | Callable | Mapping[str, str | Callable] = "none",
        select: Callable[[Any], Tensor] | None = None,
    ) -> None:
        if not modules:
            raise ValueError("FeatureTap needs at least one {modality: submodule name}")
        named = dict(model.named_modules())
        self._features: dict[str, Tensor] = {}
        self._handles = [model.register_forward_pre_hook(lambda *_: self._features.clear())]
        self._select = select
        for modality, name in modules.items():
            if name not in named:
                raise KeyError(_unknown_module_message(name, named))
            pool_fn = self._resolve_pool(pool[modality] if isinstance(pool, Mapping) else pool)
            hook = self._make_hook(modality, name, pool_fn)
            self._handles.append(named[name].register_forward_hook(hook))
        self.modalities = sorted(modules)

    @staticmethod
    def _resolve_pool(pool: str | Callable) -> Callable[[Tensor], Tensor]:
        if callable(pool):
            return pool
        if pool not in POOLS:
            raise ValueError(f"unknown pool {pool!r}; choose one of {sorted(POOLS)} or a callable")
        return POOLS[pool]

    def _make_hook(self, modality: str, name: str, pool_fn: Callable) -> Callable:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            out = self._select(output) if self._select is not None else output
            if not isinstance(out, Tensor):
                raise TypeError(
                    f"FeatureTap: submodule {name!r} ({modality}) returned "
                    f"{type(out).__name__}; pass select= to pick the feature tensor"
                )
            feats = pool_fn(out)
            if feats.ndim != 2:
                raise ValueError(
                    f"FeatureTap: submodule {name!r} ({modality}) gives shape "
                    f"{tuple(feats.shape)} after pooling; choose pool='avg', 'flatten' or "
                    "'tokens' (or a callable) to reach (batch, dim)"
                )
            self._features[modality] = feats

        return hook

    @property
    def features(self) -> dict[str, Tensor]:
        """``{modality: (batch, dim)}`` captured during the last forward pass of the model.

        Raises:
            RuntimeError: Some tapped submodule did not run during the last forward pass.
        """
        missing = [m for m in self.modalities if m not in self._features]
        if missing:
            raise RuntimeError(
                f"FeatureTap: no output captured for {missing} in the last forward pass "
                "(run the model first; was the submodule skipped?)"
            )
        return dict(self._features)

    def remove(self) -> None:
        """Remove every hook; the model is left as it was."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._features.clear()

    def __enter__(self) -> FeatureTap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def _unknown_module_message(name: str, named: Mapping[str, nn.Module]) -> str:
    import difflib

    close = difflib.get_close_matches(name, [n for n in named if n], n=5)
    hint = f"; close names: {close}" if close else ""
    return f"FeatureTap: the model has no submodule named {name!r}{hint}"
