"""Unimodal pretraining: what it trains, that it learns, resumes exactly, and loads back."""

import numpy as np
import pytest
import torch

from merdg.datasets import build_dataset
from merdg.models import build_encoder
from merdg.models.transfer import freeze, load_encoder_weights
from merdg.run.config import RunConfig
from merdg.run.pretraining import UnimodalPretraining, pretrain_encoders
from merdg.run.training import build_algorithm, run_hparams

SMALL = {m: {"hidden": 16, "out_dim": 8} for m in ("m0", "m1", "m2")}
OPTIONS = {"epochs": 4, "batch_size": 32, "lr": 3e-3}


@pytest.fixture(scope="module")
def corpus():
    return build_dataset("synthetic-pretrain", corpus_domains=2, samples_per_domain=240,
                         n_classes=3)


def small_encoders(dataset, seed=0):
    torch.manual_seed(seed)
    return {m: build_encoder({**dataset.encoder_spec(m), **SMALL[m]}, dataset.input_shape(m))
            for m in dataset.modalities}


def trainer(dataset, seed=0, **options):
    train = [dataset.split(d, "train", 0, 0.2) for d in dataset.domains]
    val = [dataset.split(d, "val", 0, 0.2) for d in dataset.domains]
    return UnimodalPretraining(small_encoders(dataset), dataset.num_classes, train, val,
                               **{**OPTIONS, **options}, seed=seed)


def test_only_encoders_and_their_heads_train(corpus):
    run = trainer(corpus, epochs=2)
    freeze(run.encoders, "m1.net.1")
    run.optimizer = torch.optim.Adam([p for p in run.encoders.parameters() if p.requires_grad]
                                     + list(run.heads.parameters()), lr=3e-3)
    before = {n: p.detach().clone() for n, p in run.encoders.named_parameters()}
    heads = {n: p.detach().clone() for n, p in run.heads.named_parameters()}
    run.run()
    after = dict(run.encoders.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in ("m1.net.1.weight", "m1.net.1.bias"))
    assert all(not torch.equal(before[n], p) for n, p in after.items() if p.requires_grad)
    assert all(not torch.equal(heads[n], p) for n, p in run.heads.named_parameters())
    # the optimizer of a fresh stage holds exactly the trainable encoder and head parameters
    fresh = trainer(corpus)
    in_optimizer = {id(p) for group in fresh.optimizer.param_groups for p in group["params"]}
    assert in_optimizer == {id(p) for p in [*fresh.encoders.parameters(),
                                            *fresh.heads.parameters()]}
    state = run.selected_state_dict()
    assert set(state) == {f"{m}.{k}" for m, e in run.encoders.items() for k in e.state_dict()}


def test_pretrained_encoders_give_a_probe_something_to_learn(corpus, tmp_path):
    result = pretrain_encoders(corpus, tmp_path / "enc.pt", encoders=SMALL, seed=0, **OPTIONS)
    assert len(result.records) == 4 and result.path == tmp_path / "enc.pt"
    accs = [result.selected[m]["val_acc"] for m in corpus.modalities]
    assert min(accs) > 0.55  # chance is 1/3
    assert all(result.selected[m]["val_acc"] == max(r["val"][f"acc/{m}"] for r in result.records)
               for m in corpus.modalities)
    # on the benchmark: a linear probe on frozen pretrained embeddings of unseen domains
    bench = build_dataset("synthetic", samples_per_domain=120, n_classes=3)

    def probe_accuracy(encoders):
        def embed(domain):
            s = bench.domain_samples(domain)
            with torch.no_grad():
                return encoders["m0"].eval()(s.x["m0"]).double().numpy(), s.y.numpy()
        x, y = map(np.concatenate, zip(*[embed(d) for d in ("d0", "d1", "d2")]))
        w = np.linalg.lstsq(np.c_[x, np.ones(len(x))], np.eye(3)[y], rcond=None)[0]
        xt, yt = embed("d3")
        return float(((np.c_[xt, np.ones(len(xt))] @ w).argmax(1) == yt).mean())

    scratch = small_encoders(bench, seed=5)
    pretrained = small_encoders(bench, seed=5)
    report = load_encoder_weights(pretrained, tmp_path / "enc.pt")
    assert report.layout == "encoders" and all(r.loaded == 4 for r in report.encoders.values())
    assert probe_accuracy(pretrained) > 0.5 and probe_accuracy(pretrained) > \
        probe_accuracy(scratch) + 0.15
    saved = torch.load(tmp_path / "enc.pt", weights_only=True)
    assert saved["pretraining"]["encoders"]["m0"] == {"name": "mlp", "hidden": 16, "out_dim": 8,
                                                      "layers": 2}
    assert saved["pretraining"]["domains"] == ["p0", "p1"]
    with pytest.raises(FileExistsError, match="exists"):
        pretrain_encoders(corpus, tmp_path / "enc.pt", encoders=SMALL, epochs=1)


def test_weights_load_into_a_benchmark_run_model(corpus, tmp_path):
    result = pretrain_encoders(corpus, tmp_path / "enc.pt", encoders=SMALL, epochs=1)
    bench = build_dataset("synthetic", samples_per_domain=24, n_classes=3)
    hparams = run_hparams(RunConfig("synthetic", "d0", "MERDG", hparams={"encoders": SMALL}), bench)
    algorithm = build_algorithm(bench, "MERDG", 3, hparams)
    load_encoder_weights(algorithm.net, tmp_path / "enc.pt")
    loaded = {f"{m}.{k}": v for m, e in algorithm.net.encoders.items()
              for k, v in e.state_dict().items()}
    assert all(torch.equal(loaded[k], v) for k, v in result.state_dict.items())


def test_resume_is_bit_identical_and_leaves_the_global_rng(corpus, tmp_path):
    whole = trainer(corpus, seed=7)
    rng = torch.get_rng_state()
    whole.run()
    assert torch.equal(torch.get_rng_state(), rng)
    first = trainer(corpus, seed=7)
    first.run_epoch()
    first.run_epoch()
    torch.save(first.state_dict(), tmp_path / "stage.pt")
    resumed = trainer(corpus, seed=7)
    resumed.load_state_dict(torch.load(tmp_path / "stage.pt", weights_only=True))
    assert resumed.epochs_done == 2
    resumed.run()
    drop_time = lambda records: [{k: v for k, v in r.items() if k != "time_s"}  # noqa: E731
                                 for r in records]
    assert drop_time(resumed.records) == drop_time(whole.records)
    assert resumed.selection() == whole.selection()
    for k, v in whole.selected_state_dict().items():
        assert torch.equal(resumed.selected_state_dict()[k], v), k
    other_seed = trainer(corpus, seed=8)
    other_seed.run_epoch()
    assert other_seed.records[0]["val"] != whole.records[0]["val"]
    with pytest.raises(RuntimeError, match="epochs are done"):
        whole.run_epoch()
    with pytest.raises(ValueError, match="cannot continue"):
        trainer(corpus, seed=7, lr=1e-3).load_state_dict(first.state_dict())


def test_bad_options(corpus):
    with pytest.raises(ValueError, match="not among the dataset"):
        pretrain_encoders(corpus, modalities=["rgb"], epochs=1)
    with pytest.raises(ValueError, match="unknown domains"):
        pretrain_encoders(corpus, domains=["d0"], epochs=1)
    with pytest.raises(ValueError, match="epochs"):
        trainer(corpus, epochs=0)
    with pytest.raises(RuntimeError, match="no pretraining epoch"):
        trainer(corpus).selected_state_dict()
