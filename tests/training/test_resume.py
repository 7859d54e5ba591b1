"""resume.py: which checkpoint a re-run continues from, what an earlier run's files become, when a
time-based checkpoint is due (a stand-in clock: no timed test)."""
from pathlib import Path

import torch

from zipformer_rwkv.training.resume import (
    CheckpointTimer,
    choose_start,
    latest_checkpoint,
    move_aside,
    superseded_files,
)


def _ckpt(path: Path, batch_idx_train: int) -> Path:
    torch.save({"model": {"w": torch.zeros(2)}, "batch_idx_train": batch_idx_train}, path)
    return path


def test_latest_checkpoint_and_start_options(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    assert choose_start(tmp_path, 1, 0, overwrite=False) == (1, 0)
    _ckpt(tmp_path / "checkpoint-300.pt", 300)
    assert choose_start(tmp_path, 1, 0, overwrite=False) == (1, 300)
    _ckpt(tmp_path / "epoch-1.pt", 1277)  # an epoch longer than --save-every-n
    _ckpt(tmp_path / "epoch-2.pt", 2554)
    _ckpt(tmp_path / "checkpoint-2554.pt", 2554)  # the same update: the epoch file (validated) wins
    assert latest_checkpoint(tmp_path).name == "epoch-2.pt"
    assert choose_start(tmp_path, 1, 0, overwrite=False) == (3, 0)
    _ckpt(tmp_path / "checkpoint-2600.pt", 2600)  # mid-epoch 3
    assert choose_start(tmp_path, 1, 0, overwrite=False) == (1, 2600)
    # explicit options (icefall's) and --overwrite are taken as given
    assert choose_start(tmp_path, 2, 0, overwrite=False) == (2, 0)
    assert choose_start(tmp_path, 1, 300, overwrite=False) == (1, 300)
    assert choose_start(tmp_path, 1, 0, overwrite=True) == (1, 0)


def test_files_past_the_resume_point_are_moved_not_deleted(tmp_path):
    for name, b in [("checkpoint-300.pt", 300), ("epoch-1.pt", 1277), ("checkpoint-1500.pt", 1500),
                    ("epoch-2.pt", 2554)]:
        _ckpt(tmp_path / name, b)
    (tmp_path / "best-valid-loss.pt").write_bytes(b"x")
    later = superseded_files(tmp_path, 1277)  # continuing from epoch-1.pt
    assert sorted(p.name for p in later) == ["checkpoint-1500.pt", "epoch-2.pt"]
    dest = move_aside(later, tmp_path)
    assert sorted(p.name for p in dest.iterdir()) == ["checkpoint-1500.pt", "epoch-2.pt"]
    # a start-over (--overwrite true) takes everything of the earlier run, best-*.pt included
    assert sorted(p.name for p in superseded_files(tmp_path, 0)) == [
        "best-valid-loss.pt", "checkpoint-300.pt", "epoch-1.pt"]
    assert move_aside([], tmp_path) is None


def test_checkpoint_timer_with_a_stand_in_clock(tmp_path):
    now = [0.0]
    timer = CheckpointTimer(5.0, clock=lambda: now[0])
    now[0] = 299.0
    assert not timer.due()
    now[0] = 300.0
    assert timer.due()
    assert timer.saved(tmp_path / "checkpoint-10.pt") is None
    assert not timer.due()
    now[0] = 600.0
    assert timer.saved(tmp_path / "checkpoint-20.pt") == tmp_path / "checkpoint-10.pt"  # replaced
    assert timer.saved() is None  # an every-n / epoch save restarts the clock only
    assert not CheckpointTimer(0.0, clock=lambda: 1e9).due()  # 0: off


def test_resuming_from_another_model_type_names_the_types(tmp_path):
    # The model-type check runs before the weights are loaded: a strict load of a ctc checkpoint
    # into an lm would otherwise fail first, listing missing/unexpected keys instead of the mix-up.
    import pytest
    from torch import nn

    from zipformer_rwkv.errors import CheckpointError
    from zipformer_rwkv.train import load_checkpoint_if_available
    from zipformer_rwkv.training.checkpoint import save_checkpoint
    from zipformer_rwkv.utils import AttributeDict

    save_checkpoint(tmp_path / "epoch-1.pt", nn.Linear(3, 4), params={"model_type": "ctc", "batch_idx_train": 5})
    model = nn.Linear(5, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    optimizer.scheduler = None
    params = AttributeDict(exp_dir=tmp_path, start_batch=0, start_epoch=2, model_type="lm")
    with pytest.raises(CheckpointError, match=r"epoch-1.pt is a --model-type ctc checkpoint, this run is "
                                              r"--model-type lm"):
        load_checkpoint_if_available(params, model, None, optimizer, None)
