"""Zipformer2 encoder configurations: the named LibriSpeech configs and icefall's command-line
options (icefall `egs/librispeech/ASR/zipformer/train.py::add_model_arguments`; the small and
large configs are the ones in icefall's `egs/librispeech/ASR/RESULTS.md`)."""
import argparse
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Dict, Mapping, Tuple

from zipformer_rwkv.utils import add_dataclass_arguments, str2bool


def _ints(s: Any) -> Tuple[int, ...]:
    """"2,2,3" / 2 / (2, 2, 3) -> (2, 2, 3)."""
    if isinstance(s, str):
        try:
            return tuple(int(v) for v in s.split(",") if v.strip())
        except ValueError:
            raise ValueError(f"expected comma-separated integers, got {s!r}") from None
    if isinstance(s, int):
        return (s,)
    return tuple(int(v) for v in s)


# Options holding one integer / one bool (the others are per-stack comma lists).
_INT_OPTIONS = ("pos_dim", "encoder_embed_channels")
_BOOL_OPTIONS = ("causal", "utterance_cmn", "running_cmn")


@dataclass(frozen=True)
class ZipformerConfig:
    """Architecture of `encoder_embed` + `encoder` (defaults: LibriSpeech medium).

    Per-stack fields hold one value per stack; a single value is repeated for every stack.
    Comma strings ("2,2,3,4,3,2") are accepted for tuples and "true"/"false" for the bools
    (`causal`, `utterance_cmn`, `running_cmn`).
    Frame rates: fbank 100 Hz, stack i at 50 Hz / downsampling_factor[i], output 25 Hz.
    `chunk_size` / `left_context_frames` (frames at 50 Hz) only matter when `causal`.
    `encoder_embed_channels` is the width of encoder_embed's last convolution and its ConvNeXt
    (icefall's Conv2dSubsampling `layer3_channels`, 128 in every icefall recipe); at 50 Hz x 19
    frequency bins it sets most of encoder_embed's cost, which on a small encoder is as much as
    the Zipformer2 stacks'.
    `utterance_cmn` subtracts each utterance's mean fbank vector (over its valid frames) before
    encoder_embed: per-utterance cepstral mean normalisation (Kaldi's `apply-cmvn --norm-vars=false`
    with per-utterance stats; ESPnet's `utterance_mvn` without variance normalisation). It removes
    gain and channel offsets the model would otherwise have to learn to ignore. icefall never uses
    it (default False, which every icefall checkpoint needs); it needs the whole utterance, so a
    causal (streaming) model cannot have it. `running_cmn` is its causal form: frame t minus the
    mean of frames 0..t of its utterance (Kaldi's `apply-cmvn-sliding --center=false` with an
    unbounded window), so a stream is normalised as it arrives, with a sum and a count as state.

    Raises:
      ValueError: a per-stack field with neither 1 nor len(downsampling_factor) values, a
        malformed value, encoder_embed_channels < 1, utterance_cmn with causal, or both CMNs.
    """

    num_encoder_layers: Tuple[int, ...] = (2, 2, 3, 4, 3, 2)
    downsampling_factor: Tuple[int, ...] = (1, 2, 4, 8, 4, 2)
    feedforward_dim: Tuple[int, ...] = (512, 768, 1024, 1536, 1024, 768)
    num_heads: Tuple[int, ...] = (4, 4, 4, 8, 4, 4)
    encoder_dim: Tuple[int, ...] = (192, 256, 384, 512, 384, 256)
    query_head_dim: Tuple[int, ...] = (32,)
    value_head_dim: Tuple[int, ...] = (12,)
    pos_head_dim: Tuple[int, ...] = (4,)
    pos_dim: int = 48
    encoder_unmasked_dim: Tuple[int, ...] = (192, 192, 256, 256, 256, 192)
    cnn_module_kernel: Tuple[int, ...] = (31, 31, 15, 15, 15, 31)
    causal: bool = False
    chunk_size: Tuple[int, ...] = (16, 32, 64, -1)
    left_context_frames: Tuple[int, ...] = (64, 128, 256, -1)
    encoder_embed_channels: int = 128
    utterance_cmn: bool = False
    running_cmn: bool = False
    feature_dim: int = 80

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in _BOOL_OPTIONS:
                object.__setattr__(self, f.name, str2bool(v) if isinstance(v, str) else bool(v))
            elif f.name in _INT_OPTIONS + ("feature_dim",):
                object.__setattr__(self, f.name, int(v))
            else:
                object.__setattr__(self, f.name, _ints(v))
        if self.encoder_embed_channels < 1:
            raise ValueError(f"--encoder-embed-channels must be >= 1, got {self.encoder_embed_channels}")
        if self.utterance_cmn and self.causal:
            raise ValueError("--utterance-cmn needs the whole utterance's mean: a causal (streaming) "
                             "model cannot use it (--running-cmn is the causal form)")
        if self.utterance_cmn and self.running_cmn:
            raise ValueError("--utterance-cmn and --running-cmn: choose one fbank normalisation")
        n = len(self.downsampling_factor)
        for name in ("num_encoder_layers", "feedforward_dim", "num_heads", "encoder_dim",
                     "query_head_dim", "value_head_dim", "pos_head_dim", "encoder_unmasked_dim",
                     "cnn_module_kernel"):
            v = getattr(self, name)
            if len(v) not in (1, n):
                raise ValueError(f"--{name.replace('_', '-')} needs 1 or {n} comma-separated "
                                 f"values (one per stack), got {v}")
            object.__setattr__(self, name, v * n if len(v) == 1 else v)

    @property
    def output_dim(self) -> int:
        """Channels of `encoder_out`: max(encoder_dim)."""
        return max(self.encoder_dim)

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def to_params(self) -> Dict[str, Any]:
        """icefall-style option values: comma strings for tuples (as on the command line)."""
        return {k: ",".join(map(str, v)) if isinstance(v, tuple) else v
                for k, v in asdict(self).items()}


