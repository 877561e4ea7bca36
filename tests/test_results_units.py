"""Unit tests of merdg.experiments.results (fast, in-process): rows of run directories written
by hand, cells and the average column computed by hand (``statistics.stdev`` for the spread),
trial choice by source validation and by leave-one-domain-out, times, paired tables."""

import json
import math
import shutil
import statistics
import warnings

import pytest

from merdg.experiments.results import (
    Cell,
    PairedTable,
    average_cells,
    build_tables,
    chosen_runs,
    column_of,
    has_search,
    is_single_source,
    load_rows,
    lodo_rows,
    paired_rows,
    paired_tables,
    setting_label,
    settings_of,
    split_inner_rows,
    table_order,
    table_targets,
    time_cells,
    trial_rules_of,
)

RULES = ("source_val", "oracle", "last")


def cell(values, trial=0, seeds=(), rule="source_val"):
    """The expected cell, with a second computation of the spread (``statistics``)."""
    n = len(values)
    std = statistics.stdev(values) if n > 1 else 0.0
    return Cell(sum(values) / n, std, std / math.sqrt(n), n,
                statistics.pstdev(values), trial, tuple(seeds), rule)


def assert_cell(got, want):
    assert isinstance(got, Cell)
    for name in ("mean", "std", "se", "std_population"):
        assert getattr(got, name) == pytest.approx(getattr(want, name), abs=1e-12), name
    assert (got.n, got.trial, got.seeds, got.rule) == (want.n, want.trial, want.seeds,
                                                       want.rule)


def row(algorithm, target, seed, acc, *, trial=0, selection="source_val", val=0.5, loss=1.0,
        mods="m0+m1", dataset="ds", settings="", sources=("d0", "d1"), **extra):
    return {"dataset": dataset, "settings": settings, "modalities": mods,
            "algorithm": algorithm, "target": target, "seed": seed, "hparams_seed": trial,
            "selection": selection, "target_acc": acc, "val_acc": val, "val_loss": loss,
            "source_domains": json.dumps(list(sources)),
            "path": f"{dataset}/{algorithm}/{target}/{trial}/{seed}", **extra}


def runs(algorithm, target, accs, **kw):
    """One source_val row per seed (``accs``: {seed: target accuracy})."""
    return [row(algorithm, target, seed, acc, **kw) for seed, acc in accs.items()]


# --- small helpers ---------------------------------------------------------------------------

def test_single_source_settings_and_labels():
    assert is_single_source({"sources": ["d0"]})
    assert not is_single_source({"sources": ["d0", "d1"]}) and not is_single_source({})
    assert not is_single_source({"sources": None})
    base = {"dataset": "ds", "algorithm": "ERM", "target": "d2", "seed": 3, "hparams_seed": 1}
    assert settings_of(base) == "{}"
    assert settings_of({**base, "sources": ["d0", "d1"], "hparams": {"lr": 0.5}}) == (
        '{"hparams": {"lr": 0.5}, "sources": ["d0", "d1"]}')
    # a split seed is a setting, even the one equal to the seed (config identity drops it)
    assert settings_of({**base, "split_seed": 3}) == '{"split_seed": 3}'
    assert settings_of({**base, "split_seed": 4}) == '{"split_seed": 4}'
    assert settings_of({**base, "sources": ["d1"], "open_set": True}) == (
        '{"open_set": true, "setting": "single-source"}')
    assert setting_label("") == ("", "")
    assert setting_label("{}") == ("", "")
    assert setting_label('{"setting": "single-source"}') == (
        "single-source, source->target", "")
    assert setting_label('{"open_set": true, "known_classes": ["a", "b"], "x": 1}') == (
        "open-set, known classes a,b", '{"x": 1}')
    assert setting_label('{"open_set": true, "setting": "single-source", "z": 2, "a": 1}') == (
        "single-source, source->target, open-set", '{"a": 1, "z": 2}')
    assert setting_label('{"open_set": false, "setting": "multi", "y": 0}') == ("", '{"y": 0}')


