"""CTC head/loss/greedy search, and the icefall command-line options / named configs."""
import argparse
import math
from dataclasses import replace

import pytest
import torch

from zipformer_rwkv.utils import AttributeDict
from zipformer_rwkv.zipformer import (
    ENCODER_CONFIGS,
    add_model_arguments,
    ctc_greedy_search,
    ctc_loss,
    get_encoder_model,
    make_ctc_output,
    resolve_encoder_config,
)


def test_ctc_output_keys_like_icefall():
    holder = torch.nn.Module()
    holder.ctc_output = make_ctc_output(16, 10)
    assert list(holder.state_dict()) == ["ctc_output.1.weight", "ctc_output.1.bias"]
    lp = holder.ctc_output.eval()(torch.randn(2, 5, 16))
    assert torch.allclose(lp.exp().sum(-1), torch.ones(2, 5))


def test_ctc_loss_hand_computed():
    # T=2, V=2, target [1]: paths (1,1), (0,1), (1,0) -> p = a1*b1 + a0*b1 + a1*b0
    probs = torch.tensor([[[0.3, 0.7], [0.6, 0.4]]], dtype=torch.float64)
    expect = -math.log(0.7 * 0.4 + 0.3 * 0.4 + 0.7 * 0.6)
    loss = ctc_loss(probs.log(), torch.tensor([2]), [[1]])
    assert float(loss) == pytest.approx(expect, rel=1e-9)
    # reduction is a sum over the batch; padding frames beyond lens are ignored
    batch = torch.cat([probs, probs]).log()
    batch2 = torch.cat([batch, torch.zeros(2, 3, 2).log_softmax(-1)], dim=1)
    assert float(ctc_loss(batch2, torch.tensor([2, 2]), [[1], [1]])) == pytest.approx(2 * expect, rel=1e-9)
    assert math.isinf(float(ctc_loss(probs.log(), torch.tensor([2]), [[1, 1]])))  # needs 3 frames
    with pytest.raises(ValueError, match="blank"):
        ctc_loss(probs.log(), torch.tensor([2]), [[0]])


def test_ctc_greedy_search_collapses_and_drops_blank():
    path = [[0, 1, 1, 0, 1, 2, 2, 0, 3], [3, 3, 0, 0, 2, 5, 5, 5, 5]]
    lp = torch.nn.functional.one_hot(torch.tensor(path), 6).float().log_softmax(-1)
    assert ctc_greedy_search(lp, torch.tensor([9, 6])) == [[1, 1, 2, 3], [3, 2, 5]]
    assert ctc_greedy_search(lp, torch.tensor([0, 1])) == [[], [3]]


def parse(argv):
    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    return parser.parse_args(argv)


def test_named_config_and_icefall_overrides():
    args = parse(["--encoder-config", "small"])
    assert resolve_encoder_config(args) == ENCODER_CONFIGS["small"]
    assert args.num_encoder_layers == "2,2,2,2,2,2"  # written back as icefall strings
    args = parse(["--encoder-config", "large", "--causal", "true", "--chunk-size", "32",
                  "--left-context-frames", "256", "--num-heads", "4"])
    cfg = resolve_encoder_config(args)
    assert cfg.encoder_dim == ENCODER_CONFIGS["large"].encoder_dim and cfg.causal
    assert cfg.chunk_size == (32,) and cfg.left_context_frames == (256,) and cfg.num_heads == (4,) * 6
    assert resolve_encoder_config(parse([])) == ENCODER_CONFIGS["medium"]  # default
    assert ENCODER_CONFIGS["medium"].encoder_embed_channels == 128  # icefall's layer3_channels
    cfg = resolve_encoder_config(parse(["--encoder-config", "small", "--encoder-embed-channels", "64"]))
    assert cfg == replace(ENCODER_CONFIGS["small"], encoder_embed_channels=64)
    with torch.device("meta"):
        model = get_encoder_model(parse(["--encoder-embed-channels", "64"]))
    assert model.encoder_embed.conv[7].weight.shape == (64, 32, 3, 3)
    assert model.encoder_embed.out.weight.shape == (192, 64 * 19)
    assert not ENCODER_CONFIGS["medium"].utterance_cmn  # icefall never normalises fbank
    args = parse(["--utterance-cmn", "true"])
    assert resolve_encoder_config(args).utterance_cmn and args.utterance_cmn is True


def test_bad_option_values_are_clear():
    with pytest.raises(ValueError, match="--encoder-dim needs 1 or 6"):
        resolve_encoder_config(parse(["--encoder-dim", "192,256"]))
    with pytest.raises(ValueError, match="comma-separated integers"):
        resolve_encoder_config(parse(["--feedforward-dim", "512,x"]))
    with pytest.raises(ValueError, match="--encoder-embed-channels must be >= 1, got 0"):
        resolve_encoder_config(parse(["--encoder-embed-channels", "0"]))
    with pytest.raises(ValueError, match="a causal \\(streaming\\) model cannot use it"):
        resolve_encoder_config(parse(["--causal", "true", "--utterance-cmn", "true"]))
    with pytest.raises(SystemExit):
        parse(["--encoder-config", "huge"])


def test_get_encoder_model_from_attribute_dict():
    params = AttributeDict(encoder_config="small", num_encoder_layers="1,1,1,1,1,1",
                           encoder_dim="64,64,64,64,64,96", feedforward_dim="128",
                           encoder_unmasked_dim="64", feature_dim=80)
    with torch.device("meta"):
        model = get_encoder_model(params)
    assert model.encoder_out_dim == 96
    assert [len(e.layers) if hasattr(e, "layers") else len(e.encoder.layers)
            for e in model.encoder.encoders] == [1] * 6
