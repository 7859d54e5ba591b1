"""bench/bench_scale.py (the real-scale training-throughput bench of bench/gpu_check.sh) keeps working:
its --dry-run on CPU (tiny shapes) writes a table row with a positive throughput, and its random batches
hold the audio they claim; gpu_check.sh refuses bad use."""
import os
import random
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_random_batch_has_the_requested_audio():
    from bench_scale import random_batch
    from zipformer_rwkv import recipe

    batch = random_batch(600, 15, random.Random(0))
    assert batch["inputs"].shape == (40, 1500, 80)
    assert float(recipe.batch_feature_lens(batch).sum()) / 100 == 600
    assert len(batch["supervisions"]["text"]) == 40 and all(batch["supervisions"]["text"])


def test_dry_run_writes_a_throughput_row(tmp_path):
    out = tmp_path / "scale.md"
    cmd = [sys.executable, "bench/bench_scale.py", "--dry-run", "--freeze-encoder", "true", "--max-durations", "10",
           "--warmup", "0", "--device", "cpu", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert "DRY RUN" in text
    m = re.search(r"^\| True \| 10 \(2\) \| [\d.]+ M \([\d.]+ M\) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", text, re.M)
    assert m, text
    rate, hours = float(m.group(1)), float(m.group(3))  # both printed to 2 decimals
    assert rate > 0.005 and 960 / (rate + 0.005) - 0.005 <= hours <= 960 / (rate - 0.005) + 0.005


def test_gpu_check_rejects_bad_use(tmp_path):
    """gpu_check.sh: an unknown option, or a real run without CUDA, stops at once with exit status 2."""
    bad = subprocess.run(["bash", "bench/gpu_check.sh", "--bogus"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown option --bogus" in bad.stderr
    import torch

    if not torch.cuda.is_available():
        out = tmp_path / "g.md"
        proc = subprocess.run(["bash", "bench/gpu_check.sh", "--out", str(out)], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 2 and "no CUDA device" in proc.stderr, proc.stderr