def test_columns_and_their_order():
    assert column_of({"column": "c", "target": "t", "setting": "single"}) == "c"
    assert column_of({"target": "t", "setting": "single", "sources": "a"}) == "a->t"
    assert column_of({"target": "t", "setting": "multi", "sources": "a+b"}) == "t"
    assert column_of({"target": "t"}) == "t"
    table = {("m", "A"): {"b->d1": None, "d0": None, "avg": None},
             ("m", "B"): {"a->d2": None, "a->d1": None}}
    assert table_targets(table) == ["d0", "a->d1", "b->d1", "a->d2", "avg"]
    assert table_targets({}) == ["avg"]
    keys = [("ds", '{"setting": "single-source"}'), ("ds", '{"x": 1}'), ("ab", "{}"),
            ("ds", "{}"), ("ds", '{"open_set": true}')]
    # by dataset, then the setting's label ("" first), then the settings' JSON
    assert sorted(keys, key=table_order) == [
        ("ab", "{}"), ("ds", '{"x": 1}'), ("ds", "{}"), ("ds", '{"open_set": true}'),
        ("ds", '{"setting": "single-source"}')]


# --- cells -----------------------------------------------------------------------------------

def two_targets():
    """ERM on d1 (seeds 0-2) and d2 (seeds 0-1); MERDG on d1 only; oracle rows too."""
    rows = (runs("ERM", "d1", {0: 0.5, 1: 0.625, 2: 0.75})
            + runs("ERM", "d2", {0: 0.25, 1: 0.5})
            + runs("MERDG", "d1", {0: 0.875, 1: 0.75}))
    rows += [{**r, "selection": "oracle", "target_acc": r["target_acc"] + 0.125} for r in rows]
    return rows


def test_cells_and_the_average_column_by_hand():
    tables = build_tables(two_targets())
    assert list(tables) == [("ds", "")]
    table = tables[("ds", "")]
    assert sorted(table) == [("m0+m1", "ERM"), ("m0+m1", "MERDG")]
    erm = table[("m0+m1", "ERM")]
    assert sorted(erm) == ["avg", "d1", "d2"]
    assert_cell(erm["d1"], cell([0.5, 0.625, 0.75], 0, (0, 1, 2)))
    assert_cell(erm["d2"], cell([0.25, 0.5], 0, (0, 1)))
    # replicates both targets have: "search" (seed 0) and seed 1; seed 2 has only d1
    assert_cell(erm["avg"], cell([(0.5 + 0.25) / 2, (0.625 + 0.5) / 2], None, (1,), None))
    merdg = table[("m0+m1", "MERDG")]
    assert sorted(merdg) == ["d1"]  # no run on d2: no average
    assert_cell(merdg["d1"], cell([0.875, 0.75], 0, (0, 1)))
    oracle = build_tables(two_targets(), rule="oracle")[("ds", "")]
    assert_cell(oracle[("m0+m1", "ERM")]["d1"], cell([0.625, 0.75, 0.875], 0, (0, 1, 2)))
    assert_cell(oracle[("m0+m1", "ERM")]["avg"],
                cell([(0.625 + 0.375) / 2, (0.75 + 0.625) / 2], None, (1,), None))
    assert build_tables(two_targets(), rule="last") == {}  # no rows of that rule


def test_the_average_replicates_are_ordered_search_first_then_by_seed():
    rows = (runs("ERM", "d1", {3: 0.5, 10: 0.25, 4: 0.75})
            + runs("ERM", "d2", {3: 0.25, 4: 0.5, 10: 1.0}))
    avg = build_tables(rows)[("ds", "")][("m0+m1", "ERM")]["avg"]
    assert avg.seeds == (10, 4)  # replicates "search" (seed 3), "10", "4": sorted as strings
    assert_cell(avg, cell([0.375, 0.625, 0.625], None, (10, 4), None))


