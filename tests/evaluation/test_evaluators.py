"""The evaluator contract and the metrics it adds: FPR@95TPR's two ROC points against
scikit-learn, the OOD evaluator against a brute-force computation, the registry's settings."""

from types import SimpleNamespace

import numpy as np
import pytest

from merdg.evaluation.metrics import auroc, fpr_at_tpr, selective_prediction_metrics
from merdg.evaluators import (
    EVALUATORS,
    ORDER,
    Column,
    Evaluator,
    OutOfDistribution,
    Predictions,
    canonical_evaluations,
    run_evaluators,
    settings_hash,
)

metrics_sklearn = pytest.importorskip("sklearn.metrics")


def score_sets(count=300, seed=0):
    """Random (scores, positives) sets of a few hundred samples, with ties."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        n = int(rng.integers(20, 400))
        positive = rng.random(n) < rng.uniform(0.2, 0.9)
        positive[:2] = [True, False]  # both classes
        scores = rng.normal(positive * rng.uniform(0, 2), 1.0)
        if rng.random() < 0.5:  # ties, as MSPs of a saturated model have
            scores = np.round(scores, 1)
        yield scores, positive


def test_fpr95_first_and_nearest_points_match_scikit_learn():
    """``first``: the first ROC point at or above TPR 0.95 (MMDG-Bench's OOD script);
    ``nearest``: ``np.argmin(np.abs(tpr - 0.95))`` on ``roc_curve``'s default points
    (its misclassification script)."""
    largest = 0.0
    for scores, positive in score_sets():
        fpr, tpr, _ = metrics_sklearn.roc_curve(positive, scores)
        nearest = fpr[np.argmin(np.abs(tpr - 0.95))]
        assert fpr_at_tpr(scores, positive, point="nearest") == pytest.approx(nearest, abs=1e-12)
        full_fpr, full_tpr, _ = metrics_sklearn.roc_curve(positive, scores,
                                                          drop_intermediate=False)
        first = full_fpr[np.argmax(full_tpr >= 0.95 - 1e-12)]
        assert fpr_at_tpr(scores, positive) == pytest.approx(first, abs=1e-12)
        assert auroc(scores, positive) == pytest.approx(
            metrics_sklearn.roc_auc_score(positive, scores), abs=1e-12)
        largest = max(largest, abs(first - nearest))
    assert largest > 0.05  # the two points do differ on some sets
    with pytest.raises(ValueError, match="point must be one of"):
        fpr_at_tpr([0.1, 0.2], [True, False], point="middle")


def test_the_selective_evaluator_passes_its_fpr_point_on():
    rng = np.random.default_rng(3)
    logits, labels = rng.normal(size=(200, 4)), rng.integers(0, 4, 200)
    first = selective_prediction_metrics(logits, labels)
    nearest = selective_prediction_metrics(logits, labels, fpr_point="nearest")
    correct = logits.argmax(1) == labels
    msp = np.exp(logits - logits.max(1, keepdims=True))
    msp = (msp / msp.sum(1, keepdims=True)).max(1)
    fpr, tpr, _ = metrics_sklearn.roc_curve(correct, msp)
    assert nearest["fpr95_msp"] == pytest.approx(fpr[np.argmin(np.abs(tpr - 0.95))])
    assert {k: v for k, v in first.items() if "fpr95" not in k} == {
        k: v for k, v in nearest.items() if "fpr95" not in k}
    evaluator = EVALUATORS.get("selective").from_settings({"fpr95_point": "nearest"})
    outputs = Predictions(logits.astype(np.float32), logits.argmax(1), labels, {}, 0.0)
    measured = evaluator.measure(SimpleNamespace(target_predictions=lambda: outputs))
    assert measured.columns["fpr95_msp"] == pytest.approx(nearest["fpr95_msp"], abs=1e-6)


def brute_force_ood(inside, outside, score):
    """AUROC by comparing every (OOD, ID) pair; FPR@95TPR by scanning every threshold."""
    def msp(x):
        e = np.exp(x - x.max(1, keepdims=True))
        return (e / e.sum(1, keepdims=True)).max(1)

    def energy(x):
        return np.log(np.exp(x).sum(1))

    f = {"msp": msp, "energy": energy}[score]
    a, b = -f(outside), -f(inside)  # higher: more likely OOD
    wins = sum((x > y) + 0.5 * (x == y) for x in a for y in b)
    for threshold in sorted(set(np.r_[a, b]), reverse=True):
        if (a >= threshold).mean() >= 0.95:
            fpr = (b >= threshold).mean()
            break
    return wins / (len(a) * len(b)), fpr


def test_ood_columns_match_a_brute_force_computation():
    rng = np.random.default_rng(5)
    inside = rng.normal(size=(40, 3)) * 3  # confident in distribution
    outside = rng.normal(size=(30, 3))
    run = SimpleNamespace(config=SimpleNamespace(dataset="toy"), target="d0")
    evaluator = OutOfDistribution.from_settings({"ood_domains": ["d9"]})
    evaluator.ood_parts = lambda run: (["ood"], "toy (d9)")  # the data; tested end to end too
    context = SimpleNamespace(
        run=run, target_predictions=lambda: Predictions(inside, inside.argmax(1),
                                                        np.zeros(40, int), {}, 0.0),
        predict=lambda part: Predictions(outside, outside.argmax(1), np.full(30, -1), {}, 0.0))
    columns = evaluator.measure(context).columns
    for score in ("msp", "energy"):
        expected_auroc, expected_fpr = brute_force_ood(inside, outside, score)
        assert columns[f"ood_auroc_{score}"] == pytest.approx(expected_auroc, abs=1e-12)
        assert columns[f"ood_fpr95_{score}"] == pytest.approx(expected_fpr, abs=1e-12)


def test_every_evaluator_declares_its_contract():
    assert list(ORDER) == ["clean", "selective", "open_set", "missing", "corruptions",
                           "encoder_probes", "ood"]
    assert set(ORDER) == set(EVALUATORS.names())
    names: dict[str, str] = {}
    for name in ORDER:
        cls = EVALUATORS.get(name)
        assert issubclass(cls, Evaluator) and cls.name == name and cls.description
        assert cls.times and cls.times <= {"epoch", "init", "model"}
        assert cls.columns and all(isinstance(c, Column) for c in cls.columns)
        for column in cls.columns:  # one owner per column, but the missing-modality one
            if column.name in names and column.name != "target_missing":
                pytest.fail(f"{column.name} of {name} is also {names[column.name]}'s")
            names[column.name] = name
        for _, option, _ in cls.Settings.options():
            assert option.help and option.flag.startswith("--"), (name, option)
    flags = [opt.flag for n in ORDER for _, opt, _ in EVALUATORS.get(n).Settings.options()]
    flags += [EVALUATORS.get(n).request_flag for n in ORDER if EVALUATORS.get(n).request_flag]
    assert len(flags) == len(set(flags))  # no flag twice


def test_which_evaluators_a_run_gets():
    closed = SimpleNamespace(open_set=False, modalities=["a", "b"], task="classification",
                             algorithm_has=lambda method: False)
    single = SimpleNamespace(open_set=True, modalities=["a"], task="classification",
                             algorithm_has=lambda m: False)
    regression = SimpleNamespace(open_set=False, modalities=["a", "b"], task="regression",
                                 algorithm_has=lambda m: False)
    names = lambda evaluators: [e.name for e in evaluators]  # noqa: E731
    assert names(run_evaluators({}, closed)) == ["clean", "selective"]
    asked = canonical_evaluations({"missing": {}, "corruptions": {"corruptions": "all"}})
    assert names(run_evaluators(asked, closed)) == ["clean", "selective", "missing",
                                                    "corruptions"]
    # one modality: nothing to drop; open set: its evaluation
    assert names(run_evaluators(asked, single)) == ["clean", "selective", "open_set",
                                                    "corruptions"]
    assert names(run_evaluators(asked, closed, "model")) == ["selective", "missing",
                                                            "corruptions"]
    assert names(run_evaluators({"encoder_probes": {}}, closed, "init")) == ["encoder_probes"]
    # a regression model has no class probabilities: no selective prediction
    assert names(run_evaluators(asked, regression)) == ["clean", "missing", "corruptions"]


def test_an_evaluation_file_is_named_by_its_settings():
    a = EVALUATORS.get("corruptions").from_settings({"corruptions": ["scaling"]})
    b = EVALUATORS.get("corruptions").from_settings({"corruptions": ["scaling"],
                                                     "severities": [5, 4, 3, 2, 1]})
    c = EVALUATORS.get("corruptions").from_settings({"corruptions": ["scaling"],
                                                     "corruption_seed": 1})
    assert a.file_key() == b.file_key() != c.file_key()  # defaults and order do not matter
    assert a.file_key() == "corruptions-" + settings_hash("corruptions", a.settings_dict)
    assert len(a.file_key().split("-")[1]) == 10


def test_settings_of_an_unrequested_evaluator_say_what_is_missing():
    with pytest.raises(ValueError, match=r"--severities only apply with --corruptions "
                                         r"\(corruptions is not set\)"):
        canonical_evaluations({"corruptions": {"severities": [1]}})
    with pytest.raises(ValueError, match="must be a JSON object of settings"):
        canonical_evaluations({"missing": "yes"})
