"""Training/validation/test data loaders over lhotse cut manifests (icefall's `asr_datamodule.py`).

A corpus is described by `egs/NAME/conf.yaml` (see `load_data_conf`): its training sources with mux
weights, its dev and test sets, and its noise cut sets. Cut paths there are relative to
`--manifest-dir` (default `data/fbank`, written by `prepare.sh`).

Batches are lhotse's `K2SpeechRecognitionDataset` format (pure lhotse; no k2 is imported):
  {"inputs": (N, T, 80) float32 log-mel fbank at 100 Hz,
   "supervisions": {"text": List[str], "sequence_idx": (S,) int, "start_frame": (S,) int,
                    "num_frames": (S,) int, "cut": List[Cut] (with --return-cuts)}}

Training pipeline: `CutSet.mux` of the sources (weights from the conf) -> cut filters ->
`DynamicBucketingSampler` (or `SimpleCutSampler`) -> cut transforms `PerturbSpeed`, `PerturbVolume`
(both need audio: --on-the-fly-feats or conf augment), `CutMix` with noise -> [audio augmentation,
`AugmentedFeatures`] -> features (precomputed lilcom or on-the-fly `lhotse.Fbank`) -> `SpecAugment`.

Mid-epoch resume: save `train_dl.sampler.state_dict()` in the checkpoint and pass it back as
`train_dataloaders(cuts, sampler_state_dict=...)`; the sampler then yields exactly the batches it had
not yielded yet. With `--num-workers > 0` the DataLoader prefetches, so the sampler is ahead of the
training loop by up to `num_workers * prefetch_factor` batches; icefall saves the raw state and so
skips those on resume. `sampler_state_dict(train_dl, batches_consumed)` instead records only the
batches the training loop has received in this epoch, which makes the resume exact.

Augmentation randomness (CutMix noise, perturbation, SpecAugment): `SeededBatches` draws each
batch's from RNGs seeded by (--seed, epoch, the batch's cut ids), so a resumed run, any
--num-workers and an uninterrupted run augment a batch alike; call `set_train_epoch(train_dl,
epoch)` before iterating an epoch.

Audio augmentation (rooms, ambient noise, telephone band, codecs, gain): the conf's `augment:` block
(zipformer_rwkv/dataset/augment.py); `--enable-augment true|false` overrides its `enabled`. When
augmentation is on, the training loader reads the audio, augments each cut (seeded by --seed, the
epoch and the cut id) and computes fbank on the fly, whatever --on-the-fly-feats says; validation
and test loaders are unchanged.
"""
import argparse
import hashlib
import itertools
import logging
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
import yaml
from lhotse import CutSet, load_manifest_lazy
from lhotse.cut import Cut
from lhotse.dataset import (
    CutMix,
    DynamicBucketingSampler,
    K2SpeechRecognitionDataset,
    PerturbSpeed,
    PerturbVolume,
    SimpleCutSampler,
    SpecAugment,
)
from lhotse.dataset.input_strategies import OnTheFlyFeatures, PrecomputedFeatures
from lhotse.lazy import LazyIteratorChain
from lhotse.utils import compute_num_frames, fix_random_seed
from torch.utils.data import DataLoader

from zipformer_rwkv.dataset.augment import AudioAugmenter, AugmentConf, AugmentedFeatures, parse_augment_conf
from zipformer_rwkv.dataset.features import SAMPLE_RATE, fbank_extractor
from zipformer_rwkv.errors import ConfigError, MissingFileError
from zipformer_rwkv.utils import str2bool
from zipformer_rwkv.zipformer.encoder import encoder_out_length

FRAME_SHIFT = 0.01  # seconds: fbank frames are at 100 Hz


# ----------------------------------------------------------------------------------------------
# Corpus configuration (egs/NAME/conf.yaml)


@dataclass
class TrainSource:
    """One training source: a split `name`, its cut manifest (relative to the manifest dir), its weight."""

    name: str
    cuts: str
    weight: float = 1.0


