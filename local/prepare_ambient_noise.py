#!/usr/bin/env python3
"""Real ambient noise recordings for on-the-fly augmentation, from the Debian package `blanket`.

`blanket` (an ambient-sound player) ships 14 field recordings, about 753 s in all, inside a
GResource bundle. It is in Debian trixie only, so the package is fetched with a private apt
configuration (its own sources list, lists and cache under --dl-dir; the machine's apt sources
are not touched): `apt-get update` + `apt-get download`, `dpkg -x`, then `gresource extract`
(Debian `libglib2.0-bin`) of each sound. Each recording is mixed to mono, resampled to 16 kHz
and written as 16-bit FLAC.

Licences (from the package's debian/copyright; copied next to the audio as `copyright`, and
per file in noise.jsonl):
  CC0-1.0         birds (Kevin Garlic), boat (Falcet), stream (Gluckose), wind (Felix Blume)
  public domain   coffee-shop (stephan), fireplace (ezwa), summer-night (Lisa Redfern)
  CC-BY-3.0       city (Gezorten Plotz), train (Daniel Miller)
  CC-BY-4.0       rain (Alex 36917), storm (Digifish Music), waves (Luftrum)
  CC-BY-SA-3.0    pink-noise (Omegatron), white-noise (Jorge Stolfi)
The CC-BY(-SA) ones require attribution of those authors wherever the audio is redistributed;
the recipe only mixes them into training audio on the fly and keeps them out of the repository.

Usage:
    python local/prepare_ambient_noise.py --dl-dir download --out-dir data/augment/ambient

Writes into --out-dir: <name>.flac, noise.jsonl (id, path relative to --out-dir, duration in
seconds, licence, author, source) and copyright. Downloads go to --dl-dir/blanket/.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from tts_corpus.debian import MIRROR, DebianPackageError, private_download  # local/ is first on a script's path

SAMPLE_RATE = 16000
GRESOURCE = "usr/share/blanket/blanket.gresource"
SOUND_PREFIX = "/com/rafaelmardojai/Blanket/sounds/"


class PrepareError(Exception):
    """A step failed; the message is one line naming the step and its cause."""


def _run(cmd: list[str], what: str, **kw) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(cmd, capture_output=True, **kw)
    except FileNotFoundError:
        raise PrepareError(f"{what}: `{cmd[0]}` not found (install Debian "
                           f"{'libglib2.0-bin' if cmd[0] == 'gresource' else cmd[0]})") from None
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace") if isinstance(proc.stderr, bytes) else proc.stderr
        lines = [ln for ln in err.splitlines() if ln.strip()] or ["(no message)"]
        raise PrepareError(f"{what} failed: {lines[-1].strip()}")
    return proc


def fetch_deb(work: Path, suite: str = "trixie", mirror: str = MIRROR) -> Path:
    """The blanket .deb in `work`, downloaded with a private apt config (`work/apt`) unless already there."""
    try:
        (deb,) = private_download(["blanket"], work, work / "apt", suite, "main", mirror)
    except DebianPackageError as e:
        raise PrepareError(str(e)) from None
    return deb


def parse_licences(copyright_text: str) -> dict[str, dict]:
    """name -> {licence, author, source} for each `data/resources/sounds/NAME.ogg` stanza of a
    machine-readable debian/copyright file."""
    out = {}
    for stanza in re.split(r"\n\s*\n", copyright_text):
        m = re.search(r"^Files:\s*data/resources/sounds/([\w-]+)\.ogg", stanza, re.M)
        if not m:
            continue
        lic = re.search(r"^License:\s*(\S+)", stanza, re.M)
        author = re.search(r"^Copyright:\s*\n?\s*(.+)", stanza, re.M)
        url = re.search(r"(https?://\S+)", stanza)
        out[m.group(1)] = {"licence": lic.group(1) if lic else "unknown",
                           "author": author.group(1).strip() if author else "",
                           "source": url.group(1) if url else ""}
    return out


def to_16k_mono(audio: np.ndarray, rate: int) -> np.ndarray:
    """(T,) or (T, C) float audio at `rate` Hz -> (T',) float32 mono at 16 kHz."""
    mono = audio.mean(axis=1) if audio.ndim == 2 else audio
    g = gcd(SAMPLE_RATE, rate)
    out = resample_poly(mono, SAMPLE_RATE // g, rate // g) if rate != SAMPLE_RATE else mono
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def extract(deb: Path, work: Path, out_dir: Path) -> list[dict]:
    """Unpack `deb`, extract each sound of its GResource bundle to `out_dir` (16 kHz mono FLAC),
    write noise.jsonl and copyright; returns the noise.jsonl entries."""
    root = work / "root"
    _run(["dpkg", "-x", str(deb), str(root)], f"dpkg -x {deb}")
    bundle = root / GRESOURCE
    if not bundle.is_file():
        raise PrepareError(f"{deb}: no {GRESOURCE} inside (a different blanket version?)")
    listing = _run(["gresource", "list", str(bundle)], f"gresource list {bundle}", text=True).stdout.split()
    sounds = sorted(p for p in listing if p.startswith(SOUND_PREFIX) and p.endswith(".ogg"))
    if not sounds:
        raise PrepareError(f"{bundle}: no sounds under {SOUND_PREFIX}")
    copyright_file = root / "usr/share/doc/blanket/copyright"
    licences = parse_licences(copyright_file.read_text(encoding="utf-8")) if copyright_file.is_file() else {}
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = work / "ogg"
    tmp.mkdir(exist_ok=True)
    entries = []
    for res in sounds:
        name = res[len(SOUND_PREFIX):-len(".ogg")]
        ogg = tmp / f"{name}.ogg"
        ogg.write_bytes(_run(["gresource", "extract", str(bundle), res], f"gresource extract {res}").stdout)
        audio, rate = sf.read(str(ogg), dtype="float32", always_2d=True)
        mono = to_16k_mono(audio, rate)
        sf.write(str(out_dir / f"{name}.flac"), mono, SAMPLE_RATE, subtype="PCM_16")
        lic = licences.get(name, {"licence": "unknown", "author": "", "source": ""})
        entries.append({"id": name, "path": f"{name}.flac", "duration": round(len(mono) / SAMPLE_RATE, 3), **lic})
    if copyright_file.is_file():
        shutil.copy(copyright_file, out_dir / "copyright")
    with open(out_dir / "noise.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(e) + "\n" for e in entries)
    return entries


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dl-dir", type=Path, default=Path("download"))
    p.add_argument("--out-dir", type=Path, default=Path("data/augment/ambient"))
    p.add_argument("--deb", type=Path, default=None, help="a blanket .deb already at hand (skips apt-get)")
    p.add_argument("--mirror", default=MIRROR, help="Debian mirror of the private apt config")
    args = p.parse_args(argv)
    work = args.dl_dir / "blanket"
    work.mkdir(parents=True, exist_ok=True)
    try:
        if args.deb is not None and not args.deb.is_file():
            raise PrepareError(f"--deb {args.deb}: no such file")
        deb = args.deb or fetch_deb(work, mirror=args.mirror)
        entries = extract(deb, work, args.out_dir)
    except PrepareError as e:
        print(f"prepare_ambient_noise.py: {e}", file=sys.stderr)
        return 1
    unknown = [e["id"] for e in entries if e["licence"] == "unknown"]
    if unknown:
        print(f"prepare_ambient_noise.py: warning: no licence found for {', '.join(unknown)}", file=sys.stderr)
    total = sum(e["duration"] for e in entries)
    print(f"prepare_ambient_noise.py: {len(entries)} recordings, {total:.0f} s, in {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
