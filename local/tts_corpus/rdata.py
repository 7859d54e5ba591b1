"""A small reader for R's XDR serialisation format and lazy-load databases (``.rdx`` / ``.rdb``).

It reads just enough of the format (R Internals manual, "Serialization formats") to load the
character vectors that ``r-cran-janeaustenr`` ships, without R and without extra Python packages:
vectors (logical, integer, double, character, list), pairlists, symbols, attributes and references.
A lazy-load database is an index ``X.rdx`` (a gzip/zlib-compressed serialised list with
``variables``: name -> (offset, length) into ``X.rdb``) and the data file ``X.rdb`` whose chunks are a
4-byte big-endian uncompressed length followed by zlib data.
"""
from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import Any

# SEXP type codes (R Internals, "Serialization formats").
NILSXP, SYMSXP, LISTSXP, LGLSXP, INTSXP, REALSXP = 0, 1, 2, 10, 13, 14
CHARSXP, STRSXP, VECSXP = 9, 16, 19
REFSXP, NILVALUE_SXP, GLOBALENV_SXP, UNBOUNDVALUE_SXP = 255, 254, 253, 252
MISSINGARG_SXP, BASENAMESPACE_SXP, EMPTYENV_SXP, BASEENV_SXP = 251, 250, 242, 241
_SINGLETONS = (NILVALUE_SXP, GLOBALENV_SXP, UNBOUNDVALUE_SXP, MISSINGARG_SXP, BASENAMESPACE_SXP,
               EMPTYENV_SXP, BASEENV_SXP)
NA_INTEGER = -(2**31)


class RDataError(ValueError):
    """Raised for data this reader cannot parse (wrong header, unsupported type, truncated)."""


class RVector(list):
    """An R vector as a Python list; ``attributes`` holds its R attributes (e.g. ``names``)."""

    def __init__(self, items=(), attributes: dict | None = None):
        super().__init__(items)
        self.attributes = attributes or {}


class _Reader:
    def __init__(self, data: bytes, where: str):
        self.data, self.pos, self.where, self.refs = data, 0, where, []

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise RDataError(f"{self.where}: truncated R data at byte {self.pos}")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def int(self) -> int:
        return struct.unpack(">i", self._take(4))[0]

    def header(self) -> None:
        if self._take(2) != b"X\n":
            raise RDataError(f"{self.where}: not XDR-serialised R data (expected 'X\\n' header)")
        version = self.int()
        self.int(), self.int()  # writer R version, minimal reader R version
        if version == 3:
            self._take(self.int())  # native encoding name, e.g. "UTF-8"
        elif version != 2:
            raise RDataError(f"{self.where}: unsupported serialisation version {version}")

    def item(self) -> Any:
        flags = self.int()
        sxp, has_attr, has_tag = flags & 0xFF, bool(flags & (1 << 9)), bool(flags & (1 << 10))
        if sxp in _SINGLETONS:
            return None
        if sxp == REFSXP:
            idx = flags >> 8 if flags >> 8 else self.int()
            return self.refs[idx - 1]
        if sxp == SYMSXP:
            name = self.item()  # a CHARSXP
            self.refs.append(name)
            return name
        if sxp == LISTSXP:  # pairlist -> dict of tag: value (untagged items get their index)
            out: dict = {}
            while sxp == LISTSXP:
                if has_attr:
                    self.item()  # attributes of a pairlist node: read past them
                tag = self.item() if has_tag else len(out)
                out[tag] = self.item()
                flags = self.int()
                sxp, has_attr, has_tag = flags & 0xFF, bool(flags & (1 << 9)), bool(flags & (1 << 10))
            if sxp not in _SINGLETONS:
                raise RDataError(f"{self.where}: malformed pairlist (type {sxp})")
            return out
        if sxp == CHARSXP:
            n = self.int()
            return None if n == -1 else self._take(n).decode("utf-8", errors="replace")
        if sxp in (LGLSXP, INTSXP):
            n = self.int()
            vals = struct.unpack(f">{n}i", self._take(4 * n))
            value = RVector(None if v == NA_INTEGER else v for v in vals)
        elif sxp == REALSXP:
            n = self.int()
            value = RVector(struct.unpack(f">{n}d", self._take(8 * n)))
        elif sxp in (STRSXP, VECSXP):
            n = self.int()
            value = RVector(self.item() for _ in range(n))
        else:
            raise RDataError(f"{self.where}: unsupported R object type {sxp}")
        if has_attr:
            value.attributes = self.item()
        return value


def unserialize(data: bytes, where: str = "<bytes>") -> Any:
    """Parse one XDR-serialised R object (``serialize(x, NULL)`` / ``.rds`` payload, uncompressed).

    Returns nested Python objects: ``RVector`` (list with ``.attributes``), ``dict`` for pairlists,
    ``str`` for strings (``None`` for NA). Raises ``RDataError`` naming ``where`` on bad data.
    """
    reader = _Reader(data, where)
    reader.header()
    return reader.item()


def _decompress(raw: bytes, where: str) -> bytes:
    if raw[:2] == b"\x1f\x8b":
        return gzip.decompress(raw)
    try:
        return zlib.decompress(raw[4:])
    except zlib.error as e:
        raise RDataError(f"{where}: cannot decompress ({e})") from None


def read_lazyload_db(rdx: str | Path, names: list[str] | None = None) -> dict[str, Any]:
    """Read objects from an R lazy-load database ``X.rdx`` + ``X.rdb`` (e.g. a package's ``data/Rdata``).

    Args:
        rdx: path of the ``.rdx`` index; the ``.rdb`` beside it holds the data.
        names: objects to load (default: all).
    Returns: ``{name: object}`` in index order. Raises ``RDataError`` / ``FileNotFoundError``.
    """
    rdx = Path(rdx)
    rdb = rdx.with_suffix(".rdb")
    index = unserialize(_decompress(rdx.read_bytes(), str(rdx)), str(rdx))
    variables = dict(zip(index.attributes.get("names", []), index))["variables"]
    blob = rdb.read_bytes()
    out = {}
    for name, (offset, length) in zip(variables.attributes["names"], variables):
        if names is not None and name not in names:
            continue
        chunk = blob[offset:offset + length]
        out[name] = unserialize(_decompress(chunk, f"{rdb}:{name}"), f"{rdb}:{name}")
    missing = set(names or ()) - set(out)
    if missing:
        raise RDataError(f"{rdx}: objects not found: {sorted(missing)}")
    return out
