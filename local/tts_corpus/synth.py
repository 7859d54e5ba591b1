"""Speak sentences with espeak-ng / flite / festival and store 16 kHz mono 16-bit FLAC via ``sox -D``.

One ``SynthJob`` holds up to ~40 utterances of one voice. Festival jobs run as a single
``festival --batch`` script (about 0.23 s start-up per process, measured with festival 2.5 on
Debian 12); festival stops at the first error, so a failing utterance is recorded and the batch
restarts after it. A sentence that cannot be spoken (engine or sox error, no/empty/silent output,
< ``MIN_DURATION`` s) becomes a ``Result`` with a ``reason`` instead of a duration: the caller lists
it in ``skipped.txt``, nothing is dropped silently.
"""
from __future__ import annotations

import functools
import multiprocessing
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from .voices import Voice

SAMPLE_RATE = 16000
MIN_DURATION = 0.3  # seconds; shorter outputs are skipped


@dataclass(frozen=True)
class Utterance:
    """One utterance to make: ``out_path`` is the FLAC to write, ``params`` from ``voices.sample_params``."""

    utt_id: str
    text: str
    out_path: str
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SynthJob:
    voice: Voice
    utterances: tuple[Utterance, ...]


@dataclass(frozen=True)
class Result:
    """``duration`` in seconds (samples / 16000) on success; otherwise ``None`` and a one-line ``reason``."""

    utt_id: str
    duration: float | None
    reason: str | None = None


