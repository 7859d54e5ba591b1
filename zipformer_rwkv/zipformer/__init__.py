"""Zipformer2 speech encoder, state-dict compatible with k2-fsa/icefall's
`egs/librispeech/ASR/zipformer` (Zipformer paper, Yao et al. 2023, arXiv 2310.11230).

Public API:
  ZipformerEncoder, ZipformerConfig, ENCODER_CONFIGS, ENCODER_OPTIONS, add_model_arguments, get_encoder_model,
  resolve_encoder_config, encoder_out_length, load_encoder_checkpoint, CheckpointMismatchError,
  make_ctc_output, ctc_loss, ctc_greedy_search, set_batch_count.
"""
from typing import Optional

from torch import nn

from zipformer_rwkv.zipformer.config import (
    ENCODER_CONFIGS,
    ENCODER_OPTIONS,
    ZipformerConfig,
    add_model_arguments,
    resolve_encoder_config,
)
from zipformer_rwkv.zipformer.ctc import ctc_greedy_search, ctc_loss, make_ctc_output
from zipformer_rwkv.zipformer.encoder import ZipformerEncoder, encoder_out_length, get_encoder_model
from zipformer_rwkv.zipformer.load import CheckpointMismatchError, load_encoder_checkpoint
from zipformer_rwkv.zipformer.subsampling import Conv2dSubsampling
from zipformer_rwkv.zipformer.zipformer import Zipformer2


def set_batch_count(model: nn.Module, batch_count: Optional[float]) -> None:
    """Sets `batch_count` on every module that has one (the ScheduledFloat schedules of dropout,
    skip rates, balancers, whitening), as icefall's train.py does before each batch.
    Also sets each such module's `name` to its qualified name (for diagnostics)."""
    for name, module in model.named_modules():
        if hasattr(module, "batch_count"):
            module.batch_count = batch_count
        if hasattr(module, "name"):
            module.name = name


__all__ = [
    "CheckpointMismatchError", "Conv2dSubsampling", "ENCODER_CONFIGS", "ENCODER_OPTIONS", "Zipformer2",
    "ZipformerConfig", "ZipformerEncoder", "add_model_arguments", "ctc_greedy_search", "ctc_loss",
    "encoder_out_length", "get_encoder_model", "load_encoder_checkpoint", "make_ctc_output",
    "resolve_encoder_config", "set_batch_count",
]
