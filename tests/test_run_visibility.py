"""What a run does, visible (issue: bring-your-own data a new user can trust): the epoch plan at
the start of a run and in the report, encoders whose probe stays at chance flagged in train's
final lines and in the bench report, plain job logs, "1 seed, no spread", and an encoder
override that switches the encoder."""

import json
import re

import numpy as np

from merdg.cli import main
from merdg.datasets import build_dataset
from merdg.run.config import RunConfig
from merdg.run.hparams import resolve_encoders

HPARAMS = {"epochs": 3, "batch_size": 12, "lr": 0.01, "proj_hidden": 16, "fusion_hidden": 16}


def write_manifest(root, per_domain=(60, 24, 24)):
    """3 classes, 3 domains of different sizes; ``signal`` carries the class, ``noise`` none."""
    rng = np.random.default_rng(0)
    (root / "signal").mkdir(parents=True)
    (root / "noise").mkdir()
    lines = ["sample_id,domain,label,signal,noise"]
    for d, n in enumerate(per_domain):
        for i in range(n):
            label = i % 3
            sid = f"d{d}_{i}"
            signal = np.eye(3)[label].repeat(2) * 3 + rng.normal(0, 0.3, 6)
            np.save(root / "signal" / f"{sid}.npy", signal.astype(np.float32))
            np.save(root / "noise" / f"{sid}.npy", rng.normal(0, 1, 6).astype(np.float32))
            lines.append(f"{sid},d{d},c{label},signal/{sid}.npy,noise/{sid}.npy")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root


