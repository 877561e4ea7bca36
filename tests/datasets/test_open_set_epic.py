"""Open-set runs on the tiny EPIC-Kitchens tree with MOOSA's published class split."""

import json

from media_setup import CLIP_OPTIONS, TINY_ENCODERS

import run_outputs
from merdg.cli import main
from merdg.datasets import build_dataset
from merdg.datasets.clips import ClipPart
from merdg.datasets.open_set import known_class_part, open_set_part, part_labels
from merdg.evaluation.open_set import resolve_known_classes
from merdg.run.records import read_jsonl

TINY_HPARAMS = {"epochs": 1, "batch_size": 4, "proj_hidden": 16, "fusion_hidden": 16,
                "encoders": TINY_ENCODERS}


def test_clip_parts_are_filtered_from_the_index(epic_root):
    ds = build_dataset("epic-kitchens", str(epic_root), ["audio"], **CLIP_OPTIONS)
    known = resolve_known_classes(ds, None, "epic-kitchens")
    assert known == (0, 1, 2, 4, 5, 6, 7)  # MOOSA: "close" (3) is unknown
    target = ds.split("D3", "test")
    assert part_labels(target) == [2, 3, 4, 5]  # the fixture's labels cycle from 2 in D3
    view = known_class_part(target, known)
    assert isinstance(view.base, ClipPart) and part_labels(view.base) == [2, 4, 5]
    assert [view[i][1] for i in range(len(view))] == [2, 3, 4]  # positions among the known
    assert [open_set_part(target, known)[i][1] for i in range(4)] == [2, -1, 3, 4]


def test_epic_open_set_run_with_the_published_split(tmp_path, epic_root, tiny_checkpoints):
    folder, _ = tiny_checkpoints
    out = tmp_path / "run"
    assert main(["train", "--preset", "epic-va-fusion", "--data-root", str(epic_root),
                 "--checkpoint-dir", str(folder), "--source", "D1", "D2", "--target", "D3",
                 "--open-set", "--out", str(out), "--hparams", json.dumps(TINY_HPARAMS),
                 *[f"--dataset-option={k}={v}" for k, v in CLIP_OPTIONS.items()]]) == 0
    [record] = list(read_jsonl(out / "records.jsonl"))
    assert record["target"]["n"] == 3 and record["target"]["n_unknown"] == 1
    open_set = run_outputs.evaluation(out, "open_set")["columns"]
    assert {"h_score", "known_acc", "unknown_acc", "open_set_threshold"} <= set(open_set)
    assert "close" not in record["run"]["known_classes"]
    assert len(record["run"]["known_classes"]) == 7
