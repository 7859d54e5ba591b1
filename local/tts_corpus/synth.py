"""Speak sentences with every engine of ``voices.ENGINE_SAMPLE_RATES`` and store 16 kHz mono 16-bit FLAC via ``sox -D``.

espeak-ng, flite, festival, RHVoice and MBROLA (espeak-ng front-end) run as programs (the voice-bank
ones from ``voicebank``'s folders); Piper and Kokoro in-process (``neural``). One ``SynthJob`` holds up
to ~40 utterances of one voice. Festival jobs run as a single
``festival --batch`` script (about 0.23 s start-up per process, measured with festival 2.5 on
Debian 12); festival stops at the first error, so a failing utterance is recorded and the batch
restarts after it. A sentence that cannot be spoken (engine or sox error, no/empty/silent output,
< ``MIN_DURATION`` s) becomes a ``Result`` with a ``reason`` instead of a duration: the caller lists
it in ``skipped.txt``, nothing is dropped silently.

Cache: with ``SynthJob.cache_dir`` set, every FLAC made is also hard-linked (copied across file systems)
to ``<cache_dir>/<speaker>/<key>.flac``, ``key`` a hash of engine, voice, text and prosody params;
an utterance whose key is there is linked from the cache instead of synthesised, so a re-run (or an
interrupted one) only speaks what is new.
"""
from __future__ import annotations

import functools
import hashlib
import json
import multiprocessing
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from . import neural, voicebank
from .voices import Voice

CACHE_VERSION = 1  # bump when an engine's output for the same key changes
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
    """Utterances of one voice; ``cache_dir`` (a folder, or None for no cache) as in the module docstring."""

    voice: Voice
    utterances: tuple[Utterance, ...]
    cache_dir: str | None = None


@dataclass(frozen=True)
class Result:
    """``duration`` in seconds (samples / 16000) on success; otherwise ``None`` and a one-line ``reason``.

    ``cached``: taken from the cache; ``cpu_s``: this utterance's share of its job's CPU seconds
    (worker and child processes), 0 for cached ones.
    """

    utt_id: str
    duration: float | None
    reason: str | None = None
    cached: bool = False
    cpu_s: float = 0.0


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

    Applies ``sox_speed`` (if in params) and ``gain_db``; resamples to 16 kHz mono 16-bit.
    """
    if not wav.is_file() or wav.stat().st_size <= 44:
        return Result(utt.utt_id, None, "engine produced no audio")
    effects = (["speed", str(utt.params["sox_speed"])] if "sox_speed" in utt.params else []) + \
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


def _rhvoice(voice: Voice, utt: Utterance, wav: Path) -> str | None:
    cmd, env = voicebank.rhvoice(voice.name)
    rc, err = _run([*cmd, "-o", str(wav)], input=utt.text, env=env)
    return f"RHVoice-test failed (rc={rc}): {err}" if rc != 0 else None


def _mbrola(voice: Voice, utt: Utterance, wav: Path) -> str | None:
    cmd, env = voicebank.mbrola(voice.name)
    rc, err = _run([*cmd, "-s", str(utt.params.get("rate", 160)), "-p", str(utt.params.get("pitch", 50)),
                    "-w", str(wav), "--stdin"], input=utt.text, env=env)
    return f"espeak-ng -v mb-{voice.name} failed (rc={rc}): {err}" if rc != 0 or "rror" in err else None


def _neural(voice: Voice, utt: Utterance, wav: Path) -> str | None:
    speak = {"piper": neural.piper, "kokoro": neural.kokoro}[voice.engine]
    try:
        audio, rate = speak(voice.name, utt.text, utt.params)
    except (RuntimeError, ValueError) as e:
        return f"{voice.engine} failed: {str(e)[:200]}"
    sf.write(str(wav), audio, rate, subtype="FLOAT")
    return None


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
    lines = [*voicebank.festival_setup(voice.name), f"(voice_{voice.name})"]
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


ENGINES = {"espeak": _espeak, "flite": _flite, "rhvoice": _rhvoice, "mbrola": _mbrola,
           "piper": _neural, "kokoro": _neural}  # festival: batched, _festival_job


def _synthesise(voice: Voice, utts: list[Utterance], tmp: Path) -> list[Result]:
    try:
        voicebank.check(voice)
    except voicebank.VoicePackageError as e:
        return [Result(u.utt_id, None, str(e)) for u in utts]
    if voice.engine == "festival":
        return _festival_job(SynthJob(voice, tuple(utts)), tmp)
    speak = ENGINES.get(voice.engine)
    results = []
    for u in utts:
        wav = tmp / "utt.wav"
        wav.unlink(missing_ok=True)
        err = speak(voice, u, wav) if speak else f"unknown TTS engine '{voice.engine}'"
        results.append(Result(u.utt_id, None, err) if err else to_flac(wav, u))
    return results


def cache_path(cache_dir: str | Path, voice: Voice, utt: Utterance) -> Path:
    """``<cache_dir>/<speaker>/<key>.flac``: ``key`` = sha1 of engine, voice, text and params (+ CACHE_VERSION)."""
    blob = json.dumps([CACHE_VERSION, voice.engine, voice.name, utt.text, utt.params], sort_keys=True)
    return Path(cache_dir) / voice.speaker / f"{hashlib.sha1(blob.encode()).hexdigest()}.flac"


def _link(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (replacing it); a copy where links are impossible. Atomic for readers."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def run_job(job: SynthJob) -> list[Result]:
    """Synthesise every utterance of ``job`` into its ``out_path``; one ``Result`` per utterance, in order.

    Utterances found in ``job.cache_dir`` are linked from there; new ones are added to it. Safe to call
    in a ``multiprocessing`` worker; temporary WAVs live in a private temp folder.
    """
    done: dict[str, Result] = {}
    todo = []
    for u in job.utterances:
        hit = cache_path(job.cache_dir, job.voice, u) if job.cache_dir else None
        if hit is not None and hit.is_file():
            _link(hit, Path(u.out_path))
            done[u.utt_id] = Result(u.utt_id, sf.info(str(hit)).frames / SAMPLE_RATE, cached=True)
        else:
            todo.append(u)
    if todo:
        t0 = os.times()
        with tempfile.TemporaryDirectory(prefix="tts_") as d:
            fresh = _synthesise(job.voice, todo, Path(d))
        t1 = os.times()
        cpu = (t1.user + t1.system + t1.children_user + t1.children_system
               - t0.user - t0.system - t0.children_user - t0.children_system)
        for u, r in zip(todo, fresh):
            done[r.utt_id] = Result(r.utt_id, r.duration, r.reason, cpu_s=cpu / len(todo))
            if r.duration is not None and job.cache_dir:
                dst = cache_path(job.cache_dir, job.voice, u)
                dst.parent.mkdir(parents=True, exist_ok=True)
                _link(Path(u.out_path), dst)
    return [done[u.utt_id] for u in job.utterances]


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
