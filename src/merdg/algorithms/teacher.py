r"""Methods with a moving-average teacher that is also the evaluated model: CMRF and MBCD.

**CMRF** (Fan et al., NeurIPS 2024; flags ``--CM_mixup --SMA --contrast --distill
--vanilla_learning``). Projectors :math:`P_m` map every modality's full embedding into one
L2-normalized space. A simple moving average (SMA) of the student, started after
``sma_start_step`` steps, interpolates between modalities in that space: for a pair (a, b),
:math:`\text{mix}_a = \lambda_1 t_a + (1-\lambda_1) t_b` with :math:`\lambda_1 \ge 0.5` (near a)
and :math:`\text{mix}_b = \lambda_2 t_a + (1-\lambda_2) t_b` with :math:`\lambda_2 \le 0.5`,
:math:`\lambda \sim \mathrm{Beta}(\alpha, \alpha)` per sample. Each student projection is pulled
towards its mixes (one per pair it belongs to):

.. math::

    L = \mathrm{CE}(\hat y) + c_\text{mix} \sum_m w_m \mathrm{CE}(h_m(z_m))
        + \alpha_\text{con} \mathrm{SupCon}(\{P_m(z_m)\}, y)
        + c_\text{dist} \sum_{\text{pairs}} \sum_{m \in \text{pair}} w_m\,
          \bigl\lVert n(\text{mix}_m) - n(P_m(z_m)) \bigr\rVert

(:math:`w_m` = ``modality_weights``; the official EPIC/HAC scripts hard-code 1/2 for audio).
The SMA teacher is evaluated.

**MBCD** (AAAI 2026, MMDG-Bench re-implementation). LayerNorm on every embedding; per-modality
MLP heads with CE :math:`L_k`; the fused prediction uses embeddings computed one SGD step of
``inner_lr`` down each :math:`L_k` (first-order look-ahead: the gradient-consistency term
:math:`-\eta\,\nabla L_k \cdot \nabla L_{mm}`), with adaptive modality dropout of the more
confident modalities; an EMA teacher (its decay warmed up, ``ema_warmup``) distils into the
fused and unimodal predictions:

.. math::

    L = L_{mm} + \sum_k L_k + c_{mm} \mathrm{KL}(p_\text{EMA} \Vert p_{mm})
        + c_{um} \sum_k \mathrm{KL}(p_\text{EMA} \Vert p_k)

The EMA teacher is evaluated. Both add MER-DG on their own projections (CMRF) or the network's
projection heads (MBCD).

References:
    - Fan et al., "Cross-modal Representation Flattening for Multi-modal Domain
      Generalization", NeurIPS 2024, https://openreview.net/forum?id=UixTytSVOl
    - Wang et al., "MBCD", AAAI 2026, https://arxiv.org/abs/2511.20258
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from merdg import dist
from merdg.algorithms.base import ALGORITHMS, Algorithm, EvalOutput, Objective
from merdg.algorithms.building_blocks import (
    MovingAverage,
    lookahead_forward,
    modality_drop_probabilities,
    sample_mix_coefficients,
    unimodal_heads,
    weighted_sum,
)
from merdg.datasets.base import Batch
from merdg.hparams import HParam
from merdg.losses import supcon_loss, translation_loss
from merdg.models import FusionClassifier, ModelOutput, MultimodalNet, ProjectionHead
from merdg.models.baseline_modules import LayerNormEncoder

__all__ = ["CMRF", "MBCD"]


class _TeacherEvaluated(Algorithm):
    """Evaluates ``self.teacher["net"]`` and updates the teacher after every optimizer step."""

    teacher: MovingAverage

    def apply_update(self, objective: Objective) -> dict[str, float]:
        logs = super().apply_update(objective)
        self.teacher.update()
        if self.teacher.mode == "ema":  # recorded so that a teacher still near init shows
            logs["teacher_init_share"] = self.teacher.init_share()
        return logs

    @torch.no_grad()
    def evaluate(self, x: Mapping[str, Tensor], zero: Collection[str] = ()) -> EvalOutput:
        """Fused and probe logits of the moving-average teacher."""
        with self.autocast():
            out = self.teacher.average["net"](x, zero=zero)
        return EvalOutput(out.logits, out.probe_logits)


@ALGORITHMS.register("CMRF")
class CMRF(_TeacherEvaluated):
    """Cross-modal representation flattening: SMA-teacher cross-modal mixup distillation."""

    MIN_BATCH = 2
    MIN_BATCH_REASON = "its projection heads use BatchNorm and SupCon needs other samples"
    REGRESSION = ("L1 of the fused output; linear unimodal heads with CE and SupCon on the sign "
                  "class (MMDG-Bench's MMSA CMRF: 3 tanh regressor heads with L1); the mixup "
                  "distillation is label-free; the SMA teacher is evaluated")

    HPARAMS = {
        "distill_coef": HParam(3.0, "weight of the mixup distillation (official 3.0)",
                               ("uniform", 0.0, 5.0), kind="float", low=0),
        "mix_coef": HParam(2.0, "weight of the unimodal CE (official 2.0)", ("uniform", 0.0, 5.0),
                           kind="float", low=0),
        "mix_alpha": HParam(0.1, "alpha of the Beta mixing distribution (official 0.1)",
                            kind="float", low=0, low_open=True),
        "alpha_contrast": HParam(3.0, "weight of SupCon on the projections (official 3.0)",
                                 kind="float", low=0),
        "temperature": HParam(0.1, "SupCon temperature; base temperature 0.07 (official 0.1)",
                              kind="float", low=0, low_open=True),
        "sma_start_step": HParam(400, "steps before the SMA starts (official: 400 EPIC, 100 HAC)",
                                 kind="int", low=0),
        "modality_weights": HParam({}, "per-modality weight of the unimodal CE and distillation "
                                   "terms, default 1 (official EPIC/HAC: {\"audio\": 0.5})",
                                   kind="dict", low=0),
    }

    def __init__(self, net: MultimodalNet, num_domains: int, hparams: Mapping[str, Any]) -> None:
        super().__init__(net, num_domains, hparams)
        hp = self.hparams
        self.weights = {self.fused_term: 1.0, "probe_ce": 1.0, "uni_ce": float(hp["mix_coef"]),
                        "supcon": float(hp["alpha_contrast"]),
                        "distill": float(hp["distill_coef"])}
        self.mix_alpha, self.temperature = float(hp["mix_alpha"]), float(hp["temperature"])
        unknown = sorted(set(hp["modality_weights"]) - set(self.modalities))
        if unknown:
            raise ValueError(f"modality_weights names {unknown}, not among {self.modalities}")
        self.modality_weight = {m: float(hp["modality_weights"].get(m, 1.0))
                                for m in self.modalities}
        self.heads = unimodal_heads(net.dims, net.num_classes)
        self.mix_projectors = nn.ModuleDict({
            m: ProjectionHead(d, int(hp["proj_hidden"]), int(hp["proj_dim"]), norm="batch",
                              l2_normalize=True) for m, d in net.dims.items()})
        student = nn.ModuleDict({"net": net, "projectors": self.mix_projectors,
                                 "heads": self.heads})
        self.teacher = MovingAverage(student, "sma", start_step=int(hp["sma_start_step"]))

    def objective(self, batch: Batch) -> Objective:
        out = self.net(batch.x)
        z = out.embeddings
        proj = {m: self.mix_projectors[m](z[m]) for m in self.modalities}
        uni = [self.modality_weight[m] * F.cross_entropy(self.heads[m](z[m]), batch.y)
               for m in self.modalities]
        views = torch.stack([proj[m] for m in self.modalities], dim=1)  # (N, M, proj_dim)
        terms = {self.fused_term: self.fused_loss(out.logits, batch),
                 "probe_ce": self.probe_loss(out, batch.y),
                 "uni_ce": torch.stack(uni).sum(),
                 "supcon": supcon_loss(views, batch.y, self.temperature),
                 "distill": self.distill_term(batch.x, proj)}
        return Objective(weighted_sum(terms, self.weights), terms, out, {"projections": proj})

    def distill_term(self, x: Mapping[str, Tensor], proj: Mapping[str, Tensor]) -> Tensor:
        """Distance of each projection to its teacher mixes (0 before the SMA starts)."""
        if int(self.teacher.step) < self.teacher.start_step:
            return proj[self.modalities[0]].sum() * 0.0
        with torch.no_grad():
            t_net, t_proj = self.teacher.average["net"], self.teacher.average["projectors"]
            tz = t_net.embed(x)
            t = {m: t_proj[m](tz[m]) for m in self.modalities}
        losses = []
        for a, b in itertools.combinations(self.modalities, 2):
            lam_a, lam_b = sample_mix_coefficients(len(t[a]), self.mix_alpha, t[a].device)
            mixes = {a: lam_a * t[a] + (1 - lam_a) * t[b], b: lam_b * t[a] + (1 - lam_b) * t[b]}
            losses += [self.modality_weight[m] * translation_loss(proj[m], mixes[m])
                       for m in (a, b)]
        return torch.stack(losses).sum()


@ALGORITHMS.register("MBCD")
class MBCD(_TeacherEvaluated):
    """MBCD: look-ahead fusion, adaptive modality dropout, EMA-teacher distillation."""

    REGRESSION = None
    REGRESSION_REFUSAL = ("its teacher distillation (KL of class probabilities) and modality "
                          "confidences read the fused class probabilities; MMDG-Bench's MMSA "
                          "MBCD replaces them with regressor heads and MSE distillation, which "
                          "merdg does not implement")

    HPARAMS = {
        "ema_beta": HParam(0.999, "EMA decay of the teacher (MMDG-Bench 0.999), the limit of "
                           "its warm-up (ema_warmup)", ("uniform", 0.9, 1.0), kind="float",
                           low=0, high=1),
        "ema_warmup": HParam(True, "ramp the teacher's decay as min(ema_beta, (1+t)/(10+t)) "
                             "(TensorFlow's ExponentialMovingAverage with num_updates), so a "
                             "run of any length evaluates an average of trained weights; false: "
                             "the published constant decay, whose teacher keeps ema_beta**steps "
                             "of its random init (logged as teacher_init_share)", kind="bool"),
        "kl_mm_coeff": HParam(1.0, "weight of KL(teacher || fused) (1.0)", ("uniform", 0.0, 2.0),
                              kind="float", low=0),
        "kl_um_coeff": HParam(1.0, "weight of KL(teacher || unimodal) (1.0)",
                              ("uniform", 0.0, 2.0), kind="float", low=0),
        "modality_drop_base": HParam(0.0, "base modality-dropout probability (0.0)",
                                     ("uniform", 0.0, 1.0), kind="float", low=0, high=1),
        "inner_lr": HParam(1e-4, "look-ahead step size (MMDG-Bench 1e-4)", kind="float", low=0),
    }

    def __init__(self, net: MultimodalNet, num_domains: int, hparams: Mapping[str, Any]) -> None:
        for m in net.modalities:  # LayerNorm on every modality's embedding
            net.encoders[m] = LayerNormEncoder(net.encoders[m])
        super().__init__(net, num_domains, hparams)
        hp = self.hparams
        self.weights = {self.fused_term: 1.0, "probe_ce": 1.0, "uni_ce": 1.0,
                        "kd_mm": float(hp["kl_mm_coeff"]), "kd_um": float(hp["kl_um_coeff"])}
        self.drop_base, self.inner_lr = float(hp["modality_drop_base"]), float(hp["inner_lr"])
        self.heads = nn.ModuleDict({
            m: FusionClassifier(d, net.num_classes, int(hp["fusion_hidden"]), 0.5)
            for m, d in net.dims.items()})
        self.teacher = MovingAverage(nn.ModuleDict({"net": net}), "ema",
                                     beta=float(hp["ema_beta"]), warmup=bool(hp["ema_warmup"]))

    def objective(self, batch: Batch) -> Objective:
        z = self.net.embed(batch.x)
        logits_k = {m: self.heads[m](z[m]) for m in self.modalities}
        ce_k = {m: F.cross_entropy(logits_k[m], batch.y) for m in self.modalities}
        ahead = {m: lookahead_forward(self.net.encoders[m], batch.x[m], ce_k[m], self.inner_lr)
                 for m in self.modalities}
        logits = self.net.fuse(self.drop_modalities(ahead, logits_k))
        with torch.no_grad():
            teacher_out = self.teacher.average["net"](batch.x)
            teacher_log_p = F.log_softmax(teacher_out.logits.float(), dim=1)
        out = ModelOutput(logits, z, self.net.probe(z))
        terms = {self.fused_term: self.fused_loss(logits, batch),
                 "probe_ce": self.probe_loss(out, batch.y),
                 "uni_ce": torch.stack(list(ce_k.values())).sum(),
                 "kd_mm": _kl(teacher_log_p, logits),
                 "kd_um": torch.stack([_kl(teacher_log_p, lg) for lg in logits_k.values()]).sum()}
        return Objective(weighted_sum(terms, self.weights), terms, out, {})

    def drop_modalities(self, z: Mapping[str, Tensor],
                        logits: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Zero each sample's embedding of modality k with MBCD's adaptive probability."""
        scores = {m: dist.all_reduce_sum(lg.detach().softmax(1).max(1).values.sum())
                  for m, lg in logits.items()}
        probs = modality_drop_probabilities(scores, self.drop_base)
        return {m: v * torch.bernoulli((1 - probs[m]).expand(len(v), 1).to(v.dtype))
                for m, v in z.items()}


def _kl(teacher_log_p: Tensor, student_logits: Tensor) -> Tensor:
    """KL(teacher || student) averaged over the batch."""
    student_log_p = F.log_softmax(student_logits.float(), dim=1)
    return F.kl_div(student_log_p, teacher_log_p, reduction="batchmean", log_target=True)
