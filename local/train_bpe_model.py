#!/usr/bin/env python3
"""Train a sentencepiece unigram model on the training transcripts (icefall's settings).

Usage (from the repository root):
  python local/train_bpe_model.py --lang-dir data/lang_bpe_500 --vocab-size 500 \\
      --transcript data/lang_bpe_500/transcript_words.txt

Writes into --lang-dir: unigram_{vocab_size}.model / .vocab, bpe.model (a copy) and tokens.txt
("{piece} {id}" per line). Settings (icefall egs/librispeech/ASR/local/train_bpe_model.py): model_type
unigram, character_coverage 1.0, user_defined_symbols <blk> (id 0) and <sos/eos> (id 1), unk_id 2,
no bos/eos. Exit status 1 with one line when the vocabulary is too large for the text.
"""
import argparse
import logging
import shutil
import sys
from pathlib import Path

import sentencepiece as spm


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lang-dir", type=Path, required=True)
    p.add_argument("--vocab-size", type=int, default=500)
    p.add_argument("--transcript", type=Path, required=True, help="one sentence per line")
    return p


def train_bpe(lang_dir: Path, vocab_size: int, transcript: Path) -> spm.SentencePieceProcessor:
    """Train and write the model (see module docstring); returns the loaded processor.

    Raises:
      FileNotFoundError: no transcript file.
      ValueError: sentencepiece refused the settings (e.g. vocab_size too high for the text).
    """
    if not transcript.is_file():
        raise FileNotFoundError(f"transcript file not found: {transcript}")
    lang_dir.mkdir(parents=True, exist_ok=True)
    prefix = lang_dir / f"unigram_{vocab_size}"
    try:
        spm.SentencePieceTrainer.train(
            input=str(transcript), vocab_size=vocab_size, model_type="unigram",
            model_prefix=str(prefix), input_sentence_size=100000000, character_coverage=1.0,
            user_defined_symbols=["<blk>", "<sos/eos>"], unk_id=2, bos_id=-1, eos_id=-1,
            minloglevel=1)
    except RuntimeError as e:
        raise ValueError(f"{transcript}: sentencepiece failed: {str(e).strip().splitlines()[-1]} "
                         f"(use a smaller --vocab-size for small corpora)") from None
    shutil.copyfile(f"{prefix}.model", lang_dir / "bpe.model")
    sp = spm.SentencePieceProcessor(model_file=str(lang_dir / "bpe.model"))
    with open(lang_dir / "tokens.txt", "w", encoding="utf-8") as f:
        for i in range(sp.get_piece_size()):
            f.write(f"{sp.id_to_piece(i)} {i}\n")
    return sp


def main() -> int:
    logging.basicConfig(format="%(asctime)s %(levelname)s [%(filename)s:%(lineno)d] %(message)s",
                        level=logging.INFO)
    args = get_parser().parse_args()
    try:
        sp = train_bpe(args.lang_dir, args.vocab_size, args.transcript)
    except (FileNotFoundError, ValueError) as e:
        logging.error(str(e))
        return 1
    logging.info(f"wrote {args.lang_dir}/bpe.model ({sp.get_piece_size()} pieces) and tokens.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
