"""Late-fusion multimodal network: one encoder per modality, concatenation, the paper's classifier.

``forward`` returns the fused logits (one output per class; one value for a regression task),
each modality's embedding and the logits of a per-modality linear probe (one per class; a
regression task's sign classes). The probes read *detached* embeddings: they measure what each
encoder's features hold about the label (unimodal accuracy, ``docs/diagnostics.md``) without
changing training. Projection heads (MER-DG's input) are computed on demand by
:meth:`MultimodalNet.project`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from merdg.models.heads import ProjectionHead, fusion_head


class ModelOutput(NamedTuple):
    """Outputs of :class:`MultimodalNet`.

    Attributes:
        logits: Fused logits, shape (N, num_classes); a regression task's prediction, (N, 1).
        embeddings: ``{modality: (N, D_m)}`` encoder outputs (the fusion's inputs).
        probe_logits: ``{modality: (N, num_classes)}`` logits of the detached linear probes.
    """

    logits: Tensor
    embeddings: dict[str, Tensor]
    probe_logits: dict[str, Tensor]


class MultimodalNet(nn.Module):
    """Encoders (a ModuleDict keyed by modality) + concatenation fusion + classifier.

    Args:
        encoders: ``{modality: encoder}``; each encoder has an ``out_dim`` attribute.
        num_classes: Number of classes (of the probes; a regression task: its sign classes).
        order: Concatenation order of the modalities (default: sorted names). The official code
            concatenates [video, audio, flow]; give that order to load its fusion weights.
        fusion_hidden: Hidden width of the fusion classifier (official 512).
        dropout: Dropout of the fusion classifier (official 0.5).
        proj_hidden: Hidden width of the projection heads (official 2048).
        proj_dim: Output width of the projection heads (official 128).
        task: ``"classification"`` (one fused output per class) or ``"regression"`` (one).
        fusion: The fusion head (:func:`merdg.models.heads.fusion_head`: ``"mlp"``, the
            paper's; ``"linear"``; ``"residual"``).
    """

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        num_classes: int,
        order: Sequence[str] | None = None,
        fusion_hidden: int = 512,
        dropout: float = 0.5,
        proj_hidden: int = 2048,
        proj_dim: int = 128,
        task: str = "classification",
        fusion: str = "mlp",
    ) -> None:
        super().__init__()
        self.modalities = list(order) if order is not None else sorted(encoders)
        if sorted(self.modalities) != sorted(encoders):
            raise ValueError(f"order {self.modalities} does not match encoders {sorted(encoders)}")
        self.encoders = nn.ModuleDict({m: encoders[m] for m in self.modalities})
        self.dims = {m: int(encoders[m].out_dim) for m in self.modalities}
        if task not in ("classification", "regression"):
            raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
        self.num_classes = num_classes
        self.task = task
        outputs = 1 if task == "regression" else num_classes
        self.classifier = fusion_head(fusion, sum(self.dims.values()), outputs, fusion_hidden,
                                      dropout)
        self.projectors = nn.ModuleDict(
            {m: ProjectionHead(d, proj_hidden, proj_dim) for m, d in self.dims.items()}
        )
        self.probes = nn.ModuleDict({m: nn.Linear(d, num_classes) for m, d in self.dims.items()})

    def embed(self, x: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``{modality: (N, D_m)}`` for every modality of the network."""
        missing = [m for m in self.modalities if m not in x]
        if missing:
            raise KeyError(f"input lacks modalities {missing}; got {sorted(x)}")
        return {m: self.encoders[m](x[m]) for m in self.modalities}

    def fuse(self, embeddings: Mapping[str, Tensor], zero: Collection[str] = ()) -> Tensor:
        """Fused logits (N, C) from embeddings; modalities in ``zero`` are zero-filled."""
        parts = [torch.zeros_like(embeddings[m]) if m in zero else embeddings[m]
                 for m in self.modalities]
        return self.classifier(torch.cat(parts, dim=1))  # (N, sum D_m) -> (N, C)

    def project(self, embeddings: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``{modality: (N, proj_dim)}``: the projection heads' outputs (MER-DG's input)."""
        return {m: self.projectors[m](embeddings[m]) for m in self.modalities}

    def probe(self, embeddings: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``{modality: (N, C)}``: linear probes on detached embeddings."""
        return {m: self.probes[m](embeddings[m].detach()) for m in self.modalities}

    def forward(self, x: Mapping[str, Tensor], zero: Collection[str] = ()) -> ModelOutput:
        embeddings = self.embed(x)
        return ModelOutput(self.fuse(embeddings, zero), embeddings, self.probe(embeddings))
