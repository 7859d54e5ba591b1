"""Small helpers shared by every module and entry script (icefall's `icefall/utils.py` names).

Nothing here imports k2 or torchaudio.
"""
import argparse
import collections
import json
import logging
import math
import platform
import socket
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, TextIO, Tuple, Union

import torch
import torch.distributed as dist


class AttributeDict(dict):
    """A dict whose keys are also attributes (`params.batch_idx_train`), as in icefall.

    `str()` gives indented JSON; Paths, devices and dtypes are written as strings.
    """

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"no attribute '{key}'") from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value

    def __delattr__(self, key: str) -> None:
        try:
            del self[key]
        except KeyError:
            raise AttributeError(f"no attribute '{key}'") from None

    def __str__(self) -> str:
        return json.dumps(self, indent=2, default=str, sort_keys=True)


def str2bool(v: str) -> bool:
    """argparse type for `--flag true/false` (icefall's `str2bool`).

    Raises:
      argparse.ArgumentTypeError: for anything but yes/no/true/false/t/f/y/n/1/0.
    """
    if isinstance(v, bool):
        return v
    s = v.lower()
    if s in ("yes", "true", "t", "y", "1"):
        return True
    if s in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {v!r}")


def explicit_options(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set:
    """Names (dest) of the options given on the command line, as opposed to defaults."""
    probe = argparse.ArgumentParser(add_help=False)
    for action in parser._actions:
        if action.option_strings and isinstance(action, argparse._StoreAction):
            probe.add_argument(*action.option_strings, dest=action.dest, default=argparse.SUPPRESS,
                               nargs=action.nargs if action.nargs is not None else None,
                               **({"type": action.type} if action.type else {}))
    known, _ = probe.parse_known_args(argv)
    return set(vars(known))


def add_dataclass_arguments(
    parser: Union[argparse.ArgumentParser, "argparse._ArgumentGroup"],
    cls: type,
    names: Optional[Sequence[str]] = None,
    defaults: Optional[Dict[str, Any]] = None,
    helps: Optional[Dict[str, str]] = None,
) -> None:
    """Add one `--field-name` option per field of the dataclass `cls` (dest = the field name).

    The option's type comes from the field's annotation: bool -> `str2bool` (`--flag true/false`),
    int, float, str; a tuple (e.g. `Tuple[int, ...]`) is read as a str (a comma list that the
    dataclass itself parses). Its default is the field's default, its help the field's
    `metadata["help"]`, its choices `metadata["choices"]` (if any).

    Args:
      parser: an ArgumentParser or argument group.
      cls: a dataclass type.
      names: the fields to add, in this order (default: every field, in declaration order).
      defaults: per-field defaults replacing the field's (e.g. None = "not given").
      helps: per-field help texts replacing `metadata["help"]`.
    Raises:
      TypeError: `cls` is not a dataclass, or a field's annotation is none of the types above.
      KeyError: a name in `names` is not a field of `cls`.
    """
    import dataclasses
    import typing

    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"add_dataclass_arguments needs a dataclass, got {cls!r}")
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for name in names if names is not None else list(by_name):
        if name not in by_name:
            raise KeyError(f"{cls.__name__} has no field {name!r}")
        f, hint = by_name[name], hints[name]
        if hint is bool:
            kind = str2bool
        elif hint in (int, float, str):
            kind = hint
        elif typing.get_origin(hint) is tuple:
            kind = str
        else:
            raise TypeError(f"{cls.__name__}.{name}: no command-line type for {hint!r}")
        if defaults is not None and name in defaults:
            default = defaults[name]
        elif f.default is not dataclasses.MISSING:
            default = f.default
        else:
            raise TypeError(f"{cls.__name__}.{name} has no default; give one in `defaults`")
        kwargs: Dict[str, Any] = dict(type=kind, default=default)
        text = helps.get(name) if helps is not None and name in helps else f.metadata.get("help")
        if text is not None:
            kwargs["help"] = text
        if "choices" in f.metadata:
            kwargs["choices"] = tuple(f.metadata["choices"])
        parser.add_argument("--" + name.replace("_", "-"), **kwargs)


def make_pad_mask(lengths: torch.Tensor, max_len: int = 0) -> torch.Tensor:
    """Boolean mask of padded positions.

    Args:
      lengths: (N,) int64, the number of valid frames of each sequence.
      max_len: width of the mask; at least `lengths.max()` is used.
    Returns:
      (N, max_len) bool, True at padded positions (t >= lengths[n]).
    """
    if lengths.ndim != 1:
        raise ValueError(f"lengths must be 1-D, got shape {tuple(lengths.shape)}")
    max_len = max(max_len, int(lengths.max()) if lengths.numel() else 0)
    steps = torch.arange(max_len, device=lengths.device)
    return steps.unsqueeze(0) >= lengths.unsqueeze(1)


