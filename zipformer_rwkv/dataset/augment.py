"""On-the-fly audio augmentation for training: rooms, ambient noise, telephone band, codecs, level.

Each training cut's audio (16 kHz, float32) goes through, in order, each step with its own
probability (the corpus conf's `augment:` block, `AugmentConf`):
  reverb     convolution with an impulse response from a folder of RIRs (local/make_rir_bank.py;
             audiomentations `ApplyImpulseResponse`, tail cut so the length is kept)
  noise      a random window of a random recording from the noise folders (local/prepare_ambient_noise.py)
             at a random SNR in `snr_db` (audiomentations `AddBackgroundNoise`, SNR against the
             cut's RMS)
  eq         microphone colouration: seven random peaking/shelf filters, +-`eq_db` (audiomentations
             `SevenBandParametricEQ`)
  telephone  8 kHz round trip (anti-aliased down- and up-sampling) and the 300-3400 Hz telephone
             band-pass: nothing above 4 kHz survives (`TelephoneBand`)
  codec      an in-memory encode/decode with libsndfile (soundfile): Ogg Vorbis, Ogg Opus or MP3 at a
             random compression level (`CodecRoundTrip`)
  gain       level change in `gain_db` (audiomentations `Gain`)
The length of the audio never changes, so supervisions and features keep their frames.

Reproducible: the randomness of a cut comes from (seed, epoch, cut id) only (`AudioAugmenter`'s
`key`), so a resumed run, any number of DataLoader workers and an uninterrupted run give a cut the
same audio in the same epoch, and a different one in the next epoch. Nothing needs saving in a
checkpoint: --seed and the epoch already are.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import random
from dataclasses import dataclass, field, fields
from math import gcd
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
from lhotse import CutSet
from lhotse.dataset.collation import collate_matrices, read_audio_from_cuts
from lhotse.dataset.input_strategies import OnTheFlyFeatures
from lhotse.utils import LOG_EPSILON

from zipformer_rwkv.errors import ConfigError, MissingFileError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".opus")
CODECS = {"vorbis": ("OGG", "VORBIS"), "opus": ("OGG", "OPUS"), "mp3": ("MP3", "MPEG_LAYER_III")}
"""codec name -> (soundfile format, subtype)."""


@dataclass
class AugmentConf:
    """The `augment:` block of a corpus conf.yaml (all keys optional):

      augment:
        enabled: false                 # the switch; true also makes training compute fbank on the fly
        rir_dir: ../augment/rirs       # folder of impulse responses, relative to --manifest-dir
        noise_dirs: [../augment/ambient]   # folders of noise recordings, relative to --manifest-dir
        p_reverb: 0.5
        p_noise: 0.5
        snr_db: [5, 25]                # dB, uniform
        p_eq: 0.3
        eq_db: 6                       # each band's gain in [-eq_db, eq_db] dB
        p_telephone: 0.1
        p_codec: 0.2
        codecs: [vorbis, opus, mp3]
        codec_compression: [0.3, 0.9]  # libsndfile compression level (0: best quality, 1: smallest)
        p_gain: 0.5
        gain_db: [-12, 6]

    A folder is needed only when its step has p > 0.
    """

    enabled: bool = False
    rir_dir: Optional[str] = None
    noise_dirs: List[str] = field(default_factory=list)
    p_reverb: float = 0.5
    p_noise: float = 0.5
    snr_db: Tuple[float, float] = (5.0, 25.0)
    p_eq: float = 0.3
    eq_db: float = 6.0
    p_telephone: float = 0.1
    p_codec: float = 0.2
    codecs: List[str] = field(default_factory=lambda: ["vorbis", "opus", "mp3"])
    codec_compression: Tuple[float, float] = (0.3, 0.9)
    p_gain: float = 0.5
    gain_db: Tuple[float, float] = (-12.0, 6.0)


def _range(value: Any, where: str) -> Tuple[float, float]:
    if not (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value) and value[0] <= value[1]):
        raise ConfigError(f"{where} must be [low, high] with low <= high, got {value!r}")
    return float(value[0]), float(value[1])


def parse_augment_conf(block: Any, path: Path) -> AugmentConf:
    """The `augment:` block of conf.yaml `path` (None or absent: disabled) as an `AugmentConf`.

    Raises:
      ConfigError: not a mapping, an unknown key, a probability outside [0, 1], a bad range or codec
        (the message names the file and the key).
    """
    if block is None:
        return AugmentConf()
    if not isinstance(block, dict):
        raise ConfigError(f"{path}: 'augment' must be a mapping (see zipformer_rwkv/dataset/augment.py)")
    known = {f.name for f in fields(AugmentConf)}
    unknown = sorted(set(block) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) in 'augment': {', '.join(unknown)} "
                          f"(known: {', '.join(sorted(known))})")
    conf = AugmentConf()
    for key, value in block.items():
        where = f"{path}: augment.{key}"
        if key == "enabled":
            if not isinstance(value, bool):
                raise ConfigError(f"{where} must be true or false, got {value!r}")
        elif key.startswith("p_") or key == "eq_db":
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0 \
                    or (key.startswith("p_") and value > 1):
                raise ConfigError(f"{where} must be a number in [0, {1 if key.startswith('p_') else 'inf'}), "
                                  f"got {value!r}")
            value = float(value)
        elif key in ("snr_db", "gain_db", "codec_compression"):
            value = _range(value, where)
            if key == "codec_compression" and not 0 <= value[0] <= value[1] <= 1:
                raise ConfigError(f"{where} must lie in [0, 1], got {list(value)}")
        elif key == "rir_dir":
            value = None if value is None else str(value)
        elif key in ("noise_dirs", "codecs"):
            value = [value] if isinstance(value, str) else value
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where} must be a list of names, got {value!r}")
            bad = [c for c in value if key == "codecs" and c not in CODECS]
            if bad:
                raise ConfigError(f"{where}: unknown codec(s) {bad} (known: {', '.join(CODECS)})")
        setattr(conf, key, value)
    if conf.p_codec > 0 and not conf.codecs:
        raise ConfigError(f"{path}: augment.p_codec > 0 needs at least one codec in augment.codecs")
    return conf


def key_seed(key: str) -> int:
    """A 64-bit seed from a string (the first 8 bytes of its SHA-256), the same in every process."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")