@dataclass
class DataConf:
    """The contents of `egs/NAME/conf.yaml`.

    Attributes:
      corpus: corpus name; prepare.sh writes `{corpus}_cuts_{split}.jsonl.gz`.
      source: how prepare.sh obtains the audio: "tts" (built-in corpus), "librispeech", "nemo", "jsonl".
      train: training sources, muxed with their weights.
      dev, test: name -> cut manifest.
      noise: candidate noise cut manifests; the first that exists is used for CutMix.
      augment: on-the-fly audio augmentation of the training cuts (zipformer_rwkv/dataset/augment.py).
      lm_text: optional extra text file(s) for LM pre-training (relative to the download dir).
      real_speech: name of the dev set of real recorded speech built by local/prepare_real_dev.py
        (prepare.sh), or None. decode.py decodes it like any dev set; train.py never validates on it.
    """

    corpus: str
    source: str = "nemo"
    train: List[TrainSource] = field(default_factory=list)
    dev: Dict[str, str] = field(default_factory=dict)
    test: Dict[str, str] = field(default_factory=dict)
    noise: List[str] = field(default_factory=list)
    real_speech: Optional[str] = None
    augment: AugmentConf = field(default_factory=AugmentConf)

    def valid_sets(self) -> List[str]:
        """Names of the dev sets train.py validates on: every dev set but `real_speech`."""
        return [name for name in self.dev if name != self.real_speech]

    def splits(self) -> List[str]:
        """Names of the splits this corpus's prepare.sh builds (those named `{corpus}_cuts_{split}`)."""
        names = [s.name for s in self.train] + list(self.dev) + list(self.test)
        out = []
        for cuts, name in zip([s.cuts for s in self.train] + list(self.dev.values())
                              + list(self.test.values()), names):
            if cuts == f"{self.corpus}_cuts_{name}.jsonl.gz" and name not in out:
                out.append(name)
        return out