def test_train_shows_the_epoch_plan_and_flags_an_encoder_at_chance(tmp_path, capsys):
    data = write_manifest(tmp_path / "data")
    out = tmp_path / "run"
    assert main(["train", "--dataset", "manifest", "--data-root", str(data), "--target", "d2",
                 "--hparams", json.dumps(HPARAMS), "--dataset-option", "cache=false",
                 "--out", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    # sources d0 (48 train samples) and d1 (19): 6 of each per batch; d1 sets 3 steps
    assert ("an epoch is 3 steps of 12 samples (d0 6, d1 6 per step); samples seen per epoch: "
            "d0 18 of 48, d1 18 of 19 (the smallest domain, d1, sets the epoch length)"
            in captured.err)
    json.loads(captured.out)  # stdout: the summary's JSON (--json)
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    # without --encoder-probes the test reads the side probe, and says so
    assert len(warnings) == 1 and warnings[0].startswith(
        "warning: noise side probe (the linear head trained along with the model, which may "
        "not have converged; --encoder-probes fits one on the frozen encoder) on source "
        "validation: ")
    assert warnings[0].endswith("within noise of chance: the side probe learned nothing "
                                "measurable")
    info = json.loads((out / "config.json").read_text())
    assert info["epoch_plan"]["steps_per_epoch"] == 3 and info["num_classes"] == 3
    assert info["preprocessing"]["noise"]["sample_shape"] == [6]


def test_with_encoder_probes_the_chance_test_reads_the_encoder(tmp_path, capsys):
    data = write_manifest(tmp_path / "data")
    out = tmp_path / "run"
    assert main(["train", "--dataset", "manifest", "--data-root", str(data), "--target", "d2",
                 "--hparams", json.dumps(HPARAMS), "--dataset-option", "cache=false",
                 "--out", str(out), "--encoder-probes", "--json"]) == 0
    captured = capsys.readouterr()
    chosen = json.loads(captured.out)["selection"]["source_val"]
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and warnings[0].startswith(
        "warning: noise encoder (a linear probe fit on the frozen encoder, --encoder-probes) on "
        f"source validation: {100 * chosen['encoder_val_probe_acc/noise']:.2f}% on "
        f"{chosen['val_n']} samples vs 33.33% chance")
    assert warnings[0].endswith("within noise of chance: the encoder learned nothing measurable")
    assert chosen["encoder_val_probe_acc/signal"] > 0.9  # the signal's encoder is not flagged


def test_the_chance_test_prefers_the_encoder_to_an_unconverged_side_probe():
    """Issue 20: after 2 epochs from pretrained encoders the side probes were at chance while
    the frozen encoders' probes reached 57 / 53 / 40% on 3 classes: no warning is due."""
    from merdg.evaluators.encoder_probes import chance_probes, near_chance_warnings

    row = {"num_classes": 3, "val_n": 400, "val_probe_acc/m0": 0.35, "val_probe_acc/m1": 0.33,
           "val_probe_acc/m2": 0.34}
    which, flagged = chance_probes(row)
    assert which == "side" and sorted(flagged) == ["m0", "m1", "m2"]
    assert near_chance_warnings(row)[0].startswith("m0 side probe (the linear head trained "
                                                   "along with the model, which may not have "
                                                   "converged;")
    row.update({"encoder_val_probe_acc/m0": 0.57, "encoder_val_probe_acc/m1": 0.53,
                "encoder_val_probe_acc/m2": 0.40})
    assert chance_probes(row) == ("encoder", {})
    assert near_chance_warnings(row) == []
    row["encoder_val_probe_acc/m2"] = 0.35  # 140 of 400 right
    assert near_chance_warnings(row) == [
        "m2 encoder (a linear probe fit on the frozen encoder, --encoder-probes) on source "
        "validation: 35.00% on 400 samples vs 33.33% chance (one-sided binomial p = 0.255): "
        "within noise of chance: the encoder learned nothing measurable"]


def test_bench_report_shows_epoch_plans_flags_and_one_seed(tmp_path, capsys):
    data = write_manifest(tmp_path / "data")
    out = tmp_path / "bench"
    assert main(["bench", "--dataset", "manifest", "--data-root", str(data), "--algorithms",
                 "ERM", "--seeds", "1", "--targets", "d1", "d2", "--hparams",
                 json.dumps(HPARAMS), "--dataset-option", "cache=false", "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "1 seed, no spread" in (out / "table.md").read_text()
    assert "Cells: 1 seed, no spread" in report
    assert "| signal+noise | ERM | d1 | 3 | d0 18, d2 18 |" in report.replace("noise+signal",
                                                                           "signal+noise")
    assert ("the noise side probe (trained along with the model; it may not have converged) is "
            "within noise of chance on source validation in 2 of 2 runs") in report


def test_worker_logs_hold_plain_lines(tmp_path, capsys):
    data = write_manifest(tmp_path / "data")
    out = tmp_path / "sweep"
    assert main(["sweep", "--dataset", "manifest", "--data-root", str(data), "--algorithms",
                 "ERM", "--targets", "d1", "d2", "--trials", "0", "--seeds", "1", "--hparams",
                 json.dumps({**HPARAMS, "epochs": 1}), "--dataset-option",
                 f"cache_dir={tmp_path / 'cache'}", "--workers", "2", "--out", str(out)]) == 0
    logs = [p.read_text() for p in out.glob("jobs/*/log.txt")]
    assert len(logs) == 2 and all("epoch 1/1" in log for log in logs)
    assert not any("\r" in log for log in logs)  # no progress-bar frames
    # the launcher's own stderr (not a terminal): a timestamped line per finished worker
    finished = [line for line in capsys.readouterr().err.splitlines() if " job " in line]
    assert sorted(re.sub(r"^\S+ \S+ job (\d)/2 done \(\d+\.\d s\): .*/jobs/\w+$", r"\1", line)
                  for line in finished) == ["1", "2"], finished


def test_an_encoder_override_may_switch_the_encoder(tmp_path):
    data = write_manifest(tmp_path / "data")
    dataset = build_dataset("manifest", str(data), None, cache=False, progress=False)
    config = RunConfig(dataset="manifest", target="d2",
                       encoders={"signal": {"name": "tcn", "channels": [8]},
                                 "noise": {"hidden": 4}})
    specs = resolve_encoders(config, dataset)
    assert specs["signal"] == {"name": "tcn", "channels": [8]}  # the mlp's options dropped
    assert specs["noise"] == {"name": "mlp", "hidden": 4, "out_dim": 64, "layers": 2}


def test_progress_bars_are_drawn_only_where_someone_watches(monkeypatch):
    import io
    import sys

    from merdg.progress import progress_bar, watched

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a file: no bar
    assert not watched() and progress_bar(range(3)).disable
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert watched() and not progress_bar(range(3)).disable
    assert progress_bar(range(3), shown=False).disable  # --no-progress and the like
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.setitem(sys.modules, "ipykernel", object())  # a notebook draws its widget
    assert watched()


def test_a_bench_into_a_file_writes_no_bar_frames(tmp_path):
    """The jobs bar (and every other bar) stays off when standard error is a file."""
    import subprocess
    import sys

    data = write_manifest(tmp_path / "data")
    with open(tmp_path / "err.txt", "w") as err:
        done = subprocess.run(
            [sys.executable, "-m", "merdg.cli", "bench", "--dataset", "manifest", "--data-root",
             str(data), "--algorithms", "ERM", "--seeds", "1", "--targets", "d1",
             "--hparams", json.dumps({**HPARAMS, "epochs": 1}), "--dataset-option",
             f"cache_dir={tmp_path / 'cache'}", "--out", str(tmp_path / "bench")],
            stderr=err, stdout=subprocess.DEVNULL, timeout=300)
    text = (tmp_path / "err.txt").read_text()
    assert done.returncode == 0, text
    assert "\r" not in text and "it/s]" not in text
    # instead of the bar, a timestamped line per finished job
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d job 1/1 done \(\d+\.\d s\): "
                        + re.escape(str(tmp_path / "bench" / "runs")) + r"/\S+/ERM/d1/seed0\n",
                        text), text
