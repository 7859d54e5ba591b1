"""Load BlinkDL RWKV-7 checkpoints (`.pth` bf16 state dicts, or `.safetensors`) into `RWKV7`.

Key names and stored shapes: those of BlinkDL's RWKV-LM (`RWKV-v7/train_temp/src/model.py`,
`RWKV-v7/rwkv_v7_demo.py`; listed in README.md here). Every dimension is read from tensor shapes
(LoRA ranks differ between sizes and do not follow one formula). `blocks.0.att.v0/v1/v2` may be
present (kept as unused buffers) or absent. `blocks.{i}.att.time_state` (JL-er/RWKV-PEFT state
tuning) is accepted.
"""
import logging
import re
from pathlib import Path
from typing import Dict, Optional, Union

import torch

from zipformer_rwkv.errors import MissingFileError
from zipformer_rwkv.rwkv7.model import RWKV7, RWKV7Config

# name -> (n_layer, n_embd, d_decay, d_aaa, d_mv, d_gate) of BlinkDL's released World/G1 files, as read
# from their tensor shapes (V = 65536, head 64).
MODEL_SIZES = {
    "0.1B": (12, 768, 64, 64, 32, 128),
    "0.4B": (24, 1024, 64, 64, 32, 128),
    "1.5B": (24, 2048, 96, 96, 64, 256),
    "2.9B": (32, 2560, 96, 96, 64, 320),
}


class RWKV7CheckpointError(ValueError):
    """A checkpoint file cannot be read as an RWKV-7 model; the message names the file and the problem."""


def detect_model_size(config: RWKV7Config) -> str:
    """Name of the released size ("0.1B", "0.4B", "1.5B", "2.9B") whose shapes `config` has, else "custom"."""
    dims = (config.n_layer, config.n_embd, config.d_decay, config.d_aaa, config.d_mv, config.d_gate)
    standard = config.vocab_size == 65536 and config.head_size == 64 and config.dim_ffn == 4 * config.n_embd
    for name, ref in MODEL_SIZES.items():
        if standard and dims == ref:
            return name
    return "custom"


def config_from_state_dict(sd: Dict[str, torch.Tensor], path: Union[str, Path] = "<state_dict>") -> RWKV7Config:
    """Read an `RWKV7Config` from the shapes of a BlinkDL state dict (works on meta tensors).

    Raises:
      RWKV7CheckpointError: if a tensor needed to infer the shape is missing.
    """

    def shape(key: str):
        if key not in sd:
            raise RWKV7CheckpointError(f"{path}: missing key '{key}'; not an RWKV-7 (x070) checkpoint?")
        return tuple(sd[key].shape)

    vocab_size, n_embd = shape("emb.weight")
    layers = {int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))}
    if not layers:
        raise RWKV7CheckpointError(f"{path}: no 'blocks.*' tensors found")
    n_layer = max(layers) + 1
    n_head, head_size = shape("blocks.0.att.r_k")
    if n_head * head_size != n_embd:
        raise RWKV7CheckpointError(
            f"{path}: blocks.0.att.r_k has shape {(n_head, head_size)}, inconsistent with n_embd={n_embd}"
        )
    v_src = "blocks.1.att.v1" if n_layer > 1 else "blocks.0.att.v1"
    d_mv = shape(v_src)[1] if (n_layer > 1 or v_src in sd) else RWKV7Config.d_mv
    return RWKV7Config(
        vocab_size=vocab_size,
        n_layer=n_layer,
        n_embd=n_embd,
        head_size=head_size,
        d_decay=shape("blocks.0.att.w1")[1],
        d_aaa=shape("blocks.0.att.a1")[1],
        d_mv=d_mv,
        d_gate=shape("blocks.0.att.g1")[1],
        dim_ffn=shape("blocks.0.ffn.key.weight")[0],
        layer0_v_lora="blocks.0.att.v0" in sd,
    )


def read_state_dict(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    """Tensors of a `.pth` (torch.load, weights_only, mmap) or `.safetensors` file, on the CPU.

    Raises:
      FileNotFoundError: the file does not exist.
      RWKV7CheckpointError: it cannot be read or is not a flat {name: tensor} dict.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"RWKV-7 checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path), device="cpu")
        else:
            try:
                sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as e:  # legacy (non-zip) serialization cannot be memory-mapped
                if "mmap" not in str(e):
                    raise
                sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file name
        raise RWKV7CheckpointError(f"{path}: cannot read as a .pth/.safetensors state dict ({e})") from e
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise RWKV7CheckpointError(f"{path}: expected a flat {{name: tensor}} dict (BlinkDL .pth format)")
    return sd


def check_state_dict(model: RWKV7, sd: Dict[str, torch.Tensor], path: Union[str, Path]) -> None:
    """Compare names and shapes of `sd` with `model.state_dict()`.

    Raises:
      RWKV7CheckpointError: listing missing keys, unexpected keys and shape mismatches.
    """
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    misshaped = [f"{k}: file {tuple(sd[k].shape)} != model {expected[k]}"
                 for k in expected if k in sd and tuple(sd[k].shape) != expected[k]]
    problems = []
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", misshaped)):
        if items:
            more = f" ... (+{len(items) - 5} more)" if len(items) > 5 else ""
            problems.append(f"{title}: {', '.join(items[:5])}{more}")
    if any(".s_emb" in k or k.endswith(("ffn.s0", "ffn.s1", "ffn.s2")) for k in unexpected):
        problems.append("this looks like a DeepEmbed (rwkv7a) file, which is not supported")
    if problems:
        raise RWKV7CheckpointError(f"{path}: not a compatible RWKV-7 checkpoint; " + "; ".join(problems))


def load_rwkv7_checkpoint(
    path: Union[str, Path],
    dtype: torch.dtype = torch.float32,
    device: Union[str, torch.device] = "cpu",
    config: Optional[RWKV7Config] = None,
) -> RWKV7:
    """Build an `RWKV7` from a BlinkDL checkpoint, e.g. `rwkv7-g1-0.1b-20250307-ctx4096.pth`.

    Args:
      path: `.pth` (loaded with `weights_only=True`) or `.safetensors`.
      dtype: parameter dtype of the returned model (the files are bf16; default float32).
      device: where the model lives.
      config: expected shape; None reads it from the tensors. If given, the file must match it.
    Returns:
      the model in eval mode; `model.config` holds the shape and `detect_model_size(model.config)` the
      released size it matches (also logged).
    Raises:
      FileNotFoundError, RWKV7CheckpointError (missing / unexpected / misshaped keys, unreadable file).
    """
    sd = read_state_dict(path)
    if config is None:
        config = config_from_state_dict(sd, path)
    with torch.device("meta"):
        model = RWKV7(config)
        if any(k.endswith("att.time_state") for k in sd):
            model.enable_state_tuning()
    check_state_dict(model, sd, path)
    model.load_state_dict(sd, strict=True, assign=True)
    model.to(device=device, dtype=dtype)
    logging.info(
        f"Loaded RWKV-7 {detect_model_size(config)} (L={config.n_layer}, C={config.n_embd}, "
        f"V={config.vocab_size}) from {path} as {dtype}"
    )
    return model.eval()
