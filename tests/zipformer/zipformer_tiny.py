"""A tiny Zipformer2 config for fast CPU tests: same six-stack structure (1,2,4,8,4,2) and code
paths as the real ones, ~0.7 M parameters (mostly the fixed-size Conv2dSubsampling)."""
import torch

from zipformer_rwkv.zipformer import ZipformerConfig, ZipformerEncoder


def tiny_config(**overrides) -> ZipformerConfig:
    cfg = dict(
        num_encoder_layers=(1, 1, 2, 1, 1, 1),
        encoder_dim=(32, 48, 64, 80, 64, 48),
        feedforward_dim=(64, 96, 128, 160, 128, 96),
        num_heads=(2, 2, 2, 4, 2, 2),
        query_head_dim=(8,),
        value_head_dim=(4,),
        pos_head_dim=(4,),
        pos_dim=16,
        encoder_unmasked_dim=(32, 32, 48, 48, 48, 32),
        cnn_module_kernel=(7, 7, 5, 5, 5, 7),
    )
    cfg.update(overrides)
    return ZipformerConfig(**cfg)


def tiny_encoder(seed: int = 0, **overrides) -> ZipformerEncoder:
    """Tiny encoder with randomised (not identity-like) weights so every path matters."""
    torch.manual_seed(seed)
    model = ZipformerEncoder(tiny_config(**overrides))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "bypass_scale" in name or name.endswith("downsample.bias") or "conv_scale" in name:
                p.uniform_(0.2, 0.9)  # real checkpoints have non-trivial values here
    return model.eval()

