"""merdg.run.checkpoint, function by function: the random states round-trip, the digest of a
written file is the sha256 of its bytes, a damaged or foreign file is refused with one line,
and a checkpoint restores weights, optimizer and random states (fast: no training run)."""

import hashlib
import random

import numpy as np
import pytest
import torch

from merdg.run.checkpoint import (
    FORMAT,
    CheckpointDamagedError,
    CheckpointMismatchError,
    epoch_payload,
    load_checkpoint,
    read_verified,
    restore_training_state,
    rng_state,
    set_rng_state,
    write_torch_file,
)
from merdg.run.records import WriteFailedError


def draws():
    return (torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in "abc"],
            np.random.randn(2).tolist())  # randn: numpy's cached Gaussian


def test_random_states_round_trip_through_a_torch_file(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.randn(1)  # leaves a cached Gaussian in numpy's state
    state = rng_state(torch.device("cpu"))
    assert set(state) == {"torch", "numpy", "python"}
    first = draws()
    write_torch_file(tmp_path / "s.tmp", {"rng": state}, tmp_path / "s.pt")
    saved = torch.load(tmp_path / "s.tmp", weights_only=True)["rng"]
    draws()
    set_rng_state(saved, torch.device("cpu"))
    assert draws() == first
    set_rng_state(state, None)
    assert draws() == first


def test_the_digest_is_the_sha256_of_the_written_bytes(tmp_path):
    payload = {"epoch": 3, "weights": torch.arange(6.0)}
    digest = write_torch_file(tmp_path / "c.tmp", payload, tmp_path / "c.pt")
    data = (tmp_path / "c.tmp").read_bytes()
    assert digest == hashlib.sha256(data).hexdigest()
    loaded = read_verified(tmp_path / "c.tmp", {digest: 3})
    assert loaded["epoch"] == 3 and torch.equal(loaded["weights"], torch.arange(6.0))
    assert read_verified(tmp_path / "c.tmp", None)["epoch"] == 3  # unverified (old runs)


def test_a_failed_write_names_the_target_and_removes_the_temporary_file(tmp_path, monkeypatch):
    import merdg.run.checkpoint as checkpoint

    def full_disk(self, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint._HashingWriter, "write", full_disk)
    with pytest.raises(WriteFailedError, match=r"c\.pt.*No space left on device.*"
                       r"the last checkpoint is intact"):
        write_torch_file(tmp_path / "c.tmp", {"x": torch.zeros(1000)}, tmp_path / "c.pt",
                         "the last checkpoint is intact")
    assert not (tmp_path / "c.tmp").exists()


def test_a_short_write_is_an_error(tmp_path):
    import io

    from merdg.run.checkpoint import _HashingWriter

    class Short(io.BytesIO):
        def write(self, data):
            return max(0, len(data) - 1)

    digest = hashlib.sha256()
    writer = _HashingWriter(Short(), digest)
    assert writer.writable()
    with pytest.raises(OSError, match=r"^short write \(2 of 3 bytes\)$"):
        writer.write(b"abc")
    assert isinstance(writer.error, OSError)
    assert digest.hexdigest() == hashlib.sha256(b"").hexdigest()  # nothing hashed
    ok = _HashingWriter(io.BytesIO(), digest)
    assert ok.write(b"abc") == 3 and digest.hexdigest() == hashlib.sha256(b"abc").hexdigest()


def test_damaged_and_unreadable_files_are_refused_with_one_line(tmp_path):
    path = tmp_path / "c.pt"
    digest = write_torch_file(path, {"epoch": 2}, path)
    with pytest.raises(CheckpointDamagedError, match=r"c\.pt: damaged \(its sha256 "
                       rf"{digest[:12]}\.\.\. is not the one recorded when it was written\)$"):
        read_verified(path, {"0" * 64: 2})
    with pytest.raises(CheckpointDamagedError, match=r"c\.pt: holds epoch 2, but was recorded "
                       r"as epoch 5$"):
        read_verified(path, {digest: 5})
    path.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=r"c\.pt: cannot be read as merdg weights \("):
        read_verified(path, None, what="merdg weights")
    # a payload without an epoch (model.pt) is not cross-checked
    digest = write_torch_file(path, {"state_dict": {}}, path)
    assert read_verified(path, {digest: 7}) == {"state_dict": {}}


IDENTITY = {"config": {"algorithm": "ERM", "seed": 0}, "hparams": {"lr": 0.1}}
SELECTED = {"epoch": 1, "state": None}  # the selected model is this epoch's


