"""load_encoder_checkpoint: icefall layouts, safetensors, config inference, clear errors."""
from dataclasses import replace

import pytest
import torch
from safetensors.torch import save_file

from zipformer_rwkv.zipformer import CheckpointMismatchError, ZipformerEncoder, load_encoder_checkpoint
from zipformer_tiny import tiny_config, tiny_encoder

pytestmark = pytest.mark.usefixtures("single_thread")


def icefall_model_dict(enc: ZipformerEncoder) -> dict:
    """A full-AsrModel-like state dict: encoder keys plus decoder/joiner/ctc heads."""
    sd = dict(enc.state_dict())
    sd.update({
        "decoder.embedding.weight": torch.randn(500, 512),
        "decoder.conv.weight": torch.randn(512, 128, 2),
        "joiner.encoder_proj.weight": torch.randn(512, enc.encoder_out_dim),
        "joiner.output_linear.weight": torch.randn(500, 512),
        "simple_am_proj.weight": torch.randn(500, enc.encoder_out_dim),
        "ctc_output.1.weight": torch.randn(500, enc.encoder_out_dim),
        "encoder_proj_unrelated.weight": torch.randn(3),  # prefix "encoder" but not "encoder."
    })
    return sd


def same_output(a: ZipformerEncoder, b: ZipformerEncoder) -> bool:
    x = torch.randn(1, 77, 80)
    with torch.no_grad():
        return torch.equal(a.eval()(x, torch.tensor([77]))[0], b.eval()(x, torch.tensor([77]))[0])


@pytest.fixture(scope="module")
def enc():
    return tiny_encoder(seed=5)


def test_icefall_epoch_checkpoint_loads_and_config_is_inferred(enc, tmp_path):
    path = tmp_path / "epoch-30.pt"
    torch.save({"model": icefall_model_dict(enc), "model_avg": {}, "optimizer": {}, "epoch": 30}, path)
    loaded = load_encoder_checkpoint(path)
    # encoder_unmasked_dim (training-time feature masks) is not stored in weights
    assert replace(loaded.config, encoder_unmasked_dim=(0,)) == replace(enc.config, encoder_unmasked_dim=(0,))
    assert same_output(loaded, enc)


def test_icefall_layout_with_top_level_params_and_paths_loads(enc, tmp_path):
    """icefall's save_checkpoint stores every params key at the top level: exp_dir and
    manifest_dir as pathlib paths, env_info, the sampler/scheduler state."""
    from pathlib import Path, PurePosixPath

    from zipformer_rwkv.training.checkpoint import read_checkpoint

    path = tmp_path / "epoch-30.pt"
    torch.save({"model": icefall_model_dict(enc), "optimizer": {"state": {}}, "scheduler": {"epoch": 30},
                "grad_scaler": {"scale": 1024.0}, "sampler": {"seed": 0, "shuffle": True},
                "exp_dir": Path("zipformer/exp"), "manifest_dir": Path("data/fbank"),
                "lang_dir": PurePosixPath("data/lang_bpe_500"), "device": torch.device("cpu"),
                "env_info": {"torch-version": "2.1", "IP address": "127.0.0.1"},
                "batch_idx_train": 123, "best_valid_loss": 0.5, "cur_epoch": 30}, path)
    assert same_output(load_encoder_checkpoint(path), enc)
    saved = read_checkpoint(path)  # what recipe.load_encoder_weights reads the ctc head from
    assert saved["exp_dir"] == Path("zipformer/exp") and saved["batch_idx_train"] == 123


def test_pretrained_pt_into_given_model(enc, tmp_path):
    path = tmp_path / "pretrained.pt"
    torch.save({"model": icefall_model_dict(enc)}, path)
    target = ZipformerEncoder(tiny_config())
    assert not same_output(target, enc)
    assert load_encoder_checkpoint(path, model=target) is target
    assert same_output(target, enc)


@pytest.mark.parametrize("prefix", ["", "module.", "encoder."])
def test_bare_state_dict_with_prefix(enc, tmp_path, prefix):
    path = tmp_path / "enc.pt"
    torch.save({prefix + k: v for k, v in enc.state_dict().items()}, path)
    assert same_output(load_encoder_checkpoint(path), enc)


def test_safetensors(enc, tmp_path):
    path = tmp_path / "enc.safetensors"
    save_file({k: v.contiguous() for k, v in icefall_model_dict(enc).items()}, str(path))
    assert same_output(load_encoder_checkpoint(path), enc)


