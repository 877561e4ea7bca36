"""Start from pretrained encoders: load their weights, freeze parts of them.

Two operations on a network's encoders (a :class:`~merdg.models.MultimodalNet`, an algorithm
holding one as ``.net``, or a plain ``{modality: encoder}`` mapping), for every algorithm:

:func:`load_encoder_weights` copies encoder weights from a file or a state dict, strictly by
default (every tensor of every encoder loaded, names and shapes matched, nothing partial), and
returns a report per modality. Accepted layouts (detected from the keys):

====================  =======================================  ===============================
layout                keys                                      written by
====================  =======================================  ===============================
``run``               ``net.encoders.<modality>.<name>``        a run's ``model.pt``
                      (``{"state_dict": ..., "run": ...}``)     (``save_model``)
``net``               ``encoders.<modality>.<name>``            ``MultimodalNet.state_dict()``
``encoders``          ``<modality>.<name>``                     :mod:`merdg.run.pretraining`, or a
                                                                user's own encoders
====================  =======================================  ===============================

Keys of the file outside the encoders (fusion classifier, projection heads, probes, an
algorithm's extra networks) are reported as ignored. The file may hold the tensors directly or
under ``state_dict`` / ``model_state_dict``; a ``module.`` prefix on every key is removed. An
encoder saved inside MBCD's LayerNorm wrapper (``<modality>.encoder.<name>`` and
``<modality>.norm.<name>``) loads into the bare encoder (the wrapper's LayerNorm is reported as
ignored), and a bare encoder's weights load into a wrapped one (its LayerNorm is reported as
not loaded). Files are read with ``torch.load(weights_only=True)``
(:func:`merdg.models.pretrained.read_state_dict`, the reader of the paper checkpoints).

:func:`freeze` sets ``requires_grad=False`` on encoder parameters chosen by name prefix, or on
every block but the last of each encoder (``"all-but-last"``: every encoder lists its blocks in
forward order with ``block_names()``). The BatchNorm layers of the frozen part either keep
their running statistics (``bn="frozen"``: they normalize with them even when the model is in
``train()`` mode) or keep updating them from the batch (``bn="train"``). The paper's encoders
freeze their pretrained trunk with this same function (:mod:`merdg.models.paper_encoders`).
Freezing never unfreezes: call it before the optimizer is built (the optimizer takes the
parameters that require gradients).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from merdg.models.baseline_modules import LayerNormEncoder
from merdg.models.pretrained import (
    CheckpointError,
    LoadReport,
    StateMatch,
    match_state_dict,
    mismatch_message,
    read_state_dict,
)

__all__ = ["ALL_BUT_LAST", "BN_MODES", "EncoderLoadReport", "FreezeReport", "encoder_blocks",
           "freeze", "freeze_parameters", "hold_batchnorm_eval", "held_batchnorm_count",
           "load_encoder_weights",
           "read_encoder_state"]

ALL_BUT_LAST = "all-but-last"
BN_MODES = ("frozen", "train")
LAYOUT_PREFIXES = {"run": "net.encoders.", "net": "encoders.", "encoders": ""}
WRAPPER_KEYS = ("encoder.", "norm.")  # MBCD's LayerNormEncoder
INIT_HINT = ("Check that the file holds encoders built with the same encoder options (name, "
             "widths, layers, input shape) as this run's, or load the modalities that match "
             "with modalities=[...] (docs/regimes.md).")
TRUST_HINT = ("merdg loads pretrained encoder weights with weights_only=True only: save them as "
              "a plain state dict (torch.save(model.state_dict(), path)).")


# --------------------------------------------------------------------------------------------
# Loading


@dataclass
class EncoderLoadReport:
    """What :func:`load_encoder_weights` did.

    Attributes:
        source: The file (or ``"<state dict>"`` for an in-memory source).
        layout: ``"run"``, ``"net"`` or ``"encoders"`` (module docstring).
        encoders: ``{modality: LoadReport}`` of every modality loaded.
        ignored: File keys outside the encoders (e.g. ``net.classifier.*``).
        unused_modalities: Encoders of the file that the network does not have or that the
            caller did not ask for.
        strict: Whether the load was strict.
    """

    source: str
    layout: str
    encoders: dict[str, LoadReport]
    ignored: list[str] = field(default_factory=list)
    unused_modalities: list[str] = field(default_factory=list)
    strict: bool = True

    def summary(self) -> dict[str, Any]:
        """JSON-friendly digest for run records."""
        return {"source": self.source, "layout": self.layout, "strict": self.strict,
                "encoders": {m: r.summary() for m, r in self.encoders.items()},
                "ignored": _top_level_counts(self.ignored),
                "unused_modalities": list(self.unused_modalities)}

    def text(self) -> str:
        lines = [f"encoder weights from {self.source} (layout '{self.layout}'"
                 + (", strict)" if self.strict else ", NOT strict)")]
        for m, report in self.encoders.items():
            lines += [f"  {m}: loaded {report.loaded} tensors"]
            lines += [f"  {line}" for line in report.text().split("\n")[1:]]
        for prefix, n in _top_level_counts(self.ignored).items():
            lines.append(f"  ignored {n} tensors under {prefix} (not encoder weights)")
        if self.unused_modalities:
            lines.append(f"  encoders of the file not loaded: {self.unused_modalities}")
        return "\n".join(lines)


def _top_level_counts(keys: Sequence[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for key in keys:
        parts = key.split(".")
        prefix = ".".join(parts[:2] if parts[0] == "net" and len(parts) > 2 else parts[:1]) + "."
        counts[prefix] = counts.get(prefix, 0) + 1
    return counts


def _encoders_of(target: Any) -> dict[str, nn.Module]:
    """``{modality: encoder}`` of a MultimodalNet, an algorithm (``.net``) or a mapping."""
    if isinstance(target, (Mapping, nn.ModuleDict)):
        encoders = dict(target.items())
    elif isinstance(getattr(target, "encoders", None), nn.ModuleDict):
        encoders = dict(target.encoders.items())
    elif isinstance(getattr(getattr(target, "net", None), "encoders", None), nn.ModuleDict):
        encoders = dict(target.net.encoders.items())
    else:
        raise TypeError(f"expected a MultimodalNet, an algorithm with .net, or a "
                        f"{{modality: encoder}} mapping; got {type(target).__name__}")
    bad = [m for m, e in encoders.items() if not isinstance(e, nn.Module)]
    if bad:
        raise TypeError(f"encoders {bad} are not nn.Modules")
    return encoders


def read_encoder_state(source: str | Path | Mapping[str, Tensor],
                       ) -> tuple[dict[str, dict[str, Tensor]], str, list[str], str | None]:
    """Split a file's (or state dict's) tensors into encoders.

    Returns:
        ``({modality: {name: tensor}}, layout, ignored keys, entry)`` where ``entry`` is the
        dict entry the tensors came from (None for a bare state dict or an in-memory source).

    Raises:
        CheckpointError: Unreadable file, or no tensor that could be an encoder's.
    """
    name = _source_name(source)
    if isinstance(source, Mapping):
        state, entry = dict(source), None
        if not all(isinstance(v, Tensor) for v in state.values()):
            raise CheckpointError("the state dict given as source holds non-tensor values")
    else:
        state, entry = read_state_dict(str(source), trust=False, trust_hint=TRUST_HINT)
    layout = ("run" if any(k.startswith("net.encoders.") for k in state)
              else "net" if any(k.startswith("encoders.") for k in state) else "encoders")
    prefix = LAYOUT_PREFIXES[layout]
    encoders: dict[str, dict[str, Tensor]] = {}
    ignored = []
    for key, value in state.items():
        if not key.startswith(prefix) or "." not in key[len(prefix):]:
            ignored.append(key)
            continue
        modality, rest = key[len(prefix):].split(".", 1)
        encoders.setdefault(modality, {})[rest] = value
    if not encoders:
        raise CheckpointError(f"{name} holds no encoder weights: expected keys "
                              "'net.encoders.<modality>.*' (a run's model.pt), "
                              "'encoders.<modality>.*' or '<modality>.*'; found "
                              f"{sorted(state)[:10]}")
    return encoders, layout, sorted(ignored), entry


def _source_name(source: str | Path | Mapping[str, Tensor]) -> str:
    return "<state dict>" if isinstance(source, Mapping) else str(source)


@dataclass
class _Plan:
    """One modality's load: where its tensors go and what the match found."""

    module: nn.Module
    ignored: list[str]
    not_loaded: list[str]
    not_loaded_reason: str
    match: StateMatch


