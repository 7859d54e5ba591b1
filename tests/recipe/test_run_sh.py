"""run.sh end to end in its tiny configuration (tiny TTS corpus, tiny models, a few steps), in a
temporary folder: every result file exists and parses, a re-run skips every finished stage, and
`--stage 4` re-runs only stages 4-5. Plus fast checks of local/summarize_results.py and
local/plot_wer_per_voice.py on hand-made files."""
import ast
import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import plot_wer_per_voice
import summarize_results

ROOT = Path(__file__).resolve().parents[2]

RECOG_RE = re.compile(r"^(?P<cut>[^\t]+):\t(?P<kind>ref|hyp|note)=(?P<value>.*)$")


def run_sh(cwd: Path, *extra: str, timeout: int = 1500) -> str:
    cmd = ["bash", str(ROOT / "run.sh"), "--size", "tiny", "--install-deps", "false",
           "--dl-dir", "download", "--data-dir", "data", "--exp-dir", "exp", *extra]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"run.sh {' '.join(extra)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def mtimes(d: Path) -> dict:
    return {f.name: f.stat().st_mtime_ns for f in d.glob("epoch-*.pt")}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("run_sh")
    out = run_sh(work)
    return work, out


def check_recogs(path: Path) -> int:
    """Every line is `cut:\\tref=[...]`, `hyp=[...]` or `note=...`; each cut has ref and hyp."""
    kinds = {}
    for line in path.read_text(encoding="utf8").splitlines():
        m = RECOG_RE.match(line)
        assert m, f"{path}: malformed line {line!r}"
        if m["kind"] != "note":
            words = ast.literal_eval(m["value"])
            assert isinstance(words, list) and all(isinstance(w, str) for w in words), line
        kinds.setdefault(m["cut"], set()).add(m["kind"])
    assert kinds, f"{path} is empty"
    assert all({"ref", "hyp"} <= k for k in kinds.values()), path
    return len(kinds)


def check_png(path: Path) -> None:
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100, img.shape


def test_every_result_file_exists_and_parses(tiny_run):
    work, out = tiny_run
    exp = work / "exp"
    for model, methods in (("ctc", ["greedy_search"]), ("llm", ["greedy_search", "beam_search"])):
        for method in methods:
            summaries = sorted((exp / model / method).glob("wer-summary-*.txt"))
            assert any(f.name.startswith("wer-summary-test-") for f in summaries), summaries
            assert any(f.name.startswith("wer-summary-dev-") for f in summaries), summaries
            for summary in summaries:  # every decoded set (dev and test)
                assert summarize_results.read_table_value(summary) >= 0.0, summary
                rest = summary.name[len("wer-summary-"):]
                assert check_recogs(summary.with_name("recogs-" + rest)) > 0
                assert summary.with_name("errs-" + rest).read_text(encoding="utf8").startswith("%WER = ")
    ppl_files = list((exp / "lm").glob("*/ppl-*.txt"))
    assert ppl_files
    for f in ppl_files:
        assert summarize_results.read_table_value(f) > 1.0
    check_png(exp / "training_curves.png")
    check_png(exp / "wer_per_voice_test.png")
    check_png(exp / "wer_per_length_test.png")
    results = (exp / "RESULTS.md").read_text(encoding="utf8")
    for row in ("| ctc | greedy_search |", "| llm | greedy_search |", "| llm | beam_search |", "ppl"):
        assert row in results, results
    assert "WER (%) per voice on test" in results and "WER (%) per utterance length on test" in results
    for method in ("greedy_search", "beam_search"):  # stage 5's joint CTC / RWKV-7 decodings
        assert re.search(rf"\| llm \| {method} \| [^|]*_ctc-weight-0.7", results), results
    assert "| dev WER | test WER |" in results and "| dev ppl | test ppl | lm-valid ppl |" in results
    # the table is printed to the terminal as well, and the stage wall times are recorded
    assert "| llm | beam_search |" in out
    stages = [line.split("\t")[0] for line in (exp / "timing.tsv").read_text().splitlines()]
    assert stages == ["1", "2", "3", "4", "5"]
    for model in ("ctc", "lm", "llm"):
        assert (exp / model / ".train.done").is_file()