def test_no_shared_replicate_and_a_metric_some_runs_lack():
    rows = runs("ERM", "d1", {0: 0.5, 1: 0.75}) + runs("ERM", "d2", {5: 0.25})
    # "search" is each target's own lowest seed: d1's seed 0 and d2's seed 5 pair up
    avg = build_tables(rows)[("ds", "")][("m0+m1", "ERM")]["avg"]
    assert_cell(avg, cell([0.375], None, (), None))
    rows = [{**r, "auroc": None if r["seed"] == 1 else 0.5 + r["seed"] / 10} for r in rows]
    table = build_tables(rows, metric="auroc")[("ds", "")]
    assert_cell(table[("m0+m1", "ERM")]["d1"], cell([0.5], 0, (0,)))
    assert_cell(table[("m0+m1", "ERM")]["d2"], cell([1.0], 0, (5,)))
    assert build_tables(rows, metric="missing_metric") == {}
    with pytest.raises(ValueError, match=r"^unknown selection rule 'best'; choose from "
                                         r"\['source_val', 'oracle', 'last'\]$"):
        build_tables(rows, rule="best")


def test_settings_and_datasets_are_separate_tables():
    rows = (runs("ERM", "d1", {0: 0.5}) + runs("ERM", "d1", {0: 0.25}, settings='{"x": 1}')
            + runs("ERM", "d1", {0: 0.75}, dataset="other"))
    tables = build_tables(rows)
    assert sorted(tables) == [("ds", ""), ("ds", '{"x": 1}'), ("other", "")]
    assert tables[("ds", '{"x": 1}')][("m0+m1", "ERM")]["d1"].mean == 0.25
    assert tables[("other", "")][("m0+m1", "ERM")]["d1"].mean == 0.75
    assert tables[("ds", "")][("m0+m1", "ERM")]["avg"].mean == 0.5


def test_the_trial_with_the_best_search_run_is_reported():
    """Trial 1's search run (seed 1) has the best source-validation accuracy; trial 0's
    seed-0 run, which would win on target accuracy, is not reported."""
    rows = (runs("ERM", "d1", {0: 0.875, 5: 0.875}, trial=0, val=0.5)
            + runs("ERM", "d1", {1: 0.25, 6: 0.5}, trial=1, val=0.75)
            + [row("ERM", "d1", 0, 0.875, trial=1, val=0.125)])  # not trial 1's search run
    rows[-1]["seed"] = 7  # trial 1's runs: seeds 1, 6, 7
    d1 = build_tables(rows)[("ds", "")][("m0+m1", "ERM")]["d1"]
    assert_cell(d1, cell([0.25, 0.5, 0.875], 1, (1, 6, 7)))
    chosen = chosen_runs(rows)
    assert list(chosen) == [("ds", "", "m0+m1", "ERM", "d1")]
    trial, chosen_rows = chosen[("ds", "", "m0+m1", "ERM", "d1")]
    assert trial == 1 and [r["seed"] for r in chosen_rows] == [1, 6, 7]
    assert has_search(rows) and not has_search(runs("ERM", "d1", {0: 0.5, 1: 0.5}))
    assert trial_rules_of(build_tables(rows)[("ds", "")]) == ["source_val"]
    with pytest.raises(ValueError, match="unknown selection rule 'x'"):
        chosen_runs(rows, "x")


def test_equal_validation_accuracy_goes_to_the_lower_loss_then_the_lower_trial():
    rows = (runs("ERM", "d1", {0: 0.25}, trial=0, val=0.5, loss=1.0)
            + runs("ERM", "d1", {1: 0.5}, trial=1, val=0.5, loss=0.5)
            + runs("ERM", "d1", {2: 0.75}, trial=2, val=0.5, loss=0.5))
    assert build_tables(rows)[("ds", "")][("m0+m1", "ERM")]["d1"].trial == 1


# --- leave-one-domain-out --------------------------------------------------------------------

def lodo_fixture(complete=True):
    """Task ERM -> d3 from sources d0, d1 with trials 0 and 1. Source validation would choose
    trial 0; the inner runs (d3 left out, each holding out one source) score trial 0 at
    (0.5 + 0.5) / 2 = 0.5 and trial 1 at (0.75 + 0.5) / 2 = 0.625."""
    outer = (runs("ERM", "d3", {0: 0.25, 4: 0.375}, trial=0, val=0.875, settings="S")
             + runs("ERM", "d3", {1: 0.5, 5: 0.625}, trial=1, val=0.125, settings="S"))
    inner = [row("ERM", held, 0, acc, trial=trial, sources=("d0", "d1"), settings="I",
                 left_out="d3", outer_settings="S")
             for trial, held, acc in ((0, "d0", 0.5), (0, "d1", 0.5), (1, "d0", 0.75),
                                      (1, "d1", 0.5))]
    if not complete:
        inner = [r for r in inner if r["target"] == "d0"]
    return outer + inner