@contextlib.contextmanager
def seeded_global_rngs(seed: int) -> Iterator[None]:
    """Seed python's `random` and numpy's global RNG with `seed` (audiomentations draws from
    them), restoring their previous states on exit."""
    py_state, np_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def _audio_files(folder: Path) -> List[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)


def _resolve_dir(name: str, base_dir: Path, what: str, maker: str) -> Path:
    """`name` (relative to `base_dir` unless absolute) as an existing folder holding audio files.
    Raises MissingFileError naming it otherwise."""
    folder = Path(name) if Path(name).is_absolute() else Path(base_dir) / name
    if not folder.is_dir():
        raise MissingFileError(f"augment {what} folder {folder} not found; make it with {maker} "
                               f"(./prepare.sh stage 3) or set its p to 0")
    if not _audio_files(folder):
        raise MissingFileError(f"augment {what} folder {folder} holds no audio files ({', '.join(AUDIO_SUFFIXES)})")
    return folder


def _base_transform():
    from audiomentations.core.transforms_interface import BaseWaveformTransform

    return BaseWaveformTransform


def telephone_band(samples: np.ndarray, sample_rate: int, band_hz: Tuple[float, float] = (300.0, 3400.0)) -> np.ndarray:
    """An 8 kHz round trip and the telephone band-pass (300-3400 Hz, 6th-order Butterworth):
    (T,) float32 at `sample_rate` -> (T,) float32; energy above 4.2 kHz ends > 40 dB down."""
    from scipy.signal import butter, resample_poly, sosfilt

    g = gcd(8000, sample_rate)
    up, down = 8000 // g, sample_rate // g
    narrow = resample_poly(samples, up, down)
    wide = resample_poly(narrow, down, up)[: len(samples)]
    if len(wide) < len(samples):
        wide = np.pad(wide, (0, len(samples) - len(wide)))
    sos = butter(6, band_hz, btype="bandpass", fs=sample_rate, output="sos")
    return sosfilt(sos, wide).astype(np.float32)