def load_data_conf(path: Path) -> DataConf:
    """Read and check a corpus conf.yaml.

    Format:
      corpus: tts_en
      source: tts
      train:                      # list of {name, cuts, weight}
        - {name: train, cuts: tts_en_cuts_train.jsonl.gz, weight: 1.0}
      dev: {dev: tts_en_cuts_dev.jsonl.gz}
      test: {test: tts_en_cuts_test.jsonl.gz}
      noise: [musan_cuts.jsonl.gz, tts_en_noise_cuts.jsonl.gz]
      real_speech: real_dev       # optional: a dev set that is decoded but never validated on
      augment: {enabled: false, p_reverb: 0.5, ...}   # optional, see augment.AugmentConf

    Raises:
      FileNotFoundError: `path` does not exist.
      ValueError: a key is missing or has the wrong type (the message names the file and the key).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"corpus conf not found: {path}")
    try:
        d = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(d, dict) or not d.get("corpus"):
        raise ConfigError(f"{path}: needs a top-level mapping with a 'corpus' name")
    train = d.get("train") or []
    if not isinstance(train, list) or not train:
        raise ConfigError(f"{path}: 'train' must be a non-empty list of {{name, cuts, weight}}")
    sources = []
    for i, t in enumerate(train):
        if not isinstance(t, dict) or "name" not in t or "cuts" not in t:
            raise ConfigError(f"{path}: train[{i}] needs 'name' and 'cuts'")
        weight = float(t.get("weight", 1.0))
        if weight <= 0:
            raise ConfigError(f"{path}: train[{i}] ({t['name']}) has weight {weight}; must be > 0")
        sources.append(TrainSource(str(t["name"]), str(t["cuts"]), weight))
    for key in ("dev", "test"):
        if not isinstance(d.get(key) or {}, dict):
            raise ConfigError(f"{path}: '{key}' must be a mapping name -> cut manifest")
    noise = d.get("noise") or []
    noise = [noise] if isinstance(noise, str) else list(noise)
    real = d.get("real_speech")
    if real is not None and str(real) not in (d.get("dev") or {}):
        raise ConfigError(f"{path}: real_speech names '{real}', which is not one of its dev sets")
    return DataConf(corpus=str(d["corpus"]), source=str(d.get("source", "nemo")), train=sources,
                    dev={str(k): str(v) for k, v in (d.get("dev") or {}).items()},
                    test={str(k): str(v) for k, v in (d.get("test") or {}).items()},
                    noise=[str(n) for n in noise], real_speech=None if real is None else str(real),
                    augment=parse_augment_conf(d.get("augment"), path))


# ----------------------------------------------------------------------------------------------
# Cut filters


def make_cut_filter(min_duration: float = 1.0, max_duration: float = 20.0,
                    num_tokens: Optional[Callable[[str], int]] = None,
                    output_frames: Callable[[int], int] = encoder_out_length,
                    extra_frames: int = 2) -> Callable[[Cut], bool]:
    """A predicate for `CutSet.filter` that drops cuts unfit for training, logging each one.

    Args:
      min_duration, max_duration: keep cuts with min_duration <= duration <= max_duration (seconds).
      num_tokens: text -> number of output tokens (e.g. a sentencepiece or RWKV tokenizer); when
        given, a cut is kept only if `output_frames(num_frames) >= num_tokens(text) + extra_frames`.
      output_frames: input frames (100 Hz) -> model output frames.
      extra_frames: margin of the token check (icefall uses 2 for the transducer).
    Returns:
      a callable `keep(cut) -> bool`. Each excluded cut is logged once, the first time it is seen:
      a lazily filtered CutSet runs the predicate on every pass (train.py's count of the epoch's
      audio at start-up, then each epoch).
    """
    logged = set()

    def exclude(c: Cut, level: int, why: str) -> bool:
        if c.id not in logged:
            logged.add(c.id)
            logging.log(level, f"Excluding cut {c.id}: {why}")
        return False

    def keep(c: Cut) -> bool:
        if not min_duration <= c.duration <= max_duration:
            return exclude(c, logging.DEBUG, f"duration {c.duration:.2f} s outside [{min_duration}, {max_duration}]")
        if num_tokens is None:
            return True
        frames = c.num_frames if c.has_features else compute_num_frames(c.duration, FRAME_SHIFT,
                                                                        c.sampling_rate)
        tokens = sum(num_tokens(s.text or "") for s in c.supervisions)
        if output_frames(frames) < tokens + extra_frames:
            return exclude(c, logging.WARNING, f"{output_frames(frames)} output frames for {tokens} tokens "
                                               f"(needs tokens + {extra_frames})")
        return True

    return keep


# ----------------------------------------------------------------------------------------------
# Data module


def read_cuts(path: Path) -> CutSet:
    """The lazy CutSet of a manifest, its relative feature paths (local/compute_fbank.py) taken as
    relative to the manifest's folder; absolute ones are kept. Manifests written before that
    convention hold paths relative to the folder prepare.sh ran in: when the first cut's features
    exist only that way, the paths are used as they are (with a warning)."""
    path = Path(path)
    cuts = load_manifest_lazy(path)
    first = next((c for c in cuts if getattr(c, "has_features", False)), None)
    if first is not None:
        storage = Path(first.features.storage_path)
        if not storage.is_absolute() and not (path.parent / storage).exists() and storage.exists():
            logging.warning(f"{path}: feature paths are relative to the current folder (an older "
                            f"prepare.sh); re-run its stage 2 to make the data folder movable")
            return cuts
    return cuts.with_features_path_prefix(str(path.parent))


class SeededBatches(K2SpeechRecognitionDataset):
    """The training dataset, with every batch's augmentation randomness drawn from RNGs seeded by
    (seed, epoch, the batch's cut ids): the `rng` given to the cut transforms (CutMix noise and
    SNR, speed/volume perturbation) and, for SpecAugment, `random`/numpy/torch, whose states are
    restored afterwards (the training loop's dropout stream is untouched). A batch's augmentation
    thus does not depend on the batches before it, on which process (DataLoader worker) builds it,
    or on a resume: no augmentation RNG needs saving in checkpoints.

    Args: seed: --seed; rng: the `random.Random` the cut transforms were built with;
    spec_aug_start_epoch: the first epoch (1-based, as train.py's --start-epoch) whose batches get
    the `SpecAugment` input transforms (earlier epochs skip them); the rest go to
    `K2SpeechRecognitionDataset`.
    """

    def __init__(self, seed: int, rng: random.Random, spec_aug_start_epoch: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seed, self.epoch, self.rng = seed, 0, rng
        self.spec_aug_start_epoch = spec_aug_start_epoch

    def set_epoch(self, epoch: int) -> None:
        """The epoch of the seeds; also passed to the input strategy (`AugmentedFeatures`)."""
        self.epoch = epoch
        if hasattr(self.input_strategy, "set_epoch"):
            self.input_strategy.set_epoch(epoch)

    def __getitem__(self, cuts: CutSet) -> Dict[str, Any]:
        """The batch of `cuts` without those whose features/audio cannot be read; these are listed
        as `batch["bad_cuts"] = [(cut_id, reason), ...]` (`batch["inputs"]` is None when no cut
        is left). Other failures are raised."""
        bad: List[Tuple[str, str]] = []
        while True:
            try:
                batch = self._seeded_batch(cuts) if len(cuts) else {"inputs": None, "supervisions": {}}
                break
            except Exception:
                found = [(c.id, why) for c in cuts if (why := self._unreadable(c)) is not None]
                if not found:
                    raise
                bad += found
                names = {cut_id for cut_id, _ in found}
                cuts = cuts.filter(lambda c: c.id not in names).to_eager()
        if bad:
            batch["bad_cuts"] = bad
        return batch

    def _unreadable(self, cut: Cut) -> Optional[str]:
        """Why `cut`'s features (or, for on-the-fly features, audio) cannot be loaded, else None."""
        try:
            if isinstance(self.input_strategy, PrecomputedFeatures):
                cut.load_features()
            else:
                cut.load_audio()
            return None
        except Exception as e:
            lines = [line for line in str(e).splitlines() if line.strip()] or [""]
            return f"{type(e).__name__}: {lines[0][:200]}"

    def _seeded_batch(self, cuts: CutSet) -> Dict[str, Any]:
        key = f"{self.seed}|{self.epoch}|" + "|".join(c.id for c in cuts)
        seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
        self.rng.seed(seed)
        py_state, np_state = random.getstate(), np.random.get_state()
        transforms = self.input_transforms
        if self.epoch + 1 < self.spec_aug_start_epoch:  # self.epoch is 0-based (set_train_epoch)
            self.input_transforms = [t for t in transforms if not isinstance(t, SpecAugment)]
        try:
            with torch.random.fork_rng(devices=[]):
                random.seed(seed)
                np.random.seed(seed % 2**32)
                torch.manual_seed(seed)
                return super().__getitem__(cuts)
        finally:
            self.input_transforms = transforms
            random.setstate(py_state)
            np.random.set_state(np_state)


def set_train_epoch(train_dl: Any, epoch: int) -> None:
    """`set_epoch(epoch)` of `train_dl.sampler` and, if it has one, of `train_dl.dataset`
    (`SeededBatches`); call before `iter(train_dl)` so DataLoader workers get it too."""
    train_dl.sampler.set_epoch(epoch)
    if hasattr(getattr(train_dl, "dataset", None), "set_epoch"):
        train_dl.dataset.set_epoch(epoch)


class _SeedWorkers:
    """DataLoader `worker_init_fn`: seeds python/numpy/torch RNGs with `seed + worker_id`."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __call__(self, worker_id: int) -> None:
        fix_random_seed(self.seed + worker_id)


def _count_upto(cuts: CutSet, limit: int) -> int:
    return sum(1 for _ in itertools.islice(iter(cuts), limit))


class AsrDataModule:
    """icefall-style data module: argparse options, cut getters and DataLoaders.

    Args:
      args: parsed arguments holding at least the options of `add_arguments`.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.conf = load_data_conf(args.conf)
        if args.enable_augment is not None:  # --enable-augment overrides the conf's augment.enabled
            self.conf.augment = replace(self.conf.augment, enabled=args.enable_augment)
        self._noise: Optional[CutSet] = None
        # training audio is read (not precomputed features) when asked or when augmenting it
        self.train_on_the_fly = bool(args.on_the_fly_feats or self.conf.augment.enabled)
        if (args.perturb_speed or args.perturb_volume) and not self.train_on_the_fly:
            raise ConfigError("--perturb-speed/--perturb-volume change the audio and need "
                             "--on-the-fly-feats true or --enable-augment true (the conf's augment.enabled); "
                             "precomputed features cannot be perturbed (prepare.sh --perturb-speed true does offline "
                             "0.9/1.1 speed perturbation)")

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("ASR data related options",
                                      "Options for the cut manifests, sampler, augmentation and loaders.")
        g.add_argument("--conf", type=Path, default=Path("egs/tts_en/conf.yaml"),
                       help="corpus conf naming the train/dev/test cut manifests and mux weights")
        g.add_argument("--manifest-dir", type=Path, default=Path("data/fbank"),
                       help="folder of the cut manifests named in --conf")
        g.add_argument("--max-duration", type=float, default=200.0,
                       help="seconds of audio per batch (before padding)")
        g.add_argument("--bucketing-sampler", type=str2bool, default=True,
                       help="DynamicBucketingSampler (similar durations per batch) or SimpleCutSampler")
        g.add_argument("--num-buckets", type=int, default=30,
                       help="buckets of the bucketing sampler (capped by the number of cuts)")
        g.add_argument("--shuffle", type=str2bool, default=True, help="shuffle training cuts each epoch")
        g.add_argument("--drop-last", type=str2bool, default=True, help="drop the last, partial batch")
        g.add_argument("--return-cuts", type=str2bool, default=True,
                       help="put the cuts in batch['supervisions']['cut']")
        g.add_argument("--num-workers", type=int, default=2, help="DataLoader worker processes")
        g.add_argument("--on-the-fly-feats", type=str2bool, default=False,
                       help="compute fbank from audio in the loader instead of reading data/fbank features")
        g.add_argument("--enable-spec-aug", type=str2bool, default=True, help="SpecAugment on training batches")
        g.add_argument("--spec-aug-start-epoch", type=int, default=1,
                       help="with --enable-spec-aug: the first epoch that gets SpecAugment (e.g. 2: after "
                            "CTC's blank-only plateau of the first epoch)")
        g.add_argument("--spec-aug-time-warp-factor", type=int, default=80,
                       help="SpecAugment time warp factor; < 1 disables time warping")
        g.add_argument("--enable-musan", type=str2bool, default=True,
                       help="mix training cuts with noise (the conf's noise cuts, MUSAN or built-in)")
        g.add_argument("--noise-cuts", type=Path, default=None,
                       help="noise cut manifest for --enable-musan; default: the conf's first existing one")
        g.add_argument("--enable-augment", type=str2bool, default=None,
                       help="on-the-fly audio augmentation of the training cuts (rooms, ambient noise, "
                            "telephone band, codecs, gain); default: the conf's augment.enabled")
        g.add_argument("--perturb-speed", type=str2bool, default=False,
                       help="online speed perturbation 0.9/1.1 (p=2/3); needs --on-the-fly-feats")
        g.add_argument("--perturb-volume", type=str2bool, default=False,
                       help="online volume perturbation (p=0.2, x0.125..2); needs --on-the-fly-feats")
        g.add_argument("--seed", type=int, default=42, help="seed of the mux, sampler and workers")

    # -------------------------------------------------------------------------- cut getters
    def _load(self, rel: str) -> CutSet:
        path = Path(self.args.manifest_dir) / rel
        if not path.is_file():
            raise MissingFileError(f"cut manifest {path} (named in {self.args.conf}) not found; "
                                    f"run ./prepare.sh or check --manifest-dir")
        return read_cuts(path)

    def train_cuts(self) -> CutSet:
        """The training cuts: `CutSet.mux` of the conf's sources with their weights (lazy).

        The mux is finite: each epoch visits every cut of every source once. While all sources
        last, a cut comes from source i with probability weight_i / sum(weights).
        """
        sources = self.conf.train
        logging.info("Training sources: " + ", ".join(f"{s.name} (weight {s.weight})" for s in sources))
        cutsets = [self._load(s.cuts) for s in sources]
        if len(cutsets) == 1:
            return cutsets[0]
        return CutSet.mux(*cutsets, weights=[s.weight for s in sources], seed=self.args.seed)

    def dev_cuts(self, skip_missing_real_speech: bool = False) -> Dict[str, CutSet]:
        """Dev sets of the conf: name -> lazy CutSet.

        With `skip_missing_real_speech`, the real-speech dev set (conf `real_speech`) is left out, with
        a warning, when its manifest was not built (prepare.sh --real-dev false); any other missing
        manifest raises MissingFileError.
        """
        out = {}
        for name, rel in self.conf.dev.items():
            path = Path(self.args.manifest_dir) / rel
            if skip_missing_real_speech and name == self.conf.real_speech and not path.is_file():
                logging.warning(f"{name}: {path} not found (prepare.sh --real-dev false?): the real-speech dev "
                                f"set is left out")
                continue
            out[name] = self._load(rel)
        return out

    def valid_cuts(self) -> CutSet:
        """The dev sets of `conf.valid_sets()` concatenated (the validation set of train.py): every dev
        set but the real-speech one, which is only decoded."""
        sets = [self._load(self.conf.dev[name]) for name in self.conf.valid_sets()]
        if not sets:
            raise ConfigError(f"{self.args.conf} names no dev set to validate on (real_speech is decoded only)")
        return sets[0] if len(sets) == 1 else CutSet(LazyIteratorChain(*[c.data for c in sets]))

    def test_cuts(self) -> Dict[str, CutSet]:
        """Test sets of the conf: name -> lazy CutSet."""
        return {name: self._load(rel) for name, rel in self.conf.test.items()}

    def noise_cuts(self) -> CutSet:
        """Noise cuts for CutMix: --noise-cuts, else the first of the conf's noise list that exists.

        Raises:
          FileNotFoundError: none exists.
        """
        if self._noise is not None:
            return self._noise
        cands = ([self.args.noise_cuts] if self.args.noise_cuts else
                 [Path(self.args.manifest_dir) / n for n in self.conf.noise])
        for p in cands:
            if Path(p).is_file():
                logging.info(f"Noise cuts for CutMix: {p}")
                cuts = read_cuts(Path(p))
                if self.train_on_the_fly:
                    cuts = cuts.drop_features()
                self._noise = cuts.to_eager()
                return self._noise
        raise MissingFileError("--enable-musan true but no noise cuts found (tried: "
                                + ", ".join(str(p) for p in cands) + "); run prepare.sh stage 3")

    # -------------------------------------------------------------------------- loaders
    def _input_strategy(self):
        if self.args.on_the_fly_feats:
            return OnTheFlyFeatures(fbank_extractor())
        return PrecomputedFeatures()

    def _sampler(self, cuts: CutSet, shuffle: bool, drop_last: bool):
        a = self.args
        if a.bucketing_sampler:
            num_buckets = min(a.num_buckets, _count_upto(cuts, 10000))
            if num_buckets >= 2:
                return DynamicBucketingSampler(cuts, max_duration=a.max_duration, shuffle=shuffle,
                                               num_buckets=num_buckets, buffer_size=num_buckets * 2000,
                                               drop_last=drop_last, seed=a.seed)
            logging.warning("Fewer than 2 cuts: using SimpleCutSampler instead of bucketing")
        return SimpleCutSampler(cuts, max_duration=a.max_duration, shuffle=shuffle,
                                drop_last=drop_last, seed=a.seed)

    def train_dataloaders(self, cuts_train: CutSet,
                          sampler_state_dict: Optional[Dict[str, Any]] = None) -> DataLoader:
        """The training DataLoader, with augmentation.

        Args:
          cuts_train: e.g. `train_cuts().filter(make_cut_filter(...))`.
          sampler_state_dict: `train_dl.sampler.state_dict()` from a checkpoint, to resume mid-epoch.
        Returns:
          DataLoader yielding the batch dicts of the module docstring; `.sampler` is the lhotse sampler.
        """
        a = self.args
        transforms: List[Callable] = []
        rng = random.Random(a.seed)  # re-seeded for every batch by SeededBatches
        if a.perturb_speed:
            transforms.append(PerturbSpeed(factors=[0.9, 1.1], p=2 / 3, randgen=rng))
        if a.perturb_volume:
            transforms.append(PerturbVolume(p=0.2, scale_low=0.125, scale_high=2.0, randgen=rng))
        if a.enable_musan:
            transforms.append(CutMix(cuts=self.noise_cuts(), p=0.5, snr=(10, 20), preserve_id=True,
                                     pad_to_longest=False, seed=rng))
        input_transforms = []
        if a.enable_spec_aug:
            input_transforms.append(SpecAugment(time_warp_factor=a.spec_aug_time_warp_factor,
                                                num_frame_masks=10, features_mask_size=27,
                                                num_feature_masks=2, frames_mask_size=100))
        if self.conf.augment.enabled:
            try:
                augmenter = AudioAugmenter(self.conf.augment, Path(a.manifest_dir), sample_rate=SAMPLE_RATE)
            except (MissingFileError, ConfigError) as e:
                raise type(e)(f"{a.conf}: {e}") from None
            logging.info(f"Audio augmentation from {a.conf}: {self.conf.augment}")
            input_strategy = AugmentedFeatures(fbank_extractor(), augmenter, a.seed)
        elif a.on_the_fly_feats:
            input_strategy = OnTheFlyFeatures(fbank_extractor())
        else:
            input_strategy = PrecomputedFeatures()
        dataset = SeededBatches(a.seed, rng, spec_aug_start_epoch=a.spec_aug_start_epoch,
                                input_strategy=input_strategy, cut_transforms=transforms,
                                input_transforms=input_transforms, return_cuts=a.return_cuts)
        if self.train_on_the_fly:
            # the audio is read, so the precomputed features are not needed; detached here, lhotse's
            # speed perturbation does not warn once per perturbed cut that it detaches them
            cuts_train = cuts_train.drop_features()
        sampler = self._sampler(cuts_train, shuffle=a.shuffle, drop_last=a.drop_last)
        if sampler_state_dict is not None:
            logging.info("Loading sampler state dict")
            sampler.load_state_dict(sampler_state_dict)
        return DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=a.num_workers,
                          persistent_workers=False, worker_init_fn=_SeedWorkers(a.seed))

    @staticmethod
    def sampler_state_dict(train_dl: DataLoader, batches_consumed: int) -> Dict[str, Any]:
        """The sampler state for an exact mid-epoch resume, whatever the DataLoader prefetched.

        Args:
          train_dl: the loader of `train_dataloaders`.
          batches_consumed: batches the training loop has received from `train_dl` in the current
            epoch, counting those before a previous resume.
        Returns:
          a state dict for `train_dataloaders(..., sampler_state_dict=...)`: on resume the sampler
          skips exactly `batches_consumed` batches of the epoch.
        Raises:
          ValueError: `batches_consumed` is more than the sampler has produced.
        """
        sd = train_dl.sampler.state_dict()
        diag = sd["diagnostics"]
        stats = diag["stats_per_epoch"][diag["current_epoch"]]
        produced = stats["kept_batches"]
        if not 0 <= batches_consumed <= produced:
            raise ValueError(f"batches_consumed={batches_consumed} but the sampler produced {produced} "
                             f"batches in epoch {diag['current_epoch']}")
        # lhotse's fast-forward replays kept + discarded batches; count only what was consumed
        stats["kept_batches"], stats["discarded_batches"] = batches_consumed, 0
        return sd

    def _eval_dataloader(self, cuts: CutSet) -> DataLoader:
        dataset = K2SpeechRecognitionDataset(input_strategy=self._input_strategy(),
                                             return_cuts=self.args.return_cuts)
        sampler = self._sampler(cuts, shuffle=False, drop_last=False)
        return DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=self.args.num_workers)

    def valid_dataloaders(self, cuts_valid: CutSet) -> DataLoader:
        """Validation DataLoader: no augmentation, no shuffling, nothing dropped."""
        return self._eval_dataloader(cuts_valid)

    def test_dataloaders(self, cuts: CutSet) -> DataLoader:
        """Test DataLoader (one per test set): no augmentation, no shuffling, nothing dropped."""
        return self._eval_dataloader(cuts)