def _plan(encoder: nn.Module, state: dict[str, Tensor]) -> _Plan:
    """Match one encoder's tensors, unwrapping MBCD's LayerNorm wrapper on either side when the
    names do not match as they are."""
    direct = match_state_dict(encoder.state_dict(), state)
    if direct.exact:
        return _Plan(encoder, [], [], "", direct)
    file_wrapped = all(k.startswith(WRAPPER_KEYS) for k in state) and any(
        k.startswith("encoder.") for k in state)
    module_wrapped = isinstance(encoder, LayerNormEncoder)
    ignored, not_loaded, reason = [], [], ""
    if file_wrapped and not module_wrapped:
        ignored = sorted(k for k in state if k.startswith("norm."))
        state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    elif module_wrapped and not file_wrapped:
        not_loaded = sorted(f"norm.{k}" for k in encoder.norm.state_dict())
        reason = "the file holds a bare encoder; the LayerNorm of the MBCD wrapper keeps its init"
        encoder = encoder.encoder
    else:
        return _Plan(encoder, [], [], "", direct)
    return _Plan(encoder, ignored, not_loaded, reason,
                 match_state_dict(encoder.state_dict(), state))


def load_encoder_weights(target: Any, source: str | Path | Mapping[str, Tensor],
                         modalities: Sequence[str] | None = None,
                         strict: bool = True) -> EncoderLoadReport:
    """Copy encoder weights from ``source`` into the encoders of ``target``.

    Args:
        target: A :class:`~merdg.models.MultimodalNet`, an algorithm (its ``.net``) or a
            ``{modality: encoder}`` mapping.
        source: A file (a run's ``model.pt``, a saved ``MultimodalNet`` state dict, or a plain
            ``{"<modality>.<name>": tensor}`` state dict; module docstring) or such a state dict
            in memory.
        modalities: Encoders to load (default: every encoder of ``target``).
        strict: Require, for every loaded encoder, exactly its tensors with their shapes
            (``num_batches_tracked`` counters may be absent); otherwise nothing is loaded.
            False loads the tensors whose names and shapes match and reports the rest.

    Returns:
        The report (:meth:`EncoderLoadReport.text` for people, ``.summary()`` for records).

    Raises:
        CheckpointError: Unreadable file; a requested modality absent from the file; with
            ``strict``, any missing, unexpected or mis-shaped tensor (all listed, per modality).
        KeyError: A requested modality that ``target`` does not have.
    """
    encoders = _encoders_of(target)
    name = _source_name(source)
    states, layout, ignored, entry = read_encoder_state(source)
    wanted = list(encoders) if modalities is None else list(modalities)
    unknown = [m for m in wanted if m not in encoders]
    if unknown:
        raise KeyError(f"modalities {unknown} are not among the network's {list(encoders)}")
    absent = [m for m in wanted if m not in states]
    if absent:
        raise CheckpointError(
            f"{name} has no encoder for {absent}: it holds encoders {sorted(states)} (layout "
            f"'{layout}'). Load only the modalities it has with modalities=[...].")
    plans = {m: _plan(encoders[m], states[m]) for m in wanted}
    if strict:
        errors = [mismatch_message(name, f"the {m} encoder ({type(plans[m].module).__name__})",
                                   plans[m].match, hint="")
                  for m in wanted if not plans[m].match.exact]
        if errors:
            raise CheckpointError("\n".join(e.rstrip("\n") for e in errors) + "\n" + INIT_HINT)
    reports = {}
    for m in wanted:
        plan = plans[m]
        plan.module.load_state_dict(plan.match.usable, strict=False)
        reports[m] = LoadReport(name, entry, len(plan.match.usable), plan.ignored,
                                plan.not_loaded, plan.not_loaded_reason, plan.match.tolerated,
                                plan.match.missing, plan.match.unexpected, plan.match.mismatched)
    unused = sorted(m for m in states if m not in wanted)
    return EncoderLoadReport(name, layout, reports, ignored, unused, strict)


