"""Hyperparameter declarations, trials and overrides."""

import numpy as np
import pytest

from merdg.hparams import (
    KINDS,
    TRAINING_HPARAMS,
    HParam,
    check_hparams,
    describe_search,
    resolve_hparams,
    seed_hash,
)

DECL = {"a": HParam(1.0, "a", ("uniform", 0, 3), kind="float"),
        "b": HParam(0.1, "b", ("loguniform", 1e-3, 1), kind="float"),
        "c": HParam(5, "c", ("int", 1, 9), kind="int"),
        "d": HParam("x", "d", ("choice", ["x", "y"]), kind="str", choices=("x", "y")),
        "e": HParam(7, "fixed", kind="int")}


def test_defaults_trials_and_overrides():
    assert resolve_hparams(DECL) == {"a": 1.0, "b": 0.1, "c": 5, "d": "x", "e": 7}
    t1 = resolve_hparams(DECL, hparams_seed=1)
    assert t1 == resolve_hparams(DECL, hparams_seed=1)  # deterministic
    assert t1 != resolve_hparams(DECL, hparams_seed=2)
    assert 0 <= t1["a"] <= 3 and 1e-3 <= t1["b"] <= 1 and 1 <= t1["c"] <= 9 and t1["e"] == 7
    assert resolve_hparams(DECL, overrides={"a": 2.5})["a"] == 2.5
    with pytest.raises(KeyError, match="unknown hparam 'z'"):
        resolve_hparams(DECL, overrides={"z": 1})


def test_adding_an_hparam_keeps_other_samples():
    extended = {**DECL, "new": HParam(0.0, "new", ("uniform", 0, 1), kind="float")}
    t_old, t_new = resolve_hparams(DECL, hparams_seed=3), resolve_hparams(extended, hparams_seed=3)
    assert all(t_new[k] == v for k, v in t_old.items())


def test_later_declarations_win_and_descriptions():
    assert resolve_hparams(DECL, {"a": HParam(9.0, "a2", kind="float")})["a"] == 9.0
    assert describe_search(DECL["a"]) == "U[0, 3]"
    assert describe_search(DECL["e"]) == "fixed"
    assert seed_hash(1, "a") == seed_hash(1, "a") != seed_hash(2, "a")


# --- declared kinds and ranges ------------------------------------------------------------

def every_declaration():
    """``(where, name, HParam)`` for every hparam the package declares: training, each
    dataset's, each algorithm's (MER-DG's through ``X+MER``)."""
    from merdg.algorithms import ALGORITHMS, MER_HPARAMS, get_algorithm_class
    from merdg.datasets import DATASETS
    from merdg.hparams import TRAINING_HPARAMS

    layers = [("training", TRAINING_HPARAMS), ("MER-DG", MER_HPARAMS)]
    layers += [(f"dataset {n}", DATASETS.get(n).HPARAMS) for n in DATASETS]
    layers += [(f"algorithm {n}", get_algorithm_class(n).HPARAMS) for n in ALGORITHMS]
    layers += [(f"algorithm {n}+MER", get_algorithm_class(n + "+MER").HPARAMS)
               for n in ALGORITHMS]
    return [(where, name, hp) for where, decl in layers for name, hp in decl.items()]


def test_every_declared_hparam_has_a_kind_and_its_default_in_range():
    declarations = every_declaration()
    assert len(declarations) > 60  # the walk finds them
    for where, name, hp in declarations:
        assert isinstance(hp, HParam) and hp.kind in KINDS, (where, name)
        assert hp.problem(hp.default) is None, (where, name, hp.default)


def test_every_search_space_stays_in_its_declared_range():
    from merdg.algorithms import ALGORITHMS, get_algorithm_class

    for name in ALGORITHMS:
        decl = get_algorithm_class(name + "+MER").HPARAMS
        for trial in range(1, 30):  # resolve_hparams checks every drawn value
            resolve_hparams(TRAINING_HPARAMS, decl, hparams_seed=trial)


def test_a_declaration_without_a_kind_or_out_of_its_range_is_refused():
    with pytest.raises(TypeError, match="declare kind="):
        HParam(1.0, "no kind")
    with pytest.raises(ValueError, match="default must be a finite number >= 0"):
        HParam(-1.0, "negative default", kind="float", low=0)
    with pytest.raises(ValueError, match="search space .* leaves the declared range"):
        HParam(0.5, "wide search", ("uniform", 0.0, 2.0), kind="float", low=0, high=1)
    with pytest.raises(ValueError, match="search space"):
        HParam("a", "choice", ("choice", ["a", "z"]), kind="str", choices=("a", "b"))