def test_inner_runs_choose_the_trial_and_are_no_cells():
    rows = lodo_fixture()
    cells, inner = split_inner_rows(rows)
    assert cells == rows[:4]
    assert inner == {("ds", "S", "m0+m1", "ERM", "d3"): rows[4:]}
    tables = build_tables(rows)
    assert list(tables) == [("ds", "S")]  # no table of the inner runs' own settings
    assert_cell(tables[("ds", "S")][("m0+m1", "ERM")]["d3"],
                cell([0.5, 0.625], 1, (1, 5), "lodo"))
    assert trial_rules_of(tables[("ds", "S")]) == ["lodo"]
    assert has_search(rows[:2] + rows[4:])  # one trial of cells, but inner runs
    assert lodo_rows(rows) == [
        {"dataset": "ds", "modalities": "m0+m1", "algorithm": "ERM", "target": "d3",
         "trial": 0, "held_out": ["d0", "d1"], "score": 0.5, "chosen": False},
        {"dataset": "ds", "modalities": "m0+m1", "algorithm": "ERM", "target": "d3",
         "trial": 1, "held_out": ["d0", "d1"], "score": 0.625, "chosen": True}]
    assert lodo_rows(rows[:4]) == []


def test_inner_rows_of_other_rules_do_not_score():
    rows = lodo_fixture()
    rows += [{**r, "selection": "oracle", "target_acc": 1.0 - r["target_acc"]}
             for r in rows[4:]]
    assert build_tables(rows)[("ds", "S")][("m0+m1", "ERM")]["d3"].trial == 1
    assert [r["score"] for r in lodo_rows(rows)] == [0.5, 0.625]


def test_a_task_whose_inner_runs_score_no_trial_is_left_out_with_a_warning():
    with pytest.warns(UserWarning, match=r"^m0\+m1/ERM/d3: its inner runs score no trial "
                                         r"\(every trial lacks a finished run for some of "
                                         r"\['d0', 'd1'\]\); left out of the tables$"):
        assert build_tables(lodo_fixture(complete=False)) == {}


def test_inner_runs_without_their_task_and_single_source_inner_runs_are_cells():
    lonely = row("ERM", "d0", 0, 0.5, left_out="d9", outer_settings="S")
    assert split_inner_rows([lonely]) == ([lonely], {})
    outer = row("ERM", "d2", 0, 0.25, sources=("d0", "d1"))
    single = row("ERM", "d0", 0, 0.75, sources=("d1",), left_out="d2", outer_settings="",
                 setting="single", column="d1->d0")
    cells, inner = split_inner_rows([outer, single])
    assert cells == [outer, single]
    assert inner == {("ds", "", "m0+m1", "ERM", "d2"): [single]}


# --- averages of several metrics, times ------------------------------------------------------

def test_average_cells_of_several_metrics_and_partial_columns():
    rows = two_targets()
    for r in rows:  # auroc only on d1
        r["auroc"] = 0.5 + r["seed"] / 8 if r["target"] == "d1" else None
    out = average_cells(rows, ["target_acc", "auroc", "nothing"])
    assert list(out) == [("ds", "")]
    erm_acc, erm_auroc, erm_nothing = out[("ds", "")][("m0+m1", "ERM")]
    assert_cell(erm_acc, cell([0.375, 0.5625], None, (1,), None))
    # one of the two columns has it: the mean of that column's cell
    assert erm_auroc == Cell(statistics.mean([0.5, 0.625, 0.75]), 0.0, 0.0, 1, 0.0, None,
                             ("1 of 2 columns",))
    assert erm_nothing is None
    merdg_acc, merdg_auroc, _ = out[("ds", "")][("m0+m1", "MERDG")]
    assert merdg_acc == Cell(statistics.mean([0.875, 0.75]), 0.0, 0.0, 1, 0.0, None,
                             ("1 of 2 columns",))
    assert merdg_auroc.n == 1 and merdg_auroc.mean == pytest.approx(0.5625)
    assert average_cells(rows, []) == {}


