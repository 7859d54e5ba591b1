#!/usr/bin/env python3
"""Simulate a bank of room impulse responses (RIRs) with pyroomacoustics, for on-the-fly reverb.

Each RIR is one shoebox room (image source method): length 3-10 m, width 2.5-8 m, height 2.4-4 m;
a target RT60 drawn from --rt60 (seconds), turned into wall absorption with Sabine's formula
(`pyroomacoustics.inverse_sabine`); a microphone 0.5 m or more from the walls and a talker
--distance metres away (0.3-3 m by default), both 0.8-2 m above the floor. The reflection order
is capped (--max-order) so the bank takes seconds; the decay is measured on each RIR
(`pyroomacoustics.experimental.measure_rt60`, 30 dB decay extrapolated to 60 dB) and a room
whose measured RT60 is more than --rt60-tolerance (relative) from its target is drawn again, so
the bank's RT60s are what it says. Each RIR starts 1 ms before its direct path (no onset delay:
reverb does not shift the transcript in time), is cut after 60 dB of decay (at most 1.5 s) and is
scaled to a peak of 1.

Usage:
    python local/make_rir_bank.py --out-dir data/augment/rirs --num-rirs 300 --seed 42

Writes into --out-dir: rir-NNNN.wav (16 kHz mono float32 WAV, readable by lhotse and
audiomentations) and rirs.jsonl, one line per RIR: id, path (relative to --out-dir), rt60
(measured, seconds), rt60_target, room (L, W, H metres), distance (source to microphone, metres),
max_order, num_samples. The same --seed gives the same bank.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000
ROOM_MIN = np.array([3.0, 2.5, 2.4])  # metres: length, width, height
ROOM_MAX = np.array([10.0, 8.0, 4.0])
ONSET_S = 0.001  # kept before the direct path
MAX_LEN_S = 1.5


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", type=Path, default=Path("data/augment/rirs"))
    p.add_argument("--num-rirs", type=int, default=300)
    p.add_argument("--rt60", type=float, nargs=2, default=[0.2, 0.9], metavar=("MIN", "MAX"),
                   help="target RT60 range in seconds")
    p.add_argument("--distance", type=float, nargs=2, default=[0.3, 3.0], metavar=("MIN", "MAX"),
                   help="source-microphone distance range in metres")
    p.add_argument("--max-order", type=int, default=25, help="cap of the image-source reflection order")
    p.add_argument("--rt60-tolerance", type=float, default=0.3,
                   help="redraw a room whose measured RT60 is off its target by more than this fraction")
    p.add_argument("--seed", type=int, default=42)
    return p


def _positions(rng: np.random.Generator, dims: np.ndarray, distance: float):
    """A microphone and a source `distance` metres apart inside the room (0.5 m from the walls,
    0.8-2 m high), or None when 50 draws found no such pair."""
    lo, hi = np.array([0.5, 0.5, 0.8]), np.array([dims[0] - 0.5, dims[1] - 0.5, min(2.0, dims[2] - 0.3)])
    for _ in range(50):
        mic = rng.uniform(lo, hi)
        direction = rng.normal(size=3)
        direction[2] *= 0.2  # mostly horizontal
        src = mic + distance * direction / np.linalg.norm(direction)
        if np.all(src >= lo) and np.all(src <= hi):
            return mic, src
    return None


def simulate_rir(rng: np.random.Generator, rt60_range, distance_range, max_order: int,
                 tolerance: float) -> tuple[np.ndarray, dict]:
    """Draw rooms until one has its measured RT60 within `tolerance` of the target.

    Returns:
      (rir, info): rir is (num_samples,) float32 at 16 kHz, peak 1, starting 1 ms before the direct
      path; info holds rt60 (measured, s), rt60_target (s), room (m), distance (m), max_order.
    Raises:
      RuntimeError: no room out of 200 draws met the tolerance.
    """
    import pyroomacoustics as pra

    for _ in range(200):
        dims = rng.uniform(ROOM_MIN, ROOM_MAX)
        rt60 = rng.uniform(*rt60_range)
        distance = rng.uniform(*distance_range)
        try:
            e_absorption, order = pra.inverse_sabine(rt60, dims)
        except ValueError:  # the room is too large for so short an RT60
            continue
        pos = _positions(rng, dims, distance)
        if pos is None:
            continue
        order = min(order, max_order)
        room = pra.ShoeBox(dims, fs=SAMPLE_RATE, materials=pra.Material(e_absorption), max_order=order)
        room.add_source(pos[1])
        room.add_microphone(pos[0])
        room.compute_rir()
        h = np.asarray(room.rir[0][0], dtype=np.float64)
        measured = float(pra.experimental.measure_rt60(h, fs=SAMPLE_RATE, decay_db=30))
        if not abs(measured - rt60) <= tolerance * rt60:
            continue
        start = max(0, int(np.argmax(np.abs(h))) - int(ONSET_S * SAMPLE_RATE))
        h = h[start:start + int(min(MAX_LEN_S, measured) * SAMPLE_RATE) + 1]
        h = (h / np.max(np.abs(h))).astype(np.float32)
        return h, {"rt60": round(measured, 4), "rt60_target": round(rt60, 4),
                   "room": [round(float(d), 3) for d in dims], "distance": round(distance, 3),
                   "max_order": int(order)}
    raise RuntimeError(f"no room met RT60 tolerance {tolerance} in 200 draws "
                       f"(RT60 range {rt60_range}, max order {max_order})")


def make_bank(out_dir: Path, num_rirs: int, seed: int, rt60_range=(0.2, 0.9), distance_range=(0.3, 3.0),
              max_order: int = 25, tolerance: float = 0.3) -> list[dict]:
    """Write `num_rirs` RIRs and rirs.jsonl into `out_dir` (module docstring); RIR i depends only on
    (seed, i). Returns the rirs.jsonl entries."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("rir-*.wav"):
        stale.unlink()
    entries = []
    for i in range(num_rirs):
        h, info = simulate_rir(np.random.default_rng([seed, i]), rt60_range, distance_range, max_order, tolerance)
        name = f"rir-{i:04d}"
        sf.write(str(out_dir / f"{name}.wav"), h, SAMPLE_RATE, subtype="FLOAT")
        entries.append({"id": name, "path": f"{name}.wav", **info, "num_samples": len(h)})
    with open(out_dir / "rirs.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(e) + "\n" for e in entries)
    return entries


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    if args.num_rirs < 1 or not 0 < args.rt60[0] <= args.rt60[1] or not 0 < args.distance[0] <= args.distance[1]:
        print("make_rir_bank.py: need --num-rirs >= 1 and 0 < MIN <= MAX for --rt60 and --distance", file=sys.stderr)
        return 1
    start = time.time()
    try:
        entries = make_bank(args.out_dir, args.num_rirs, args.seed, tuple(args.rt60), tuple(args.distance),
                            args.max_order, args.rt60_tolerance)
    except RuntimeError as e:
        print(f"make_rir_bank.py: {e}", file=sys.stderr)
        return 1
    rt = np.array([e["rt60"] for e in entries])
    print(f"make_rir_bank.py: {len(entries)} RIRs in {args.out_dir}, RT60 {rt.min():.2f}-{rt.max():.2f} s "
          f"(median {np.median(rt):.2f}), {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
