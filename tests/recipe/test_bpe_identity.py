"""The BPE model travels with the checkpoint by its SHA-256: decode.py and transcribe.py refuse another
bpe.model, even one whose vocabulary fits the model (it would decode garbage without any other error)."""
import shutil

import pytest

from speech_llm_data import make_bpe
from test_train_decode import TINY_ENC
from zipformer_rwkv import decode, recipe, train, transcribe
from zipformer_rwkv.errors import ConfigError
from zipformer_rwkv.training.checkpoint import read_checkpoint, save_checkpoint
from zipformer_rwkv.utils import AttributeDict, explicit_options

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A ctc checkpoint trained with lang/bpe.model (vocabulary 30), a byte-identical copy of that
    file, and another BPE model of vocabulary 28 (fits the model's 30 outputs)."""
    root = tmp_path_factory.mktemp("bpe_identity")
    bpe = make_bpe(root / "lang")
    other = make_bpe(root / "other", vocab_size=28)
    copy = root / "copy" / "bpe.model"
    copy.parent.mkdir()
    shutil.copy(bpe, copy)
    params = train.get_params()
    params.update(vars(train.get_parser().parse_args(["--model-type", "ctc", "--bpe-model", str(bpe)] + TINY_ENC)))
    model, _ = recipe.get_model(params)
    ckpt = root / "exp" / "epoch-1.pt"
    save_checkpoint(ckpt, model, params=params)
    return dict(bpe=bpe, other=other, copy=copy, ckpt=ckpt)


def _transcribe_load(ckpt, *extra):
    return transcribe.load_model(transcribe.get_parser().parse_args(["--checkpoint", str(ckpt), *extra, "a.wav"]))


def test_checkpoint_records_the_bpe_model_hash(run):
    assert read_checkpoint(run["ckpt"])["bpe_model_sha256"] == recipe.file_sha256(run["bpe"])


def test_transcribe_refuses_another_bpe_model(run):
    _transcribe_load(run["ckpt"])  # the checkpoint's own path
    _transcribe_load(run["ckpt"], "--bpe-model", str(run["copy"]))  # the same file elsewhere
    with pytest.raises(ConfigError, match=rf"--bpe-model {run['other']} is not the BPE model the checkpoint "
                                          r"was trained with \(sha256 [0-9a-f]{12}\.\.\., the checkpoint's"):
        _transcribe_load(run["ckpt"], "--bpe-model", str(run["other"]))


def test_decode_refuses_another_bpe_model(run):
    saved = read_checkpoint(run["ckpt"])
    for bpe, ok in ((run["copy"], True), (run["other"], False)):
        argv = ["--bpe-model", str(bpe)]
        params = AttributeDict(vars(decode.get_parser().parse_args(argv)))
        recipe.apply_checkpoint_structure(params, saved, explicit_options(decode.get_parser(), argv),
                                             str(run["ckpt"]))
        if ok:
            recipe.get_model_for_checkpoint(params, saved, str(run["ckpt"]))
        else:
            with pytest.raises(ConfigError, match="is not the BPE model the checkpoint was trained with"):
                recipe.get_model_for_checkpoint(params, saved, str(run["ckpt"]))
