"""English G2P for Kokoro-82M: ``espeak-ng -q --ipa`` output mapped onto Kokoro's phoneme set.

Kokoro was trained on the phoneme strings of the misaki G2P, which writes each English diphthong as
one symbol and r-coloured vowels as vowel + ɹ. From espeak-ng's IPA (en-us, or en-gb for the British
``b*`` voices) we rewrite: eɪ -> A, aɪ -> I, oʊ -> O (US), əʊ -> Q (British GOAT), aʊ -> W, ɔɪ -> Y,
dʒ -> ʤ, tʃ -> ʧ, ɚ -> əɹ, ɝ -> ɜɹ, a syllabic consonant C̩ -> ᵊC and a glottal stop ʔ -> t (US
"certainly" sˈɜɹʔn̩li -> sˈɜɹtᵊnli), and for US English ɜː -> ɜɹ and no length marks. Punctuation,
which ``--ipa`` drops, is put back: the text is cut after , . ; : ! ? and each piece keeps its mark.
Symbols outside Kokoro's vocabulary are dropped and counted.
"""
from __future__ import annotations

import re
import subprocess

# Ordered: multi-character sequences before their parts.
COMMON = [("dʒ", "ʤ"), ("tʃ", "ʧ"), ("eɪ", "A"), ("aɪ", "I"), ("aʊ", "W"), ("ɔɪ", "Y"), ("ɚ", "əɹ"),
          ("ɝ", "ɜɹ"), ("r", "ɹ"), ("ʲ", ""), ("ɬ", "l"), ("x", "k")]
US = [("oʊ", "O"), ("əʊ", "O"), ("ɜːɹ", "ɜɹ"), ("ɜː", "ɜɹ"), ("ː", "")]
GB = [("əʊ", "Q"), ("oʊ", "Q")]
_SYLLABIC = re.compile("(.)\u0329")
_PIECES = re.compile(r"[^,.;:!?]+[,.;:!?]*")


def accent(voice_name: str) -> str:
    """espeak-ng language for a Kokoro voice: ``en-gb`` for ``bf_*``/``bm_*``, else ``en-us``."""
    return "en-gb" if voice_name.startswith("b") else "en-us"


def espeak_ipa(text: str, lang: str) -> str:
    """``espeak-ng -q --ipa -v lang`` of ``text``, its clause lines joined by spaces.

    Raises ``RuntimeError`` with espeak-ng's message when it fails.
    """
    proc = subprocess.run(["espeak-ng", "-q", "--ipa", "-v", lang, "--stdin"], input=text,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"espeak-ng --ipa failed (rc={proc.returncode}): {proc.stderr.strip()[-200:]}")
    return " ".join(line.strip() for line in proc.stdout.splitlines() if line.strip())


def map_ipa(ipa: str, lang: str) -> str:
    """Rewrite espeak-ng IPA into Kokoro's symbols (module docstring); ``lang`` is en-us or en-gb."""
    ipa = _SYLLABIC.sub("ᵊ\\1", ipa).replace("ʔ", "t")
    for a, b in COMMON + (GB if lang == "en-gb" else US):
        ipa = ipa.replace(a, b)
    return ipa


def phonemize(text: str, lang: str) -> str:
    """Kokoro phoneme string of ``text``: mapped IPA per clause, with the clause's punctuation after it."""
    out = []
    for piece in _PIECES.findall(text) or [text]:
        words = piece.rstrip(",.;:!?")
        marks = piece[len(words):].strip()
        ipa = map_ipa(espeak_ipa(words, lang), lang) if words.strip() else ""
        if ipa or marks:
            out.append(ipa + (marks[:1] if marks else ""))
    return " ".join(out).strip()


def tokenize(phonemes: str, vocab: dict[str, int]) -> tuple[list[int], str]:
    """Token ids of ``phonemes`` and the symbols dropped because ``vocab`` lacks them (as a string)."""
    ids, dropped = [], []
    for ch in phonemes:
        (ids.append(vocab[ch]) if ch in vocab else dropped.append(ch))
    return ids, "".join(sorted(set(dropped)))