def test_causal_checkpoint_inferred_as_causal(tmp_path):
    causal = tiny_encoder(seed=6, causal=True)
    path = tmp_path / "causal.pt"
    torch.save({"model": causal.state_dict()}, path)
    loaded = load_encoder_checkpoint(path, chunk_size="16", left_context_frames="64")
    assert loaded.config.causal and loaded.config.chunk_size == (16,)
    assert loaded.config.left_context_frames == (64,)


def test_narrow_encoder_embed_is_inferred_and_mismatch_is_clear(tmp_path):
    narrow = tiny_encoder(seed=7, encoder_embed_channels=32)
    assert narrow.encoder_embed.convnext.depthwise_conv.weight.shape[0] == 32
    path = tmp_path / "narrow.pt"
    torch.save({"model": icefall_model_dict(narrow)}, path)
    loaded = load_encoder_checkpoint(path)
    assert loaded.config.encoder_embed_channels == 32 and same_output(loaded, narrow)
    with pytest.raises(CheckpointMismatchError, match=r"encoder_embed\.conv\.7\.weight: checkpoint "
                       r"\(32, 32, 3, 3\) vs model \(128, 32, 3, 3\)"):
        load_encoder_checkpoint(path, model=ZipformerEncoder(tiny_config()))


def test_utterance_cmn_follows_our_checkpoints_options(tmp_path):
    """utterance_cmn is in no weight: our train.py / export.py files carry it as an option, which
    building follows and a given model must match; icefall files (no options) load without it."""
    cmn = tiny_encoder(seed=9, utterance_cmn=True)
    path = tmp_path / "pretrained.pt"
    torch.save({"model": dict(cmn.state_dict()), "model_type": "ctc", "utterance_cmn": True}, path)
    loaded = load_encoder_checkpoint(path)
    assert loaded.config.utterance_cmn and same_output(loaded, cmn)
    with pytest.raises(CheckpointMismatchError, match=r"pretrained\.pt was trained with --utterance-cmn "
                       r"true, but the model has utterance_cmn=False"):
        load_encoder_checkpoint(path, model=ZipformerEncoder(tiny_config()))
    torch.save({"model": dict(cmn.state_dict())}, tmp_path / "icefall.pt")
    assert not load_encoder_checkpoint(tmp_path / "icefall.pt").config.utterance_cmn


def test_one_wrong_shape_gives_one_clear_error(enc, tmp_path):
    sd = icefall_model_dict(enc)
    bad_key = "encoder.encoders.2.encoder.layers.1.feed_forward1.out_proj.bias"
    sd[bad_key] = torch.zeros(65)
    path = tmp_path / "epoch-3.pt"
    torch.save({"model": sd}, path)
    with pytest.raises(CheckpointMismatchError) as e:
        load_encoder_checkpoint(path, model=ZipformerEncoder(tiny_config()))
    msg = str(e.value)
    assert str(path) in msg and "misshaped keys (1)" in msg and bad_key in msg
    assert "(65,)" in msg and "(64,)" in msg
    assert "missing" not in msg and "unexpected" not in msg


def test_wrong_config_lists_missing_and_unexpected(enc, tmp_path):
    path = tmp_path / "pretrained.pt"
    torch.save({"model": enc.state_dict()}, path)
    other = ZipformerEncoder(tiny_config(num_encoder_layers=(1, 1, 1, 2, 1, 1)))
    with pytest.raises(CheckpointMismatchError, match=r"missing keys \(\d+\)[\s\S]*unexpected keys"):
        load_encoder_checkpoint(path, model=other)
    with pytest.raises(CheckpointMismatchError, match="misshaped[\\s\\S]*the checkpoint holds: "
                       "num_encoder_layers=1,1,2,1,1,1, encoder_dim=32,48,64,80,64,48"):
        load_encoder_checkpoint(path, encoder_config="small")


def test_unusable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_encoder_checkpoint(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointMismatchError, match="junk.pt: cannot read"):
        load_encoder_checkpoint(junk)
    no_enc = tmp_path / "lm.pt"
    torch.save({"model": {"emb.weight": torch.zeros(2)}}, no_enc)
    with pytest.raises(CheckpointMismatchError, match="lm.pt: no Zipformer encoder"):
        load_encoder_checkpoint(no_enc)


def test_model_avg_entry(enc, tmp_path):
    other = tiny_encoder(seed=9)
    path = tmp_path / "epoch-12.pt"
    torch.save({"model": icefall_model_dict(enc), "model_avg": icefall_model_dict(other)}, path)
    assert same_output(load_encoder_checkpoint(path), enc)
    assert same_output(load_encoder_checkpoint(path, key="model_avg"), other)
    with pytest.raises(CheckpointMismatchError, match="no entry 'ema'"):
        load_encoder_checkpoint(path, key="ema")