def test_average_cells_over_two_partial_columns_and_table_order():
    rows = (runs("ERM", "d1", {0: 0.5}) + runs("ERM", "d2", {0: 0.25})
            + runs("ERM", "d3", {0: 0.75})
            + runs("ERM", "d1", {0: 0.5}, dataset="ab"))
    for r in rows:
        r["auroc"] = {"d1": 0.25, "d2": 0.75}.get(r["target"])
    out = average_cells(rows, ["auroc"])
    assert list(out) == [("ab", ""), ("ds", "")]
    (partial,) = out[("ds", "")][("m0+m1", "ERM")]
    assert partial == Cell(0.5, 0.0, 0.0, 2, 0.0, None, ("2 of 3 columns",))
    assert out[("ab", "")][("m0+m1", "ERM")][0].seeds == ()  # one column: its own average


def test_time_cells_count_each_run_once():
    rows = []
    for path, seconds, algo in (("a", 10.0, "ERM"), ("b", 20.0, "ERM"), ("c", 7.0, "MERDG")):
        rows += [{"modalities": "m0", "algorithm": algo, "path": path, "train_time_s": seconds,
                  "selection": rule} for rule in RULES]
    rows.append({"modalities": "m0", "algorithm": "ERM", "path": "d"})  # no time recorded
    out = time_cells(rows)
    assert list(out) == [("m0", "ERM"), ("m0", "MERDG")]
    assert_cell(out[("m0", "ERM")], cell([10.0, 20.0], None, (), None))
    assert_cell(out[("m0", "MERDG")], cell([7.0], None, (), None))
    assert time_cells([]) == {}


# --- paired differences ------------------------------------------------------------------------

def paired_fixture():
    """ERM and MERDG on d1 and d2, seeds 0-2 (d2: MERDG lacks seed 2)."""
    return (runs("ERM", "d1", {0: 0.5, 1: 0.5, 2: 0.625})
            + runs("ERM", "d2", {0: 0.25, 1: 0.375, 2: 0.5})
            + runs("MERDG", "d1", {0: 0.625, 1: 0.75, 2: 0.625})
            + runs("MERDG", "d2", {0: 0.5, 1: 0.375})
            + runs("SAGM", "d1", {0: 0.5}, mods="m0"))


def test_paired_rows_are_the_chosen_runs_by_column_and_replicate():
    rows = paired_fixture() + runs("ERM", "d1", {9: 1.0}, trial=3, val=0.0)  # not chosen
    rows.append(row("ERM", "d1", 4, None))
    got = paired_rows(rows)
    erm_d1 = [(r["target"], r["seed"], r["target_acc"]) for r in got
              if r["algorithm"] == "ERM" and r["target"] == "d1"]
    assert erm_d1 == [("d1", "search", 0.5), ("d1", 1, 0.5), ("d1", 2, 0.625)]
    assert got[0] == {"dataset": "ds", "settings": "", "modalities": "m0",
                      "algorithm": "SAGM", "target": "d1", "seed": "search",
                      "target_acc": 0.5, "path": "ds/SAGM/d1/0/0"}
    assert len(got) == 1 + 3 + 3 + 2 + 3