@pytest.mark.parametrize("name, value, allowed", [
    ("lr", -0.1, "a finite number >= 0"),
    ("lr", "abc", "a finite number >= 0"),
    ("lr", float("nan"), "a finite number >= 0"),
    ("lr", float("inf"), "a finite number >= 0"),
    ("lr", True, "a finite number >= 0"),
    ("epochs", 0, "an integer >= 1"),
    ("epochs", -1, "an integer >= 1"),
    ("epochs", 1.5, "an integer >= 1"),
    ("epochs", "3", "an integer >= 1"),
    ("batch_size", 0, "an integer >= 1"),
    ("proj_dim", 0, "an integer >= 1"),
    ("dropout", 1.5, "a finite number >= 0 and < 1"),
    ("mer_lambda", -1, "a finite number >= 0"),
    ("mer_lambda", "abc", "a finite number >= 0"),
    ("mer_eps", 0, "a finite number > 0 and < 1"),
    ("mer_reduction", "max", "one of 'sum', 'mean'"),
    ("mer_target", 3, "one of 'projection', 'normalized_projection', 'embedding'"),
])
def test_override_of_the_wrong_type_or_out_of_range_names_hparam_value_and_range(name, value,
                                                                                 allowed):
    from merdg.algorithms import MER_HPARAMS

    with pytest.raises(ValueError) as raised:
        resolve_hparams(TRAINING_HPARAMS, MER_HPARAMS, overrides={name: value})
    assert str(raised.value) == f"hparam {name} (override) must be {allowed}, got {value!r}"


@pytest.mark.parametrize("name, value", [("supervised", 1), ("supervised", "true"),
                                         ("temperature", 0), ("k", 2.0)])
def test_bool_and_other_kinds(name, value):
    from merdg.algorithms import CMC, NEL

    decl = {**CMC.HPARAMS, "k": NEL.HPARAMS["k"]}
    with pytest.raises(ValueError, match=rf"^hparam {name} \(override\) must be "):
        resolve_hparams(decl, overrides={name: value})


def test_dict_and_nullable_kinds():
    from merdg.algorithms import CMRF, MOOSA

    resolved = resolve_hparams(CMRF.HPARAMS, overrides={"modality_weights": {"audio": 0.5}})
    assert resolved["modality_weights"] == {"audio": 0.5}
    with pytest.raises(ValueError, match=r"modality_weights \(override\) must be a JSON object "
                       r"of finite numbers >= 0, got \{'audio': -1\}"):
        resolve_hparams(CMRF.HPARAMS, overrides={"modality_weights": {"audio": -1}})
    resolved = resolve_hparams(MOOSA.HPARAMS, overrides={"jigsaw_hidden": None})
    assert "jigsaw_hidden" in resolved and resolved["jigsaw_hidden"] is None
    assert resolve_hparams(MOOSA.HPARAMS, overrides={"jigsaw_hidden": 7})["jigsaw_hidden"] == 7
    with pytest.raises(ValueError, match=r"jigsaw_hidden \(override\) must be an integer >= 1, "
                       r"or null, got 0"):
        resolve_hparams(MOOSA.HPARAMS, overrides={"jigsaw_hidden": 0})


def test_preset_values_are_checked_and_named_as_such():
    with pytest.raises(ValueError, match=r"^hparam lr \(preset\) must be a finite number >= 0"):
        resolve_hparams(TRAINING_HPARAMS, preset={"lr": -1})


# --- bounds: closed and open, at, just inside and just outside each one ----------------------

@pytest.mark.parametrize("low_open", [False, True])
@pytest.mark.parametrize("high_open", [False, True])
@pytest.mark.parametrize("kind", ["float", "dict"])
def test_open_and_closed_bounds_at_and_around_each_bound(low_open, high_open, kind):
    hp = HParam({} if kind == "dict" else 0.5, "bounded", kind=kind, low=0.0, high=1.0,
                low_open=low_open, high_open=high_open)
    wrap = (lambda v: {"x": v}) if kind == "dict" else (lambda v: v)
    expected = {0.0: not low_open, 1.0: not high_open, 0.5: True, 1e-9: True,
                1 - 1e-9: True, -1e-9: False, 1 + 1e-9: False}
    for value, allowed in expected.items():
        assert (hp.problem(wrap(value)) is None) is allowed, (value, low_open, high_open)
    words = (f"{'>' if low_open else '>='} 0 and {'<' if high_open else '<='} 1")
    assert words in hp.describe()


