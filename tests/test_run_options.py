"""One run config: every RunConfig field can be set from `merdg train`, `merdg bench` and
`merdg sweep` and reaches the run's config.json; settings are validated before any work."""

import dataclasses
import importlib.util
import json

import pytest

from merdg.cli import build_parser, main
from merdg.cli.bench import experiment_config as bench_config
from merdg.cli.sweep import experiment_config as sweep_config
from merdg.cli.train import run_config as train_config
from merdg.evaluators import EVALUATORS, ORDER, canonical_evaluations
from merdg.experiments.plan import first_phase
from merdg.experiments.runner import experiment_tasks
from merdg.run.config import RunConfig, option_of, run_options
from merdg.run.training import train

TINY = {"epochs": 1, "batch_size": 12, "proj_hidden": 16, "fusion_hidden": 16}
ENCODERS = {"m0": {"hidden": 8, "out_dim": 8}}
OPTIONS = {"samples_per_domain": 40, "n_classes": 3}

# one non-default value per field that is not an experiment axis: (command-line args, value)
SHARED = {
    "dataset": (["--dataset", "synthetic"], "synthetic"),
    "hparams": (["--hparams", json.dumps(TINY)], TINY),
    "encoders": (["--encoders", json.dumps(ENCODERS)], ENCODERS),
    "init": (["--init", "unimodal"], "unimodal"),
    "freeze": (["--freeze", "all-but-last"], "all-but-last"),
    "freeze_bn": (["--freeze-bn", "train"], "train"),
    "data_root": (["--data-root", "DATA"], "DATA"),
    "dataset_options": (["--dataset-option", "samples_per_domain=40", "--dataset-option",
                         "n_classes=3"], OPTIONS),
    "holdout_fraction": (["--holdout-fraction", "0.3"], 0.3),
    "split_seed": (["--split-seed", "5"], 5),
    "device": (["--device", "auto"], "auto"),
    "num_workers": (["--num-workers", "1"], 1),
    "eval_batch_size": (["--eval-batch-size", "64"], 64),
    "save_model": (["--save-model", "selected+last"], "selected+last"),
    "checkpoint_every": (["--checkpoint-every", "0"], 0.0),
    "log_every": (["--log-every", "25"], 25),
    "precision": (["--precision", "bf16"], "bf16"),
    "tensorboard": (["--tensorboard"], True),
    "open_set": (["--open-set"], True),
    "known_classes": (["--known-classes", "class0,class2"], ["class0", "class2"]),
    # the evaluators' own flags (merdg.evaluators), checked and completed with their defaults
    "evaluations": (["--eval-missing", "--corruptions", "scaling,missing", "--severities", "5",
                     "2", "--corruption-seed", "4", "--encoder-probes", "--fpr95-point",
                     "nearest", "--ood-domains", "d3"],
                    {"selective": {"fpr95_point": "nearest"}, "missing": {},
                     "corruptions": {"corruptions": ["scaling", "missing"], "severities": [2, 5],
                                     "corruption_seed": 4},
                     "encoder_probes": {},
                     "ood": {"ood_dataset": None, "ood_domains": ["d3"], "ood_data_root": None,
                             "ood_dataset_options": {}, "ood_fpr95_point": "first"}}),
}
# W&B logging runs offline (test_every_setting_reaches_config_json keeps its files in tmp_path);
# without the optional package it is checked on the configs only
WANDB = {"wandb": (["--wandb"], True), "wandb_project": (["--wandb-project", "proj"], "proj"),
         "wandb_entity": (["--wandb-entity", "lab"], "lab"),
         "wandb_group": (["--wandb-group", "grp"], "grp")}
if importlib.util.find_spec("wandb") is not None:
    SHARED.update(WANDB)
# settings a synthetic run cannot use (paper encoders): checked on the configs only
PAPER_ONLY = {
    "preset": (["--preset", "epic-va-fusion"], "epic-va-fusion"),
    "checkpoint_dir": (["--checkpoint-dir", "CKPT"], "CKPT"),
    **({} if "wandb" in SHARED else WANDB),
}
# the fields an experiment sets per run, and the train option of each
AXES = {
    "target": (["--target", "d1"], "d1"),
    "algorithm": (["--algorithm", "MERDG"], "MERDG"),
    "modalities": (["--modalities", "m0", "m1"], ["m0", "m1"]),
    "sources": (["--source", "d0,d2"], ["d0", "d2"]),
    "seed": (["--seed", "1"], 1),
    "hparams_seed": (["--hparams-seed", "1"], 1),
    "out_dir": (["--out", "RUN"], "RUN"),
}
EXPERIMENT_AXES = ["--algorithms", "MERDG", "--targets", "d1", "--modality-sets", "m0+m1",
                   "--seeds", "1"]


