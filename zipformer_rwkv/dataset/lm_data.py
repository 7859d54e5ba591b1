"""Text data for RWKV-7 language-model pre-training (`--model-type lm`).

Reads plain text (one sentence per line, e.g. `data/lm/train.txt` written by prepare.sh), tokenizes
each line once, and batches sentences by token count. The sampler has icefall/lhotse-style
`set_epoch`, `state_dict` and `load_state_dict`, so `--start-batch` resumes with the very next batch,
and it shards batches over DDP ranks (every rank gets the same number of batches).
"""
import random
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

import torch

from zipformer_rwkv.errors import ConfigError, MissingFileError


def read_text_lines(path: Path, encode: Callable[[str], List[int]], max_len: int = 0) -> List[List[int]]:
    """Token ids of each non-empty line of a UTF-8 text file.

    Args:
      path: the text file.
      encode: tokenizer, str -> list of ids.
      max_len: keep at most this many tokens per line (0: no limit).
    Raises:
      FileNotFoundError / ValueError: naming the file, if it is missing or has no text.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"LM text file {path} does not exist (run prepare.sh first)")
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            ids = encode(line)
            if max_len > 0:
                ids = ids[:max_len]
            if ids:
                out.append(ids)
    if not out:
        raise ConfigError(f"LM text file {path} contains no non-empty lines")
    return out


class TokenBatchSampler:
    """Batches of sentence indices with at most `max_tokens` tokens (counting padding).

    Sentences are shuffled per epoch (`seed + epoch`), sorted by length inside windows of
    `100 * batches` sentences to limit padding, cut into batches, the batch order shuffled again,
    and batch b goes to rank `b % world_size` (the remainder is dropped so ranks stay in step).

    Args:
      lengths: token count of each sentence.
      max_tokens: budget per batch, counted as `num_sentences * longest_sentence`.
      shuffle: shuffle per epoch (False: file order, for validation).
      world_size, rank: DDP sharding.
      seed: base seed.
    """

    def __init__(
        self,
        lengths: List[int],
        max_tokens: int,
        shuffle: bool = True,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
    ):
        if max_tokens < max(lengths):
            raise ValueError(
                f"--max-tokens {max_tokens} is smaller than the longest sentence ({max(lengths)} tokens)"
            )
        self.lengths = lengths
        self.max_tokens = max_tokens
        self.shuffle = shuffle
        self.world_size = world_size
        self.rank = rank
        self.seed = seed
        self.epoch = 0
        self._skip = 0  # batches of this epoch already consumed (resume)
        self._yielded = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _all_batches(self) -> List[List[int]]:
        order = list(range(len(self.lengths)))
        if self.shuffle:
            random.Random(self.seed + self.epoch).shuffle(order)
            window = 2048
            order = [
                i
                for s in range(0, len(order), window)
                for i in sorted(order[s : s + window], key=lambda j: self.lengths[j])
            ]
        batches, cur, longest = [], [], 0
        for i in order:
            new_longest = max(longest, self.lengths[i])
            if cur and new_longest * (len(cur) + 1) > self.max_tokens:
                batches.append(cur)
                cur, new_longest = [], self.lengths[i]
            cur.append(i)
            longest = new_longest
        if cur:
            batches.append(cur)
        if self.shuffle:
            random.Random(self.seed + self.epoch + 1_000_003).shuffle(batches)
        usable = len(batches) - len(batches) % self.world_size if len(batches) >= self.world_size else len(batches)
        return batches[:usable][self.rank :: self.world_size] or batches[:1]

    def __len__(self) -> int:
        return len(self._all_batches())

    def __iter__(self) -> Iterator[List[int]]:
        batches = self._all_batches()
        start, self._skip = self._skip, 0
        self._yielded = start
        for b in batches[start:]:
            self._yielded += 1
            yield b

    def state_dict(self) -> Dict[str, int]:
        """Epoch and number of batches consumed in it (for `checkpoint-N.pt`)."""
        return {"epoch": self.epoch, "batches_yielded": self._yielded, "seed": self.seed}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        """Resume: the next iteration of epoch `state['epoch']` skips the consumed batches."""
        self.epoch = state["epoch"]
        self.seed = state.get("seed", self.seed)
        self._skip = state["batches_yielded"]


class TextBatches:
    """Iterable of LM batches `{"tokens": (N, L) int64 padded with 0, "lengths": (N,) int64}`.

    Iterating runs the sampler in the main process (no workers: tokenized text is in memory).
    """

    def __init__(self, sentences: List[List[int]], sampler: TokenBatchSampler):
        self.sentences = sentences
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        for idx in self.sampler:
            seqs = [self.sentences[i] for i in idx]
            lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
            tokens = torch.zeros(len(seqs), int(lengths.max()), dtype=torch.long)
            for r, s in enumerate(seqs):
                tokens[r, : len(s)] = torch.tensor(s, dtype=torch.long)
            yield {"tokens": tokens, "lengths": lengths}


def make_text_dataloader(
    path: Path,
    encode: Callable[[str], List[int]],
    max_tokens: int,
    shuffle: bool,
    world_size: int = 1,
    rank: int = 0,
    seed: int = 0,
    max_len: int = 0,
    sampler_state_dict: Optional[dict] = None,
) -> TextBatches:
    """Tokenize `path` and return batches; `dl.sampler` has set_epoch/state_dict/load_state_dict."""
    sentences = read_text_lines(path, encode, max_len)
    sampler = TokenBatchSampler(
        [len(s) for s in sentences], max_tokens, shuffle, world_size, rank, seed
    )
    if sampler_state_dict is not None:
        sampler.load_state_dict(sampler_state_dict)
    return TextBatches(sentences, sampler)
