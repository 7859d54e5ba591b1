"""Transcript text for the built-in corpus: Jane Austen (``r-cran-janeaustenr``) and WordNet examples.

Pipeline (sources: ``egs/tts_en/README.md``, "Text"): paragraphs -> sentences -> ``clean_sentence``
(the text a TTS engine reads) -> ``normalize_transcript`` (LibriSpeech style: upper case, words and
apostrophes only). A sentence is kept when its transcript has 5..30 words and its cleaned text holds
only letters, apostrophes and ``,.;:!?``. *Sense and Sensibility* is reserved for an outside evaluation:
it is never read into the pool, and every pool sentence whose transcript also occurs in it is removed.
"""
from __future__ import annotations

import random
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from .debian import package_root
from .rdata import read_lazyload_db

AUSTEN_PACKAGE = "r-cran-janeaustenr"
AUSTEN_DB = "usr/lib/R/site-library/janeaustenr/data/Rdata.rdx"
AUSTEN_BOOKS = ("emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice")
RESERVED_BOOK = "sensesensibility"  # Sense and Sensibility: outside evaluation only, never in our data
WORDNET_PACKAGE = "wordnet-base"
WORDNET_DIR = "usr/share/wordnet"
WORDNET_POS = ("adj", "adv", "noun", "verb")
MIN_WORDS, MAX_WORDS = 5, 30

# Abbreviations are spelled out before sentence splitting, so "Mr." never ends a sentence and the
# spoken words equal the transcript (LibriSpeech writes MISTER, MISSUS, DOCTOR, SAINT).
_ABBREVIATIONS = {"Mr": "Mister", "Mrs": "Missus", "Dr": "Doctor", "St": "Saint", "Esq": "Esquire",
                  "Capt": "Captain", "Col": "Colonel", "Gen": "General", "Rev": "Reverend"}
_ABBREV_RE = re.compile(r"\b(" + "|".join(_ABBREVIATIONS) + r")\.")
_SENTENCE_END_RE = re.compile(r"(?<=[.!?])[\"')\]_]*\s+")
_HEADING_RE = re.compile(r"^(chapter|volume|book)\s+([ivxlc]+|\d+)\.?$", re.IGNORECASE)
_ALLOWED_RE = re.compile(r"^[A-Za-z' ,.;:!?]+$")


@dataclass(frozen=True)
class Sentence:
    """One source sentence: ``text`` is what the TTS engine reads, ``transcript`` its normalised form."""

    text: str
    transcript: str
    source: str  # e.g. "austen:emma", "wordnet:noun"


def normalize_transcript(text: str) -> str:
    """LibriSpeech-style transcript: upper case, words of ``[A-Z']`` separated by one space.

    Every other character is a word boundary; apostrophes at the start or end of a word (quotation
    marks) are removed, inner ones (``DON'T``, ``O'CLOCK``) kept. Accents are stripped (é -> E).
    """
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).upper()
    words = (w.strip("'") for w in re.split(r"[^A-Z']+", text))
    return " ".join(w for w in words if w)


def clean_sentence(raw: str) -> str | None:
    """Turn one raw sentence into the text a TTS engine reads, or ``None`` if it is unusable.

    Spells out abbreviations, turns ``--`` into a comma and ``-`` into a space, drops quotes, italics
    underscores and brackets, strips accents and edge apostrophes. Returns ``None`` when anything but
    letters, apostrophes and ``,.;:!?`` remains (digits, ``&c.``, ``£`` ...), when it does not end with
    ``.!?`` or when its transcript has fewer than 5 or more than 30 words.
    """
    s = unicodedata.normalize("NFKD", raw)
    s = "".join(c for c in s if not unicodedata.combining(c))
    s = _ABBREV_RE.sub(lambda m: _ABBREVIATIONS[m.group(1)], s)
    s = s.replace("--", ", ").replace("-", " ").replace("`", "'")
    s = re.sub(r"[\"_()]", " ", s)
    s = re.sub(r"(?<![A-Za-z])'|'(?![A-Za-z])", " ", s)  # quotation-mark apostrophes
    s = re.sub(r"\s+([,.;:!?])", r"\1", s)
    s = re.sub(r"([,;:])(?:[\s,;:]*[,;:])+", r"\1", s)  # ", ," -> ","
    s = re.sub(r"[,;:]+([.!?])", r"\1", s)
    s = re.sub(r"([.!?])[,;:]+", r"\1", s)
    s = re.sub(r"\s+", " ", s).strip(" ,;:")
    if not s or not _ALLOWED_RE.match(s) or s[-1] not in ".!?" or not re.match(r"[A-Za-z]", s):
        return None
    n = len(normalize_transcript(s).split())
    if not MIN_WORDS <= n <= MAX_WORDS:
        return None
    return s[0].upper() + s[1:]


