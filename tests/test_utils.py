"""utils.py: result files (WER with kaldialign), MetricsTracker, logger, AMP helpers; hooks.py."""
import argparse
import io
import logging
import random
import re

import kaldialign
import pytest
import torch
from torch import nn

from zipformer_rwkv.training.hooks import register_inf_check_hooks
from zipformer_rwkv.utils import (
    AttributeDict,
    MetricsTracker,
    create_grad_scaler,
    fix_random_seed,
    get_env_info,
    make_pad_mask,
    setup_logger,
    store_transcripts,
    str2bool,
    torch_autocast,
    write_error_stats,
    write_wer_summary,
)


def _random_results(n=30, seed=0):
    rng = random.Random(seed)
    vocab = ["a", "b", "c", "d", "the", "cat"]
    out = []
    for i in range(n):
        ref = [rng.choice(vocab) for _ in range(rng.randint(1, 8))]
        hyp = [w if rng.random() < 0.7 else rng.choice(vocab) for w in ref]
        if rng.random() < 0.3:
            hyp.insert(rng.randint(0, len(hyp)), rng.choice(vocab))
        if rng.random() < 0.3 and hyp:
            hyp.pop(rng.randrange(len(hyp)))
        out.append((f"utt-{i}", ref, hyp))
    return out


def test_write_error_stats_matches_kaldialign():
    results = _random_results()
    f = io.StringIO()
    wer = write_error_stats(f, "test-clean", results, enable_log=False)
    totals = {"ins": 0, "del": 0, "sub": 0, "total": 0, "ref_len": 0}
    for _, ref, hyp in results:
        d = kaldialign.edit_distance(ref, hyp)
        for k in totals:
            totals[k] += d[k]
    expect = round(100.0 * totals["total"] / totals["ref_len"], 2)
    assert wer == pytest.approx(expect, abs=1e-9) and wer > 0
    text = f.getvalue()
    lines = text.splitlines()
    assert lines[0] == f"%WER = {expect:.2f}"
    m = re.fullmatch(r"Errors: (\d+) insertions, (\d+) deletions, (\d+) substitutions, "
                     r"over (\d+) reference words \((\d+) correct\)", lines[1])
    assert m, lines[1]
    ins, dels, subs, ref_len, corr = map(int, m.groups())
    assert (ins, dels, subs, ref_len) == (
        totals["ins"], totals["del"], totals["sub"], totals["ref_len"])
    assert corr == ref_len - dels - subs
    positions = [text.index(s) for s in ("PER-UTT DETAILS:", "SUBSTITUTIONS:", "DELETIONS:",
                                         "INSERTIONS:", "PER-WORD STATS:")]
    assert positions == sorted(positions)


def test_write_error_stats_details():
    results = [("u1", "the cat sat on mat".split(), "the cat sit on the mat".split()),
               ("u2", "hello world".split(), "world".split())]
    f = io.StringIO()
    assert write_error_stats(f, "x", results, enable_log=False) == pytest.approx(42.86)
    text = f.getvalue()
    assert "u1:\tthe cat (sat->sit) on (*->the) mat" in text
    assert "u2:\t(hello->*) world" in text
    assert "1   sat -> sit" in text and "\n1   hello\n" in text and "\n1   the\n" in text
    assert "the   1 1 1 2" in text  # word corr tot_errs count_in_ref count_in_hyp
    with pytest.raises(ValueError, match="no words"):
        write_error_stats(io.StringIO(), "empty", [("u", [], ["x"])])
    f = io.StringIO()
    cer = write_error_stats(f, "x", [("u", ["abcd"], ["abxd"])], compute_CER=True,
                            enable_log=False)
    assert cer == 25.0 and f.getvalue().startswith("%CER = 25.00")


def test_store_transcripts_and_wer_summary(tmp_path):
    store_transcripts(tmp_path / "recogs.txt",
                      [("c1", ["A", "B"], ["A"]), ("c2", ["X"], ["X"], "hit --max-new-tokens")])
    assert (tmp_path / "recogs.txt").read_text().splitlines() == [
        "c1:\tref=['A', 'B']", "c1:\thyp=['A']",
        "c2:\tref=['X']", "c2:\thyp=['X']", "c2:\tnote=hit --max-new-tokens"]
    write_wer_summary(tmp_path / "wer.txt", {"beam_4": 3.5, "greedy": 2.25})
    assert (tmp_path / "wer.txt").read_text() == "settings\tWER\ngreedy\t2.25\nbeam_4\t3.5\n"