def repo_root() -> Path:
    """The repository root (the folder holding `zipformer_rwkv/`)."""
    return Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------------------
# logging


def setup_logger(
    log_filename: Union[str, Path], log_level: str = "info", use_console: bool = True
) -> Path:
    """Log to `{log_filename}-{YYYY-mm-dd-HH-MM-SS}[-{rank}]` (and the console), as icefall.

    Format: `%(asctime)s %(levelname)s [%(filename)s:%(lineno)d] (rank/world) %(message)s`, the
    `(rank/world)` part and `-{rank}` suffix only when torch.distributed is initialised.
    Replaces any handlers of the root logger.

    Args:
      log_filename: prefix, e.g. `exp_dir / "log" / "log-train"`; folders are created.
      log_level: debug, info, warning, error or critical.
      use_console: also log to stderr.
    Returns:
      the path of the log file.
    Raises:
      ValueError: for an unknown log_level.
    """
    level = getattr(logging, str(log_level).upper(), None)
    if not isinstance(level, int):
        raise ValueError(f"unknown log level {log_level!r}")
    date_time = datetime.now().strftime("%Y-%m-%d-%H-%M-%S")
    fmt = "%(asctime)s %(levelname)s [%(filename)s:%(lineno)d] %(message)s"
    path = Path(f"{log_filename}-{date_time}")
    if dist.is_available() and dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
        fmt = fmt.replace("] %(message)s", f"] ({rank}/{world_size}) %(message)s")
        path = Path(f"{path}-{rank}")
    path.parent.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(filename=path, format=fmt, level=level, filemode="w", force=True)
    if use_console:
        console = logging.StreamHandler()
        console.setLevel(level)
        console.setFormatter(logging.Formatter(fmt))
        logging.getLogger().addHandler(console)
    return path