def test_paired_tables_by_hand():
    (table,) = paired_tables(paired_fixture())
    assert table.key == ("ds", "") and table.note == ""
    sagm, diff = table.results  # SAGM's modality set m0 has no ERM: no pairs there
    assert (sagm.algorithm, sagm.group, sagm.n_pairs, sagm.only_algorithm) == (
        "SAGM", ("m0",), 0, 1)
    d = [0.625 - 0.5, 0.75 - 0.5, 0.625 - 0.625, 0.5 - 0.25, 0.375 - 0.375]
    assert (diff.algorithm, diff.reference, diff.group, diff.metric) == (
        "MERDG", "ERM", ("m0+m1",), "target_acc")
    assert (diff.n_pairs, diff.only_algorithm, diff.only_reference) == (5, 0, 1)
    assert diff.mean == pytest.approx(statistics.mean(d))
    half = 2.776445105 * statistics.stdev(d) / math.sqrt(5)  # t(0.975, 4)
    assert (diff.t_low, diff.t_high) == pytest.approx((statistics.mean(d) - half,
                                                       statistics.mean(d) + half), abs=1e-8)
    assert "(column, seed) pairs" in table.words()
    assert "accuracy in words" in table.words("accuracy in words")
    assert "| m0+m1 | MERDG | ERM | 5 (1 unmatched) | +12.50 |" in table.markdown()
    assert "| m0+m1 | MERDG | ERM | 5 (1 unmatched) | +1.25 |" in table.markdown(scale=10.0)
    # in % the difference is in points; at another scale (an MAE) in the metric's own units
    assert "- MERDG (m0+m1): 12.50 points better" in table.words()
    assert "- MERDG (m0+m1): 1.25 better than ERM" in table.words(scale=10.0)


def test_paired_tables_against_another_reference_and_metric():
    rows = paired_fixture()
    for r in rows:
        r["auroc"] = r["target_acc"] / 2
    (table,) = paired_tables(rows, reference="MERDG", metric="auroc")
    _, diff = table.results
    assert (diff.algorithm, diff.reference, diff.metric) == ("ERM", "MERDG", "auroc")
    assert diff.mean == pytest.approx(-statistics.mean([0.0625, 0.125, 0.0, 0.125, 0.0]))
    oracle_rows = [{**r, "selection": "oracle", "auroc": 0.0} for r in rows]
    (oracle,) = paired_tables(rows + oracle_rows, rule="oracle")
    assert oracle.results[1].n_pairs == 5


def test_a_table_without_the_reference_says_so():
    rows = paired_fixture() + runs("MERDG", "d1", {0: 0.5}, dataset="other")
    tables = paired_tables(rows)
    assert [t.key for t in tables] == [("ds", ""), ("other", "")]
    note = ("No paired differences here: the reference algorithm ERM has no runs in this "
            "table (choose one with --reference).")
    assert tables[1] == PairedTable(("other", ""), (), note)
    assert tables[1].markdown() == note + "\n" and tables[1].words() == note + "\n"
    assert paired_tables([]) == []


# --- rows of run directories -------------------------------------------------------------------

