"""Several candidate domain columns in one manifest: ``domain_column`` chooses the domains,
``where`` selects rows, and the two-command workflow (pretrain on some subjects, benchmark the
placement domains on the others)."""

import csv
import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from merdg.cli import main
from merdg.datasets import build_dataset
from merdg.datasets.columns import format_where, parse_where, select_rows
from merdg.datasets.preprocessing import DataError
from merdg.run.records import read_jsonl

SUBJECTS, PLACEMENTS, LABELS = ("p1", "p2", "p3", "p4"), ("hip", "wrist"), ("run", "walk")
WINDOWS = 2  # per subject, placement and class


def write_manifest(root: Path, plain_domain: bool = False, lengths: tuple[int, ...] = (16,),
                   shared_file: bool = False) -> Path:
    """4 subjects x 2 placements x 2 classes x 2 windows: ``domain:subject`` and
    ``domain:placement`` columns (and a plain ``domain`` = placement with ``plain_domain``),
    a ``group`` per recording (subject, placement, class), accel (T, 3) arrays whose T cycles
    through ``lengths``. With ``shared_file`` the rows of p1 and p2 point at the same files
    (two annotations of one recording)."""
    rng = np.random.default_rng(0)
    (root / "accel").mkdir(parents=True)
    rows = []
    for s, subject in enumerate(SUBJECTS):
        for placement in PLACEMENTS:
            for k, label in enumerate(LABELS):
                for w in range(WINDOWS):
                    sid = f"{subject}_{placement}_{label}_{w}"
                    t = lengths[len(rows) % len(lengths)]
                    array = rng.normal(k + 0.3 * s, 1, (t, 3)).astype(np.float32)
                    owner = "p1" if shared_file and subject == "p2" else subject
                    path = f"accel/{owner}_{placement}_{label}_{w}.npy"
                    if owner == subject:
                        np.save(root / path, array)
                    row = {"sample_id": sid, "label": label,
                           "group": f"{subject}_{placement}_{label}",
                           "domain:subject": subject, "domain:placement": placement,
                           "accel": path}
                    if plain_domain:
                        row = {"domain": placement, **row}
                    rows.append(row)
    with open(root / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("MERDG_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def data(tmp_path):
    return write_manifest(tmp_path / "data")


def load(root, **options):
    return build_dataset("manifest", str(root), progress=False, **options)


def cli_error(capsys, *args) -> str:
    """The one stderr line of a `merdg` command that must fail with status 2."""
    assert main(list(args)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


# --- the where syntax ------------------------------------------------------------------------

def test_where_forms_parse_to_the_same_conditions():
    expected = {"subject": ("p1", "p2"), "placement": ("wrist",)}
    assert parse_where(" subject: p1 ,p2 ; placement:wrist ") == expected
    assert parse_where({"subject": ["p1", "p2"], "placement": "wrist"}) == expected
    assert parse_where(["subject:p1,p2", "placement:wrist"]) == expected
    assert parse_where({"subject": [1, 2]}) == {"subject": ("1", "2")}  # JSON numbers
    assert parse_where(None) == {} and parse_where("subject:p1,p1") == {"subject": ("p1",)}
    assert format_where(expected) == "subject:p1,p2;placement:wrist"


@pytest.mark.parametrize("spec, why", [
    ("subject", "has no ':'"), (":p1", "names no column"), ("subject:", "empty value"),
    ("subject:p1,", "empty value"), ("subject:p1;", "has no ':'"),
    ("subject:p1;subject:p2", "appears in two conditions"), (3, "a int"),
    ({"subject": True}, "not a string or a number"), ({"subject": []}, "names no column or value"),
    ([], "a list")])
def test_bad_where_syntax_is_one_line(spec, why):
    with pytest.raises(ValueError, match="expected COLUMN:VALUE") as err:
        parse_where(spec)
    assert why in str(err.value) and "\n" not in str(err.value)


def test_select_rows_names_what_does_not_match():
    table = {"subject": ["p1", "p1", "p2"], "session": ["a", "b", "b"]}
    assert select_rows(table, {"subject": ("p1",), "session": ("b",)}) == [1]
    with pytest.raises(ValueError, match="no column 'age' to select rows by; the columns are "
                                         "subject, session"):
        select_rows(table, {"age": ("3",)})
    with pytest.raises(ValueError, match="values p3, p4 of column 'subject' match no row; its "
                                         "values are p1, p2"):
        select_rows(table, {"subject": ("p1", "p3", "p4")})
    with pytest.raises(ValueError, match="no row satisfies every condition"):
        select_rows(table, {"subject": ("p2",), "session": ("a",)})


# --- the manifest ----------------------------------------------------------------------------

def test_domain_column_chooses_the_domains(data, tmp_path):
    by_placement = load(data, domain_column="placement")
    assert by_placement.domains == ["hip", "wrist"] and len(by_placement.labels("hip")) == 16
    by_subject = load(data, domain_column="domain:subject")  # the column's full name works too
    assert by_subject.domains == list(SUBJECTS) and by_subject.domain_column == "subject"
    with pytest.raises(ValueError, match=r"has no 'domain' column: choose one of its domain "
                                         r"columns \(subject, placement\) with --dataset-option "
                                         r"domain_column=NAME"):
        load(data)
    plain = write_manifest(tmp_path / "plain", plain_domain=True)
    assert load(plain).domains == ["hip", "wrist"]  # the plain domain column is the default
    assert load(plain, domain_column="subject").domains == list(SUBJECTS)


def test_where_selects_rows_and_keeps_every_class(data):
    ds = load(data, domain_column="placement", where="subject:p3,p4")
    assert ds.domains == ["hip", "wrist"] and len(ds.sample_ids) == 16
    assert {sid.split("_")[0] for sid in ds.sample_ids} == {"p3", "p4"}
    walk_only = load(data, domain_column="subject", where="subject:p1,p2;placement:wrist")
    assert walk_only.sample_ids == [f"{s}_wrist_{c}_{w}" for s in ("p1", "p2") for c in LABELS
                                    for w in range(WINDOWS)]
    runs = [f"{s}_{p}_run" for s in ("p1", "p2") for p in PLACEMENTS]
    one_class = load(data, domain_column="placement", where={"subject": ["p1", "p2"],
                                                             "group": runs})
    assert one_class.class_names == ["run", "walk"] and one_class.num_classes == 2
    assert one_class.labels("hip") == [0] * 4 and one_class.labels("wrist") == [0] * 4
    assert load(data, domain_column="subject", where="subject:p1,p2").labels("p1")[:2] == [0, 0]
    ds.fit_normalization(["hip"])  # the rows a run reads are the selected ones only
    expected = np.load(data / "accel" / "p3_wrist_walk_1.npy")
    position = ds.sample_ids.index("p3_wrist_walk_1")
    assert torch.allclose(ds._raw["accel"][position], torch.from_numpy(expected))


def test_a_selection_never_reads_a_stale_cache_entry(tmp_path):
    root = write_manifest(tmp_path / "shared", shared_file=True)  # p2's rows reuse p1's files
    first = load(root, domain_column="placement", where="subject:p1,p3")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "ignoring cache entry ... rebuilding it"
        second = load(root, domain_column="placement", where="subject:p2,p3")
        again = load(root, domain_column="placement", where="subject:p1,p3")
    assert second.sample_ids[0].startswith("p2_") and again.sample_ids == first.sample_ids
    assert len(list((tmp_path / "cache" / "manifest").glob("accel-*.npy"))) == 2
    for ds in (first, second):
        for i, sid in enumerate(ds.sample_ids):
            subject, rest = sid.split("_", 1)
            owner = "p1" if subject == "p2" else subject
            assert torch.equal(ds._raw["accel"][i],
                               torch.from_numpy(np.load(root / f"accel/{owner}_{rest}.npy")))


def test_selected_length_warns_unless_it_is_fixed(tmp_path):
    root = write_manifest(tmp_path / "varying", lengths=(12, 16, 20))
    with pytest.warns(UserWarning, match=r"resampled length of 'accel' \(20 frames\) comes from "
                                         r"the rows selected by where.*length=20"):
        load(root, domain_column="placement", where="subject:p1,p2")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load(root, domain_column="placement", where="subject:p1,p2",
                    length=20).input_shape("accel") == (20, 3)
        load(root, domain_column="placement")  # no selection: the whole manifest's length


@pytest.mark.parametrize("options, message", [
    (["where=age:3"], "no column 'age' to select rows by; the columns are subject, placement, "
                      "group"),
    (["where=label:run"], "no column 'label' to select rows by"),
    (["where=subject:p1,p9"], "value p9 of column 'subject' matches no row; its values are p1, "
                              "p2, p3, p4"),
    (["where=subject:p1;group:p2_hip_run"], "no row satisfies every condition"),
    (["where=placement:wrist"], "leaves 1 domain (wrist) in the domain column 'placement'"),
    (["where=subject:p1,"], "condition 'subject:p1,' has an empty value"),
    (["where=subject:p1", "where=subject:p2"], "where is given twice; give it once (one where "
                                               "option takes several conditions, joined by ';')"),
    (["domain_column=session"], "no domain column 'session' (a column named domain:session); "
                                "its domain columns are subject, placement"),
    (["domain_column=3"], "domain_column must be a column name, got 3"),
])
def test_every_bad_option_is_one_line_before_any_array_is_read(data, tmp_path, capsys,
                                                                monkeypatch, options, message):
    from merdg.datasets import manifest

    def never(*args, **kwargs):
        raise AssertionError("an array was read")

    monkeypatch.setattr(manifest, "load_array", never)
    opts = [x for o in ["domain_column=placement", *options] for x in ("--dataset-option", o)]
    if options[0].startswith("domain_column"):
        opts = opts[2:]
    for command in (["data", "check"], ["train", "--target", "hip", "--out", str(tmp_path)]):
        err = cli_error(capsys, *command, "--dataset", "manifest", "--data-root", str(data),
                        "--dataset-option", "progress=false", *opts)
        assert message in err, err


@pytest.mark.parametrize("name", ["domain:", "domain:label", "domain:group", "domain:a;b",
                                  "domain:a:b"])
def test_bad_domain_column_names_in_the_header(data, name):
    text = (data / "manifest.csv").read_text().replace("domain:placement", name, 1)
    (data / "manifest.csv").write_text(text)
    with pytest.raises(DataError, match="domain column.*a name after 'domain:' must be non-empty"):
        load(data, domain_column="subject")


def test_header_without_any_domain_column(data):
    path = data / "manifest.csv"
    rows = list(csv.reader(path.open()))
    keep = [i for i, c in enumerate(rows[0]) if not c.startswith("domain:")]
    path.write_text("\n".join(",".join(r[i] for i in keep) for r in rows) + "\n")
    with pytest.raises(DataError, match=r"lack \['domain'\]; need \['sample_id', 'domain', "
                                        r"'label'\] \(or, instead of 'domain', 'domain:NAME' "
                                        r"columns\)"):
        load(data)


def test_empty_cell_of_a_domain_column_is_a_problem(data):
    path = data / "manifest.csv"
    lines = path.read_text().splitlines()
    lines[5] = lines[5].replace(",p1,", ",,", 1)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"line 6 \(sample p1_wrist_run_0\): empty "
                                        r"'domain:subject'"):
        load(data, domain_column="placement")


def test_data_check_lists_every_domain_column(data, capsys):
    args = ["data", "check", "--dataset", "manifest", "--data-root", str(data),
            "--dataset-option", "progress=false", "--dataset-option", "domain_column=placement"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert ("domain columns (choose one with --dataset-option domain_column=NAME, select rows "
            "with --dataset-option where=COLUMN:VALUE,...):") in out
    assert "  subject: 4 values: p1 8, p2 8, p3 8, p4 8\n" in out
    assert "  placement (in use): 2 values: hip 16, wrist 16\n" in out
    assert "OK: 32 readable samples in 2 domains" in out
    where = "where=subject:p3,p4;group:p3_hip_run,p3_hip_walk,p4_hip_run,p4_wrist_run"
    assert main([*args, "--dataset-option", where]) == 1  # wrist keeps one recording:
    out = capsys.readouterr().out
    assert "PROBLEM: domain 'wrist' has one group ('p4_wrist_run')" in out  # a target only
    assert "  subject: 2 values: p3 4, p4 4 (1 of 2 classes)\n" in out
    assert "  placement (in use): 2 values: hip 6, wrist 2 (1 of 2 classes)\n" in out
    assert f"{where}: 8 of 32 rows selected" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    assert rows["hip"] == ["4", "2", "6"] and rows["total"] == ["6", "2", "8"]
    assert "warning: domain 'wrist' has no samples of classes ['walk']" in out
    text = (data / "manifest.csv").read_text()
    (data / "manifest.csv").write_text(text.replace("wrist,accel/p4_wrist_run", "ankle,accel/"
                                                    "p4_wrist_run"))
    assert main(args) == 1  # ankle: one recording, as above
    out = capsys.readouterr().out  # a value that lacks classes says how many it has
    assert "  placement (in use): 3 values: ankle 2 (1 of 2 classes), hip 16, wrist 14\n" in out
    assert "warning: domain 'ankle' has no samples of classes ['walk']" in out


def test_pretrain_on_some_subjects_then_bench_the_placements_on_the_others(data, tmp_path):
    """The two-command workflow: encoders pretrained on p1 and p2 (placements as the holdout's
    domains), then leave-one-placement-out on p3 and p4 from those encoders."""
    encoders = {"accel": {"channels": [8, 8]}}
    out = tmp_path / "encoders.pt"
    assert main(["pretrain", "--dataset", "manifest", "--data-root", str(data),
                 "--dataset-option", "domain_column=placement", "--dataset-option",
                 "where=subject:p1,p2", "--dataset-option", "progress=false", "--epochs", "2",
                 "--batch-size", "4", "--encoders", json.dumps(encoders),
                 "--out", str(out)]) == 0
    saved = torch.load(out, weights_only=True)
    assert saved["pretraining"]["domains"] == ["hip", "wrist"]
    assert saved["pretraining"]["dataset_options"]["where"] == "subject:p1,p2"
    hp = {"epochs": 1, "batch_size": 4, "proj_hidden": 16, "fusion_hidden": 16,
          "encoders": encoders}
    bench = tmp_path / "bench"
    assert main(["bench", "--dataset", "manifest", "--data-root", str(data),
                 "--dataset-option", "domain_column=placement", "--dataset-option",
                 "where=subject:p3,p4", "--dataset-option", "progress=false",
                 "--init", str(out), "--algorithms", "ERM", "--seeds", "1",
                 "--hparams", json.dumps(hp), "--out", str(bench)]) == 0
    for target in PLACEMENTS:
        record = list(read_jsonl(bench / f"runs/accel/ERM/{target}/seed0/records.jsonl"))[-1]
        assert record["run"]["sources"] == [p for p in PLACEMENTS if p != target]
        assert record["target"]["n"] == 2 * len(LABELS) * WINDOWS  # p3 and p4 only
        assert record["run"]["config"]["dataset_options"]["where"] == "subject:p3,p4"
        init = record["run"]["init"]
        assert init["kind"] == "file"
        assert init["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