# --------------------------------------------------------------------------------------------
# Freezing


def _under(name: str, prefix: str) -> bool:
    """``name`` is ``prefix`` or lies inside it (module-name boundaries; ``""`` is the root)."""
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


def encoder_blocks(encoder: nn.Module) -> list[tuple[str, ...]]:
    """The encoder's blocks in forward order, each a tuple of submodule names.

    Every encoder class of merdg declares them with a ``block_names()`` method (a list whose
    items are a submodule name or a tuple of names that form one block, e.g. the slow and fast
    ``layer4`` of SlowFast). Encoders of your own need it for ``"all-but-last"``.

    Raises:
        TypeError: The encoder declares no blocks.
        ValueError: A declared name is not a submodule of the encoder.
    """
    if not callable(getattr(encoder, "block_names", None)):
        raise TypeError(f"{type(encoder).__name__} does not declare its blocks: give it a "
                        "block_names() method returning its submodule names in forward order "
                        "(one str or tuple of str per block) to freeze 'all-but-last'")
    blocks = [(b,) if isinstance(b, str) else tuple(b) for b in encoder.block_names()]
    modules = dict(encoder.named_modules())
    bad = [n for block in blocks for n in block if n not in modules]
    if bad or not blocks:
        raise ValueError(f"{type(encoder).__name__}.block_names() names {bad or 'no blocks'}; "
                         f"submodules: {[n for n in modules if n][:20]}")
    return blocks


