r"""Adversarial baselines with gradient reversal: JAT (MDJA) and GMP.

**JAT / MDJA** (ACM MM 2025; MMDG-Bench ``train_JAT.py``). Per-modality classifier heads plus,
through gradient reversal layers (GRL), a modality discriminator (which modality does a
projected embedding come from), a local domain discriminator per modality and a global domain
discriminator on the concatenation:

.. math::

    L = \mathrm{CE}(\hat y) + c_\text{cls} \sum_m w_m \mathrm{CE}(h_m(z_m))
        + c_\text{mod} L_\text{mod} + c_\text{dom} (L_\text{local} + L_\text{global})

with :math:`w = \operatorname{softmax}_m(H_m)`, :math:`H_m` the mean entropy of modality m's
local domain prediction (of its class prediction with one source domain, where the domain terms
are off). As in the release, :math:`w` is not detached.

**GMP** (AAAI 2026; MMDG-Bench ``train_GMP.py``). Per-modality heads and a GRL local domain
discriminator. For each modality, the gradients of its classification loss :math:`g_c` and its
domain loss :math:`g_d` on its encoder and head are scaled by
:math:`k = 1 - \tanh(\alpha_k \rho)` (if :math:`\rho > 1`) and :math:`p = 1 - \tanh(\alpha_p
\sigma)` (if :math:`\sigma > 1`), with :math:`\rho` the modality's mean true-class confidence over
the others' and :math:`\sigma` the others' mean true-domain confidence over its own; if the
scaled gradients conflict, the stronger task's is projected onto the normal of the other's
(:func:`merdg.algorithms.building_blocks.modulate_gradients`). The fused CE is back-propagated
unchanged. Unlike MMDG-Bench's script, whose domain discriminator never receives a gradient,
the discriminator is trained here (through the GRL, as the paper describes).

Both add MER-DG on the network's projection heads.

References:
    - Li et al., "Modality-Domain Joint Adversarial Training for Multimodal Domain
      Generalization", ACM MM 2025 (code: github.com/lihongzhao99/MMDG-Joint-Adversarial-Training)
    - "GMP", AAAI 2026, https://arxiv.org/abs/2603.14175
    - Ganin & Lempitsky, ICML 2015, https://arxiv.org/abs/1409.7495 (gradient reversal)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from merdg.algorithms.base import ALGORITHMS, Algorithm, Objective
from merdg.algorithms.building_blocks import (
    all_reduce_mean,
    flat_grad,
    leave_one_out_ratios,
    modulate_gradients,
    unimodal_heads,
    weighted_sum,
)
from merdg.datasets.base import Batch
from merdg.hparams import HParam
from merdg.losses import prediction_entropy
from merdg.models import FusionClassifier, MultimodalNet
from merdg.models.baseline_modules import AdversarialProjection, DomainClassifier, grad_reverse

__all__ = ["GMP", "JAT"]


def true_class_confidence(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean softmax probability of the true class (detached scalar)."""
    logits = logits.detach()
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    probs = logits.softmax(dim=1)
    return probs.gather(1, labels[:, None]).mean()


