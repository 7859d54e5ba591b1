"""End-to-end: train.py for each model type on a tiny corpus (2-rank gloo DDP for the speech LLM,
kill-and-resume for CTC), then decode.py (CTC greedy, LLM greedy/beam, LM perplexity) and its bad-input
errors. Tiny models, a few steps each."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kaldialign
import pytest
import torch

from speech_llm_data import make_bpe, make_corpus, make_lm_text

ROOT = Path(__file__).resolve().parents[2]
TINY_ENC = ("--num-encoder-layers 1,1 --downsampling-factor 1,2 --feedforward-dim 64,64 --num-heads 2,2 "
            "--encoder-dim 32,32 --encoder-unmasked-dim 16,16 --cnn-module-kernel 15,15 --query-head-dim 8 "
            "--value-head-dim 8 --pos-head-dim 4 --pos-dim 16 --encoder-embed-channels 16 --utterance-cmn true").split()
# (decode.py is given none of these: it must rebuild the encoder, encoder_embed width and CMN
# included, from the options saved in the checkpoint)
TINY_LM = "--rwkv-n-layer 2 --rwkv-n-embd 64".split()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    bpe = make_bpe(root / "lang")
    lm_dir = make_lm_text(root / "lm")
    conf = make_corpus(root / "corpus")
    return dict(root=root, bpe=bpe, lm_dir=lm_dir,
                args=["--conf", str(conf), "--manifest-dir", str(conf.parent / "fbank"), "--bpe-model", str(bpe),
                      "--num-workers", "0", "--enable-musan", "false", "--num-buckets", "2"])


def train(args, timeout=300):
    cmd = [sys.executable, "zipformer_rwkv/train.py", "--tensorboard", "false", "--num-threads", "1",
           "--min-utt-duration", "0.5", "--log-level", "debug"] + [str(a) for a in args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_epoch_without_batches_stops_with_clear_error(data):
    """--drop-last with a --max-duration above the whole training set (26.5 s): no batch at all.
    train.py must stop naming the cause instead of writing an untrained epoch-1.pt."""
    exp = data["root"] / "exp_empty"
    cmd = [sys.executable, "zipformer_rwkv/train.py", "--tensorboard", "false", "--num-threads", "1",
           "--model-type", "ctc", "--exp-dir", str(exp), "--num-epochs", "1", "--max-duration", "60",
           "--drop-last", "true", "--min-utt-duration", "0.5"] + TINY_ENC + [str(a) for a in data["args"]]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith("train.py: error: no training batches in epoch 1:"), proc.stderr[-3000:]
    assert "tiny_cuts_train.jsonl.gz) hold 24 cuts; 24 (" in err
    assert "--max-duration 60.0 and --drop-last True" in err
    assert not (exp / "epoch-1.pt").exists()


def decode(monkeypatch, args):
    from zipformer_rwkv import decode as decode_mod

    monkeypatch.setattr(sys, "argv", ["decode.py"] + [str(a) for a in args])
    decode_mod.main()


def batch_losses(log_dir: Path):
    """{batch_idx_train: (loss, data)} from train.py's debug lines."""
    out = {}
    for f in log_dir.glob("log-train-*"):
        for m in re.finditer(r"batch (\d+) loss ([\d.]+) data (\S+)", f.read_text()):
            out[int(m.group(1))] = (m.group(2), m.group(3))
    return out


@pytest.fixture(scope="module")
def lm_exp(data):
    exp = data["root"] / "exp_lm"
    train(["--model-type", "lm", "--exp-dir", exp, "--lm-dir", data["lm_dir"], "--bpe-model", data["bpe"],
           "--num-epochs", 2, "--max-tokens", 300, "--average-period", 1] + TINY_LM)
    return exp


@pytest.fixture(scope="module")
def ctc_exp(data):
    exp = data["root"] / "exp_ctc"
    train(["--model-type", "ctc", "--exp-dir", exp, "--num-epochs", 1, "--max-duration", 4, "--save-every-n", 2,
           "--average-period", 1, "--base-lr", 0.05] + TINY_ENC + data["args"])
    return exp


