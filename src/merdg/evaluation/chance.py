"""Is a probe's accuracy distinguishable from chance? A one-sided exact binomial test.

A modality whose encoder learns nothing leaves its linear probe at chance, and a fused model
then silently relies on the other modalities. To flag it, the probe's accuracy on ``n``
evaluated samples is compared with the accuracy of guessing, ``chance`` (``1 / num_classes``
for balanced classes; for imbalanced classes pass the largest class share, which a constant
prediction reaches): under the null hypothesis "the probe is no better than chance" the number
of correct predictions is Binomial(n, chance), and the p-value is the probability of at least
the observed number of correct predictions. A probe is *within noise of chance* when that
p-value exceeds ``alpha`` (default 0.01): its accuracy is not significantly above chance.

Reference: the exact binomial test, e.g. A. Agresti, "Categorical Data Analysis", 3rd ed.,
Wiley 2013, section 1.4. Samples are treated as independent, which overlapping windows are not:
with correlated samples the test is too confident, so a flagged probe is certainly uninformative
while an unflagged one is only probably informative.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["ChanceTest", "binomial_tail", "chance_test", "near_chance_probes"]


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed exactly in log space (n up to millions)."""
    if not 0 <= k <= n:
        return 1.0 if k <= 0 else 0.0
    if p <= 0.0:
        return 1.0 if k == 0 else 0.0
    if p >= 1.0:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
            + i * log_p + (n - i) * log_q for i in range(k, n + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * sum(math.exp(v - top) for v in logs))


@dataclass(frozen=True)
class ChanceTest:
    """Result of :func:`chance_test`.

    Attributes:
        accuracy: The probe's accuracy (fraction).
        n: Evaluated samples.
        chance: Accuracy of guessing.
        correct: Correct predictions, ``round(accuracy * n)``.
        p_value: P(at least ``correct`` correct | accuracy = ``chance``).
        alpha: Significance level.
    """

    accuracy: float
    n: int
    chance: float
    correct: int
    p_value: float
    alpha: float

    @property
    def near_chance(self) -> bool:
        """Not significantly above chance at level :attr:`alpha`."""
        return self.p_value > self.alpha

    def describe(self, name: str = "probe", subject: str = "the encoder") -> str:
        """One line, e.g. for a run's final log line or a report (``subject``: what learned
        nothing measurable when the accuracy is within noise of chance)."""
        verdict = (f"within noise of chance: {subject} learned nothing measurable"
                   if self.near_chance else "above chance")
        return (f"{name}: {100 * self.accuracy:.2f}% on {self.n} samples vs "
                f"{100 * self.chance:.2f}% chance (one-sided binomial p = {self.p_value:.3g}): "
                f"{verdict}")


def chance_test(accuracy: float, n: int, num_classes: int, chance: float | None = None,
                alpha: float = 0.01) -> ChanceTest:
    """Test whether ``accuracy`` on ``n`` samples is significantly above chance.

    Args:
        accuracy: Accuracy as a fraction in [0, 1].
        n: Number of evaluated samples (> 0).
        num_classes: Number of classes (>= 2); chance is ``1 / num_classes`` unless given.
        chance: Accuracy of guessing, e.g. the largest class share of the evaluated samples.
        alpha: Significance level in (0, 1).

    Returns:
        The :class:`ChanceTest`; ``.near_chance`` is the flag.

    Raises:
        ValueError: An argument outside its range (named in the message).
    """
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy must be a fraction in [0, 1], got {accuracy}")
    if n < 1:
        raise ValueError(f"n must be >= 1 evaluated samples, got {n}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    chance = 1.0 / num_classes if chance is None else float(chance)
    if not 0.0 < chance < 1.0:
        raise ValueError(f"chance must be in (0, 1), got {chance}")
    correct = int(round(accuracy * n))
    return ChanceTest(accuracy, n, chance, correct, binomial_tail(correct, n, chance), alpha)


def near_chance_probes(probe_acc: Mapping[str, float], n: int, num_classes: int,
                       chance: float | None = None, alpha: float = 0.01) -> dict[str, ChanceTest]:
    """``{modality: test}`` of the probes whose accuracy is within noise of chance.

    Args:
        probe_acc: ``{modality: accuracy}``, e.g. a run's ``val["probe_acc"]`` on source
            validation.
        n: Samples those accuracies were computed on (e.g. ``val["n"]``).
        num_classes: Number of classes.
        chance: Accuracy of guessing (default ``1 / num_classes``).
        alpha: Significance level.
    """
    tests = {m: chance_test(acc, n, num_classes, chance, alpha) for m, acc in probe_acc.items()}
    return {m: t for m, t in sorted(tests.items()) if t.near_chance}