def test_speech_llm_checkpoint_transcribes_with_no_options(tiny_run):
    """The tiny run's speech LLM (run.sh's `--adapter-type ctc --interleave-chunk-frames 8`) loads in
    transcribe.py from its checkpoint alone: no encoder, adapter or tokenizer option repeated; stage 5
    decoded it alone and with joint CTC (per chunk), greedy and beam."""
    work, _ = tiny_run
    ckpt = work / "exp" / "llm" / "epoch-2.pt"
    import torch

    saved = torch.load(ckpt, weights_only=True, map_location="cpu")
    assert saved["adapter_type"] == "ctc" and saved["interleave_chunk_frames"] == 8
    for method in ("greedy_search", "beam_search"):
        summaries = sorted(p.name for p in (work / "exp" / "llm" / method).glob("wer-summary-test-*.txt"))
        assert len(summaries) == 2 and sum("ctc-weight-0.7" in name for name in summaries) == 1, summaries
    audio = sorted((work / "download").rglob("*.flac"))[:2]
    assert audio
    proc = subprocess.run([sys.executable, str(ROOT / "zipformer_rwkv" / "transcribe.py"), "--checkpoint", str(ckpt),
                           *map(str, audio)], cwd=work, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [line.split("\t")[0] for line in proc.stdout.strip().splitlines()] == [str(a) for a in audio]


def test_stage_4_starts_from_the_models_stages_2_and_3_evaluated(tiny_run):
    """Stage 2 decodes the tiny preset's epoch 2 through model_avg (--avg 1, --use-averaged-model
    true) and exports exactly those weights to ctc/pretrained.pt; stage 3 evaluates and exports the
    LM's last epoch; stage 4 starts from the two pretrained.pt files, not from raw epoch-N.pt."""
    import torch

    from zipformer_rwkv.training.selection import plan_state, resolve_decode_checkpoints

    work, out = tiny_run
    exp = work / "exp"
    llm = torch.load(exp / "llm" / "epoch-2.pt", weights_only=True, map_location="cpu")
    assert llm["encoder_checkpoint"] == "exp/ctc/pretrained.pt", llm["encoder_checkpoint"]
    assert llm["rwkv_checkpoint"] == "exp/lm/pretrained.pt", llm["rwkv_checkpoint"]
    for model, epoch, use_averaged in (("ctc", 2, True), ("lm", 1, False)):
        evaluated, _ = plan_state(resolve_decode_checkpoints(exp / model, epoch, 0, 1, use_averaged))
        exported = torch.load(exp / model / "pretrained.pt", weights_only=True, map_location="cpu")
        assert exported["model"].keys() == evaluated.keys()
        assert all(torch.equal(exported["model"][k], evaluated[k]) for k in evaluated), model
        assert exported["model_type"] == model
    raw = torch.load(exp / "ctc" / "epoch-2.pt", weights_only=True, map_location="cpu")["model"]
    assert any(not torch.equal(raw[k], evaluated_ctc) for k, evaluated_ctc in
               torch.load(exp / "ctc" / "pretrained.pt", weights_only=True)["model"].items()
               if k in raw and raw[k].is_floating_point()), "averaged == raw: the test could not tell them apart"


def test_rerun_skips_finished_stages(tiny_run):
    work, _ = tiny_run
    before = {m: mtimes(work / "exp" / m) for m in ("ctc", "lm", "llm")}
    out = run_sh(work)
    assert "zipformer_rwkv/train.py" not in out and "zipformer_rwkv/decode.py" not in out, out[-3000:]
    assert out.count("exists: skipping training") == 3
    assert {m: mtimes(work / "exp" / m) for m in ("ctc", "lm", "llm")} == before


def test_stage_4_reruns_only_from_there(tiny_run):
    work, _ = tiny_run
    exp = work / "exp"
    before = {m: mtimes(exp / m) for m in ("ctc", "lm", "llm")}
    out = run_sh(work, "--stage", "4")
    assert "Stage 4" in out and "Stage 5" in out
    for s in (1, 2, 3):
        assert f"Stage {s}:" not in out
    assert {m: mtimes(exp / m) for m in ("ctc", "lm")} == {m: before[m] for m in ("ctc", "lm")}
    assert mtimes(exp / "llm.prev") == before["llm"]  # the old run is kept aside
    after = mtimes(exp / "llm")
    assert after.keys() == before["llm"].keys()
    assert all(after[k] > before["llm"][k] for k in after)
    assert list((exp / "llm" / "beam_search").glob("wer-summary-test-*.txt"))


def test_tcmalloc_probe_survives_long_ldconfig_output(tmp_path):
    """run.sh finds libtcmalloc_minimal in `ldconfig -p` and takes the first match; a long listing after
    the match must not end run.sh with SIGPIPE (exit 141 under pipefail), as it once did in CI."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "ldconfig"
    fake.write_text("#!/bin/sh\n"
                    "echo '\tlibtcmalloc_minimal.so.4 (libc6,x86-64) => /fake/a/libtcmalloc_minimal.so.4'\n"
                    "echo '\tlibtcmalloc_minimal.so.4 (libc6) => /fake/b/libtcmalloc_minimal.so.4'\n"
                    "seq 1 200000 | sed 's|.*|\tlibfoo&.so.1 (libc6,x86-64) => /usr/lib/libfoo&.so.1|'\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    cmd = ["bash", str(ROOT / "run.sh"), "--size", "tiny", "--install-deps", "false", "--stage", "9",
           "--stop-stage", "9"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    assert "preload /fake/a/libtcmalloc_minimal.so.4 " in out, out
    proc = subprocess.run(cmd + ["--use-tcmalloc", "false"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "preload" not in proc.stdout + proc.stderr


def _stub_python_env(tmp_path: Path) -> dict:
    """The environment for run.sh with PYTHON a stub that prints its arguments ("PY ..."), so a test
    reads the commands a stage would run without running them."""
    stub = tmp_path / "python"
    stub.write_text("#!/bin/sh\necho \"PY $*\"\n")
    stub.chmod(0o755)
    return {**os.environ, "PYTHON": str(stub)}


def test_streaming_preset_trains_a_causal_encoder_and_decodes_streaming(tmp_path):
    """--streaming true: stage 2's train.py gets the causal options matching the interleave chunk and
    --running-cmn instead of --utterance-cmn; stage 5's decode.py calls --streaming true and no joint
    CTC. (Commands only: python is a stub that prints its arguments; the tiny CI training and
    streaming decoding of such a model is test_train_decode.py's streaming test.)"""
    env = _stub_python_env(tmp_path)
    base = ["bash", str(ROOT / "run.sh"), "--size", "tiny", "--install-deps", "false", "--use-tcmalloc", "false",
            "--streaming", "true"]
    out = {}
    (tmp_path / "exp" / "llm").mkdir(parents=True)  # stage 5 writes its markers there
    for st in ("2", "5"):
        proc = subprocess.run(base + ["--stage", st, "--stop-stage", st], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        out[st] = [line for line in proc.stdout.splitlines() if line.startswith("PY ")]
    (train,) = [line for line in out["2"] if "train.py" in line]
    assert "--causal true --chunk-size 16 --left-context-frames 64" in " ".join(train.split())
    assert "--running-cmn true" in train and "--utterance-cmn" not in train
    decodes = [line for line in out["5"] if "decode.py" in line]
    assert len(decodes) == 2 and all("--streaming true" in d and "--ctc-weight" not in d for d in decodes)
    proc = subprocess.run(base[:-1] + ["maybe", "--stage", "9"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1 and "--streaming must be true or false, got 'maybe'" in proc.stderr


def _train_commands(tmp_path: Path, *extra: str) -> dict:
    """train.py's command line in stages 2, 3 and 4 of `run.sh *extra`, stage by stage (an explicit
    --stage moves that stage's folder away); python is a stub that prints its arguments."""
    env = _stub_python_env(tmp_path)
    out = {}
    for st in ("2", "3", "4"):
        for d in ("ctc", "lm"):  # stage 4 checks that stages 2 and 3 ran (their --*-epochs)
            (tmp_path / "exp" / d).mkdir(parents=True, exist_ok=True)
            for epoch in range(1, 5):
                (tmp_path / "exp" / d / f"epoch-{epoch}.pt").touch()
        cmd = ["bash", str(ROOT / "run.sh"), "--install-deps", "false", "--use-tcmalloc", "false",
               "--stage", st, "--stop-stage", st, *extra]
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        (train,) = [line for line in proc.stdout.splitlines() if line.startswith("PY ") and "train.py" in line]
        out[st] = train
    return out


def test_default_preset_anneals_the_ctc_and_speech_llm_stages(tmp_path):
    """The default preset's CTC and speech-LLM stages anneal within their budget: the --lr-batches
    train.py reads (argparse keeps the last) is 200 per CTC epoch for stage 2 and 100 per speech-LLM
    epoch for stage 4, however many epochs are asked for (3 and 2 by default); the LM stage keeps the
    common 5000; stages 3 and 4 (not 2) train in bf16 where /proc/cpuinfo shows native bf16;
    --ctc-opts still overrides stage 2's; epochs that are not positive integers are refused."""
    def lr_batches(line):
        words = line.split()
        return words[max(i for i, w in enumerate(words) if w == "--lr-batches") + 1]
    cmds = _train_commands(tmp_path, "--size", "default")
    assert [lr_batches(cmds[st]) for st in ("2", "3", "4")] == ["600", "5000", "200"]
    assert "--num-epochs 3" in cmds["2"] and "--num-epochs 2" in cmds["4"]
    # bf16 autocast in the LM and speech-LLM stages only where the CPU multiplies bf16 natively
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    native_bf16 = bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", cpuinfo))
    assert ["--use-bf16 true" in cmds[st] for st in ("2", "3", "4")] == [False, native_bf16, native_bf16]
    cmds = _train_commands(tmp_path, "--size", "default", "--ctc-epochs", "2", "--llm-epochs", "4")
    assert [lr_batches(cmds[st]) for st in ("2", "3", "4")] == ["400", "5000", "400"]
    assert "--num-epochs 2" in cmds["2"] and "--num-epochs 4" in cmds["4"]
    assert lr_batches(_train_commands(tmp_path, "--size", "default", "--ctc-opts", "--lr-batches 7")["2"]) == "7"
    for size, flag in (("default", "--ctc-epochs"), ("tiny", "--lm-epochs")):
        proc = subprocess.run(["bash", str(ROOT / "run.sh"), "--size", size, flag, "2.5", "--stage", "9"],
                              cwd=tmp_path, env=_stub_python_env(tmp_path), capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 1 and "must be positive integers, got '2.5'" in proc.stderr


def test_augment_switch_reaches_the_training_stages(tmp_path):
    """--augment true: train.py of stages 2 and 4 gets --enable-augment true (the LM stage does not);
    the default (auto) leaves the conf's switch alone. Commands only, python a stub as above."""
    def trains(*extra):
        return _train_commands(tmp_path, "--size", "tiny", *extra)

    on = trains("--augment", "true")
    assert "--enable-augment true" in on["2"] and "--model-type ctc" in on["2"]
    assert "--enable-augment true" in on["4"] and "--model-type llm" in on["4"]
    assert "--enable-augment" not in on["3"]  # the LM reads text
    assert all("--enable-augment" not in line for line in trains().values())
    proc = subprocess.run(["bash", str(ROOT / "run.sh"), "--augment", "yes", "--stage", "9"], cwd=tmp_path,
                          env=_stub_python_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "--augment must be auto, true or false, got 'yes'" in proc.stderr


# ---------------------------------------------------------------------------- fast script checks


def _write_cuts(path: Path, speakers: dict, durations: dict = None) -> None:
    with gzip.open(path, "wt", encoding="utf8") as f:
        for cut_id, spk in speakers.items():
            dur = (durations or {}).get(cut_id, 1.0)
            cut = {"id": cut_id, "start": 0.0, "duration": dur, "channel": 0, "type": "MonoCut",
                   "supervisions": [{"id": cut_id, "recording_id": cut_id, "start": 0.0, "duration": dur,
                                     "channel": 0, "text": "A", "speaker": spk}]}
            print(json.dumps(cut), file=f)


def _write_recogs(path: Path, items) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf8") as f:
        for cut_id, ref, hyp in items:
            print(f"{cut_id}:\tref={ref}", file=f)
            print(f"{cut_id}:\thyp={hyp}", file=f)


def test_wer_per_voice_counts_edit_distance_per_speaker(tmp_path):
    cuts = tmp_path / "cuts.jsonl.gz"
    _write_cuts(cuts, {"u1": "alice", "u2": "alice", "u3": "bob"})
    recogs = tmp_path / "exp" / "llm" / "greedy_search" / "recogs-test-epoch-2_avg-1.txt"
    _write_recogs(recogs, [("u1", ["A", "B", "C", "D"], ["A", "X", "C", "D"]),   # 1 sub / 4
                           ("u2", ["E", "F"], ["E", "F", "G"]),                   # 1 ins / 2
                           ("u3", ["H", "I", "J"], ["H"])])                       # 2 del / 3
    speakers = plot_wer_per_voice.read_speakers([cuts])
    counts = plot_wer_per_voice.wer_per_voice(plot_wer_per_voice.read_recogs(recogs), speakers)
    assert counts == {"alice": [2, 6], "bob": [2, 3]}
    png = tmp_path / "exp" / "voices.png"
    subprocess.run([sys.executable, str(ROOT / "local/plot_wer_per_voice.py"), "--exp-dir", str(tmp_path / "exp"),
                    "--cuts", str(cuts), "--output", str(png)], check=True, capture_output=True)
    check_png(png)
    table = png.with_suffix(".md").read_text()
    assert "| alice | 6 | 33.33 |" in table and "| bob | 3 | 66.67 |" in table and "| **all** | 9 | 44.44 |" in table
    # a joint CTC decoding of the same method is a column of its own, not the "newest" of llm/beam_search
    joint = tmp_path / "exp" / "llm" / "greedy_search" / "recogs-test-epoch-2_avg-1_ctc-weight-0.5.txt"
    _write_recogs(joint, [("u1", ["A"], ["A"]), ("u3", ["H"], ["X"])])
    assert set(plot_wer_per_voice.find_recogs(tmp_path / "exp", "test")) == {
        "llm/greedy_search", "llm/greedy_search+ctc 0.5"}


def test_wer_per_length_groups_by_cut_duration(tmp_path):
    cuts = tmp_path / "cuts.jsonl.gz"
    _write_cuts(cuts, {"u1": "alice", "u2": "alice", "u3": "bob"}, durations={"u1": 4.99, "u2": 5.0, "u3": 12.0})
    assert plot_wer_per_voice.read_speakers([cuts], "duration") == {"u1": "0-5 s", "u2": "5-10 s", "u3": ">10 s"}
    recogs = tmp_path / "exp" / "llm" / "greedy_search" / "recogs-test-epoch-2_avg-1.txt"
    _write_recogs(recogs, [("u1", ["A", "B"], ["A"]), ("u2", ["C"], ["C"]), ("u3", ["D", "E"], [])])
    png = tmp_path / "exp" / "lengths.png"
    subprocess.run([sys.executable, str(ROOT / "local/plot_wer_per_voice.py"), "--exp-dir", str(tmp_path / "exp"),
                    "--cuts", str(cuts), "--group-by", "duration", "--output", str(png)],
                   check=True, capture_output=True)
    lines = png.with_suffix(".md").read_text().splitlines()
    assert lines[0] == "WER (%) per utterance length on test"
    assert lines[4:7] == ["| 0-5 s | 2 | 50.00 |", "| 5-10 s | 1 | 0.00 |", "| >10 s | 2 | 100.00 |"]


def test_wer_per_voice_rejects_bad_recogs_and_unknown_cuts(tmp_path):
    bad = tmp_path / "recogs-test-x.txt"
    bad.write_text("u1:\tref=['A']\nu1\thyp=['A']\n")
    with pytest.raises(ValueError, match=r"recogs-test-x.txt:2"):
        plot_wer_per_voice.read_recogs(bad)
    bad.write_text("u1:\tref=['A']\n")
    with pytest.raises(ValueError, match="both a ref and a hyp"):
        plot_wer_per_voice.read_recogs(bad)
    with pytest.raises(ValueError, match="not in the --cuts"):
        plot_wer_per_voice.wer_per_voice({"u9": (["A"], ["A"])}, {"u1": "alice"}, "f.txt")


def test_summarize_results_table(tmp_path):
    exp = tmp_path / "exp"
    suffix = "epoch-4_avg-2_use-averaged-model"
    for model, method, dev, test in (("ctc", "greedy_search", 9.5, 10.25), ("llm", "beam_search", 3.0, 4.5)):
        d = exp / model / method
        d.mkdir(parents=True)
        (d / f"wer-summary-dev-{suffix}.txt").write_text(f"settings\tWER\n{method}\t{dev}\n")
        (d / f"wer-summary-test-{suffix}.txt").write_text(f"settings\tWER\n{method}\t{test}\n")
        (d / f"log-decode-{suffix}-2026-01-01-00-00-00").write_text(
            "2026 INFO [decode.py:1] test: 30 utterances, 99.0 s of audio decoded in 1.0 s: RTFx 99.0; x\n")
    (exp / "ctc" / "log").mkdir()
    (exp / "ctc" / "log" / "log-train-2026").write_text("Number of model parameters: 2500000 (2000000 trainable)\n")
    (exp / "lm" / "greedy_search").mkdir(parents=True)
    ppl = exp / "lm" / "greedy_search" / "ppl-lm-valid-epoch-3_avg-1.txt"
    ppl.write_text("settings\tppl\tntokens\nlm\t31.5\t900\n")
    (exp / "timing.tsv").write_text("1\tdata\t65\n2\tctc\t3600\n")
    text = summarize_results.make_markdown(exp)
    assert f"| ctc | greedy_search | {suffix} | 9.50 | 10.25 | - | 99.0 | 2.50 M (2.00 M) |" in text
    assert f"| llm | beam_search | {suffix} | 3.00 | 4.50 | - | 99.0 | - |" in text
    assert "| lm | epoch-3_avg-1 | 31.50 | - |" in text
    assert "| all | | 1:01:05 |" in text
    # icefall's set names: dev sets before test sets in the columns
    d = exp / "ls" / "greedy_search"
    d.mkdir(parents=True)
    for name in ("test-other", "dev-other", "test-clean", "dev-clean"):
        (d / f"wer-summary-{name}-epoch-1_avg-1.txt").write_text("settings\tWER\ngreedy_search\t1.0\n")
    assert summarize_results.collect(exp)[1] == ["dev", "dev-clean", "dev-other", "test", "test-clean", "test-other",
                                                 "lm-valid"]
    assert "| model | decoding | checkpoint | dev WER | dev-clean WER | dev-other WER | test WER |" \
        in summarize_results.make_markdown(exp)
    (exp / "llm" / "beam_search" / f"wer-summary-test-{suffix}.txt").write_text("settings\tWER\nbeam\tn/a\n")
    with pytest.raises(ValueError, match="is not a number"):
        summarize_results.make_markdown(exp)