def test_kill_and_resume_gives_same_batches_and_losses(data, ctc_exp):
    full = batch_losses(ctc_exp / "log")
    assert len(full) >= 4, full
    exp = data["root"] / "exp_ctc_resumed"
    exp.mkdir()
    shutil.copy(ctc_exp / "checkpoint-2.pt", exp)  # as if killed right after batch 2
    train(["--model-type", "ctc", "--exp-dir", exp, "--num-epochs", 1, "--max-duration", 4, "--save-every-n", 2,
           "--average-period", 1, "--base-lr", 0.05, "--start-batch", 2] + TINY_ENC + data["args"])
    resumed = batch_losses(exp / "log")
    assert min(resumed) == 3
    assert resumed == {k: v for k, v in full.items() if k >= 3}
    a = torch.load(ctc_exp / "epoch-1.pt", weights_only=True)
    b = torch.load(exp / "epoch-1.pt", weights_only=True)
    for name, t in a["model"].items():
        assert torch.equal(t, b["model"][name]), name
    for name, t in a["model_avg"].items():  # stored as float32, averaged in float64: equal to ~1e-7
        torch.testing.assert_close(t, b["model_avg"][name], rtol=1e-5, atol=1e-7)


CTC_RUN = ["--model-type", "ctc", "--num-epochs", 1, "--max-duration", 4, "--save-every-n", 2, "--average-period", 1,
           "--base-lr", 0.05] + TINY_ENC


def _new_log(exp: Path, before: set) -> Path:
    (log,) = set((exp / "log").glob("log-train-*")) - before
    return log


def test_rerun_continues_and_overwrite_moves_the_old_run_aside(data, ctc_exp):
    """Re-running the same command in an --exp-dir with a checkpoint continues from it (no
    --start-batch needed); --overwrite true starts over and moves the old files aside. With
    --save-every-minutes ~0 a time-based checkpoint-N.pt is written after every update, each
    replacing the previous one, although --save-every-n is larger than the epoch."""
    full = batch_losses(ctc_exp / "log")
    exp = data["root"] / "exp_ctc_rerun"
    exp.mkdir()
    shutil.copy(ctc_exp / "checkpoint-2.pt", exp)  # as if killed right after batch 2
    train(["--exp-dir", exp] + CTC_RUN + data["args"])
    assert batch_losses(exp / "log") == {k: v for k, v in full.items() if k >= 3}
    a = torch.load(ctc_exp / "epoch-1.pt", weights_only=True)
    b = torch.load(exp / "epoch-1.pt", weights_only=True)
    assert all(torch.equal(t, b["model"][k]) for k, t in a["model"].items())

    old = {p.name: p.read_bytes() for p in exp.glob("*.pt")}
    logs = set((exp / "log").glob("log-train-*"))
    args = ["--exp-dir", exp] + CTC_RUN + data["args"]
    args[args.index("--save-every-n") + 1] = 1000
    train(args + ["--overwrite", "true", "--save-every-minutes", 1e-9])
    (moved,) = exp.glob("superseded-*")
    assert {p.name: p.read_bytes() for p in moved.iterdir()} == old  # nothing lost
    text = _new_log(exp, logs).read_text()
    assert {int(m) for m in re.findall(r"batch (\d+) loss", text)} == set(full)  # from batch 1
    assert [p.name for p in exp.glob("checkpoint-*.pt")] == [f"checkpoint-{max(full)}.pt"]


def test_resume_with_noise_and_a_prefetching_worker_gives_the_same_losses(data):
    """CutMix noise on and --num-workers 1 (the default preset): a run resumed from a mid-epoch
    checkpoint sees the same batches with the same noise, so the same losses."""
    noise_cuts = data["root"] / "corpus" / "fbank" / "tiny_cuts_train.jsonl.gz"
    noise = ["--enable-musan", "true", "--noise-cuts", str(noise_cuts)]
    args = [a for a in data["args"]]
    args[args.index("--num-workers") + 1] = "1"
    args[args.index("--enable-musan"):args.index("--enable-musan") + 2] = noise
    full_exp, exp = data["root"] / "exp_noise_full", data["root"] / "exp_noise_resumed"
    train(["--exp-dir", full_exp] + CTC_RUN + args)
    full = batch_losses(full_exp / "log")
    exp.mkdir()
    shutil.copy(full_exp / "checkpoint-2.pt", exp)
    train(["--exp-dir", exp] + CTC_RUN + args)
    assert batch_losses(exp / "log") == {k: v for k, v in full.items() if k >= 3}