def _hold_batchnorm_eval_hook(module: nn.Module, args: Any) -> None:
    """Forward pre-hook: the held BatchNorm layers normalize with their running statistics."""
    for name in module._merdg_held_batchnorm:
        module.get_submodule(name).train(False)


def hold_batchnorm_eval(module: nn.Module, prefixes: Sequence[str]) -> int:
    """Keep the BatchNorm layers of ``module`` under ``prefixes`` in eval mode, for good.

    The layers normalize with their running statistics and never update them, whatever
    ``train()`` calls happen: a forward pre-hook on ``module`` (an encoder) switches them to
    eval mode before every forward pass. The hook finds them by name, so it survives
    ``copy.deepcopy``, ``DistributedDataParallel`` and SyncBatchNorm conversion (which replace
    the layer objects, not their parent). Idempotent.

    Returns:
        The number of held BatchNorm layers of ``module`` (all calls together).
    """
    names = [n for n, m in module.named_modules()
             if isinstance(m, _BatchNorm) and any(_under(n, p) for p in prefixes)]
    held = tuple(getattr(module, "_merdg_held_batchnorm", ()))
    if names and not held:
        module.register_forward_pre_hook(_hold_batchnorm_eval_hook)
    module._merdg_held_batchnorm = held + tuple(n for n in names if n not in held)
    for name in names:
        module.get_submodule(name).train(False)
    return len(module._merdg_held_batchnorm)


def held_batchnorm_count(module: nn.Module) -> int:
    """BatchNorm layers of ``module`` held in eval mode by :func:`hold_batchnorm_eval` (on
    ``module`` or on any submodule, e.g. a paper encoder inside a wrapper)."""
    return sum(len(getattr(m, "_merdg_held_batchnorm", ())) for m in module.modules())


def freeze_parameters(module: nn.Module, prefixes: Sequence[str], bn: str = "frozen") -> int:
    """Freeze the parameters of ``module`` whose names lie under ``prefixes``.

    Args:
        module: An encoder; ``prefixes`` are relative to it (``""``: all of it).
        prefixes: Module or parameter names (boundaries respected: ``net.1`` is not ``net.10``).
        bn: ``"frozen"``: the BatchNorm layers under ``prefixes`` also keep their running
            statistics (:func:`hold_batchnorm_eval`); ``"train"``: they keep updating them.

    Returns:
        The number of parameter tensors frozen by this call.
    """
    if bn not in BN_MODES:
        raise ValueError(f"bn must be one of {BN_MODES}, got {bn!r}")
    frozen = 0
    for name, param in module.named_parameters():
        if param.requires_grad and any(_under(name, p) for p in prefixes):
            param.requires_grad_(False)
            frozen += 1
    if bn == "frozen":
        hold_batchnorm_eval(module, prefixes)
    return frozen


@dataclass
class FreezeReport:
    """The encoders' state after :func:`freeze`.

    Attributes:
        spec: ``"all-but-last"`` or the prefixes given.
        bn: ``"frozen"`` or ``"train"``.
        encoders: ``{modality: {"prefixes", "frozen_tensors", "frozen_params",
            "trainable_tensors", "trainable_params", "held_batchnorm"}}`` (params: scalars).
    """

    spec: str | list[str]
    bn: str
    encoders: dict[str, dict[str, Any]]

    def summary(self) -> dict[str, Any]:
        return {"spec": self.spec, "bn": self.bn, "encoders": self.encoders}

    def text(self) -> str:
        lines = [f"freeze {self.spec} (BatchNorm of the frozen part: {self.bn})"]
        for m, e in self.encoders.items():
            lines.append(f"  {m}: {e['frozen_tensors']} tensors ({e['frozen_params']:,} "
                         f"parameters) frozen, {e['trainable_tensors']} tensors "
                         f"({e['trainable_params']:,}) trainable, {e['held_batchnorm']} "
                         "BatchNorm layers with fixed statistics")
        return "\n".join(lines)