def test_load_checkpoint_checks_format_and_identity(tmp_path):
    path = tmp_path / "checkpoint.pt"
    digest = write_torch_file(path, {"format": FORMAT, "identity": IDENTITY, "epoch": 1}, path)
    assert load_checkpoint(path, IDENTITY, digests={digest: 1})["epoch"] == 1
    other = {"config": {"algorithm": "MERDG", "seed": 0}, "hparams": {"lr": 0.1}}
    with pytest.raises(CheckpointMismatchError, match=r"checkpoint\.pt was written by a different "
                       r"run; differences: config\.algorithm: 'ERM' \(checkpoint\) vs 'MERDG' "
                       r"\(now\)\. Use another output directory, or restart the run \(merdg "
                       r"train --restart\)\.$"):
        load_checkpoint(path, other)
    write_torch_file(path, {"format": FORMAT + 1, "identity": IDENTITY, "epoch": 1}, path)
    with pytest.raises(ValueError, match=rf"checkpoint\.pt: not a merdg checkpoint \(format "
                       rf"{FORMAT}\)$"):
        load_checkpoint(path, IDENTITY)
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"cannot be read as a merdg checkpoint .*; delete it to "
                       r"start the run over$"):
        load_checkpoint(path, IDENTITY)
    with pytest.raises(CheckpointDamagedError):
        load_checkpoint(path, IDENTITY, digests={"0" * 64: 1})


class _Algo(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.optimizer = torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


def test_epoch_payload_restores_weights_optimizer_and_random_state():
    torch.manual_seed(0)
    algo = _Algo()
    algo.layer(torch.ones(1, 2)).sum().backward()
    algo.optimizer.step()
    records = [{"epoch": 1, "val": {"acc": 0.5}}, {"epoch": 2, "val": {"acc": 0.6}}]
    payload = epoch_payload(IDENTITY, algo, torch.device("cpu"), records, SELECTED)
    assert payload["epoch"] == 2 and payload["world_size"] == 1
    assert payload["identity"] == IDENTITY and payload["records"] == records
    assert payload["selected"] == SELECTED
    assert len(payload["rng"]) == 1
    expected = torch.rand(2)
    fresh = _Algo()
    torch.rand(5)
    assert restore_training_state(payload, fresh, torch.device("cpu"), seed=0) == records
    assert torch.equal(fresh.layer.weight, algo.layer.weight)
    assert fresh.optimizer.state_dict()["state"][0]["momentum_buffer"] is not None
    assert torch.equal(torch.rand(2), expected)  # the random state of the checkpoint


def test_another_world_size_reseeds_with_a_warning():
    algo = _Algo()
    payload = epoch_payload(IDENTITY, algo, torch.device("cpu"), [{"epoch": 1}], SELECTED)
    payload["rng"] = payload["rng"] * 2  # written by 2 ranks
    with pytest.warns(UserWarning, match=r"holds the random state of 2 ranks, this run has 1: "
                      "reseeding"):
        restore_training_state(payload, _Algo(), torch.device("cpu"), seed=3)
    first = torch.rand(2)
    with pytest.warns(UserWarning):
        restore_training_state(payload, _Algo(), torch.device("cpu"), seed=3)
    assert torch.equal(torch.rand(2), first)  # the reseed is deterministic (seed, epoch, rank)
    with pytest.warns(UserWarning):
        restore_training_state(payload, _Algo(), torch.device("cpu"), seed=4)
    assert not torch.equal(torch.rand(2), first)


# --- CUDA random states (mocked: the suite runs on CPU), files and messages -------------------

@pytest.fixture
def fake_cuda(monkeypatch):
    """torch.cuda's RNG functions recorded instead of called (no GPU needed)."""
    calls = []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: torch.tensor([7, device.index]))
    monkeypatch.setattr(torch.cuda, "set_rng_state",
                        lambda state, device: calls.append((state.tolist(), device)))
    return calls


def test_cuda_random_state_is_saved_and_restored_for_a_cuda_device(fake_cuda):
    cuda = torch.device("cuda", 1)
    state = rng_state(cuda)
    assert state["cuda"].tolist() == [7, 1]
    assert "cuda" not in rng_state(torch.device("cpu")) and "cuda" not in rng_state(None)
    set_rng_state(state, cuda)
    assert fake_cuda == [([7, 1], cuda)]
    set_rng_state(state, torch.device("cpu"))
    set_rng_state(state, None)
    set_rng_state(rng_state(None), cuda)  # saved without CUDA: nothing to restore
    assert len(fake_cuda) == 1
    assert state["numpy"][1].dtype == torch.int64  # numpy's uint32 keys, as int64