def split_sentences(paragraph: str) -> list[str]:
    """Split a paragraph (one string) into raw sentences after ``.!?`` (plus closing quotes) and spaces."""
    paragraph = _ABBREV_RE.sub(lambda m: _ABBREVIATIONS[m.group(1)], paragraph).replace("--", " -- ")
    return [p.strip() for p in _SENTENCE_END_RE.split(paragraph) if p.strip()]


def paragraphs(lines: list[str]) -> list[str]:
    """Join a novel's lines into paragraphs (blank lines separate them); chapter/volume headings dropped."""
    out, cur = [], []
    for line in list(lines) + [""]:
        line = (line or "").strip()
        if line and not _HEADING_RE.match(line):
            cur.append(line)
        elif cur:
            out.append(" ".join(cur))
            cur = []
    return out


def _book_sentences(lines: list[str], source: str) -> list[Sentence]:
    out = []
    for para in paragraphs(lines):
        for raw in split_sentences(para):
            text = clean_sentence(raw)
            if text:
                out.append(Sentence(text, normalize_transcript(text), source))
    return out


def load_austen(deb_dir: str | Path, books=AUSTEN_BOOKS) -> list[Sentence]:
    """Usable sentences of the given Austen novels (R lazy-load DB of ``r-cran-janeaustenr``), in book order."""
    db = package_root(AUSTEN_PACKAGE, deb_dir, AUSTEN_DB) / AUSTEN_DB
    novels = read_lazyload_db(db, list(books))
    return [s for b in books for s in _book_sentences(novels[b], f"austen:{b}")]


def reserved_transcripts(deb_dir: str | Path) -> set[str]:
    """Normalised transcripts of every sentence of *Sense and Sensibility* (any length): the exclusion list."""
    db = package_root(AUSTEN_PACKAGE, deb_dir, AUSTEN_DB) / AUSTEN_DB
    lines = read_lazyload_db(db, [RESERVED_BOOK])[RESERVED_BOOK]
    out = set()
    for para in paragraphs(lines):
        for raw in split_sentences(para):
            t = normalize_transcript(re.sub(r"[-_]", " ", raw))
            if t:
                out.add(t)
    return out


def load_wordnet(deb_dir: str | Path) -> list[Sentence]:
    """Usable WordNet 3.0 gloss examples (the ``"..."`` strings after ``|`` in ``data.{adj,adv,noun,verb}``).

    Each example is capitalised and gets a final period when it has no ``.!?``.
    """
    root = package_root(WORDNET_PACKAGE, deb_dir, f"{WORDNET_DIR}/data.noun") / WORDNET_DIR
    out = []
    for pos in WORDNET_POS:
        with open(root / f"data.{pos}", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  ") or " | " not in line:
                    continue  # licence header / no gloss
                for ex in re.findall(r'"([^"]+)"', line.split(" | ", 1)[1]):
                    ex = ex.strip()
                    if ex and ex[-1] not in ".!?":
                        ex += "."
                    text = clean_sentence(ex)
                    if text:
                        out.append(Sentence(text, normalize_transcript(text), f"wordnet:{pos}"))
    return out


def build_pool(deb_dir: str | Path, seed: int, sources=("austen", "wordnet")) -> list[Sentence]:
    """All usable sentences, de-duplicated by transcript, minus *Sense and Sensibility*, shuffled by ``seed``.

    Deterministic: a fixed read order, first occurrence kept, then ``random.Random(seed).shuffle``.
    """
    unknown = set(sources) - {"austen", "wordnet"}
    if unknown:
        raise ValueError(f"unknown text sources {sorted(unknown)} (known: austen, wordnet)")
    sentences = (load_austen(deb_dir) if "austen" in sources else []) + \
                (load_wordnet(deb_dir) if "wordnet" in sources else [])
    banned = reserved_transcripts(deb_dir)
    seen, pool = set(), []
    for s in sentences:
        if s.transcript not in seen and s.transcript not in banned:
            seen.add(s.transcript)
            pool.append(s)
    random.Random(seed).shuffle(pool)
    return pool


def split_pool(pool: list[Sentence], num_train: int, num_dev: int, num_test: int) -> dict[str, list[Sentence]]:
    """Disjoint slices of a shuffled pool: ``test`` first, then ``dev``, ``train``, and the ``rest``.

    Test and dev do not depend on ``num_train``. Raises ``ValueError`` if the pool is too small.
    """
    need = num_train + num_dev + num_test
    if need > len(pool):
        raise ValueError(f"asked for {need} sentences but the text pool holds only {len(pool)}")
    a, b = num_test, num_test + num_dev
    return {"test": pool[:a], "dev": pool[a:b], "train": pool[b:b + num_train], "rest": pool[b + num_train:]}