ENCODER_CONFIGS: Dict[str, ZipformerConfig] = {
    "small": ZipformerConfig(
        num_encoder_layers=(2, 2, 2, 2, 2, 2), feedforward_dim=(512, 768, 768, 768, 768, 768),
        encoder_dim=(192, 256, 256, 256, 256, 256),
        encoder_unmasked_dim=(192, 192, 192, 192, 192, 192)),
    "medium": ZipformerConfig(),
    "large": ZipformerConfig(
        num_encoder_layers=(2, 2, 4, 5, 4, 2), feedforward_dim=(512, 768, 1536, 2048, 1536, 768),
        encoder_dim=(192, 256, 512, 768, 512, 256),
        encoder_unmasked_dim=(192, 192, 256, 320, 256, 192)),
}

# Options of add_model_arguments, in icefall's order; all default to None = "from --encoder-config".
_OPTIONS = {
    "num_encoder_layers": "Number of Zipformer layers per stack, comma separated.",
    "downsampling_factor": "Downsampling factor of each stack w.r.t. 50 Hz, comma separated.",
    "feedforward_dim": "Feed-forward dimension per stack, comma separated.",
    "num_heads": "Number of attention heads per stack, comma separated.",
    "encoder_dim": "Embedding dimension per stack, comma separated.",
    "query_head_dim": "Query/key dimension per head per stack, comma separated.",
    "value_head_dim": "Value dimension per head per stack, comma separated.",
    "pos_head_dim": "Positional-encoding dimension per head per stack, comma separated.",
    "pos_dim": "Positional-encoding embedding dimension.",
    "encoder_unmasked_dim": "Channels per stack never hit by training feature masks, comma "
                            "separated; must be <= encoder_dim.",
    "cnn_module_kernel": "Convolution kernel size per stack, comma separated (odd numbers).",
    "causal": "If true, build the chunk-causal (streaming) model.",
    "chunk_size": "Chunk sizes (frames at 50 Hz) drawn from in training; the first one is used "
                  "at decoding / in eval. -1 = full utterance.",
    "left_context_frames": "Left contexts (frames at 50 Hz) drawn from in training; the first "
                           "one is used at decoding / in eval. -1 = unlimited.",
    "encoder_embed_channels": "Channels of encoder_embed's last Conv2d and its ConvNeXt block "
                              "(icefall's Conv2dSubsampling layer3_channels); smaller is cheaper "
                              "on CPU, but icefall checkpoints need 128.",
    "utterance_cmn": "If true, subtract each utterance's mean fbank vector before encoder_embed "
                     "(per-utterance CMN; not with --causal). icefall checkpoints need false.",
    "running_cmn": "If true, subtract from each fbank frame the mean of its utterance's frames up to it "
                   "(causal CMN, for streaming models). icefall checkpoints need false.",
}


ENCODER_OPTIONS = tuple(_OPTIONS)
"""The encoder's structure options (`--num-encoder-layers` ... `--running-cmn`), as train.py saves
them in a checkpoint (icefall's epoch-N.pt holds the same names, except our last two)."""


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds icefall's Zipformer options plus `--encoder-config {small,medium,large}`.

    Every architecture option defaults to None, meaning "take it from --encoder-config"
    (default medium); `resolve_encoder_config(params)` fills them in."""
    parser.add_argument("--encoder-config", type=str, default="medium",
                        choices=sorted(ENCODER_CONFIGS),
                        help="Named Zipformer2 configuration giving the defaults of the options "
                             "below (LibriSpeech small 22.0 M / medium 64.0 M / large 146.6 M).")
    medium, helps = ENCODER_CONFIGS["medium"], {}
    for name, help_text in _OPTIONS.items():
        value = getattr(medium, name)
        if isinstance(value, tuple):
            helps[name] = help_text + f" Default from --encoder-config (medium: {','.join(map(str, value))})."
        else:
            helps[name] = help_text + f" Default: {value}."
    add_dataclass_arguments(parser, ZipformerConfig, names=list(_OPTIONS), defaults=dict.fromkeys(_OPTIONS),
                            helps=helps)


def _get(params: Any, name: str, default: Any = None) -> Any:
    if isinstance(params, Mapping):
        return params.get(name, default)
    return getattr(params, name, default)


def resolve_encoder_config(params: Any) -> ZipformerConfig:
    """ZipformerConfig from parsed options (argparse.Namespace, AttributeDict or dict).

    Options that are None/absent come from the named config `params.encoder_config` (default
    medium). When params is mutable, the resolved values are written back as icefall-style
    comma strings so that logged params show the real architecture.

    Raises:
      ValueError: unknown config name or malformed option value.
    """
    name = _get(params, "encoder_config", None) or "medium"
    if name not in ENCODER_CONFIGS:
        raise ValueError(f"--encoder-config must be one of {sorted(ENCODER_CONFIGS)}, got {name!r}")
    overrides = {k: _get(params, k) for k in list(_OPTIONS) + ["feature_dim"]}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    cfg = replace(ENCODER_CONFIGS[name], **overrides)
    resolved = cfg.to_params()
    for k in _OPTIONS:
        try:
            if isinstance(params, dict):
                params[k] = resolved[k]
            else:
                setattr(params, k, resolved[k])
        except (AttributeError, TypeError):
            break
    return cfg
