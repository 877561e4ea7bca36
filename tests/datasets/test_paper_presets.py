"""Paper presets, and two training steps through the real pipeline on the tiny EPIC/HAC trees."""

import json

import pytest
from media_setup import CLIP_OPTIONS, TINY_ENCODERS

from merdg.cli import main
from merdg.datasets import build_dataset
from merdg.presets import PRESETS, get_preset, resolve_checkpoints
from merdg.run.config import RunConfig
from merdg.run.hparams import resolve_run_hparams
from merdg.run.records import read_jsonl

# batch 4 = 2 per source domain; 4 training clips per domain -> 2 steps in the epoch
TINY_HPARAMS = {"epochs": 1, "batch_size": 4, "proj_hidden": 16, "fusion_hidden": 16,
                "encoders": TINY_ENCODERS}
OPTIONS = [f"--dataset-option={k}={v}" for k, v in CLIP_OPTIONS.items()]


def resolved(preset_name, epic_root, **settings):
    """The hparams a run of the preset resolves to (the one resolution every command uses)."""
    preset = get_preset(preset_name)
    config = RunConfig(dataset=preset.dataset, target="D3", algorithm=preset.algorithm,
                       modalities=preset.modalities, preset=preset_name, checkpoint_dir="none",
                       data_root=str(epic_root), dataset_options=CLIP_OPTIONS, **settings)
    dataset = build_dataset(config.dataset, config.data_root, config.modalities,
                            **config.dataset_options)
    return resolve_run_hparams(config, dataset)


def test_presets_cover_the_paper_runs(epic_root):
    assert len(PRESETS) == 16 + 2  # and MMDG-Bench's mmdg-hust, mmdg-mmsa
    for dataset in ("epic", "hac"):
        for mods in ("va", "vf", "af", "vaf"):
            fusion, mer = PRESETS[f"{dataset}-{mods}-fusion"], PRESETS[f"{dataset}-{mods}-merdg"]
            assert fusion.algorithm == "ERM" and mer.algorithm == "MERDG"
            assert len(fusion.modalities) == len(mods)
    hp = resolved("epic-vaf-merdg", epic_root)
    assert hp["mer_lambda"] == 3.0 and "mer_lambda" not in resolved("epic-vaf-fusion", epic_root)
    assert (hp["mer_alpha_marg"], hp["mer_alpha_spec"], hp["mer_target"]) == (1.0, 1.0,
                                                                              "projection")
    assert (hp["lr"], hp["weight_decay"], hp["batch_size"], hp["epochs"]) == (1e-4, 1e-4, 16, 20)
    assert (hp["fusion_hidden"], hp["dropout"], hp["proj_hidden"], hp["proj_dim"]) == (
        512, 0.5, 2048, 128)
    assert hp["encoders"]["audio"] == {"name": "vggsound_resnet", "trunk_bn": "eval",
                                       "layer4_init": "random"}
    assert hp["encoders"]["video"]["trunk_bn"] == "train"
    merged = resolved("epic-vaf-merdg", epic_root, hparams={"lr": 3e-4},
                      encoders={"audio": {"layer4_init": "checkpoint"}})
    assert merged["lr"] == 3e-4 and merged["encoders"]["audio"]["trunk_bn"] == "eval"
    assert merged["encoders"]["audio"]["layer4_init"] == "checkpoint"
    assert get_preset("epic-vaf-merdg").encoders["audio"]["layer4_init"] == "random"  # kept
    shared = resolved("epic-va-fusion", epic_root, encoders={"flow": {"width": 4}})
    assert set(shared["encoders"]) == {"video", "audio"}
    with pytest.raises(KeyError, match="vidoe"):
        resolved("epic-vaf-merdg", epic_root, encoders={"vidoe": {"width": 4}})
    with pytest.raises(KeyError, match="epic-va-fusion"):
        get_preset("epic-av")
    # a preset stores only where the paper's run differs from the declared defaults
    assert all(p.hparams == {} for p in PRESETS.values())
    assert get_preset("epic-vf-merdg").encoders == {}


def test_checkpoint_files_are_found_or_listed(tmp_path, tiny_checkpoints):
    folder, _ = tiny_checkpoints
    found = resolve_checkpoints(str(folder), ["video", "audio", "flow"])
    assert found["audio"].endswith("H.pth.tar")
    with pytest.raises(FileNotFoundError) as err:
        resolve_checkpoints(str(tmp_path), ["video", "audio"])
    assert "slowfast_r101_8x8x1_256e_kinetics400_rgb_20210218-0dd54025.pth" in str(err.value)
    assert "vggsound_avgpool.pth.tar or H.pth.tar" in str(err.value)