@pytest.mark.parametrize("name, value, allowed", [
    ("dropout", 1.0, False), ("dropout", 0.0, True), ("dropout", 0.999, True),
    ("mer_eps", 1.0, False), ("mer_eps", 0.0, False), ("mer_eps", 0.5, True),
    ("mer_lambda", 0.0, True), ("mer_lambda", 1e6, True),
])
def test_declared_open_bounds_of_real_hparams(name, value, allowed):
    from merdg.algorithms import MER_HPARAMS

    overrides = {name: value}
    if allowed:
        assert resolve_hparams(TRAINING_HPARAMS, MER_HPARAMS, overrides=overrides)[name] == value
    else:
        with pytest.raises(ValueError, match=rf"^hparam {name} \(override\) must be "):
            resolve_hparams(TRAINING_HPARAMS, MER_HPARAMS, overrides=overrides)


def test_int_bounds_and_choices_of_numbers():
    hp = HParam(2, "int", kind="int", low=1, high=3, high_open=True)
    assert [hp.problem(v) is None for v in (0, 1, 2, 3)] == [False, True, True, False]
    choice = HParam(0.1, "float choice", kind="float", choices=(0.1, 0.2))
    assert choice.problem(0.2) is None and choice.problem(0.15) is not None
    assert choice.describe() == "one of 0.1, 0.2"
    nullable = HParam(None, "nullable", kind="int", low=1, nullable=True)
    assert nullable.problem(None) is None and nullable.problem(0) is not None
    assert nullable.describe() == "an integer >= 1, or null"
    assert HParam(1, "plain", kind="int").problem(None) == "must be an integer, got None"


# --- trials: draws, their reproducibility, and where each value came from --------------------

def draws(hp, count=400):
    return [hp.sample(np.random.RandomState(seed)) for seed in range(count)]


def test_uniform_and_loguniform_draws_cover_their_range():
    uniform = draws(HParam(1.0, "u", ("uniform", 0.5, 3.0), kind="float"))
    assert 0.5 <= min(uniform) < 0.55 and 2.95 < max(uniform) <= 3.0
    log = draws(HParam(0.01, "l", ("loguniform", 1e-4, 1.0), kind="float"))
    assert 1e-4 <= min(log) < 2e-4 and 0.8 < max(log) <= 1.0
    # log-uniform: as many draws below the geometric mean (1e-2) as above it
    assert 0.4 < np.mean(np.array(log) < 1e-2) < 0.6
    assert all(isinstance(v, float) for v in uniform + log)


def test_int_draws_include_both_bounds_and_choices_every_value():
    ints = draws(HParam(2, "i", ("int", 1, 3), kind="int"))
    assert set(ints) == {1, 2, 3} and all(type(v) is int for v in ints)
    choices = draws(HParam("x", "c", ("choice", ["x", "y", "z"]), kind="str",
                           choices=("x", "y", "z")))
    assert set(choices) == {"x", "y", "z"}
    assert draws(HParam(7, "fixed", kind="int"), 5) == [7] * 5
    bad = HParam(1, "bad search", kind="int")
    object.__setattr__(bad, "search", ("gauss", 0, 1))
    with pytest.raises(ValueError, match=r"^unknown search kind 'gauss'$"):
        bad.sample(np.random.RandomState(0))


def test_describe_search_spells_each_space():
    assert describe_search(DECL["b"]) == "logU[0.001, 1]"
    assert describe_search(DECL["c"]) == "int[1, 9]"
    assert describe_search(DECL["d"]) == 'choice["x", "y"]'


def test_seed_hash_is_pinned_and_order_free():
    # the trials of every sweep depend on these values: a change re-draws every hparam
    assert seed_hash(1, "a") == 2091808154
    assert seed_hash({"b": 1, "a": 2}) == seed_hash({"a": 2, "b": 1})
    assert seed_hash("holdout", 0, __import__("pathlib").Path("d0")) == seed_hash(
        "holdout", 0, "d0")  # non-JSON values by their str
    values = [seed_hash(i) for i in range(300)]
    assert all(0 <= v < 2**31 for v in values) and max(values) > 2**30


