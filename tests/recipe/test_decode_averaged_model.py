"""decode.py --use-averaged-model true between two checkpoints that no model_avg update separates
(fewer than --average-period batches apart) stops with one line naming both files and the reason."""
import pytest

from speech_llm_data import make_bpe
from test_train_decode import TINY_ENC
from zipformer_rwkv import decode, recipe, train
from zipformer_rwkv.errors import CheckpointError
from zipformer_rwkv.training.averaging import average_checkpoints_with_averaged_model
from zipformer_rwkv.training.checkpoint import save_checkpoint

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def exp(tmp_path_factory):
    """epoch-1.pt and epoch-2.pt of a tiny ctc run at batches 3 and 6, --average-period 10."""
    root = tmp_path_factory.mktemp("avg_period")
    bpe = make_bpe(root / "lang")
    params = train.get_params()
    params.update(vars(train.get_parser().parse_args(["--model-type", "ctc", "--bpe-model", str(bpe),
                                                      "--average-period", "10"] + TINY_ENC)))
    model, _ = recipe.get_model(params)
    for epoch, batch in ((1, 3), (2, 6)):
        params.update(cur_epoch=epoch, batch_idx_train=batch)
        save_checkpoint(root / "exp" / f"epoch-{epoch}.pt", model, model_avg=model, params=params)
    return root / "exp", bpe


def test_averaging_without_an_update_between_is_a_checkpoint_error(exp):
    exp_dir, _ = exp
    with pytest.raises(CheckpointError, match=r"cannot average between .*epoch-1.pt \(batch 3\) and .*epoch-2.pt "
                                              r"\(batch 6\): model_avg is updated every --average-period 10 "
                                              r"batches, and none fell between them"):
        average_checkpoints_with_averaged_model(exp_dir / "epoch-1.pt", exp_dir / "epoch-2.pt")


def test_decode_prints_one_line(exp, monkeypatch):
    exp_dir, bpe = exp
    monkeypatch.setattr("sys.argv", ["decode.py", "--exp-dir", str(exp_dir), "--epoch", "2", "--avg", "1",
                                     "--use-averaged-model", "true", "--bpe-model", str(bpe)])
    with pytest.raises(SystemExit) as e:
        decode.main()
    msg = str(e.value)
    assert msg.startswith("decode.py: error: cannot average between ") and "\n" not in msg
    assert "epoch-1.pt (batch 3)" in msg and "epoch-2.pt (batch 6)" in msg and "--use-averaged-model false" in msg