def write_run(path, *, seed=0, target_accs=(0.5, 0.75), sources=("d0", "d1"), target="d2",
              domains=("d0", "d1", "d2"), evaluations=(), hparams=None):
    path.mkdir(parents=True)
    config = {"dataset": "synthetic", "algorithm": "ERM", "target": target, "seed": seed,
              "hparams_seed": 0, "sources": list(sources), "hparams": hparams or {}}
    run = {"config": config, "sources": list(sources), "modalities": ["m0"],
           "domains": list(domains)}
    records = [{"epoch": e + 1, "steps": e + 1, "val": {"acc": 0.5, "loss": 1.0,
                                                         "probe_acc": {}},
                "target": {"acc": acc, "probe_acc": {}}, "time_s": 1.0}
               for e, acc in enumerate(target_accs)]
    records[0]["run"] = run
    (path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (path / "done").write_text("done\n")
    if evaluations:
        (path / "evaluations").mkdir()
        for i, e in enumerate(evaluations):
            (path / "evaluations" / f"e{i}.json").write_text(json.dumps(e))
    return path


def test_load_rows_reads_every_finished_run_with_its_settings(tmp_path):
    write_run(tmp_path / "b" / "run", seed=1, hparams={"lr": 0.5})
    write_run(tmp_path / "a", seed=0)
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "records.jsonl").write_text("{}\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "records.jsonl").write_text("")
    (tmp_path / "empty" / "done").write_text("done\n")
    rows = load_rows(tmp_path)
    assert [(r["path"], r["selection"], r["epoch"]) for r in rows] == [
        (str(tmp_path / "a"), "source_val", 2), (str(tmp_path / "a"), "oracle", 2),
        (str(tmp_path / "a"), "last", 2), (str(tmp_path / "b" / "run"), "source_val", 2),
        (str(tmp_path / "b" / "run"), "oracle", 2), (str(tmp_path / "b" / "run"), "last", 2)]
    assert [r["settings"] for r in rows] == ['{"sources": ["d0", "d1"]}'] * 3 + [
        '{"hparams": {"lr": 0.5}, "sources": ["d0", "d1"]}'] * 3
    assert all("outer_settings" not in r for r in rows)
    assert rows[0]["target_acc"] == 0.75 and rows[0]["seed"] == 0


def test_an_inner_run_row_names_the_settings_of_its_task(tmp_path):
    write_run(tmp_path / "inner", sources=("d0",), target="d1", domains=("d0", "d1", "d2"))
    rows = load_rows(tmp_path)
    assert {r["left_out"] for r in rows} == {"d2"}
    assert {r["outer_settings"] for r in rows} == {"{}"}
    assert {r["settings"] for r in rows} == {'{"setting": "single-source"}'}


def test_a_copied_run_counts_once_and_two_runs_of_one_identity_are_refused(tmp_path):
    write_run(tmp_path / "a")
    write_run(tmp_path / "b")  # the same records: a copy
    with pytest.warns(UserWarning, match=rf"^{tmp_path / 'b'} is a copy of the run in "
                                         rf"{tmp_path / 'a'}; counted once$"):
        rows = load_rows(tmp_path)
    assert {r["path"] for r in rows} == {str(tmp_path / "a")} and len(rows) == 3
    shutil.rmtree(tmp_path / "b")
    write_run(tmp_path / "c", target_accs=(0.5, 0.625))  # same identity, other results
    with pytest.raises(ValueError, match=(
            rf"^{tmp_path / 'a'} and {tmp_path / 'c'} hold different runs of the same config "
            r"\(algorithm, sources, target, seed, hparams seed and settings\); keep one of "
            rf"them under {tmp_path}$")):
        load_rows(tmp_path)


def test_runs_differing_only_in_sources_are_two_runs(tmp_path):
    write_run(tmp_path / "a", sources=("d0", "d1"))
    write_run(tmp_path / "b", sources=("d1", "d0"), target_accs=(0.25, 0.25))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows = load_rows(tmp_path)
    assert len(rows) == 6


def test_a_record_that_is_not_merdg_s_is_one_line(tmp_path):
    run = write_run(tmp_path / "a")
    lines = run.joinpath("records.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    del first["run"]["config"]["seed"]
    run.joinpath("records.jsonl").write_text(json.dumps(first) + "\n" + lines[1] + "\n")
    with pytest.raises(ValueError, match=(
            rf"^{run / 'records.jsonl'}: not a merdg epoch record \(missing or malformed entry "
            rf"'seed'\); move the directory out of {tmp_path}, or rerun it$")):
        load_rows(tmp_path)
    run.joinpath("records.jsonl").write_text(json.dumps({"epoch": 1}) + "\n")
    with pytest.raises(ValueError, match="not a merdg epoch record"):
        load_rows(tmp_path)


def test_evaluations_enter_the_rows_of_their_epoch_and_wanted_settings_choose(tmp_path):
    def ev(settings, value, created):
        return {"evaluator": "corruptions", "settings": settings, "model": {"epoch": 2},
                "columns": {"corruption_acc": value}, "created": created}

    write_run(tmp_path / "a", evaluations=[ev({"s": 1}, 0.25, "2"), ev({"s": 5}, 0.5, "1")])
    with pytest.warns(UserWarning, match=r"^some runs hold several corruptions evaluations "
                                         r"with different settings; the newest of each is "
                                         r"reported \(give the evaluator options to `merdg "
                                         r"collect` to choose\)$"):
        rows = load_rows(tmp_path)
    assert [r.get("corruption_acc") for r in rows] == [0.25, 0.25, 0.25]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows = load_rows(tmp_path, {"corruptions": {"s": 5}})
    assert [r.get("corruption_acc") for r in rows] == [0.5, 0.5, 0.5]