class _Adversarial(Algorithm):
    """Per-modality heads and (with >= 2 source domains) a GRL local domain discriminator."""

    def __init__(self, net: MultimodalNet, num_domains: int, hparams: Mapping[str, Any]) -> None:
        super().__init__(net, num_domains, hparams)
        self.proj_dim = int(self.hparams["adv_proj_dim"] or self.hparams["fusion_hidden"])
        self.domain_adversarial = num_domains > 1  # off for single-source DG, as the release
        self.heads = unimodal_heads(net.dims, net.num_classes)
        if self.domain_adversarial:
            self.domain_projectors = nn.ModuleDict(
                {m: AdversarialProjection(d, self.proj_dim) for m, d in net.dims.items()})
            self.domain_classifier = DomainClassifier(self.proj_dim, max(num_domains, 2),
                                                      hidden=max(self.proj_dim // 2, 1))

    def domain_logits(self, m: str, z: Tensor, grl_scale: float) -> Tensor:
        """Local domain prediction from modality m's embedding through a GRL."""
        return self.domain_classifier(self.domain_projectors[m](grad_reverse(z, grl_scale)))


_ADV_PROJ = HParam(None, "width of the projections before the discriminators (None: "
                   "fusion_hidden; official project_out_dim 512)", kind="int", low=1,
                   nullable=True)


@ALGORITHMS.register("JAT")
class JAT(_Adversarial):
    """Modality-domain joint adversarial training (MDJA)."""

    REGRESSION = ("L1 of the fused output; entropy-weighted unimodal CE on the sign class; the "
                  "modality and domain discriminators are label-free")

    HPARAMS = {
        "alpha_rev": HParam(0.1, "GRL scale before the modality discriminator (0.1)",
                            ("uniform", 0.0, 1.0), kind="float", low=0),
        "alpha_rev2": HParam(0.3, "GRL scale before the domain discriminators (0.3)",
                             ("uniform", 0.0, 1.0), kind="float", low=0),
        "domain_adv_loss": HParam(0.5, "weight of the global and of the local domain loss (0.5)",
                                  ("uniform", 0.0, 1.0), kind="float", low=0),
        "modal_adv_loss": HParam(0.1, "weight of the modality-discriminator loss (0.1)",
                                 ("uniform", 0.0, 1.0), kind="float", low=0),
        "cls_loss": HParam(3.0, "weight of the entropy-weighted unimodal CE (3.0)",
                           ("uniform", 0.0, 5.0), kind="float", low=0),
        "adv_proj_dim": _ADV_PROJ,
    }

    def __init__(self, net: MultimodalNet, num_domains: int, hparams: Mapping[str, Any]) -> None:
        super().__init__(net, num_domains, hparams)
        hp = self.hparams
        self.alpha_rev, self.alpha_rev2 = float(hp["alpha_rev"]), float(hp["alpha_rev2"])
        self.weights = {self.fused_term: 1.0, "probe_ce": 1.0, "uni_ce": float(hp["cls_loss"]),
                        "modal_adv": float(hp["modal_adv_loss"]),
                        "domain_local": float(hp["domain_adv_loss"]),
                        "domain_global": float(hp["domain_adv_loss"])}
        self.modality_projectors = nn.ModuleDict(
            {m: AdversarialProjection(d, self.proj_dim) for m, d in net.dims.items()})
        self.modality_classifier = nn.Linear(self.proj_dim, len(self.modalities))
        if self.domain_adversarial:
            self.global_domain_classifier = FusionClassifier(
                sum(net.dims.values()), max(num_domains, 2), self.proj_dim, 0.5)

    def objective(self, batch: Batch) -> Objective:
        out = self.net(batch.x)
        z = out.embeddings
        class_logits = {m: self.heads[m](z[m]) for m in self.modalities}
        terms = {self.fused_term: self.fused_loss(out.logits, batch),
                 "probe_ce": self.probe_loss(out, batch.y),
                 "modal_adv": self.modality_term(z)}
        confusion = class_logits
        if self.domain_adversarial:
            confusion = {m: self.domain_logits(m, z[m], self.alpha_rev2) for m in self.modalities}
            terms["domain_local"] = torch.stack(
                [F.cross_entropy(lg, batch.domain) for lg in confusion.values()]).mean()
            terms["domain_global"] = self.global_domain_term(z, batch.domain)
        entropy = torch.stack([prediction_entropy(confusion[m]).mean() for m in self.modalities])
        weights = entropy.softmax(dim=0)  # (M,)
        ce = torch.stack([F.cross_entropy(class_logits[m], batch.y) for m in self.modalities])
        terms["uni_ce"] = (weights * ce).sum()
        return Objective(weighted_sum(terms, self.weights), terms, out, {})

    def modality_term(self, z: Mapping[str, Tensor]) -> Tensor:
        """CE of the modality discriminator on GRL-reversed projected embeddings."""
        losses = []
        for index, m in enumerate(self.modalities):
            logits = self.modality_classifier(
                self.modality_projectors[m](grad_reverse(z[m], self.alpha_rev)))
            target = torch.full((len(logits),), index, device=logits.device)
            losses.append(F.cross_entropy(logits, target))
        return torch.stack(losses).mean()

    def global_domain_term(self, z: Mapping[str, Tensor], domain: Tensor) -> Tensor:
        reversed_ = [grad_reverse(z[m], self.alpha_rev2) for m in self.modalities]
        return F.cross_entropy(self.global_domain_classifier(torch.cat(reversed_, dim=1)), domain)


@ALGORITHMS.register("GMP")
class GMP(_Adversarial):
    """Gradient modulation and projection between each modality's semantic and domain tasks."""

    REGRESSION = ("L1 of the fused output; unimodal CE on the sign class, whose true-class "
                  "confidences modulate the gradients; the domain discriminator is label-free")

    HPARAMS = {
        "alpha_rev": HParam(0.3, "GRL scale before the domain discriminator (0.3)",
                            ("uniform", 0.0, 1.0), kind="float", low=0),
        "alpha_k": HParam(0.5, "suppression of the semantically dominant modality (0.5)",
                          ("uniform", 0.0, 1.0), kind="float", low=0, high=1),
        "alpha_p": HParam(0.1, "suppression of the domain-dominant modality (0.1)",
                          ("uniform", 0.0, 1.0), kind="float", low=0, high=1),
        "cls_loss": HParam(3.0, "weight of the unimodal CE (3.0)", ("uniform", 0.0, 5.0),
                           kind="float", low=0),
        "domain_adv_loss_local": HParam(0.5, "weight of the local domain loss (0.5)",
                                        kind="float", low=0),
        "adv_proj_dim": _ADV_PROJ,
    }

    def __init__(self, net: MultimodalNet, num_domains: int, hparams: Mapping[str, Any]) -> None:
        super().__init__(net, num_domains, hparams)
        hp = self.hparams
        self.alpha_rev, self.alpha_k = float(hp["alpha_rev"]), float(hp["alpha_k"])
        self.alpha_p = float(hp["alpha_p"])
        self.weights = {self.fused_term: 1.0, "probe_ce": 1.0, "uni_ce": float(hp["cls_loss"]),
                        "domain": float(hp["domain_adv_loss_local"])}

    def objective(self, batch: Batch) -> Objective:
        out = self.net(batch.x)
        z = out.embeddings
        cls_terms, dom_terms, sem_conf, dom_conf = {}, {}, {}, {}
        for m in self.modalities:
            logits = self.heads[m](z[m])
            cls_terms[m] = F.cross_entropy(logits, batch.y)
            sem_conf[m] = true_class_confidence(logits, batch.y)
            if self.domain_adversarial:
                dom_logits = self.domain_logits(m, z[m], self.alpha_rev)
                dom_terms[m] = F.cross_entropy(dom_logits, batch.domain)
                dom_conf[m] = true_class_confidence(dom_logits, batch.domain)
        terms = {self.fused_term: self.fused_loss(out.logits, batch),
                 "probe_ce": self.probe_loss(out, batch.y),
                 "uni_ce": torch.stack(list(cls_terms.values())).sum()}
        if self.domain_adversarial:
            terms["domain"] = torch.stack(list(dom_terms.values())).sum()
        extras = {"gmp": {"cls": cls_terms, "dom": dom_terms, "sem_conf": sem_conf,
                          "dom_conf": dom_conf}}
        return Objective(weighted_sum(terms, self.weights), terms, out, extras)

    def modality_parameters(self, m: str) -> list[nn.Parameter]:
        """The parameters GMP modulates for modality m: its encoder and its head."""
        params = [*self.net.encoders[m].parameters(), *self.heads[m].parameters()]
        return [p for p in params if p.requires_grad]

    def gradient_corrections(self, objective: Objective) -> list[tuple[nn.Parameter, Tensor]]:
        """Modulated-and-projected minus plain per-modality gradients (rank-averaged)."""
        gmp = objective.extras.get("gmp")
        if gmp is None:
            return []
        sem = leave_one_out_ratios({m: all_reduce_mean(v) for m, v in gmp["sem_conf"].items()})
        dom = (leave_one_out_ratios({m: all_reduce_mean(v) for m, v in gmp["dom_conf"].items()},
                                    inverse=True) if gmp["dom_conf"] else {})
        corrections = []
        for m in self.modalities:
            params = self.modality_parameters(m)
            g_cls = all_reduce_mean(flat_grad(self.weights["uni_ce"] * gmp["cls"][m], params))
            g_dom = torch.zeros_like(g_cls)
            if m in gmp["dom"]:
                g_dom = all_reduce_mean(flat_grad(self.weights["domain"] * gmp["dom"][m], params))
            final = modulate_gradients(g_cls, g_dom, sem[m], dom.get(m, torch.ones_like(sem[m])),
                                       self.alpha_k, self.alpha_p)
            delta = (final - g_cls - g_dom).split([p.numel() for p in params])
            corrections += [(p, d.view_as(p)) for p, d in zip(params, delta)]
        return corrections