def _tail(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


def _run(cmd: list[str], **kw) -> tuple[int, str]:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    except FileNotFoundError:
        return 127, f"{cmd[0]} not installed"
    return proc.returncode, _tail(proc.stderr) or _tail(proc.stdout)


@functools.lru_cache(maxsize=None)
def flite_voices() -> frozenset[str]:
    """Voices ``flite -lv`` lists (flite silently falls back to ``kal`` for an unknown name)."""
    _, out = _run(["flite", "-lv"])
    return frozenset(out.split(":", 1)[-1].split())


def to_flac(wav: Path, utt: Utterance) -> Result:
    """Convert an engine's WAV into the final FLAC (``sox -D``: no random dither, so repeatable) and check it.

    Applies ``speed`` (if in params) and ``gain_db``; resamples to 16 kHz mono 16-bit.
    """
    if not wav.is_file() or wav.stat().st_size <= 44:
        return Result(utt.utt_id, None, "engine produced no audio")
    effects = (["speed", str(utt.params["speed"])] if "speed" in utt.params else []) + \
              ["gain", str(utt.params.get("gain_db", 0.0))]
    out = Path(utt.out_path)
    rc, err = _run(["sox", "-D", "-q", str(wav), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(out), *effects])
    if rc != 0 or not out.is_file():
        return Result(utt.utt_id, None, f"sox failed (rc={rc}): {err}")
    audio, sr = sf.read(str(out), dtype="int16")
    reason = None
    if sr != SAMPLE_RATE or audio.ndim != 1:
        reason = f"unexpected sox output ({sr} Hz, shape {audio.shape})"
    elif len(audio) < MIN_DURATION * SAMPLE_RATE:
        reason = f"too short ({len(audio) / SAMPLE_RATE:.3f} s < {MIN_DURATION} s)"
    elif not np.any(audio):
        reason = "silent output"
    if reason:
        out.unlink()
        return Result(utt.utt_id, None, reason)
    return Result(utt.utt_id, len(audio) / SAMPLE_RATE)


def _espeak(voice: Voice, utt: Utterance, wav: Path) -> str | None:
    rc, err = _run(["espeak-ng", "-v", voice.name, "-s", str(utt.params.get("rate", 175)),
                    "-p", str(utt.params.get("pitch", 50)), "-w", str(wav), "--stdin"], input=utt.text)
    return f"espeak-ng failed (rc={rc}): {err}" if rc != 0 or err.lower().startswith("error") else None


def _flite(voice: Voice, utt: Utterance, wav: Path) -> str | None:
    if voice.name not in flite_voices():
        return f"flite has no voice '{voice.name}' (flite -lv: {' '.join(sorted(flite_voices()))})"
    txt = wav.with_suffix(".txt")
    txt.write_text(utt.text + "\n")
    cmd = ["flite", "-voice", voice.name, "-f", str(txt), "-o", str(wav)]
    for key, opt in (("duration_stretch", "duration_stretch"), ("f0_mean", "int_f0_target_mean")):
        if key in utt.params:
            cmd += ["--setf", f"{opt}={utt.params[key]}"]
    rc, err = _run(cmd)
    return f"flite failed (rc={rc}): {err}" if rc != 0 else None


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _festival_batch(voice: Voice, utts: list[Utterance], tmp: Path) -> tuple[int, str]:
    lines = [f"(voice_{voice.name})"]
    for i, u in enumerate(utts):
        if "duration_stretch" in u.params:
            lines.append(f"(Parameter.set 'Duration_Stretch {u.params['duration_stretch']})")
        if "f0_mean" in u.params:
            lines.append(f"(set! int_lr_params '((target_f0_mean {u.params['f0_mean']}) (target_f0_std 20) "
                         "(model_f0_mean 170) (model_f0_std 34)))")
        lines.append(f"(utt.save.wave (utt.synth (Utterance Text {_scheme_string(u.text)})) "
                     f"{_scheme_string(str(tmp / f'{i}.wav'))} 'riff)")
    script = tmp / "batch.scm"
    script.write_text("\n".join(lines) + "\n")
    return _run(["festival", "--batch", str(script)])


def _festival_job(job: SynthJob, tmp: Path) -> list[Result]:
    results: list[Result] = []
    todo = list(job.utterances)
    while todo:
        for f in tmp.glob("*.wav"):
            f.unlink()
        rc, err = _festival_batch(job.voice, todo, tmp)
        n_ok = 0
        while n_ok < len(todo) and (tmp / f"{n_ok}.wav").is_file():
            n_ok += 1
        results += [to_flac(tmp / f"{i}.wav", todo[i]) for i in range(n_ok)]
        if n_ok < len(todo):  # festival stopped (or crashed) on utterance n_ok: skip it, restart after it
            results.append(Result(todo[n_ok].utt_id, None, f"festival failed (rc={rc}): {err or 'no output'}"))
        todo = todo[n_ok + 1:]
    return results


def run_job(job: SynthJob) -> list[Result]:
    """Synthesise every utterance of ``job`` into its ``out_path``; one ``Result`` per utterance, in order.

    Safe to call in a ``multiprocessing`` worker; temporary WAVs live in a private temp folder.
    """
    with tempfile.TemporaryDirectory(prefix="tts_") as d:
        tmp = Path(d)
        if job.voice.engine == "festival":
            return _festival_job(job, tmp)
        speak = {"espeak": _espeak, "flite": _flite}.get(job.voice.engine)
        results = []
        for u in job.utterances:
            wav = tmp / "utt.wav"
            wav.unlink(missing_ok=True)
            err = speak(job.voice, u, wav) if speak else f"unknown TTS engine '{job.voice.engine}'"
            results.append(Result(u.utt_id, None, err) if err else to_flac(wav, u))
        return results


def run_jobs(jobs: list[SynthJob], nj: int, desc: str = "tts") -> dict[str, Result]:
    """Run ``jobs`` on ``nj`` worker processes (in-process when ``nj <= 1``) with a tqdm bar.

    Returns ``{utt_id: Result}``; the outputs do not depend on ``nj`` or on completion order.
    """
    results: dict[str, Result] = {}
    with tqdm(total=sum(len(j.utterances) for j in jobs), unit="utt", desc=desc) as bar:
        if nj <= 1:
            for res in map(run_job, jobs):
                results.update((r.utt_id, r) for r in res)
                bar.update(len(res))
        else:
            with multiprocessing.Pool(nj) as pool:
                for res in pool.imap_unordered(run_job, jobs):
                    results.update((r.utt_id, r) for r in res)
                    bar.update(len(res))
    return results