def test_the_table_covers_every_field():
    declared = {name for name, _, _ in run_options()}
    assert set(SHARED) | set(PAPER_ONLY) | set(AXES) == declared
    assert {n for n, opt, _ in run_options() if opt.axis} == set(AXES)


def args_of(table):
    return [a for flags, _ in table.values() for a in flags]


def parse(command, *args):
    return build_parser().parse_args([command, *args])


def test_train_sets_every_field():
    config = train_config(parse("train", *args_of(SHARED), *args_of(AXES)))
    for name, (_, value) in {**SHARED, **AXES}.items():
        assert getattr(config, name) == value, name


def experiment_runs(experiment):
    return [job.config for job in first_phase(experiment, experiment_tasks(experiment))]


@pytest.mark.parametrize("command,builder", [("bench", bench_config), ("sweep", sweep_config)])
def test_experiments_pass_every_shared_field_to_their_runs(command, builder, tmp_path):
    extra = ["--trials", "1"] if command == "sweep" else []
    experiment = builder(parse(command, *args_of(SHARED), *EXPERIMENT_AXES, *extra,
                               "--out", str(tmp_path)))
    runs = experiment_runs(experiment)
    assert len(runs) == (2 if command == "sweep" else 1)
    for config in runs:
        for name, (_, value) in SHARED.items():
            assert getattr(config, name) == value, (command, name)
        assert (config.target, config.algorithm, config.modalities) == ("d1", "MERDG",
                                                                        ["m0", "m1"])
        assert config.sources is None  # every domain but the target
        assert config.out_dir.startswith(str(tmp_path))
    if command == "sweep":
        assert [c.hparams_seed for c in runs] == [0, 1] and [c.seed for c in runs] == [0, 1]


@pytest.mark.parametrize("command", ["train", "bench", "sweep"])
def test_paper_settings_reach_the_configs(command, tmp_path):
    paper = args_of(PAPER_ONLY)
    if command == "train":
        config = train_config(parse("train", *paper, "--target", "D3"))
    else:
        args = parse(command, *paper, "--dataset", "epic-kitchens", "--out", str(tmp_path))
        config = (bench_config if command == "bench" else sweep_config)(args).base
    for name, (_, value) in PAPER_ONLY.items():
        assert getattr(config, name) == value, (command, name)


def offline_wandb(tmp_path, monkeypatch):
    """W&B offline and silent, every directory it may use under tmp_path (home included)."""
    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR",
                 "WANDB_ARTIFACT_DIR", "HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-env" / name.lower()))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


