"""Hyperparameter declarations, trials and overrides."""

import pytest

from merdg.hparams import HParam, describe_search, resolve_hparams, seed_hash

DECL = {"a": HParam(1.0, "a", ("uniform", 0, 3)), "b": HParam(0.1, "b", ("loguniform", 1e-3, 1)),
        "c": HParam(5, "c", ("int", 1, 9)), "d": HParam("x", "d", ("choice", ["x", "y"])),
        "e": HParam(7, "fixed")}


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
    extended = {**DECL, "new": HParam(0.0, "new", ("uniform", 0, 1))}
    t_old, t_new = resolve_hparams(DECL, hparams_seed=3), resolve_hparams(extended, hparams_seed=3)
    assert all(t_new[k] == v for k, v in t_old.items())


def test_later_declarations_win_and_descriptions():
    assert resolve_hparams(DECL, {"a": HParam(9.0, "a2")})["a"] == 9.0
    assert describe_search(DECL["a"]) == "U[0, 3]"
    assert describe_search(DECL["e"]) == "fixed"
    assert seed_hash(1, "a") == seed_hash(1, "a") != seed_hash(2, "a")
