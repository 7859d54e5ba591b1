"""Known failures are one line naming the file and the problem, in the log too; bugs keep tracebacks."""
import sys

import pytest

from zipformer_rwkv import train
from zipformer_rwkv.errors import CheckpointWriteError, known_error_message
from zipformer_rwkv.utils import setup_logger


def _fail_after_logging_started(exc):
    def fake_train(rank, world_size, args):
        setup_logger(args.exp_dir / "log" / "log-train", use_console=False)
        raise exc

    return fake_train


def _main(monkeypatch, tmp_path, *extra):
    monkeypatch.setattr(sys, "argv", ["train.py", "--exp-dir", str(tmp_path), *extra])
    train.main()


def test_known_failure_is_one_line_and_logged(tmp_path, monkeypatch):
    msg = f"cannot write {tmp_path}/epoch-3.pt: disk full (No space left on device)"
    monkeypatch.setattr(train, "_train", _fail_after_logging_started(CheckpointWriteError(msg)))
    with pytest.raises(SystemExit) as info:
        _main(monkeypatch, tmp_path)
    assert info.value.code == f"train.py: error: {msg}"
    (log,) = (tmp_path / "log").glob("log-train-*")
    text = log.read_text()
    assert "ERROR [train.py:" in text and f"Training stopped: {msg}" in text


def test_debug_and_bugs_keep_the_traceback(tmp_path, monkeypatch):
    monkeypatch.setattr(train, "_train", _fail_after_logging_started(CheckpointWriteError("full")))
    with pytest.raises(CheckpointWriteError):
        _main(monkeypatch, tmp_path, "--debug", "true")
    monkeypatch.setattr(train, "_train", _fail_after_logging_started(KeyError("bug")))
    with pytest.raises(KeyError):
        _main(monkeypatch, tmp_path)


def test_error_of_a_spawned_rank_is_recognised():
    import torch.multiprocessing as mp

    tb = ("Traceback (most recent call last):\n  File ...\n"
          "zipformer_rwkv.errors.CheckpointWriteError: cannot write exp/epoch-1.pt: disk full (x)\n")
    assert known_error_message(mp.ProcessRaisedException(tb, 0, 1)) == "cannot write exp/epoch-1.pt: disk full (x)"
    assert known_error_message(mp.ProcessRaisedException(tb.replace("CheckpointWriteError", "KeyError"), 0, 1)) is None


def test_non_finite_loss_warning_names_the_cuts(tmp_path, monkeypatch, caplog):
    import logging
    from types import SimpleNamespace

    import torch

    from zipformer_rwkv import recipe
    from zipformer_rwkv.utils import AttributeDict

    params = train.get_params()
    params.update(AttributeDict(
        model_type="ctc", exp_dir=tmp_path, max_duration=1.0, ref_duration=1.0, use_autocast=False,
        dtype=torch.float32, max_bad_batches=5, max_bad_cuts=0, save_every_n=1000, average_period=1000,
        use_fp16=False, log_interval=1000, valid_interval=1000, num_epochs=1))
    cuts = [SimpleNamespace(id=f"utt-{i}") for i in range(4)]
    batches = [{"inputs": torch.zeros(4, 10, 80), "supervisions": {"cut": cuts}}]
    monkeypatch.setattr(recipe, "compute_loss", lambda *a: (torch.tensor(float("nan")), {}))
    optimizer = SimpleNamespace(zero_grad=lambda: None)
    with caplog.at_level(logging.WARNING):
        train.train_one_epoch(params, torch.nn.Linear(1, 1), None, optimizer, None, batches, None, {},
                              torch.device("cpu"), None, 1, 0, 0.0)
    assert "Non-finite loss at batch 1 (cuts utt-0,utt-1,utt-2,utt-3): skipped" in caplog.text