def test_preset_command_line_errors(epic_root, capsys):
    base = ["train", "--preset", "epic-va-fusion", "--data-root", str(epic_root),
            "--target", "D3"]
    assert main(base) == 2
    assert "--checkpoint-dir" in capsys.readouterr().err
    assert main([*base, "--checkpoint-dir", "none", "--modalities", "video"]) == 2
    assert "fixes the modalities" in capsys.readouterr().err
    assert main(["train", "--target", "D3", "--out", "x"]) == 2
    assert "--dataset and --out are required" in capsys.readouterr().err


def run_preset(tmp_path, preset, root, checkpoints, sources, target, *extra):
    out = tmp_path / preset
    args = ["train", "--preset", preset, "--data-root", str(root), "--checkpoint-dir",
            str(checkpoints), "--source", *sources, "--target", target, "--out", str(out),
            "--hparams", json.dumps(TINY_HPARAMS), *OPTIONS, *extra]
    assert main(args) == 0
    return list(read_jsonl(out / "records.jsonl"))


def test_epic_preset_trains_two_steps(tmp_path, epic_root, tiny_checkpoints):
    folder, states = tiny_checkpoints
    records = run_preset(tmp_path, "epic-vaf-merdg", epic_root, folder, ["D1", "D2"], "D3")
    rec = records[-1]
    assert rec["steps"] == 2 and rec["run"]["config"]["algorithm"] == "MERDG"
    assert {"ce", "mer", "mer_spec/audio", "mer_marg/flow"} <= set(rec["train"])
    assert set(rec["val"]["per_domain"]) == {"D1", "D2"} and rec["target"]["n"] == 4
    loads = rec["run"]["checkpoints"]
    assert loads["video"]["loaded"] == len(states["video"])
    assert loads["audio"]["not_loaded"] == {"audnet.layer4.": sum(
        k.startswith("audnet.layer4.") for k in states["audio"])}
    assert rec["run"]["hparams"]["lr"] == 1e-4 and rec["run"]["config"]["eval_batch_size"] == 16


def test_hac_preset_trains_two_steps_and_counts_skipped_files(tmp_path, hac_copy,
                                                              tiny_checkpoints):
    folder, _ = tiny_checkpoints
    name = (hac_copy / "HAC_Splits/HAC_train_only_human.csv").read_text().split(",")[0]
    (hac_copy / "human/videos" / name).write_bytes(b"corrupt" * 20)
    records = run_preset(tmp_path, "hac-va-fusion", hac_copy, folder, ["human", "animal"],
                         "cartoon", "--dataset-option", "on_error=skip")
    rec = records[-1]
    assert rec["run"]["config"]["algorithm"] == "ERM" and rec["target"]["n"] == 8
    assert rec["steps"] == 2
    assert rec["data_issues"]["skipped_while_reading"] >= 1
    assert name in rec["data_issues"]["skipped_reads"][0]
    summary = json.loads((tmp_path / "hac-va-fusion" / "summary.json").read_text())
    assert summary["data_issues"]["skipped_while_reading"] >= 1


def test_a_preset_starts_from_the_users_own_encoders(tmp_path, epic_root):
    """--init FILE replaces the public checkpoints of a preset (no --checkpoint-dir needed);
    the preset's frozen trunk stays frozen: the same freezing as --freeze all-but-last."""
    import torch
    from media_setup import NAMES, SHAPES

    from merdg.models import build_encoder
    from merdg.models.transfer import encoder_blocks

    torch.manual_seed(3)
    own = {m: build_encoder({"name": NAMES[m], **TINY_ENCODERS[m]}, SHAPES[m])
           for m in ("video", "audio")}
    file = tmp_path / "own.pt"
    torch.save({f"{m}.{k}": v for m, e in own.items() for k, v in e.state_dict().items()}, file)
    out = tmp_path / "run"
    assert main(["train", "--preset", "epic-va-fusion", "--data-root", str(epic_root),
                 "--source", "D1", "D2", "--target", "D3", "--out", str(out), "--init",
                 str(file), "--save-model", "selected", "--hparams", json.dumps(TINY_HPARAMS),
                 *OPTIONS]) == 0
    info = json.loads((out / "config.json").read_text())
    assert {m: e["loaded"] for m, e in info["init"]["load"]["encoders"].items()} == {
        m: len(e.state_dict()) for m, e in own.items()}
    final = torch.load(out / "model.pt", weights_only=True)["state_dict"]
    for m, encoder in own.items():
        trunk = [n for block in encoder_blocks(encoder)[:-1] for n in block]
        frozen = {k: v for k, v in encoder.state_dict().items()
                  if any(k.startswith(t + ".") for t in trunk) and "running" not in k
                  and "num_batches" not in k}
        assert frozen and all(torch.equal(v, final[f"net.encoders.{m}.{k}"])
                              for k, v in frozen.items()), m