def test_restore_and_payload_pass_the_device_on(fake_cuda):
    cuda = torch.device("cuda", 0)
    algo = _Algo()
    payload = epoch_payload(IDENTITY, algo, cuda, [{"epoch": 1}], SELECTED)
    assert payload["rng"][0]["cuda"].tolist() == [7, 0]
    restore_training_state(payload, _Algo(), cuda, seed=0)
    assert fake_cuda == [([7, 0], cuda)]


def test_records_with_non_json_values_are_stored_as_text():
    from pathlib import Path

    payload = epoch_payload(IDENTITY, _Algo(), torch.device("cpu"),
                            [{"epoch": 1, "path": Path("runs/a")}], SELECTED)
    assert payload["records"] == [{"epoch": 1, "path": "runs/a"}]


def test_the_reseed_is_the_documented_seed_hash():
    from merdg.hparams import seed_hash

    payload = epoch_payload(IDENTITY, _Algo(), torch.device("cpu"), [{"epoch": 1}] * 4,
                            SELECTED)
    payload["rng"] = payload["rng"] * 3
    with pytest.warns(UserWarning) as caught:
        restore_training_state(payload, _Algo(), torch.device("cpu"), 5)
    assert str(caught[0].message) == (
        "the checkpoint holds the random state of 3 ranks, this run has 1: reseeding, so the "
        "rest of the run is not bit-identical to an uninterrupted one")
    got = (torch.rand(2).tolist(), np.random.rand(), random.random())
    expected = seed_hash("resume", 5, 4, 0)
    torch.manual_seed(expected), np.random.seed(expected), random.seed(expected)
    assert got == (torch.rand(2).tolist(), np.random.rand(), random.random())


def test_loading_honours_map_location_and_refuses_arbitrary_objects(tmp_path):
    import argparse

    path = tmp_path / "checkpoint.pt"
    write_torch_file(path, {"format": FORMAT, "identity": IDENTITY, "epoch": 1,
                            "w": torch.ones(2)}, path)
    assert load_checkpoint(path, IDENTITY, map_location="meta")["w"].device.type == "meta"
    assert read_verified(path, None, map_location="meta")["w"].device.type == "meta"
    assert load_checkpoint(path, IDENTITY)["w"].device.type == "cpu"
    torch.save({"ns": argparse.Namespace(a=1)}, path)  # an object a weights-only load refuses
    with pytest.raises(ValueError, match=r"checkpoint\.pt: cannot be read as a torch file "
                       r"\(UnpicklingError: Weights only load failed[^\n]*\)$"):
        read_verified(path, None)


def test_an_identity_mismatch_lists_ten_differences_at_most(tmp_path):
    path = tmp_path / "checkpoint.pt"
    many = {"hparams": {f"h{i:02d}": i for i in range(12)}}
    write_torch_file(path, {"format": FORMAT, "identity": many, "epoch": 1}, path)
    other = {"hparams": {f"h{i:02d}": -i for i in range(12)}}
    with pytest.raises(CheckpointMismatchError) as raised:
        load_checkpoint(path, other)
    listed = str(raised.value).split("differences: ")[1].split(". Use another")[0].split("; ")
    assert len(listed) == 10 and listed[0].startswith("hparams.h01: 1 (checkpoint) vs -1 (now)")


def test_a_disk_full_error_inside_torch_save_is_reported_as_such(tmp_path, monkeypatch):
    import merdg.run.checkpoint as checkpoint

    class Full:
        def write(self, data):
            raise OSError(28, "No space left on device")

    original = checkpoint._HashingWriter.__init__
    monkeypatch.setattr(checkpoint._HashingWriter, "__init__",
                        lambda self, file, digest: original(self, Full(), digest))
    with pytest.raises(WriteFailedError, match=r"^cannot write .*c\.pt: the disk is full "
                       r"\(No space left on device\)$"):
        write_torch_file(tmp_path / "c.tmp", {"x": torch.zeros(10)}, tmp_path / "c.pt")
    assert not (tmp_path / "c.tmp").exists()


def test_other_torch_errors_are_not_write_failures(tmp_path, monkeypatch):
    def broken(payload, file):
        raise RuntimeError("cannot pickle this")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(RuntimeError, match=r"^cannot pickle this$"):
        write_torch_file(tmp_path / "c.tmp", {}, tmp_path / "c.pt")
