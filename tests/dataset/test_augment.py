"""On-the-fly audio augmentation (zipformer_rwkv/dataset/augment.py), the RIR bank
(local/make_rir_bank.py) and the ambient-noise licences (local/prepare_ambient_noise.py), on
made-up audio in tmp_path."""
import json
import random
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from zipformer_rwkv.dataset.augment import (
    CODECS,
    AudioAugmenter,
    AugmentConf,
    codec_round_trip,
    parse_augment_conf,
    telephone_band,
)
from zipformer_rwkv.errors import ConfigError, MissingFileError

SR = 16000
pytestmark = pytest.mark.usefixtures("single_thread")


def speechlike(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """Harmonics of a gliding 120-220 Hz pitch under a 4 Hz syllable envelope, plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 120 + 100 * (0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 20)) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    return (0.1 * x + 0.003 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    """rirs/: 3 decaying-noise impulse responses; ambient/: 2 noise recordings (one shorter than
    the test audio, so it is looped)."""
    root = tmp_path_factory.mktemp("aug")
    rng = np.random.default_rng(1)
    (root / "rirs").mkdir()
    for i, rt60 in enumerate((0.2, 0.5, 0.8)):
        n = int(rt60 * SR)
        h = rng.standard_normal(n) * np.exp(-6.9 * np.arange(n) / n)
        h[0] = 3.0
        sf.write(str(root / "rirs" / f"rir-{i}.wav"), (h / np.abs(h).max()).astype(np.float32), SR, subtype="FLOAT")
    (root / "ambient").mkdir()
    for name, seconds in (("hum", 5.0), ("hiss", 1.0)):
        t = np.arange(int(seconds * SR)) / SR
        x = 0.2 * np.sin(2 * np.pi * 50 * t) + 0.1 * rng.standard_normal(len(t))
        sf.write(str(root / "ambient" / f"{name}.flac"), x.astype(np.float32), SR, subtype="PCM_16")
    return root


def conf(**kw) -> AugmentConf:
    """All steps off unless given."""
    base = dict(enabled=True, rir_dir="rirs", noise_dirs=["ambient"], p_reverb=0.0, p_noise=0.0, p_eq=0.0,
                p_telephone=0.0, p_codec=0.0, p_gain=0.0)
    base.update(kw)
    return AugmentConf(**base)


ALL_ON = dict(p_reverb=1.0, p_noise=1.0, p_eq=1.0, p_telephone=1.0, p_codec=1.0, p_gain=1.0)


def test_same_seed_epoch_cut_gives_the_same_audio_and_the_next_epoch_another(assets):
    x = speechlike()
    aug = AudioAugmenter(conf(**ALL_ON), assets)
    state = random.getstate()
    a = aug(x, "42|0|cut-1")
    assert random.getstate() == state  # the global RNGs are left as they were
    assert [name for name, _ in aug.last_applied] == ["ApplyImpulseResponse", "AddBackgroundNoise",
                                                      "SevenBandParametricEQ", "TelephoneBand", "CodecRoundTrip",
                                                      "Gain"]
    other = AudioAugmenter(conf(**ALL_ON), assets)  # e.g. a fresh process after a resume
    assert np.array_equal(other(x, "42|0|cut-1"), a)
    assert a.shape == x.shape and a.dtype == np.float32
    assert not np.array_equal(aug(x, "42|1|cut-1"), a)  # next epoch
    assert not np.array_equal(aug(x, "42|0|cut-2"), a)  # another cut
    assert not np.array_equal(aug(x, "43|0|cut-1"), a)  # another seed


def test_all_probabilities_zero_return_the_input_exactly(assets):
    x = speechlike()
    out = AudioAugmenter(conf(), assets)(x, "1|0|c")
    assert np.array_equal(out, x)


@pytest.mark.parametrize("key", ["7|0|a", "7|0|b", "7|3|a"])
def test_noise_is_mixed_at_the_drawn_snr(assets, key):
    x = speechlike(seed=2)
    aug = AudioAugmenter(conf(p_noise=1.0, snr_db=(0.0, 20.0)), assets)
    y = aug(x, key)
    (name, params), = aug.last_applied
    noise = y - x
    snr = 20 * np.log10(np.sqrt(np.mean(x ** 2)) / np.sqrt(np.mean(noise ** 2)))
    assert abs(snr - params["snr_db"]) < 0.5, (snr, params)


def test_reverb_keeps_length_and_spreads_energy_in_time(assets):
    x = np.zeros(SR, dtype=np.float32)
    x[1000] = 1.0  # an impulse: the output is the impulse response itself
    aug = AudioAugmenter(conf(p_reverb=1.0), assets)
    y = aug(x, "3|0|c")
    assert len(y) == len(x)
    assert np.count_nonzero(np.abs(y[1000:]) > 1e-3) > 1000
    assert np.allclose(y[:999], 0, atol=1e-6)  # no energy before the direct path


def test_telephone_band_removes_energy_above_4_khz():
    x = np.random.default_rng(0).standard_normal(2 * SR).astype(np.float32) * 0.1
    y = telephone_band(x, SR)
    assert y.shape == x.shape

    def band_power(s, lo, hi):
        spec = np.abs(np.fft.rfft(s)) ** 2
        f = np.fft.rfftfreq(len(s), 1 / SR)
        return spec[(f >= lo) & (f < hi)].sum()

    assert band_power(y, 4200, 8000) < 1e-4 * band_power(x, 4200, 8000)  # > 40 dB down
    assert band_power(y, 500, 3000) > 0.5 * band_power(x, 500, 3000)  # the speech band stays


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_codec_round_trip_keeps_length_and_timing(codec):
    x = speechlike(1.3, seed=3)[:-7]  # an odd number of samples
    y = codec_round_trip(x, SR, codec, 0.5)
    assert y.shape == x.shape and y.dtype == np.float32
    m = 20
    lag = int(np.argmax([np.dot(x[m:-m], y[m + k:len(y) - m + k]) for k in range(-m, m + 1)])) - m
    assert lag == 0  # no codec delay left
    assert np.corrcoef(x, y)[0, 1] > 0.95
    loud = codec_round_trip(x * 3 / np.max(np.abs(x)), SR, codec, 0.5)  # beyond full scale: scaled, not clipped
    assert np.max(np.abs(loud)) > 2.0


def test_missing_folders_are_one_line_errors(tmp_path, assets):
    with pytest.raises(MissingFileError, match=str(tmp_path / "nowhere")) as e:
        AudioAugmenter(conf(p_reverb=1.0, rir_dir="nowhere"), tmp_path)
    assert "\n" not in str(e.value) and "rir_dir" in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingFileError, match="holds no audio"):
        AudioAugmenter(conf(p_noise=1.0, noise_dirs=["empty"]), tmp_path)
    # a folder whose step is off is not needed
    AudioAugmenter(conf(p_gain=1.0, rir_dir="nowhere", noise_dirs=["nowhere"]), tmp_path)


def test_conf_block_is_checked(tmp_path):
    path = tmp_path / "conf.yaml"
    assert parse_augment_conf(None, path) == AugmentConf()
    c = parse_augment_conf({"enabled": True, "p_noise": 1, "snr_db": [0, 10], "codecs": "opus"}, path)
    assert c.enabled and c.p_noise == 1.0 and c.snr_db == (0.0, 10.0) and c.codecs == ["opus"]
    for block, key in [({"p_reverb": 1.5}, "p_reverb"), ({"snr_db": [10, 0]}, "snr_db"),
                       ({"codecs": ["aac"]}, "codecs"), ({"enabled": "yes"}, "enabled"), ({"p_nois": 1}, "p_nois")]:
        with pytest.raises(ConfigError, match=key) as e:
            parse_augment_conf(block, path)
        assert str(path) in str(e.value)


def test_rir_bank_is_reproducible_and_has_the_rt60_it_claims(tmp_path):
    import pyroomacoustics as pra

    from make_rir_bank import make_bank

    a = make_bank(tmp_path / "a", 4, seed=5)
    b = make_bank(tmp_path / "b", 4, seed=5)
    c = make_bank(tmp_path / "c", 2, seed=6)
    assert a == b
    assert [json.loads(ln) for ln in (tmp_path / "a" / "rirs.jsonl").read_text().splitlines()] == a
    for e in a:
        h_a, sr = sf.read(str(tmp_path / "a" / e["path"]), dtype="float32")
        h_b, _ = sf.read(str(tmp_path / "b" / e["path"]), dtype="float32")
        assert sr == SR and np.array_equal(h_a, h_b)
        assert np.argmax(np.abs(h_a)) == SR // 1000  # direct path 1 ms in
        measured = pra.experimental.measure_rt60(h_a, fs=SR, decay_db=30)
        assert abs(measured - e["rt60"]) <= 0.25 * e["rt60"], (measured, e)
        assert abs(e["rt60"] - e["rt60_target"]) <= 0.3 * e["rt60_target"]
        assert 0.2 <= e["rt60_target"] <= 0.9 and 0.3 <= e["distance"] <= 3.0
    assert c[0]["rt60_target"] != a[0]["rt60_target"]


def test_ambient_licences_are_read_from_debian_copyright():
    from prepare_ambient_noise import parse_licences, to_16k_mono

    text = """Files: data/resources/sounds/city.ogg
Copyright:
 Gezorten Plotz
License: CC-BY-3.0
Comment: https://freesound.org/people/gezortenplotz/sounds/44796/

Files: data/resources/sounds/wind.ogg
Copyright:
 Felix Blume
License: CC0-1.0
Comment: https://freesound.org/people/felix.blume/sounds/217506/

Files: src/*
Copyright: someone
License: GPL-3+
"""
    lic = parse_licences(text)
    assert lic == {"city": {"licence": "CC-BY-3.0", "author": "Gezorten Plotz",
                            "source": "https://freesound.org/people/gezortenplotz/sounds/44796/"},
                   "wind": {"licence": "CC0-1.0", "author": "Felix Blume",
                            "source": "https://freesound.org/people/felix.blume/sounds/217506/"}}
    stereo = np.stack([np.ones(44100), np.zeros(44100)], axis=1).astype(np.float32)
    assert to_16k_mono(stereo, 44100).shape == (16000,)


# ------------------------------------------------------------------------------ in the datamodule


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, assets) -> Path:
    """A toy corpus's cut manifests (audio only, no features) and a conf with augmentation on."""
    from import_manifest import import_manifest
    from make_toy_corpus import make_toy_corpus

    root = tmp_path_factory.mktemp("augdm")
    mans = make_toy_corpus(root / "download", {"train": 12, "dev": 2}, seed=1, max_duration=2.5)
    for split in ("train", "dev"):
        cuts, _ = import_manifest(mans[split], "nemo", root / "manifests", "toy", split)
        cuts.to_file(root / "manifests" / f"toy_cuts_{split}.jsonl.gz")
    (root / "conf.yaml").write_text(f"""corpus: toy
train:
  - {{name: train, cuts: toy_cuts_train.jsonl.gz}}
dev: {{dev: toy_cuts_dev.jsonl.gz}}
augment:
  enabled: true
  rir_dir: {assets / 'rirs'}
  noise_dirs: [{assets / 'ambient'}]
  p_reverb: 0.5
  p_noise: 0.5
  p_eq: 0.5
  p_telephone: 0.5
  p_codec: 0.5
  codecs: [vorbis, mp3]
  p_gain: 0.5
""")
    return root


def dm_args(root: Path, *argv: str):
    import argparse

    from zipformer_rwkv.dataset.asr_datamodule import AsrDataModule

    p = argparse.ArgumentParser()
    AsrDataModule.add_arguments(p)
    return p.parse_args(["--conf", str(root / "conf.yaml"), "--manifest-dir", str(root / "manifests"),
                         "--num-workers", "0", "--num-buckets", "2", "--max-duration", "6",
                         "--enable-musan", "false", "--enable-spec-aug", "false", "--drop-last", "false", *argv])


def test_datamodule_augments_training_batches_reproducibly(corpus):
    from zipformer_rwkv.dataset.asr_datamodule import AsrDataModule, set_train_epoch

    def batches(epoch, *argv):
        dm = AsrDataModule(dm_args(corpus, *argv))
        dl = dm.train_dataloaders(dm.train_cuts())
        set_train_epoch(dl, epoch)
        return [(b["inputs"], [c.id for c in b["supervisions"]["cut"]], b["supervisions"]["num_frames"])
                for b in dl]

    def per_cut(bs):  # cut id -> its unpadded features (batches differ from epoch to epoch)
        return {cut_id: x[i, :n] for x, cut_ids, frames in bs for i, (cut_id, n) in enumerate(zip(cut_ids, frames))}

    first = batches(0)
    assert first
    for inputs, cut_ids, num_frames in first:
        assert inputs.dtype == torch.float32 and inputs.shape[0] == len(cut_ids) and inputs.shape[2] == 80
        assert inputs.shape[1] == int(num_frames.max()) and torch.isfinite(inputs).all()
    again = batches(0, "--num-workers", "1")  # another process builds them: same tensors
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again))
    f0, f1 = per_cut(first), per_cut(batches(1))
    assert f0.keys() == f1.keys()
    assert sum(not torch.equal(f0[k], f1[k]) for k in f0) > len(f0) // 2  # another epoch, other audio
    # the same cuts without augmentation: the same shapes, other values
    dm = AsrDataModule(dm_args(corpus, "--on-the-fly-feats", "true", "--enable-augment", "false"))
    dl = dm.train_dataloaders(dm.train_cuts())
    set_train_epoch(dl, 0)
    plain = {tuple(ids): x for x, ids in ((b["inputs"], [c.id for c in b["supervisions"]["cut"]]) for b in dl)}
    aug = {tuple(ids): x for x, ids, _ in first}
    assert plain.keys() == aug.keys()
    assert all(plain[k].shape == aug[k].shape for k in plain)
    assert not all(torch.equal(plain[k], aug[k]) for k in plain)


def test_enable_augment_overrides_the_conf_switch(corpus, tmp_path):
    """--enable-augment true on a conf with `enabled: false` augments exactly as the conf switched on;
    without the option the conf's switch holds (no augmentation, precomputed features)."""
    from zipformer_rwkv.dataset.asr_datamodule import AsrDataModule, set_train_epoch

    off = tmp_path / "conf_off.yaml"
    off.write_text((corpus / "conf.yaml").read_text().replace("enabled: true", "enabled: false"))

    def batches(*argv):
        dm = AsrDataModule(dm_args(corpus, *argv))
        dl = dm.train_dataloaders(dm.train_cuts())
        set_train_epoch(dl, 0)
        return dm, [b["inputs"] for b in dl]

    dm, forced = batches("--conf", str(off), "--enable-augment", "true")
    assert dm.conf.augment.enabled and dm.train_on_the_fly
    _, conf_on = batches()
    assert len(forced) == len(conf_on) and all(torch.equal(a, b) for a, b in zip(forced, conf_on))
    dm = AsrDataModule(dm_args(corpus, "--conf", str(off)))
    assert not dm.conf.augment.enabled and not dm.train_on_the_fly


def test_datamodule_names_a_missing_noise_folder(corpus, tmp_path):
    from zipformer_rwkv.dataset.asr_datamodule import AsrDataModule

    text = (corpus / "conf.yaml").read_text()
    conf_path = tmp_path / "conf.yaml"
    conf_path.write_text(text.replace("noise_dirs: [", "noise_dirs: [gone, "))
    dm = AsrDataModule(dm_args(corpus, "--conf", str(conf_path)))
    with pytest.raises(MissingFileError, match=str(corpus / "manifests" / "gone")) as e:
        dm.train_dataloaders(dm.train_cuts())
    assert str(e.value).startswith(f"{conf_path}: augment noise_dirs folder") and "\n" not in str(e.value)


def test_a_resumed_loader_augments_the_remaining_batches_as_an_uninterrupted_one(corpus):
    from zipformer_rwkv.dataset.asr_datamodule import AsrDataModule, set_train_epoch

    def loader(state=None):
        dm = AsrDataModule(dm_args(corpus, "--max-duration", "3"))
        dl = dm.train_dataloaders(dm.train_cuts(), sampler_state_dict=state)
        set_train_epoch(dl, 4)
        return dl

    full = [b["inputs"] for b in loader()]
    assert len(full) >= 4
    dl = loader()
    it = iter(dl)
    [next(it) for _ in range(2)]
    state = AsrDataModule.sampler_state_dict(dl, batches_consumed=2)
    resumed = [b["inputs"] for b in loader(state)]
    assert len(resumed) == len(full) - 2
    assert all(torch.equal(a, b) for a, b in zip(full[2:], resumed))