def test_trial_one_is_a_draw_and_provenance_names_each_layer():
    provenance = {}
    values = resolve_hparams(DECL, {"c": HParam(4, "c2", ("int", 1, 9), kind="int")},
                             preset={"e": 8}, overrides={"a": 2.0}, hparams_seed=1,
                             layer_names=("declared",), provenance=provenance)
    assert provenance == {"a": "override", "b": "trial 1", "c": "trial 1", "d": "trial 1",
                          "e": "preset"}
    assert values["a"] == 2.0 and values["e"] == 8
    assert values["b"] != 0.1 or values["d"] != "x"  # trial 1 draws; 0 keeps the defaults
    provenance = {}
    resolve_hparams(DECL, {"x": HParam(1, "x", kind="int")}, layer_names=("declared",),
                    provenance=provenance)
    assert provenance == {"a": "declared", "b": "declared", "c": "declared", "d": "declared",
                          "e": "declared", "x": "1"}


def test_errors_name_the_layer_a_value_came_from():
    with pytest.raises(ValueError, match=r"^hparam e \(preset\) must be an integer, got 'x'$"):
        resolve_hparams(DECL, preset={"e": "x"})
    with pytest.raises(KeyError, match=r"unknown hparam 'z' \(preset\); known: a, b, c, d, e"):
        resolve_hparams(DECL, preset={"z": 1})
    with pytest.raises(KeyError, match=r"unknown hparam 'z' \(override\); known: a, b, c"):
        resolve_hparams(DECL, overrides={"z": 1})
    with pytest.raises(ValueError, match=r"^hparam a must be a finite number, got 'q'$"):
        check_hparams({"a": "q"}, DECL)
    with pytest.raises(ValueError, match=r"^hparam a \(sweep\) must be a finite number"):
        check_hparams({"a": "q"}, DECL, {"a": "sweep"})
    with pytest.raises(ValueError, match=r"^hparam a must be a finite number, got 'q'$"):
        check_hparams({"a": "q"}, DECL, {"b": "sweep"})  # no origin recorded for a
    check_hparams({"undeclared": object()}, DECL)  # values nothing declares are not checked


def test_declaration_errors_are_one_line_with_the_help():
    help = "a help text longer than forty characters, cut in the message"
    with pytest.raises(TypeError, match=r"^HParam\(1.0, 'a help text longer than forty "
                       r"characters'\.\.\.\) declares kind 'num'; declare kind= one of "
                       r"float, int, str, bool, dict$"):
        HParam(1.0, help, kind="num")
    with pytest.raises(ValueError, match=r"^HParam 'a help text longer than forty characters'"
                       r"\.\.\.: default must be a finite number >= 0, got -1$"):
        HParam(-1, help, kind="float", low=0)
    with pytest.raises(ValueError, match=r"^HParam 'a help text longer than forty characters'"
                       r"\.\.\.: search space \('int', 0, 5\) leaves the declared range "
                       r"\(an integer >= 1\)$"):
        HParam(2, help, ("int", 0, 5), kind="int", low=1)


def test_search_bounds_may_touch_open_bounds_but_not_cross_them():
    HParam(0.5, "touching", ("uniform", 0.0, 1.0), kind="float", low=0, high=1,
           low_open=True, high_open=True)
    with pytest.raises(ValueError, match="leaves the declared range"):
        HParam(0.5, "crossing", ("uniform", 0.0, 1.5), kind="float", low=0, high=1)
    with pytest.raises(ValueError, match="leaves the declared range"):
        HParam(2, "crossing low", ("int", 0, 3), kind="int", low=1, high=3)
    HParam(2, "int touching", ("int", 1, 3), kind="int", low=1, high=3)
    with pytest.raises(ValueError, match="leaves the declared range"):
        HParam(True, "bool choice", ("choice", [True, 1]), kind="bool")


def test_a_datasets_training_default_keeps_kind_and_range():
    from merdg.hparams import training_default

    hp = training_default("dropout", 0.25, "dropout of this dataset")
    assert (hp.default, hp.help) == (0.25, "dropout of this dataset")
    assert (hp.kind, hp.low, hp.high, hp.high_open) == ("float", 0, 1, True)
    assert TRAINING_HPARAMS["dropout"].default == 0.5  # the declaration itself is unchanged
    with pytest.raises(ValueError, match="default must be a finite number >= 0 and < 1"):
        training_default("dropout", 1.0, "too much")


def test_each_hparam_draws_from_its_own_stream_and_int_searches_may_touch_open_bounds():
    twins = {"x": HParam(0.5, "x", ("uniform", 0.0, 1.0), kind="float"),
             "y": HParam(0.5, "y", ("uniform", 0.0, 1.0), kind="float")}
    trial = resolve_hparams(twins, hparams_seed=1)
    assert trial["x"] != trial["y"]  # seeded by (trial, name), not by the trial alone
    HParam(2, "int touching an open bound", ("int", 1, 3), kind="int", low=1, low_open=True)