class _Writer:
    def __init__(self):
        self.calls = []

    def add_scalar(self, tag, value, step):
        self.calls.append((tag, value, step))


def test_metrics_tracker():
    a = MetricsTracker()
    a["frames"] = 100
    a["loss"] = torch.tensor(50.0)
    a["utterances"] = 4
    a["utt_duration"] = 40
    b = MetricsTracker()
    b["frames"] = 300
    b["loss"] = 90.0
    b["bad"] = float("nan")
    c = a * 0.5 + b
    assert c["frames"] == 350 and c["loss"] == 115.0 and "bad" not in c
    assert dict(c.norm_items()) == {"loss": pytest.approx(115 / 350), "utt_duration": 10.0}
    assert str(a).startswith("loss=0.5, over 100.00 frames.")
    w = _Writer()
    a.write_summary(w, "train/current_", 7)
    assert ("train/current_loss", 0.5, 7) in w.calls and len(w.calls) == 2


def test_setup_logger_file_name_and_format(tmp_path):
    path = setup_logger(tmp_path / "log" / "log-train", log_level="debug", use_console=False)
    assert re.fullmatch(r"log-train-\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d", path.name)
    logging.debug("hello from the test")
    for h in logging.getLogger().handlers:
        h.flush()
    line = path.read_text().strip().splitlines()[-1]
    assert re.fullmatch(r"\S+ \S+ DEBUG \[test_utils.py:\d+\] hello from the test", line), line
    with pytest.raises(ValueError, match="loud"):
        setup_logger(tmp_path / "x", log_level="loud")
    logging.basicConfig(force=True)  # detach the file handler from later tests


def test_small_helpers():
    assert str2bool("True") and not str2bool("0")
    with pytest.raises(argparse.ArgumentTypeError):
        str2bool("maybe")
    assert make_pad_mask(torch.tensor([1, 3]), 4).tolist() == [
        [False, True, True, True], [False, False, False, True]]
    p = AttributeDict(a=1)
    p.b = 2
    assert p["b"] == 2 and '"a": 1' in str(p)
    fix_random_seed(5)
    x = torch.rand(3)
    fix_random_seed(5)
    assert torch.equal(x, torch.rand(3))
    info = get_env_info()
    assert info["torch-version"] == str(torch.__version__) and "zipformer-rwkv-git-sha1" in info
    with torch_autocast("cpu", enabled=True):
        assert (torch.randn(2, 2) @ torch.randn(2, 2)).dtype == torch.bfloat16
    with torch_autocast("cpu", enabled=False):
        assert (torch.randn(2, 2) @ torch.randn(2, 2)).dtype == torch.float32
    scaler = create_grad_scaler("cpu", enabled=True, init_scale=8.0)
    assert scaler.is_enabled() and scaler.get_scale() == 8.0
    assert not create_grad_scaler(torch.device("cpu"), enabled=False).is_enabled()


def test_inf_check_hooks_name_the_module(caplog):
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1))
    handles = register_inf_check_hooks(model)
    x = torch.randn(2, 3)
    with caplog.at_level(logging.WARNING):
        model(x).sum().backward()
    assert not caplog.records
    with torch.no_grad():
        model[1].weight[0, 0] = float("inf")
    with caplog.at_level(logging.WARNING):
        model(x).sum().backward()
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("The output 0 of 1 (Linear) is not finite")
    assert any("gradient of param 0.weight" in m for m in messages)
    for h in handles:
        h.remove()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        model(x)
    assert not caplog.records


def test_set_autocast_params_is_what_train_and_bench_train_share():
    """--use-fp16 / --use-bf16 -> params.use_autocast and params.dtype; both at once is an error."""
    from zipformer_rwkv.train import set_autocast_params
    from zipformer_rwkv.utils import AttributeDict

    for fp16, bf16, use, dtype in ((False, False, False, torch.bfloat16), (True, False, True, torch.float16),
                                   (False, True, True, torch.bfloat16)):
        params = AttributeDict(use_fp16=fp16, use_bf16=bf16)
        set_autocast_params(params)
        assert params.use_autocast is use and params.dtype == dtype
    with pytest.raises(ValueError, match="--use-fp16 and --use-bf16 are exclusive"):
        set_autocast_params(AttributeDict(use_fp16=True, use_bf16=True))
