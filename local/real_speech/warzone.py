"""Voice clips of the game Warzone 2100 (Debian ``warzone2100-data``) with their text.

``base.wz`` is a zip. Its ``audio/`` folder holds 11025 Hz mono Ogg Vorbis clips:
- tutorial narration (``audio/tutorial/tutN.ogg``), whose text is the ``message`` next to the clip in
  ``script/tutorial.js`` (``{"audio": "tut2.ogg", ..., "message": _("Oil resources are ...")}``);
- voice prompts, whose text is the ``/*comment*/`` after their line in ``audio/audio.cfg``
  (``audio "pcv337.ogg" oneshot 100 1800 /*Structure Under Attack*/``). Clips under ``audio/sfx/``
  are sound effects and skipped; a file name found in several folders gives one clip per folder.
Speakers are labelled per top folder (``wz_tutorial``, ``wz_memressp``, ...): the voices were not
identified, so two labels may be one person.
"""
from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import soundfile as sf

from . import Clip, SourceError

TUTORIAL_JS = "script/tutorial.js"
AUDIO_CFG = "audio/audio.cfg"
_TUTORIAL_RE = re.compile(r'"audio"\s*:\s*"([^"]+)"[^{}]*?"message"\s*:\s*_\("((?:[^"\\]|\\.)*)"\)')
_CFG_RE = re.compile(r'^\s*audio\s+"([^"]+)"[^/\n]*(?:/\*(.*?)\*/)?')


def tutorial_texts(js: str) -> Dict[str, str]:
    """``{clip file name: message}`` from the text of ``script/tutorial.js`` (JS string escapes undone)."""
    return {a: re.sub(r"\\(.)", r"\1", t) for a, t in _TUTORIAL_RE.findall(js)}


def cfg_texts(cfg: str) -> Dict[str, str]:
    """``{clip file name: comment}`` for the ``audio "x.ogg" ... /*comment*/`` lines of ``audio.cfg``
    that have a non-empty comment."""
    out = {}
    for line in cfg.splitlines():
        m = _CFG_RE.match(line)
        if m and m.group(2) and m.group(2).strip():
            out.setdefault(m.group(1), m.group(2).strip())
    return out


def _member_id(member: str) -> Tuple[str, str]:
    """(clip id, speaker) of ``audio/<top>/.../<name>.ogg``."""
    parts = member[len("audio/"):-len(".ogg")].split("/")
    return "wz_" + "_".join(parts), "wz_" + parts[0]


def _loader(wz: Path, member: str):
    def load():
        try:
            with zipfile.ZipFile(wz) as z:
                data, sr = sf.read(io.BytesIO(z.read(member)), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, KeyError, zipfile.BadZipFile, OSError) as e:
            raise SourceError(f"{wz}:{member}: cannot decode the audio ({e})") from None
        return np.ascontiguousarray(data[:, 0]), sr
    return load


def warzone_clips(wz: Path) -> List[Clip]:
    """The clips of `wz` (``base.wz``) that have text, tutorial first, each folder in file-name order.

    Raises:
      SourceError: `wz` is not a zip, or lacks ``script/tutorial.js`` / ``audio/audio.cfg``, or a text
        names a clip the zip lacks.
    """
    wz = Path(wz)
    try:
        with zipfile.ZipFile(wz) as z:
            names = z.namelist()
            for member in (TUTORIAL_JS, AUDIO_CFG):
                if member not in names:
                    raise SourceError(f"{wz}: lacks {member}")
            js = z.read(TUTORIAL_JS).decode("utf-8")
            cfg = z.read(AUDIO_CFG).decode("utf-8", errors="replace")
    except (zipfile.BadZipFile, OSError) as e:
        raise SourceError(f"{wz}: not a readable zip ({e})") from None
    by_name: Dict[str, List[str]] = {}
    for n in sorted(names):
        if n.startswith("audio/") and n.endswith(".ogg") and not n.startswith("audio/sfx/"):
            by_name.setdefault(n.rsplit("/", 1)[1], []).append(n)
    clips = []
    for texts in (tutorial_texts(js), cfg_texts(cfg)):
        for name, text in sorted(texts.items(), key=lambda kv: _natural(kv[0])):
            if name not in by_name:
                if any(n.endswith("/" + name) for n in names):
                    continue  # a sound effect (audio/sfx/)
                raise SourceError(f"{wz}: the text for {name} names no audio/ clip in the zip")
            for member in by_name[name]:
                cid, speaker = _member_id(member)
                if all(c.id != cid for c in clips):
                    clips.append(Clip(cid, "warzone2100", speaker, text, f"{wz.name}:{member}", _loader(wz, member)))
    return clips


def _natural(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]