def _valid_prefixes(encoders: Mapping[str, nn.Module]) -> list[str]:
    out = []
    for m, encoder in encoders.items():
        out.append(m)
        out += [f"{m}.{n}" for n, child in encoder.named_children()
                if any(True for _ in child.parameters())]
    return out


def _split_prefixes(spec: str | Sequence[str],
                    encoders: Mapping[str, nn.Module]) -> dict[str, list[str]]:
    """``{modality: [prefixes relative to the encoder]}``; names may be written as in a run's
    ``model.pt`` (``net.encoders.m0.net.1``), a net's (``encoders.m0.net.1``) or relative to
    the encoders (``m0.net.1``)."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    per_modality: dict[str, list[str]] = {m: [] for m in encoders}
    for raw in items:
        prefix = raw.strip().rstrip(".")
        for layout_prefix in ("net.encoders.", "encoders."):
            if prefix.startswith(layout_prefix):
                prefix = prefix[len(layout_prefix):]
        modality, _, rest = prefix.partition(".")
        encoder = encoders.get(modality)
        names = [] if encoder is None else [n for n, _ in encoder.named_parameters()] + [
            n for n, m in encoder.named_modules() if isinstance(m, _BatchNorm)]
        if encoder is None or not any(_under(n, rest) for n in names):
            raise ValueError(f"freeze prefix {raw.strip()!r} matches no encoder parameter "
                             "(nor BatchNorm layer); "
                             f"valid prefixes start with one of {_valid_prefixes(encoders)} "
                             f"(or use '{ALL_BUT_LAST}')")
        per_modality[modality].append(rest)
    return per_modality


def freeze(target: Any, spec: str | Sequence[str], bn: str = "frozen") -> FreezeReport:
    """Freeze parts of the encoders of ``target``.

    Args:
        target: A :class:`~merdg.models.MultimodalNet`, an algorithm (its ``.net``) or a
            ``{modality: encoder}`` mapping.
        spec: ``"all-but-last"`` (every block of every encoder but its last,
            :func:`encoder_blocks`), or parameter-name prefixes as a list or a comma-separated
            string: ``"m0"`` (the whole m0 encoder), ``"m0.net.1"``, ``"net.encoders.m0.net.1"``.
        bn: ``"frozen"`` or ``"train"``: BatchNorm statistics of the frozen part
            (:func:`freeze_parameters`).

    Returns:
        The state of every encoder after freezing.

    Raises:
        ValueError: A prefix that matches no encoder parameter (the valid prefixes are listed),
            or an unknown ``bn``.
        TypeError: ``"all-but-last"`` on an encoder that does not declare its blocks.
    """
    if bn not in BN_MODES:
        raise ValueError(f"bn must be one of {BN_MODES}, got {bn!r}")
    encoders = _encoders_of(target)
    if isinstance(spec, str) and spec.strip() == ALL_BUT_LAST:
        prefixes = {m: [n for block in encoder_blocks(e)[:-1] for n in block]
                    for m, e in encoders.items()}
        shown: str | list[str] = ALL_BUT_LAST
    else:
        prefixes = _split_prefixes(spec, encoders)
        shown = [p.strip() for p in (spec.split(",") if isinstance(spec, str) else spec)]
    for m, encoder in encoders.items():
        if prefixes[m]:
            freeze_parameters(encoder, prefixes[m], bn)
    report = {}
    for m, encoder in encoders.items():
        params = list(encoder.parameters())
        trainable = [p for p in params if p.requires_grad]
        report[m] = {"prefixes": prefixes[m],
                     "frozen_tensors": len(params) - len(trainable),
                     "frozen_params": sum(p.numel() for p in params if not p.requires_grad),
                     "trainable_tensors": len(trainable),
                     "trainable_params": sum(p.numel() for p in trainable),
                     "held_batchnorm": held_batchnorm_count(encoder)}
    return FreezeReport(shown, bn, report)
