"""Tokenizers for the language model, behind one small interface:
`encode(str) -> List[int]`, `decode(List[int]) -> str`, `eos_id`, `vocab_size`.

* `RWKVWorldTokenizer`: the RWKV World vocabulary (`rwkv_vocab_v20230424.txt`), greedy
  longest-byte-match encoding as in BlinkDL's `rwkv/rwkv_tokenizer.py` (`TRIE_TOKENIZER`). The file
  is read from the `rwkv` PyPI package (listed in requirements.txt), so the repository carries no
  1 MB data copy and users get exactly BlinkDL's file; an explicit `vocab_file` path may be given
  instead. Token 0 is end-of-document (`eos_id = 0`).
* `BpeTokenizer`: an icefall sentencepiece model (`data/lang_bpe_500/bpe.model`: `<blk>` = 0,
  `<sos/eos>` = 1, unk = 2; `eos_id = 1`).
"""
import ast
import importlib.util
from pathlib import Path
from typing import Dict, List, Optional, Union

WORLD_VOCAB_NAME = "rwkv_vocab_v20230424.txt"


class Tokenizer:
    """Interface shared by the tokenizers: text <-> token ids."""

    eos_id: int
    vocab_size: int

    def encode(self, text: str) -> List[int]:
        raise NotImplementedError

    def decode(self, ids: List[int]) -> str:
        raise NotImplementedError


def world_vocab_path() -> Path:
    """Path of `rwkv_vocab_v20230424.txt` inside the installed `rwkv` package (not imported).

    Raises:
      FileNotFoundError: the package (or the file in it) is absent, with the fix.
    """
    spec = importlib.util.find_spec("rwkv")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the RWKV World vocabulary {WORLD_VOCAB_NAME} comes from the 'rwkv' PyPI package: "
            "`pip install rwkv` (see requirements.txt), or pass the file's path"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / WORLD_VOCAB_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found in the installed 'rwkv' package; pass the vocab file's path")
    return path


class RWKVWorldTokenizer(Tokenizer):
    """RWKV World tokenizer: greedy longest match over a byte trie (BlinkDL's `rwkv`
    package, `rwkv/rwkv_tokenizer.py`).

    Args:
      vocab_file: `rwkv_vocab_v20230424.txt` (lines `<id> <python str or bytes literal> <byte length>`);
        None reads it from the `rwkv` package.
    Attributes:
      eos_id: 0 (end-of-document; not in the file).
      vocab_size: 65536, the model's embedding rows (the file defines ids 1..65529).
    Raises:
      ValueError: a malformed line (file and line number in the message).
    """

    eos_id = 0
    vocab_size = 65536

    def __init__(self, vocab_file: Optional[Union[str, Path]] = None):
        path = Path(vocab_file) if vocab_file is not None else world_vocab_path()
        self.vocab_file = path
        self.id_to_bytes: Dict[int, bytes] = {}
        self._trie: dict = {}  # byte -> child node; key -1 holds the token id ending here
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    idx = int(line[: line.index(" ")])
                    token = ast.literal_eval(line[line.index(" ") : line.rindex(" ")].strip())
                    token = token.encode("utf-8") if isinstance(token, str) else token
                    if not isinstance(token, bytes) or len(token) != int(line[line.rindex(" ") :]):
                        raise ValueError("byte length does not match")
                except (ValueError, SyntaxError) as e:
                    raise ValueError(f"{path}:{lineno}: malformed vocabulary line {line.rstrip()!r} ({e})") from e
                self.id_to_bytes[idx] = token
                node = self._trie
                for byte in token:
                    node = node.setdefault(byte, {})
                node[-1] = idx
        missing = [b for b in range(256) if bytes([b]) not in {t for t in self.id_to_bytes.values() if len(t) == 1}]
        if missing:
            raise ValueError(f"{path}: single-byte tokens missing for bytes {missing[:5]}; cannot encode all text")

    def encode_bytes(self, data: bytes) -> List[int]:
        """Greedy longest-prefix match, left to right: bytes -> ids."""
        ids, i, n, root = [], 0, len(data), self._trie
        while i < n:
            node, j, best, best_end = root, i, -1, i
            while j < n:
                node = node.get(data[j])
                if node is None:
                    break
                j += 1
                tok = node.get(-1)
                if tok is not None:
                    best, best_end = tok, j
            ids.append(best)
            i = best_end
        return ids

    def encode(self, text: str) -> List[int]:
        """UTF-8 text -> token ids (no eos added)."""
        return self.encode_bytes(text.encode("utf-8"))

    def decode_bytes(self, ids: List[int]) -> bytes:
        """Ids -> concatenated bytes; id 0 (eos) contributes nothing.

        Raises:
          ValueError: an id outside the vocabulary file (ids 65530..65535 exist in the model only).
        """
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                continue
            tok = self.id_to_bytes.get(i)
            if tok is None:
                raise ValueError(f"token id {i} is not in {self.vocab_file.name}")
            out.append(tok)
        return b"".join(out)

    def decode(self, ids: List[int]) -> str:
        """Ids -> text; invalid UTF-8 (a sequence cut inside a character) becomes U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")


class BpeTokenizer(Tokenizer):
    """An icefall sentencepiece model (e.g. `data/lang_bpe_500/bpe.model`).

    `decode` drops `<blk>` (0) and `<sos/eos>` (1), which icefall defines as user symbols.

    Raises:
      FileNotFoundError: the model file does not exist.
    """

    def __init__(self, model_file: Union[str, Path]):
        import sentencepiece as spm

        path = Path(model_file)
        if not path.is_file():
            raise FileNotFoundError(f"sentencepiece model not found: {path} (run prepare.sh to train it)")
        self.sp = spm.SentencePieceProcessor(model_file=str(path))
        self.vocab_size = self.sp.get_piece_size()
        eos = self.sp.piece_to_id("<sos/eos>")
        self.eos_id = eos if eos != self.sp.unk_id() else 1
        blk = self.sp.piece_to_id("<blk>")
        self._special = {self.eos_id} | ({blk} if blk != self.sp.unk_id() else set())

    def encode(self, text: str) -> List[int]:
        return self.sp.encode(text, out_type=int)

    def decode(self, ids: List[int]) -> str:
        return self.sp.decode([int(i) for i in ids if int(i) not in self._special])


def get_tokenizer(kind: str, path: Optional[Union[str, Path]] = None) -> Tokenizer:
    """Factory: `kind` "world" (RWKV World vocab; path optional) or "bpe" (sentencepiece model path).

    Raises:
      ValueError: unknown kind, or "bpe" without a path.
    """
    if kind in ("world", "rwkv_world"):
        return RWKVWorldTokenizer(path)
    if kind in ("bpe", "sentencepiece"):
        if path is None:
            raise ValueError("tokenizer kind 'bpe' needs the path of a sentencepiece model (bpe.model)")
        return BpeTokenizer(path)
    raise ValueError(f"unknown tokenizer kind {kind!r}; expected 'world' or 'bpe'")