@pytest.mark.parametrize("command", ["train", "bench", "sweep"])
def test_every_setting_reaches_config_json(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    offline_wandb(tmp_path, monkeypatch)
    out = tmp_path / "out"
    shared = args_of(SHARED)
    if command == "train":
        args = ["train", *shared, "--target", "d1", "--algorithm", "MERDG", "--modalities",
                "m0,m1", "--source", "d0", "d2", "--seed", "1", "--hparams-seed", "1",
                "--out", str(out)]
    else:
        args = [command, *shared, *EXPERIMENT_AXES, "--out", str(out)]
        args += ["--trials", "0"] if command == "sweep" else []
    expected = (train_config(parse(*args)) if command == "train" else experiment_runs(
        (bench_config if command == "bench" else sweep_config)(parse(*args)))[0])
    assert main(args) == 0
    saved = json.loads((out if command == "train" else tmp_path / expected.out_dir)
                       .joinpath("config.json").read_text())["config"]
    assert saved == expected.to_dict()
    for name, (_, value) in SHARED.items():
        assert saved[name] == value, name


def test_a_new_field_needs_no_other_change(monkeypatch):
    """What the CLI offers is generated from the declarations: a field added to RunConfig
    appears in train, bench and sweep with its flag and help, and a setting added to an
    evaluator in train, bench, sweep, evaluate and collect."""
    for command in ("train", "bench", "sweep", "evaluate", "collect"):
        text = build_parser()._subparsers._group_actions[0].choices[command].format_help()
        for name, opt, _ in run_options():
            if command in ("evaluate", "collect") or not opt.cli:
                continue
            if command == "train" or opt.axis is None:
                assert opt.flag in text, (command, name)
        for name in ORDER:
            evaluator = EVALUATORS.get(name)
            flags = [opt.flag for _, opt, _ in evaluator.Settings.options()]
            for flag in flags + [evaluator.request_flag] * bool(evaluator.request_flag):
                assert flag in text, (command, name, flag)


@pytest.mark.parametrize("settings,message", [
    ({"holdout_fraction": 0.0}, r"holdout_fraction \(--holdout-fraction\) must be > 0"),
    ({"holdout_fraction": 1}, r"must be > 0 and < 1, got 1"),
    ({"num_workers": -1}, r"num_workers \(--num-workers\) must be >= 0, got -1"),
    ({"seed": 1.5}, r"seed \(--seed\) must be an integer, got 1.5"),
    ({"save_model": "yes"}, r"save_model \(--save-model\) must be one of 'selected', "
     r"'selected\+last', 'none'"),
    ({"precision": "fp8"}, r"precision \(--precision\) must be one of 'fp32', 'bf16', 'fp16'"),
    ({"device": "gpu"}, r"device \(--device\) must be cpu, cuda, cuda:N, mps or auto"),
    ({"sources": ["d1", "d1"]}, r"sources \(--source\) lists a name twice"),
    ({"sources": ["d1", "d2"]}, r"target 'd1' is also a source domain"),
    ({"hparams": [1]}, r"hparams \(--hparams\) must be a JSON object"),
    ({"evaluations": {"corruptions": []}}, r"evaluations\['corruptions'\] must be a JSON "
     r"object of the evaluator's settings"),
    ({"init": "weights.pt"}, r"init \(--init\) 'weights.pt': no such file"),
    ({"freeze": " , "}, r"freeze \(--freeze\) must be 'all-but-last' or parameter-name"),
    ({"freeze_bn": "eval"}, r"freeze_bn \(--freeze-bn\) must be one of 'frozen', 'train'"),
])
def test_settings_are_validated_when_the_config_is_built(settings, message):
    with pytest.raises(ValueError, match=message):
        RunConfig(dataset="synthetic", target="d1", **settings)


@pytest.mark.parametrize("evaluations,message", [
    ({"corruptions": {"corruptions": "some"}}, r"corruptions \(--corruptions\) must be a "
     r"non-empty list of names or 'all', got 'some'"),
    ({"corruptions": {"corruptions": []}}, r"corruptions \(--corruptions\) must be a non-empty "
     r"list"),
    ({"corruptions": {"corruptions": "all", "severities": [6]}}, r"severities \(--severities\) "
     r"values must be >= 1 and <= 5, got \[6\]"),
    ({"corruptions": {"corruptions": "all", "severities": [True]}},
     r"must be a non-empty list of integers"),
    ({"corruptions": {"corruption_seed": 2}}, r"--corruption-seed only apply with --corruptions "
     r"\(corruptions is not set\)"),
    ({"encoder_probes": {"when": "all"}}, r"evaluator 'encoder_probes' has no setting \['when'\]"),
    ({"probes": {}}, r"unknown evaluator\(s\) \['probes'\]; evaluators: clean, selective"),
    ({"selective": {"fpr95_point": "middle"}}, r"fpr95_point \(--fpr95-point\) must be one of "
     r"'first', 'nearest'"),
    ({"ood": {}}, r"the ood evaluation needs --ood-dataset or --ood-domains"),
])
def test_evaluator_settings_are_validated_before_any_work(evaluations, message, tmp_path,
                                                          monkeypatch):
    with pytest.raises(ValueError, match=message):
        canonical_evaluations(evaluations)
    # train checks them before any data is read or any file written
    monkeypatch.setattr("merdg.run.training.run_dataset", lambda config: pytest.fail("read"))
    with pytest.raises(ValueError, match=message):
        train(RunConfig(dataset="synthetic", target="d1", evaluations=evaluations,
                        out_dir=str(tmp_path / "run")), progress=False)
    assert not (tmp_path / "run").exists()


def test_option_declarations_are_complete():
    for name, opt, default in run_options():
        assert opt.help and opt.flag.startswith("--"), name
        assert opt.kind in ("str", "int", "float", "bool", "list", "ints", "json", "pairs"), name
        if default is None:
            assert opt.nullable, name
    assert option_of("holdout_fraction").low_open
    assert dataclasses.fields(RunConfig)[0].name == "dataset"
