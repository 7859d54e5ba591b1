"""AsrDataModule: conf parsing, mux weights, batch shapes (precomputed and on-the-fly features with all
augmentations), mid-epoch sampler resume, cut filters. Runs on a toy corpus with real fbank."""
import argparse
import logging
from pathlib import Path

import pytest
import torch
from lhotse import CutSet, SupervisionSegment
from lhotse.testing.dummies import dummy_cut

from compute_fbank import compute_fbank
from import_manifest import import_manifest
from make_toy_corpus import make_toy_corpus
from zipformer_rwkv.dataset.asr_datamodule import (
    AsrDataModule,
    load_data_conf,
    make_cut_filter,
)
from zipformer_rwkv.zipformer.encoder import encoder_out_length

CONF = """corpus: toy
source: nemo
train:
  - {name: train, cuts: toy_cuts_train.jsonl.gz, weight: 1.0}
dev: {dev: toy_cuts_dev.jsonl.gz}
test: {test: toy_cuts_test.jsonl.gz, test2: toy_cuts_dev.jsonl.gz}
noise: [absent_cuts.jsonl.gz, noise_cuts.jsonl.gz]
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """toy corpus -> manifests -> fbank (lilcom) in data/fbank; noise from the same generator."""
    root = tmp_path_factory.mktemp("dm")
    mans = make_toy_corpus(root / "download", {"train": 40, "dev": 6, "test": 5, "noise": 3}, seed=1,
                           max_duration=3.5)
    fbank = root / "fbank"
    for split in ("train", "dev", "test", "noise"):
        cuts, _ = import_manifest(mans[split], "nemo", root / "manifests", "toy", split,
                                  no_text=split == "noise")
        cuts = compute_fbank(cuts, fbank / f"toy_feats_{split}", nj=1)
        name = "noise_cuts.jsonl.gz" if split == "noise" else f"toy_cuts_{split}.jsonl.gz"
        cuts.to_file(fbank / name)
    (root / "conf.yaml").write_text(CONF)
    return root


def make_args(root: Path, *argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    AsrDataModule.add_arguments(p)
    return p.parse_args(["--conf", str(root / "conf.yaml"), "--manifest-dir", str(root / "fbank"),
                         "--num-workers", "0", "--num-buckets", "2", *argv])


def ids(batch):
    return [c.id for c in batch["supervisions"]["cut"]]


def test_batches_precomputed_with_spec_aug_and_noise(data):
    dm = AsrDataModule(make_args(data, "--max-duration", "8"))
    dl = dm.train_dataloaders(dm.train_cuts())
    n_cuts = 0
    for batch in dl:
        x, sup = batch["inputs"], batch["supervisions"]
        assert x.ndim == 3 and x.shape[2] == 80 and x.dtype == torch.float32
        assert x.shape[0] == len(sup["text"]) == len(sup["cut"])
        assert int(sup["num_frames"].max()) <= x.shape[1]
        # lhotse's bucketing may overshoot --max-duration by one cut at a bucket's end
        assert sum(c.duration for c in sup["cut"]) <= 8.0 + 3.5
        for c, nf in zip(sup["cut"], sup["num_frames"].tolist()):
            assert abs(nf - round(c.duration * 100)) <= 1
        n_cuts += x.shape[0]
    assert 0 < n_cuts <= 40
    noise = dm.noise_cuts()  # the first existing entry of the conf's noise list
    assert len(noise) == 3 and all(c.has_features and not c.supervisions for c in noise)


def test_on_the_fly_feats_with_all_cut_transforms(data):
    dm = AsrDataModule(make_args(data, "--max-duration", "8", "--on-the-fly-feats", "true",
                                 "--perturb-speed", "true", "--perturb-volume", "true"))
    batch = next(iter(dm.train_dataloaders(dm.train_cuts())))
    x, sup = batch["inputs"], batch["supervisions"]
    assert x.shape[0] == len(sup["cut"]) and x.shape[2] == 80
    assert torch.isfinite(x).all()
    for c, nf in zip(sup["cut"], sup["num_frames"].tolist()):
        assert abs(nf - round(c.duration * 100)) <= 2


def test_perturbation_needs_on_the_fly_feats(data):
    with pytest.raises(ValueError, match="--on-the-fly-feats"):
        AsrDataModule(make_args(data, "--perturb-speed", "true"))


def test_valid_and_test_loaders_are_deterministic_and_complete(data):
    dm = AsrDataModule(make_args(data, "--max-duration", "5"))
    assert set(dm.test_cuts()) == {"test", "test2"}
    dl = dm.test_dataloaders(dm.test_cuts()["test"])
    got = [i for b in dl for i in ids(b)]
    assert sorted(got) == sorted(c.id for c in dm.test_cuts()["test"]) and len(got) == 5
    assert got == [i for b in dm.test_dataloaders(dm.test_cuts()["test"]) for i in ids(b)]
    assert len(list(dm.valid_cuts())) == 6


@pytest.mark.parametrize("bucketing", ["true", "false"])
def test_sampler_resume_yields_exactly_the_remaining_batches(data, bucketing):
    args = make_args(data, "--max-duration", "6", "--bucketing-sampler", bucketing, "--enable-spec-aug",
                     "false", "--enable-musan", "false", "--seed", "7")
    dm = AsrDataModule(args)
    dl = dm.train_dataloaders(dm.train_cuts())
    dl.sampler.set_epoch(3)
    it = iter(dl)
    first = [ids(next(it)) for _ in range(3)]
    state = dl.sampler.state_dict()
    rest = [ids(b) for b in it]
    assert len(rest) >= 2
    dl2 = AsrDataModule(args).train_dataloaders(dm.train_cuts(), sampler_state_dict=state)
    resumed = [ids(b) for b in dl2]
    assert resumed == rest
    assert not set(sum(first, [])) & set(sum(resumed, []))


def test_exact_resume_with_prefetching_workers(data):
    args = make_args(data, "--max-duration", "6", "--enable-spec-aug", "false", "--enable-musan", "false",
                     "--num-workers", "2")
    dm = AsrDataModule(args)
    dl = dm.train_dataloaders(dm.train_cuts())
    it = iter(dl)
    first = [ids(next(it)) for _ in range(2)]
    assert dl.sampler.state_dict()["diagnostics"]["stats_per_epoch"][0]["kept_batches"] > 2  # prefetched
    state = AsrDataModule.sampler_state_dict(dl, batches_consumed=2)
    rest = [ids(b) for b in it]
    with pytest.raises(ValueError, match="batches_consumed=999"):
        AsrDataModule.sampler_state_dict(dl, 999)
    resumed = [ids(b) for b in dm.train_dataloaders(dm.train_cuts(), sampler_state_dict=state)]
    assert resumed == rest and len(first) + len(rest) >= 4


def write_dummy(path: Path, prefix: str, n: int) -> None:
    cuts = CutSet.from_cuts(dummy_cut(i, duration=1.0).with_id(f"{prefix}-{i}") for i in range(n))
    cuts.to_file(path)


def test_mux_weights(tmp_path):
    (tmp_path / "fbank").mkdir()
    write_dummy(tmp_path / "fbank" / "a.jsonl.gz", "a", 3000)
    write_dummy(tmp_path / "fbank" / "b.jsonl.gz", "b", 3000)
    (tmp_path / "conf.yaml").write_text(
        "corpus: mix\ntrain:\n  - {name: a, cuts: a.jsonl.gz, weight: 0.2}\n"
        "  - {name: b, cuts: b.jsonl.gz, weight: 0.8}\n")
    args = make_args(tmp_path, "--seed", "3")
    cuts = AsrDataModule(args).train_cuts()
    first = [c.id for _, c in zip(range(2000), cuts)]
    frac_a = sum(i.startswith("a-") for i in first) / len(first)
    assert abs(frac_a - 0.2) < 0.03  # binomial sd 0.009
    assert len(list(cuts)) == 6000  # finite mux: every cut once per epoch


def test_conf_errors_name_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("corpus: x\ntrain:\n  - {name: t, cuts: t.jsonl.gz, weight: -1}\n")
    with pytest.raises(ValueError, match=r"bad.yaml: train\[0\] \(t\) has weight -1"):
        load_data_conf(bad)
    bad.write_text("corpus: x\ntrain: []\n")
    with pytest.raises(ValueError, match="bad.yaml: 'train' must be a non-empty list"):
        load_data_conf(bad)
    with pytest.raises(FileNotFoundError, match="absent.yaml"):
        load_data_conf(tmp_path / "absent.yaml")
    c = load_data_conf(Path(__file__).resolve().parents[2] / "egs/librispeech/conf.yaml")
    assert c.splits()[:3] == ["train-clean-100", "train-clean-360", "train-other-500"]
    assert c.test == {"test-clean": "librispeech_cuts_test-clean.jsonl.gz",
                      "test-other": "librispeech_cuts_test-other.jsonl.gz"}


def test_missing_manifest_is_one_clear_error(tmp_path, data):
    args = make_args(data, "--manifest-dir", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="toy_cuts_train.jsonl.gz .*prepare.sh"):
        AsrDataModule(args).train_cuts()


def test_cut_filter_duration_and_tokens():
    assert encoder_out_length(100) == 23  # ((100 - 7) // 2 + 1) // 2
    keep = make_cut_filter(1.0, 20.0, num_tokens=lambda t: len(t.split()))
    short = dummy_cut(0, duration=0.5)
    ok = dummy_cut(1, duration=2.0)
    def with_text(c, n_words):
        c = c.with_id(f"{c.id}-{n_words}")
        c.features = None
        c.supervisions = [SupervisionSegment(id=c.id, recording_id=c.recording_id, start=0,
                                             duration=c.duration, text=" ".join(["W"] * n_words))]
        return c

    assert not keep(with_text(short, 1))
    # 2.0 s = 200 frames -> 48 output frames: 46 tokens fit (46 + 2), 47 do not
    assert keep(with_text(ok, 46)) and not keep(with_text(ok, 47))
    assert not make_cut_filter(1.0, 1.5)(with_text(ok, 1))


def test_excluded_cut_is_logged_once_over_start_up_and_epochs(tmp_path, caplog):
    # train.py sums the epoch's audio over the lazily filtered cuts at start-up (_epoch_audio), then
    # every epoch iterates them again: the filter runs on each pass, its warning must not repeat.
    from types import SimpleNamespace

    from zipformer_rwkv.train import _epoch_audio
    from zipformer_rwkv.utils import AttributeDict

    cuts = []
    for i, words in enumerate((1, 60, 2)):  # 2.0 s = 48 output frames: 60 tokens do not fit
        c = dummy_cut(i, duration=2.0).with_id(f"cut-{i}")
        c.features = None
        c.supervisions = [SupervisionSegment(id=c.id, recording_id=c.recording_id, start=0,
                                             duration=c.duration, text=" ".join(["W"] * words))]
        cuts.append(c)
    CutSet.from_cuts(cuts).to_file(tmp_path / "cuts.jsonl.gz")
    lazy = CutSet.from_jsonl_lazy(tmp_path / "cuts.jsonl.gz")  # as train_cuts() reads manifests
    kept = lazy.filter(make_cut_filter(1.0, 20.0, num_tokens=lambda t: len(t.split())))
    train_dl = SimpleNamespace(sampler=SimpleNamespace(cuts=[kept]))
    with caplog.at_level(logging.WARNING):
        assert _epoch_audio(AttributeDict(model_type="ctc"), train_dl, 1) == 4.0
        for _epoch in range(2):
            assert [c.id for c in kept] == ["cut-0", "cut-2"]
    assert [r.getMessage() for r in caplog.records if "Excluding" in r.getMessage()] == \
        ["Excluding cut cut-1: 48 output frames for 60 tokens (needs tokens + 2)"]


def test_second_resume_with_prefetching_workers_counts_batches_before_the_first(data):
    """A run resumed mid-epoch and interrupted again: its checkpoint counts the batches consumed
    before the first resume plus those after it."""
    args = make_args(data, "--max-duration", "4", "--enable-spec-aug", "false", "--enable-musan", "false",
                     "--num-workers", "2")
    dm = AsrDataModule(args)
    full = [ids(b) for b in dm.train_dataloaders(dm.train_cuts())]
    assert len(full) >= 6
    dl = dm.train_dataloaders(dm.train_cuts())
    it = iter(dl)
    [next(it) for _ in range(2)]
    state = AsrDataModule.sampler_state_dict(dl, batches_consumed=2)
    del it
    dl2 = dm.train_dataloaders(dm.train_cuts(), sampler_state_dict=state)
    it2 = iter(dl2)
    assert [ids(next(it2)) for _ in range(2)] == full[2:4]
    state2 = AsrDataModule.sampler_state_dict(dl2, batches_consumed=4)
    del it2
    assert [ids(b) for b in dm.train_dataloaders(dm.train_cuts(), sampler_state_dict=state2)] == full[4:]


def test_augmented_batches_are_the_same_after_a_resume_and_in_a_worker(data):
    """CutMix noise and SpecAugment masks of a batch depend on (seed, epoch, its cuts) only: a
    loader resumed mid-epoch, in a DataLoader worker, yields the very same tensors."""
    import torch

    from zipformer_rwkv.dataset.asr_datamodule import set_train_epoch

    def loader(*extra, state=None):
        args = make_args(data, "--max-duration", "4", "--enable-spec-aug", "true", "--enable-musan", "true",
                         *extra)
        dl = AsrDataModule(args).train_dataloaders(AsrDataModule(args).train_cuts(), sampler_state_dict=state)
        set_train_epoch(dl, 2)
        return dl

    dl = loader()
    full = [b["inputs"] for b in dl]
    assert len(full) >= 4
    dl = loader()
    it = iter(dl)
    [next(it) for _ in range(2)]
    state = AsrDataModule.sampler_state_dict(dl, batches_consumed=2)
    resumed = [b["inputs"] for b in loader("--num-workers", "1", state=state)]
    assert len(resumed) == len(full) - 2
    assert all(torch.equal(a, b) for a, b in zip(full[2:], resumed))
    other_epoch = loader()
    set_train_epoch(other_epoch, 3)
    assert not all(torch.equal(a, b) for a, b in zip(full, [b["inputs"] for b in other_epoch]))


def test_spec_aug_start_epoch_skips_spec_augment_before_that_epoch(data):
    """--spec-aug-start-epoch 2: epoch 1's batches are those of --enable-spec-aug false, epoch 2's
    are masked (the epochs given to set_train_epoch are 0-based, as train.py passes them)."""
    from zipformer_rwkv.dataset.asr_datamodule import set_train_epoch

    def batches(epoch0, *extra):
        args = make_args(data, "--max-duration", "4", "--enable-musan", "false", *extra)
        dl = AsrDataModule(args).train_dataloaders(AsrDataModule(args).train_cuts())
        set_train_epoch(dl, epoch0)
        return [b["inputs"] for b in dl]

    late = ("--enable-spec-aug", "true", "--spec-aug-start-epoch", "2")
    for epoch0 in (0, 1):
        plain = batches(epoch0, "--enable-spec-aug", "false")
        masked = batches(epoch0, "--enable-spec-aug", "true")
        delayed = batches(epoch0, *late)
        assert len(plain) == len(masked) == len(delayed) >= 4
        assert not all(torch.equal(a, b) for a, b in zip(plain, masked))
        want = plain if epoch0 == 0 else masked
        assert all(torch.equal(a, b) for a, b in zip(want, delayed))


def test_unreadable_cut_is_dropped_from_its_batch_and_named(data, tmp_path):
    import shutil

    fbank = tmp_path / "fbank"
    shutil.copytree(data / "fbank", fbank, ignore=shutil.ignore_patterns("toy_cuts_train*"))
    cuts = list(CutSet.from_file(data / "fbank" / "toy_cuts_train.jsonl.gz"))
    junk = tmp_path / "junk.lca"
    junk.write_bytes(b"\x00garbage" * 10)
    bad = cuts[5]
    bad.features.storage_path = str(junk)
    CutSet.from_cuts(cuts).to_file(fbank / "toy_cuts_train.jsonl.gz")
    args = make_args(data, "--max-duration", "6", "--enable-spec-aug", "false", "--enable-musan", "false",
                     "--manifest-dir", str(fbank), "--drop-last", "false")
    dm = AsrDataModule(args)
    seen, reported = [], []
    for batch in dm.train_dataloaders(dm.train_cuts()):
        reported += batch.get("bad_cuts", [])
        seen += ids(batch) if batch["inputs"] is not None else []
    assert [cut_id for cut_id, _ in reported] == [bad.id]
    assert sorted(seen) == sorted(c.id for c in cuts if c.id != bad.id)


def test_read_cuts_accepts_manifests_with_paths_relative_to_the_working_folder(tmp_path, monkeypatch):
    """Manifests from an older prepare.sh hold feature paths relative to the folder it ran in
    (`data/fbank/...`), not to the manifest's folder: they still load, from that folder."""
    import gzip
    import json

    from speech_llm_data import make_corpus
    from zipformer_rwkv.dataset.asr_datamodule import read_cuts

    conf = make_corpus(tmp_path / "data", n_train=2, n_dev=0, n_test=0)
    manifest = conf.parent / "fbank" / "tiny_cuts_train.jsonl.gz"
    lines = [json.loads(line) for line in gzip.open(manifest, "rt")]
    for c in lines:  # as an older prepare.sh wrote them: relative to tmp_path, the working folder
        c["features"]["storage_path"] = str(Path(c["features"]["storage_path"]).relative_to(tmp_path))
    old = tmp_path / "data" / "fbank" / "old_cuts.jsonl.gz"
    with gzip.open(old, "wt") as f:
        f.writelines(json.dumps(c) + "\n" for c in lines)
    monkeypatch.chdir(tmp_path)
    cuts = list(read_cuts(Path("data/fbank/old_cuts.jsonl.gz")))
    assert len(cuts) == 2 and all(c.load_features().shape[1] == 80 for c in cuts)