def codec_round_trip(samples: np.ndarray, sample_rate: int, codec: str, compression: float) -> np.ndarray:
    """Encode (T,) float32 audio with `codec` (a key of `CODECS`) in memory at libsndfile's
    `compression` level (0..1) and decode it again; (T,) float32, trimmed or zero-padded to T.
    Audio louder than full scale is scaled down for the codec and back up afterwards.
    Raises ValueError for an unknown codec."""
    import soundfile as sf

    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r} (known: {', '.join(CODECS)})")
    fmt, subtype = CODECS[codec]
    peak = float(np.max(np.abs(samples))) if len(samples) else 0.0
    scale = 0.99 / peak if peak > 0.99 else 1.0
    buf = io.BytesIO()
    sf.write(buf, samples * scale, sample_rate, format=fmt, subtype=subtype, compression_level=compression)
    buf.seek(0)
    out, _ = sf.read(buf, dtype="float32")
    out = out[: len(samples)] if out.ndim == 1 else out[: len(samples), 0]
    if len(out) < len(samples):
        out = np.pad(out, (0, len(samples) - len(out)))
    return (out / scale).astype(np.float32)


def _make_transforms(conf: AugmentConf, base_dir: Path) -> List[Any]:
    """The audiomentations transforms of `conf`, in order, leaving out those with p == 0."""
    from audiomentations import AddBackgroundNoise, ApplyImpulseResponse, Gain, SevenBandParametricEQ

    base = _base_transform()

    class TelephoneBand(base):
        """audiomentations wrapper of `telephone_band`."""

        supports_multichannel = False

        def apply(self, samples, sample_rate):
            return telephone_band(samples, sample_rate)

    class CodecRoundTrip(base):
        """audiomentations wrapper of `codec_round_trip` (codec and compression level drawn per call)."""

        supports_multichannel = False

        def __init__(self, codecs: List[str], compression: Tuple[float, float], p: float) -> None:
            super().__init__(p)
            self.codecs, self.compression = list(codecs), compression

        def randomize_parameters(self, samples, sample_rate):
            super().randomize_parameters(samples, sample_rate)
            if self.parameters["should_apply"]:
                self.parameters["codec"] = random.choice(self.codecs)
                self.parameters["compression"] = random.uniform(*self.compression)

        def apply(self, samples, sample_rate):
            return codec_round_trip(samples, sample_rate, self.parameters["codec"], self.parameters["compression"])

    out: List[Any] = []
    if conf.p_reverb > 0:
        if not conf.rir_dir:
            raise ConfigError("augment.p_reverb > 0 needs augment.rir_dir")
        rirs = _resolve_dir(conf.rir_dir, base_dir, "rir_dir", "local/make_rir_bank.py")
        out.append(ApplyImpulseResponse(ir_path=[str(p) for p in _audio_files(rirs)], p=conf.p_reverb,
                                        lru_cache_size=4096, leave_length_unchanged=True))
    if conf.p_noise > 0:
        if not conf.noise_dirs:
            raise ConfigError("augment.p_noise > 0 needs augment.noise_dirs")
        files = [str(p) for d in conf.noise_dirs
                 for p in _audio_files(_resolve_dir(d, base_dir, "noise_dirs", "local/prepare_ambient_noise.py"))]
        out.append(AddBackgroundNoise(sounds_path=files, min_snr_db=conf.snr_db[0], max_snr_db=conf.snr_db[1],
                                      noise_rms="relative", p=conf.p_noise))
    if conf.p_eq > 0:
        out.append(SevenBandParametricEQ(min_gain_db=-conf.eq_db, max_gain_db=conf.eq_db, p=conf.p_eq))
    if conf.p_telephone > 0:
        out.append(TelephoneBand(p=conf.p_telephone))
    if conf.p_codec > 0:
        out.append(CodecRoundTrip(conf.codecs, conf.codec_compression, p=conf.p_codec))
    if conf.p_gain > 0:
        out.append(Gain(min_gain_db=conf.gain_db[0], max_gain_db=conf.gain_db[1], p=conf.p_gain))
    return out