class MetricsTracker(collections.defaultdict):
    """Summed training statistics (icefall's MetricsTracker), e.g. {"frames": 1200, "loss": 845.2}.

    Values are sums over utterances; `norm_items()` divides by "frames" (or by "utterances" for
    keys starting with `utt_`). Supports `a + b` (non-finite values of `b` are dropped, keeping
    the running sum usable after a bad batch) and `a * 0.99` (decayed running sums).
    """

    def __init__(self):
        super().__init__(int)

    def __add__(self, other: "MetricsTracker") -> "MetricsTracker":
        ans = MetricsTracker()
        ans.update(self)
        for k, v in other.items():
            if math.isfinite(float(v)):
                ans[k] = ans[k] + v
        return ans

    def __mul__(self, alpha: float) -> "MetricsTracker":
        ans = MetricsTracker()
        for k, v in self.items():
            ans[k] = v * alpha
        return ans

    def __setitem__(self, key: str, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            value = value.item()
        super().__setitem__(key, value)

    def norm_items(self) -> List[Tuple[str, float]]:
        """[(key, value / frames or value / utterances)] for every key but the counts."""
        frames = float(self["frames"]) if "frames" in self else 1.0
        utts = float(self["utterances"]) if "utterances" in self else 1.0
        out = []
        for k, v in self.items():
            if k in ("frames", "utterances"):
                continue
            denom = utts if k.startswith("utt_") else frames
            out.append((k, float(v) / denom if denom else float("nan")))
        return out

    def __str__(self) -> str:
        items = self.norm_items()
        by_frame = ", ".join(f"{k}={v:.4g}" for k, v in items if not k.startswith("utt_"))
        by_utt = ", ".join(f"{k}={v:.4g}" for k, v in items if k.startswith("utt_"))
        s = f"{by_frame}, over {float(self['frames']):.2f} frames. " if by_frame else ""
        if by_utt:
            s += f"{by_utt}, over {float(self['utterances']):.2f} utterances."
        return s.strip()

    def reduce(self, device: Union[str, torch.device]) -> None:
        """All-reduce (sum) every value across ranks in place (call on every rank, same keys)."""
        keys = sorted(self.keys())
        values = torch.tensor([float(self[k]) for k in keys], dtype=torch.float64, device=device)
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        for k, v in zip(keys, values.cpu().tolist()):
            self[k] = v

    def write_summary(self, tb_writer: Any, prefix: str, batch_idx: int) -> None:
        """`tb_writer.add_scalar(prefix + key, normalised value, batch_idx)` for every key."""
        for k, v in self.norm_items():
            tb_writer.add_scalar(prefix + k, v, batch_idx)


# --------------------------------------------------------------------------------------------------
# results files (as icefall's `zipformer/decode.py` writes them with `icefall/utils.py`'s helpers)

Result = Tuple[str, Sequence[str], Sequence[str]]


def store_transcripts(filename: Union[str, Path], texts: Iterable[Sequence[Any]]) -> None:
    """Write icefall's `recogs-*.txt`: per item `{cut_id}:\tref={ref}` and `{cut_id}:\thyp={hyp}`.

    Args:
      texts: `(cut_id, ref, hyp)` items, ref/hyp being lists of words (written as Python lists,
        as icefall does); an optional 4th element is a note (e.g. "hit --max-new-tokens") that,
        when non-empty, is written as a third line `{cut_id}:\tnote={note}`.
    """
    with open(filename, "w", encoding="utf8") as f:
        for item in texts:
            cut_id, ref, hyp = item[:3]
            print(f"{cut_id}:\tref={list(ref)}", file=f)
            print(f"{cut_id}:\thyp={list(hyp)}", file=f)
            if len(item) > 3 and item[3]:
                print(f"{cut_id}:\tnote={item[3]}", file=f)


def _per_utt_line(ali: List[Tuple[str, str]]) -> str:
    """Correct words as-is, runs of errors as `(ref words->hyp words)`."""
    parts, refs, hyps = [], [], []
    for r, h in ali + [(None, None)]:
        if r is not None and r == h:
            pass
        elif r is not None:
            refs.append(r)
            hyps.append(h)
            continue
        if refs:
            parts.append(f"({' '.join(refs)}->{' '.join(hyps)})")
            refs, hyps = [], []
        if r is not None:
            parts.append(r)
    return " ".join(parts)


def write_error_stats(
    f: TextIO,
    test_set_name: str,
    results: List[Result],
    enable_log: bool = True,
    compute_CER: bool = False,
) -> float:
    """Write icefall's `errs-*.txt` report and return the WER in percent, rounded to 2 decimals.

    Alignments come from `kaldialign.align(ref, hyp, "*")`. The file starts with
    `%WER = x.xx` and `Errors: i insertions, d deletions, s substitutions, over N reference words
    (c correct)`, followed by the sections `PER-UTT DETAILS`, `SUBSTITUTIONS`, `DELETIONS`,
    `INSERTIONS` and `PER-WORD STATS` (word, correct, errors, count in ref, count in hyp).

    Args:
      f: an open text file. test_set_name: used in the log line.
      results: `(cut_id, ref_words, hyp_words)` items.
      enable_log: log a one-line summary.
      compute_CER: score characters instead of words (words joined without spaces).
    Raises:
      ValueError: if the references hold no words.
    """
    import kaldialign

    eps = "*"
    if compute_CER:
        results = [(c, list("".join(r)), list("".join(h))) for c, r, h in results]
    subs: Dict[Tuple[str, str], int] = collections.defaultdict(int)
    ins: Dict[str, int] = collections.defaultdict(int)
    dels: Dict[str, int] = collections.defaultdict(int)
    # per word: [correct, substituted in ref, substituted in hyp, inserted, deleted]
    words: Dict[str, List[int]] = collections.defaultdict(lambda: [0, 0, 0, 0, 0])
    alignments = []
    for cut_id, ref, hyp in results:
        ali = kaldialign.align(list(ref), list(hyp), eps)
        alignments.append((cut_id, ali))
        for r, h in ali:
            if r == eps:
                ins[h] += 1
                words[h][3] += 1
            elif h == eps:
                dels[r] += 1
                words[r][4] += 1
            elif r != h:
                subs[(r, h)] += 1
                words[r][1] += 1
                words[h][2] += 1
            else:
                words[r][0] += 1
    ref_len = sum(len(r) for _, r, _ in results)
    if ref_len == 0:
        raise ValueError(f"{test_set_name}: the references hold no words, WER is undefined")
    num_ins, num_del, num_sub = sum(ins.values()), sum(dels.values()), sum(subs.values())
    num_err = num_ins + num_del + num_sub
    num_corr = sum(v[0] for v in words.values())
    wer = float(f"{100.0 * num_err / ref_len:.2f}")
    unit = "CER" if compute_CER else "WER"
    if enable_log:
        logging.info(
            f"[{test_set_name}] %{unit} {num_err / ref_len:.2%} [{num_err} / {ref_len}, "
            f"{num_ins} ins, {num_del} del, {num_sub} sub ]"
        )
    print(f"%{unit} = {wer:.2f}", file=f)
    print(
        f"Errors: {num_ins} insertions, {num_del} deletions, {num_sub} substitutions, "
        f"over {ref_len} reference words ({num_corr} correct)",
        file=f,
    )
    print(
        "Search below for sections starting with PER-UTT DETAILS:, SUBSTITUTIONS:, "
        "DELETIONS:, INSERTIONS:, PER-WORD STATS:",
        file=f,
    )
    print("", file=f)
    print("PER-UTT DETAILS: corr or (ref->hyp)  ", file=f)
    for cut_id, ali in alignments:
        print(f"{cut_id}:\t{_per_utt_line(ali)}", file=f)
    print("", file=f)
    print("SUBSTITUTIONS: count ref -> hyp", file=f)
    for (r, h), n in sorted(subs.items(), key=lambda x: (-x[1], x[0])):
        print(f"{n}   {r} -> {h}", file=f)
    print("", file=f)
    print("DELETIONS: count ref", file=f)
    for r, n in sorted(dels.items(), key=lambda x: (-x[1], x[0])):
        print(f"{n}   {r}", file=f)
    print("", file=f)
    print("INSERTIONS: count hyp", file=f)
    for h, n in sorted(ins.items(), key=lambda x: (-x[1], x[0])):
        print(f"{n}   {h}", file=f)
    print("", file=f)
    print("PER-WORD STATS: word  corr tot_errs count_in_ref count_in_hyp", file=f)
    rows = []
    for w, (corr, ref_sub, hyp_sub, n_ins, n_del) in words.items():
        errs = ref_sub + hyp_sub + n_ins + n_del
        rows.append((errs, w, corr, corr + ref_sub + n_del, corr + hyp_sub + n_ins))
    for errs, w, corr, in_ref, in_hyp in sorted(rows, key=lambda x: (-x[0], x[1])):
        print(f"{w}   {corr} {errs} {in_ref} {in_hyp}", file=f)
    return wer


def write_wer_summary(filename: Union[str, Path], wers: Dict[str, float]) -> None:
    """Write icefall's `wer-summary-*.txt`: a `settings\tWER` header, then `{key}\t{wer}` lines,
    best (lowest) first."""
    with open(filename, "w", encoding="utf8") as f:
        print("settings\tWER", file=f)
        for key, val in sorted(wers.items(), key=lambda x: x[1]):
            print(f"{key}\t{val}", file=f)


# --------------------------------------------------------------------------------------------------
# environment, seeds, AMP


def fix_random_seed(seed: int) -> None:
    """Seed Python, numpy and torch (lhotse's `fix_random_seed`, as icefall uses)."""
    from lhotse.utils import fix_random_seed as _lhotse_fix_random_seed

    _lhotse_fix_random_seed(seed)


def _git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args], cwd=repo_root(), capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def get_env_info() -> Dict[str, Any]:
    """Versions and git state recorded in `params.env_info` (icefall's get_env_info, minus k2).

    Keys: torch-version, torch-cuda-available, torch-cuda-version, python-version,
    lhotse-version, zipformer-rwkv-git-branch/-git-sha1 ("-dirty" if modified)/-git-date,
    zipformer-rwkv-path, hostname. Git fields are "" outside a git checkout.
    """
    try:
        import lhotse

        lhotse_version = lhotse.__version__
    except ImportError:
        lhotse_version = ""
    sha1 = _git("rev-parse", "--short", "HEAD")
    if sha1 and _git("status", "--porcelain", "--untracked-files=no"):
        sha1 += "-dirty"
    return {
        "torch-version": str(torch.__version__),
        "torch-cuda-available": torch.cuda.is_available(),
        "torch-cuda-version": str(torch.version.cuda),
        "python-version": platform.python_version(),
        "lhotse-version": lhotse_version,
        "zipformer-rwkv-git-branch": _git("rev-parse", "--abbrev-ref", "HEAD"),
        "zipformer-rwkv-git-sha1": sha1,
        "zipformer-rwkv-git-date": _git("log", "-1", "--format=%ad"),
        "zipformer-rwkv-path": str(repo_root()),
        "hostname": socket.gethostname(),
    }


def _device_type(device: Union[str, torch.device]) -> str:
    return torch.device(device).type


def torch_autocast(
    device: Union[str, torch.device] = "cuda",
    enabled: bool = True,
    dtype: Optional[torch.dtype] = None,
    **kwargs: Any,
) -> torch.autocast:
    """`torch.autocast` for `device`'s type (cuda/cpu/...); dtype defaults to float16 on CUDA
    and bfloat16 elsewhere. Use as `with torch_autocast(device, enabled=params.use_autocast,
    dtype=params.dtype):`."""
    device_type = _device_type(device)
    if dtype is None:
        dtype = torch.float16 if device_type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device_type, dtype=dtype, enabled=enabled, **kwargs)


def create_grad_scaler(
    device: Union[str, torch.device] = "cuda", enabled: bool = True, **kwargs: Any
) -> torch.amp.GradScaler:
    """`torch.amp.GradScaler` for `device`'s type (CPU fp16 training is supported by torch's
    CPU scaler). Pass `enabled=params.use_fp16` (bf16 needs no scaler) and e.g. `init_scale=1.0`
    as icefall does."""
    return torch.amp.GradScaler(_device_type(device), enabled=enabled, **kwargs)