def train_fails(args, timeout=120) -> str:
    """Runs train.py expecting a known failure: returns its one stderr error line (no traceback)."""
    cmd = [sys.executable, "zipformer_rwkv/train.py", "--tensorboard", "false", "--num-threads", "1",
           "--min-utt-duration", "0.5"] + [str(a) for a in args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc.stderr.strip().splitlines()[-1]


def test_known_failures_are_one_line_naming_the_file(data, ctc_exp):
    exp = data["root"] / "exp_ctc_errors"
    exp.mkdir()
    good = (ctc_exp / "checkpoint-2.pt").read_bytes()
    (exp / "checkpoint-2.pt").write_bytes(good[: len(good) // 2])  # truncated
    line = train_fails(["--exp-dir", exp] + CTC_RUN + data["args"])
    assert line.startswith(f"train.py: error: cannot read checkpoint {exp / 'checkpoint-2.pt'}: truncated")
    (log,) = (exp / "log").glob("log-train-*")
    assert line.split("error: ", 1)[1] in log.read_text()

    (exp / "checkpoint-2.pt").write_bytes(good)  # a checkpoint of another architecture
    wide = CTC_RUN + data["args"]
    wide[wide.index("--encoder-dim") + 1] = "48,48"
    line = train_fails(["--exp-dir", exp] + wide)
    assert line.startswith(f"train.py: error: {exp / 'checkpoint-2.pt'}[model] does not match CtcModel: ")

    args = CTC_RUN + data["args"]
    args[args.index("--enable-musan") + 1] = "true"
    line = train_fails(["--exp-dir", exp, "--overwrite", "true", "--noise-cuts", exp / "none.jsonl.gz"] + args)
    assert line.startswith("train.py: error: --enable-musan true but no noise cuts found (tried: ")


def test_unreadable_cut_is_skipped_named_and_counted(data, tmp_path):
    from lhotse import CutSet

    fbank = data["root"] / "corpus" / "fbank"
    bad_dir = tmp_path / "fbank"
    shutil.copytree(fbank, bad_dir, ignore=shutil.ignore_patterns("tiny_cuts_train*"))
    cuts = list(CutSet.from_file(fbank / "tiny_cuts_train.jsonl.gz"))
    (tmp_path / "junk.lca").write_bytes(b"\x00garbage" * 10)
    bad = next(c for c in cuts if c.id == "train-7")  # in the first batch (seed 42)
    bad.features.storage_path = str(tmp_path / "junk.lca")
    CutSet.from_cuts(cuts).to_file(bad_dir / "tiny_cuts_train.jsonl.gz")
    args = CTC_RUN + data["args"]
    args[args.index("--manifest-dir") + 1] = str(bad_dir)
    proc = train(["--exp-dir", tmp_path / "exp"] + args)
    assert f"Skipped cut {bad.id} at batch 1: unreadable (" in proc.stderr
    assert "1 so far, --max-bad-cuts 100" in proc.stderr
    assert (tmp_path / "exp" / "epoch-1.pt").is_file()  # the epoch went on
    line = train_fails(["--exp-dir", tmp_path / "exp0", "--max-bad-cuts", 0] + args)
    assert line.startswith(f"train.py: error: 1 unreadable cuts, more than --max-bad-cuts 0; the last: {bad.id}: ")


def test_ctc_decode_writes_icefall_files_with_kaldialign_wer(data, ctc_exp, monkeypatch):
    decode(monkeypatch, ["--exp-dir", ctc_exp, "--epoch", 1, "--avg", 1, "--use-averaged-model", "false",
                         "--max-duration", 20] + data["args"])
    out = ctc_exp / "greedy_search"
    recogs = list(out.glob("recogs-test-*.txt"))
    assert len(recogs) == 1
    suffix = recogs[0].name[len("recogs-test-"):]
    assert (out / f"errs-test-{suffix}").is_file()
    refs, hyps = {}, {}
    for line in recogs[0].read_text().splitlines():
        cid, kind, words = re.match(r"(.*):\t(ref|hyp)=(.*)", line).groups()
        (refs if kind == "ref" else hyps)[cid] = eval(words)
    assert len(refs) == 6 and refs.keys() == hyps.keys()
    errors = sum(kaldialign.edit_distance(refs[c], hyps[c])["total"] for c in refs)
    n_ref = sum(len(r) for r in refs.values())
    summary = (out / f"wer-summary-test-{suffix}").read_text().splitlines()
    assert summary[0] == "settings\tWER"
    assert float(summary[1].split("\t")[1]) == pytest.approx(round(100 * errors / n_ref, 2))
    # the dev set is decoded too (icefall: dev-clean/dev-other and test-clean/test-other)
    dev_recogs = (out / f"recogs-dev-{suffix}").read_text()
    assert dev_recogs.count("\tref=") == 6 and dev_recogs.startswith("dev-")
    assert (out / f"wer-summary-dev-{suffix}").is_file() and (out / f"errs-dev-{suffix}").is_file()
    with pytest.raises(SystemExit, match="--ctc-weight is for speech LLM"):
        decode(monkeypatch, ["--exp-dir", ctc_exp, "--epoch", 1, "--avg", 1, "--use-averaged-model", "false",
                             "--ctc-weight", 0.5] + data["args"])


def test_a_set_named_both_dev_and_test_is_an_error(data, tmp_path):
    from zipformer_rwkv.dataset.asr_datamodule import AsrDataModule
    from zipformer_rwkv.decode import eval_sets, get_parser

    conf = tmp_path / "conf.yaml"
    conf.write_text("corpus: tiny\ntrain:\n  - {name: train, cuts: tiny_cuts_train.jsonl.gz}\n"
                    "dev: {eval: tiny_cuts_dev.jsonl.gz}\ntest: {eval: tiny_cuts_test.jsonl.gz}\n")
    args = get_parser().parse_args([str(a) for a in data["args"]] + ["--conf", str(conf)])
    with pytest.raises(ValueError, match="conf.yaml: eval named both as dev and as test set"):
        eval_sets(AsrDataModule(args))


def test_lm_perplexity_and_bad_input(data, lm_exp, monkeypatch):
    decode(monkeypatch, ["--exp-dir", lm_exp, "--epoch", 2, "--avg", 1, "--lm-dir", data["lm_dir"]] + data["args"])
    ppl = lm_exp / "greedy_search" / "ppl-lm-valid-epoch-2_avg-1_use-averaged-model.txt"
    value = float(ppl.read_text().splitlines()[1].split("\t")[1])
    assert 1.0 < value < 30.0  # vocabulary 30: a trained LM is below uniform
    for name in ("dev", "test"):  # and on the dev/test transcripts
        assert (lm_exp / "greedy_search" / f"ppl-{name}-epoch-2_avg-1_use-averaged-model.txt").is_file()
    with pytest.raises(SystemExit, match=r"--epoch 2 --avg 3 .*use --avg <= 2"):
        decode(monkeypatch,
               ["--exp-dir", lm_exp, "--epoch", 2, "--avg", 3, "--use-averaged-model", "false"] + data["args"])
    with pytest.raises(SystemExit, match=r"--model-type: checkpoint has 'lm', command line 'llm'"):
        decode(monkeypatch, ["--exp-dir", lm_exp, "--epoch", 2, "--avg", 1, "--model-type", "llm"] + data["args"])


def test_speech_llm_ddp_train_and_decode(data, ctc_exp, lm_exp, monkeypatch):
    exp = data["root"] / "exp_llm"
    train(["--model-type", "llm", "--exp-dir", exp, "--world-size", 2, "--master-port", 12871, "--num-epochs", 2,
           "--max-duration", 6, "--encoder-checkpoint", ctc_exp / "epoch-1.pt",
           "--rwkv-checkpoint", lm_exp / "epoch-2.pt",
           "--freeze-encoder", "true", "--llm-peft", "lora+state", "--ctc-loss-scale", 0.2, "--average-period", 1,
           "--llm-lr", 3e-3] + TINY_ENC + TINY_LM + data["args"], timeout=400)
    sums = {}
    for f in (exp / "log").glob("log-train-*"):
        m = re.search(r"Parameter checksum on rank (\d): (\S+)", f.read_text())
        sums[m.group(1)] = m.group(2)
    assert len(sums) == 2 and sums["0"] == sums["1"], sums

    common = ["--exp-dir", exp, "--epoch", 2, "--avg", 1, "--max-duration", 20] + data["args"]
    decode(monkeypatch, common + ["--decoding-method", "greedy_search", "--max-new-tokens", 12])
    decode(monkeypatch, common + ["--decoding-method", "beam_search", "--beam-size", 1, "--max-new-tokens", 12])
    g = next((exp / "greedy_search").glob("recogs-test-*")).read_text()
    b = next((exp / "beam_search").glob("recogs-test-*")).read_text()
    assert g == b  # beam 1 == greedy through the whole pipeline
    assert next((exp / "beam_search").glob("wer-summary-test-*beam-size-1*")).is_file()
    # joint CTC / RWKV-7 search through the CTC head trained with --ctc-loss-scale: own result files
    decode(monkeypatch, common + ["--decoding-method", "beam_search", "--beam-size", 2, "--max-new-tokens", 12,
                                  "--ctc-weight", 0.5])
    summary = next((exp / "beam_search").glob("wer-summary-test-*beam-size-2*ctc-weight-0.5*")).read_text()
    assert summary.splitlines()[1].startswith("beam_search_beam_size_2_ctc_weight_0.5\t")

    # --max-new-tokens 1: every non-empty hypothesis hit the limit and is flagged (a single token
    # may also decode to nothing, e.g. a lone word-boundary piece)
    decode(monkeypatch, common + ["--decoding-method", "greedy_search", "--max-new-tokens", 1])
    lines = next((exp / "greedy_search").glob("recogs-test-*max-new-tokens-1_*")).read_text().splitlines()
    hyps = {line.split(":\t")[0]: line for line in lines if ":\thyp=" in line}
    notes = {line.split(":\t")[0] for line in lines if "note=hit --max-new-tokens" in line}
    assert notes and {c for c, line in hyps.items() if not line.endswith("hyp=[]")} <= notes


def test_streaming_speech_llm_trains_and_decodes(data, lm_exp, monkeypatch):
    """The tiny streaming run (run.sh --streaming true, by hand): a causal encoder with running CMN,
    an interleaved speech LLM on it, decode.py --streaming true writes its own result files (a
    hypothesis for every cut, beside the full-forward decoding's; streaming == simulated streaming
    is tests/speechllm/test_streaming.py's); a ctc checkpoint is refused for --streaming with one line."""
    enc = [a for a in TINY_ENC if a not in ("--utterance-cmn", "true")]
    enc += ["--running-cmn", "true", "--causal", "true", "--chunk-size", "16", "--left-context-frames", "64"]
    ctc = data["root"] / "exp_stream_ctc"
    train(["--model-type", "ctc", "--exp-dir", ctc, "--num-epochs", 1, "--max-duration", 4, "--average-period", 1,
           "--base-lr", 0.05] + enc + data["args"])
    exp = data["root"] / "exp_stream_llm"
    train(["--model-type", "llm", "--exp-dir", exp, "--num-epochs", 1, "--max-duration", 6,
           "--encoder-checkpoint", ctc / "epoch-1.pt", "--rwkv-checkpoint", lm_exp / "epoch-2.pt", "--tokenizer", "bpe",
           "--freeze-encoder", "true", "--ctc-loss-scale", 0.2, "--adapter-type", "ctc", "--interleave-chunk-frames", 8,
           "--average-period", 1, "--llm-lr", 3e-3] + TINY_LM + data["args"])
    saved = torch.load(exp / "epoch-1.pt", weights_only=True, map_location="cpu")
    assert saved["causal"] in (True, "true") and saved["running_cmn"] in (True, "true")
    common = ["--exp-dir", exp, "--epoch", 1, "--avg", 1, "--use-averaged-model", "false", "--max-duration", 20,
              "--max-new-tokens", 12] + data["args"]
    decode(monkeypatch, common + ["--streaming", "true"])
    decode(monkeypatch, common)
    out = exp / "greedy_search"
    summary = (out / "wer-summary-test-epoch-1_avg-1_max-new-tokens-12_streaming.txt").read_text()
    assert summary.splitlines()[1].startswith("greedy_search_streaming\t")
    streamed = (out / "recogs-test-epoch-1_avg-1_max-new-tokens-12_streaming.txt").read_text()
    full = (out / "recogs-test-epoch-1_avg-1_max-new-tokens-12.txt").read_text()
    assert streamed.count("\thyp=") == 6 and full.count("\thyp=") == 6
    assert (out / "recogs-dev-epoch-1_avg-1_max-new-tokens-12_streaming.txt").is_file()
    with pytest.raises(SystemExit, match="--streaming decodes a chunk-interleaved speech LLM"):
        decode(monkeypatch, ["--exp-dir", ctc, "--epoch", 1, "--avg", 1, "--use-averaged-model", "false",
                             "--streaming", "true"] + data["args"])


def test_short_utterance_is_skipped_and_counted(data):
    from types import SimpleNamespace

    from zipformer_rwkv import recipe
    from zipformer_rwkv.decoding.inference import NOTE_SKIPPED, decode_dataset
    from zipformer_rwkv.decoding.search import DecodingOptions
    from zipformer_rwkv.train import get_parser
    from zipformer_rwkv.utils import AttributeDict

    args = get_parser().parse_args(["--model-type", "llm"] + TINY_ENC + TINY_LM + [str(a) for a in data["args"]])
    params = AttributeDict(vars(args))
    params.update(decoding_method="greedy_search", beam_size=1, max_new_tokens=3)
    model, tok = recipe.get_model(params)
    feats = torch.randn(2, 200, 80)
    batch = {"inputs": feats, "supervisions": {
        "text": ["red cat", "dog"], "sequence_idx": torch.tensor([0, 1]), "start_frame": torch.tensor([0, 0]),
        "num_frames": torch.tensor([200, 20]), "cut": [SimpleNamespace(id="long"), SimpleNamespace(id="short")]}}
    results, stats = decode_dataset(model.eval(), [batch], tok, torch.device("cpu"), DecodingOptions.from_args(params))
    assert stats["skipped"] == 1 and stats["utterances"] == 2
    by_id = {r[0]: r for r in results}
    assert by_id["short"][2] == [] and by_id["short"][3] == NOTE_SKIPPED  # scored as deletions, flagged
    assert by_id["long"][3] != NOTE_SKIPPED


def test_transcribe_prints_one_line_per_file(data, ctc_exp, monkeypatch, capsys, tmp_path):
    import numpy as np
    import soundfile as sf

    from zipformer_rwkv import transcribe

    wav = next((data["root"] / "corpus" / "wav").glob("test-*.wav"))
    audio, sr = sf.read(wav)
    stereo_8k = tmp_path / "stereo_8k.flac"
    sf.write(stereo_8k, np.stack([audio[::2], audio[::2]], axis=1), sr // 2)  # other rate, 2 channels
    monkeypatch.setattr(sys, "argv",
                        ["transcribe.py", "--checkpoint", str(ctc_exp / "epoch-1.pt"), str(wav), str(stereo_8k)])
    transcribe.main()
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(wav), str(stereo_8k)]
    short = tmp_path / "short.wav"  # 0.06 s = 4 fbank frames: too short for the encoder
    sf.write(short, audio[: sr * 6 // 100], sr)
    monkeypatch.setattr(sys, "argv", ["transcribe.py", "--checkpoint", str(ctc_exp / "epoch-1.pt"), str(short)])
    transcribe.main()
    from zipformer_rwkv.recipe import NOTE_SKIPPED

    assert capsys.readouterr().out.strip() == f"{short}\t<{NOTE_SKIPPED}>"
    monkeypatch.setattr(sys, "argv", ["transcribe.py", "--checkpoint", str(ctc_exp / "epoch-1.pt"),
                                      str(tmp_path / "missing.wav"), str(wav)])
    with pytest.raises(SystemExit) as info:
        transcribe.main()
    assert info.value.code == 1  # one file failed; the one after it was still transcribed
    out, err = capsys.readouterr()
    assert "missing.wav: no such audio file" in err and out.startswith(f"{wav}\t")


def test_checkpoint_structure_accepts_broadcast_values_and_rejects_real_mismatches():
    """`--query-head-dim 32` on the decode command line must match the resolved "32,32,32,32"
    that train.py saves; a different architecture must still be an error naming the option."""
    from zipformer_rwkv.recipe import apply_checkpoint_structure
    from zipformer_rwkv.utils import AttributeDict

    saved = {"model_type": "ctc", "query_head_dim": "32,32,32,32", "encoder_dim": "128,192,192,128"}
    params = AttributeDict(query_head_dim="32", encoder_dim="128,192,192,128")
    apply_checkpoint_structure(params, saved, {"query_head_dim", "encoder_dim"}, "ckpt.pt")
    assert params.query_head_dim == "32,32,32,32"

    params = AttributeDict(query_head_dim="24", encoder_dim="128,192,192,128")
    with pytest.raises(ValueError, match=r"ckpt.pt does not match the command line: --query-head-dim"):
        apply_checkpoint_structure(params, saved, {"query_head_dim"}, "ckpt.pt")
    params = AttributeDict(query_head_dim="32", encoder_dim="128,192,192")
    with pytest.raises(ValueError, match="--encoder-dim"):
        apply_checkpoint_structure(params, saved, {"encoder_dim"}, "ckpt.pt")


def test_speech_llm_takes_the_encoder_structure_of_its_encoder_checkpoint(tmp_path):
    """train.py --model-type llm builds the encoder --encoder-checkpoint holds (ours, and icefall's
    epoch-N.pt with its params at the top level), not the command line's defaults; an explicit
    option that contradicts the file is one error naming it; a weights-only file changes nothing."""
    from zipformer_rwkv import train
    from zipformer_rwkv.utils import explicit_options

    enc = dict(num_encoder_layers="1,1", downsampling_factor="1,2", encoder_dim="32,32", utterance_cmn=True)
    ours = tmp_path / "pretrained.pt"
    torch.save({"model": {}, "model_type": "ctc", **enc}, ours)
    parser = train.get_parser()

    def parse(*argv):
        argv = ["--model-type", "llm", "--encoder-checkpoint", str(ours), *argv]
        return vars(parser.parse_args(argv)), explicit_options(parser, argv)

    params, explicit = parse()
    assert sorted(train.take_encoder_structure(params, explicit)) == sorted(enc)
    assert {k: params[k] for k in enc} == enc
    params, explicit = parse("--encoder-dim", "64,64", "--num-encoder-layers", "1,1")
    with pytest.raises(ValueError, match=r"pretrained.pt does not match the command line: --encoder-dim"):
        train.take_encoder_structure(params, explicit)
    torch.save({"model": {}}, ours)  # icefall's pretrained.pt: weights only
    params, explicit = parse("--encoder-dim", "64,64")
    assert train.take_encoder_structure(params, explicit) == [] and params["encoder_dim"] == "64,64"
    params, _ = parse()
    params["model_type"] = "ctc"
    assert train.take_encoder_structure(params, set()) == []  # only the speech LLM reads it
