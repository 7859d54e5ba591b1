"""bench/bench_streaming.py keeps working: on a few seconds of noise with the random default-size
streaming model it prints the latency line and one table row per thread count."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_streaming_prints_latency_and_a_row_per_thread_count():
    cmd = [sys.executable, "bench/bench_streaming.py", "--minutes", "0.06", "--threads", "1", "--audio"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "algorithmic latency: chunk 640 ms + look-ahead 137.5 ms = 777.5 ms" in out, out
    rows = [line for line in out.splitlines() if line.startswith("| 1 |")]
    assert len(rows) == 1, out
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert int(cells[1]) == 5 and float(cells[5]) > 0 and float(cells[8]) > 0  # 3.6 s = 5 chunks of 0.64 s
    assert len(cells[10].split(",")) >= 2  # RSS along the stream