class AudioAugmenter:
    """Applies `conf`'s steps to one cut's audio, seeded by a key such as "seed|epoch|cut_id".

    Args:
      conf: the `augment:` block.
      base_dir: folder that relative `rir_dir`/`noise_dirs` are taken from (--manifest-dir).
      sample_rate: Hz of the audio it is given.
    Raises (at construction):
      MissingFileError: a folder needed (its step has p > 0) is missing or holds no audio; the
        message names it.
      ConfigError: a step with p > 0 names no folder.

    The transforms are built at construction (to check the folders) and again, lazily, in each
    DataLoader worker (they are not pickled, which keeps their file caches per process).
    `last_applied` lists (step, parameters) of the previous call.
    """

    def __init__(self, conf: AugmentConf, base_dir: Path, sample_rate: int = 16000) -> None:
        self.conf, self.base_dir, self.sample_rate = conf, Path(base_dir), sample_rate
        self._transforms: Optional[List[Any]] = _make_transforms(conf, self.base_dir)
        self.last_applied: List[Tuple[str, Dict[str, Any]]] = []

    def __getstate__(self) -> Dict[str, Any]:
        state = self.__dict__.copy()
        state["_transforms"] = None
        return state

    @property
    def transforms(self) -> List[Any]:
        if self._transforms is None:
            self._transforms = _make_transforms(self.conf, self.base_dir)
        return self._transforms

    def __call__(self, samples: np.ndarray, key: str) -> np.ndarray:
        """(T,) float audio -> (T,) float32 augmented audio; the same (samples, key) always gives
        the same output. With every p == 0 the input values come back unchanged."""
        x = np.asarray(samples, dtype=np.float32)
        self.last_applied = []
        with seeded_global_rngs(key_seed(key)):
            for t in self.transforms:
                x = t(x, self.sample_rate)
                if t.parameters.get("should_apply"):
                    self.last_applied.append((type(t).__name__, dict(t.parameters)))
        if len(x) != len(samples):  # every step keeps the length; a change is a bug
            raise RuntimeError(f"augmentation changed the length {len(samples)} -> {len(x)} ({self.last_applied})")
        return x


class AugmentedFeatures(OnTheFlyFeatures):
    """lhotse input strategy: each cut's audio through an `AudioAugmenter` keyed by
    "{seed}|{epoch}|{cut.id}", then on-the-fly features.

    Returns, like `OnTheFlyFeatures`: ((N, T, F) float32 features padded with log(1e-10),
    (N,) int64 frame counts). Call `set_epoch` before each epoch (`SeededBatches.set_epoch` does).
    """

    def __init__(self, extractor, augmenter: AudioAugmenter, seed: int) -> None:
        super().__init__(extractor)
        self.augmenter, self.seed, self.epoch = augmenter, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __call__(self, cuts: CutSet, recording_field: Optional[str] = None):
        audios, cuts = read_audio_from_cuts(cuts, recording_field=recording_field)
        out = []
        for audio, cut in zip(audios, cuts):
            a = audio.numpy()
            if a.ndim == 2:
                if a.shape[0] != 1:
                    raise ValueError(f"cut {cut.id}: augmentation needs mono audio, got {a.shape[0]} channels")
                a = a[0]
            out.append(torch.from_numpy(self.augmenter(a, f"{self.seed}|{self.epoch}|{cut.id}")))
        feats = self.extractor.extract_batch(out, sampling_rate=cuts[0].sampling_rate)
        if isinstance(feats, torch.Tensor) and feats.ndim == 3:
            feats = list(feats)
        feats = [torch.as_tensor(f) for f in feats]
        logging.debug(f"augmented {len(out)} cuts")
        return collate_matrices(feats, padding_value=LOG_EPSILON), torch.tensor([f.shape[0] for f in feats])
