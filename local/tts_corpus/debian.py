"""Fetch Debian packages with ``apt-get download`` and unpack them with ``dpkg-deb -x`` (no install, no root).

Files of an installed package are used directly when present; otherwise the ``.deb`` is downloaded once
into a cache folder (default ``download/deb``) and extracted to ``<cache>/<package>/``.
"""
from __future__ import annotations

import subprocess
from pathlib import Path


class DebianPackageError(RuntimeError):
    """Raised when a package can be neither found on the system nor downloaded/extracted."""


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise DebianPackageError(f"'{cmd[0]}' not found: this step needs a Debian/Ubuntu system") from None


def package_root(package: str, cache_dir: str | Path, probe: str) -> Path:
    """Return a folder ``R`` such that ``R / probe`` is a file of ``package`` (e.g. ``usr/share/wordnet/data.noun``).

    Uses the installed system file (``R = /``) when it exists; otherwise downloads ``package``'s
    ``.deb`` into ``cache_dir`` (kept for later runs) and extracts it to ``cache_dir/package``.
    Raises ``DebianPackageError`` with the command to run by hand when the download fails.
    """
    if (Path("/") / probe).is_file():
        return Path("/")
    cache_dir = Path(cache_dir)
    root = cache_dir / package
    if (root / probe).is_file():
        return root
    cache_dir.mkdir(parents=True, exist_ok=True)
    debs = sorted(cache_dir.glob(f"{package}_*.deb"))
    if not debs:
        proc = _run(["apt-get", "download", package], cwd=cache_dir)
        debs = sorted(cache_dir.glob(f"{package}_*.deb"))
        if proc.returncode != 0 or not debs:
            msg = (proc.stderr or proc.stdout).strip().splitlines()
            raise DebianPackageError(
                f"cannot download Debian package '{package}' into {cache_dir}: "
                f"{msg[-1] if msg else 'apt-get failed'}. Run 'apt-get update' or put the .deb there by hand "
                f"(cd {cache_dir} && apt-get download {package}).")
    tmp = cache_dir / f".{package}.partial"
    proc = _run(["dpkg-deb", "-x", str(debs[-1]), str(tmp)])
    if proc.returncode != 0 or not (tmp / probe).is_file():
        raise DebianPackageError(f"{debs[-1]}: cannot extract or lacks {probe}: {proc.stderr.strip()}")
    tmp.rename(root)
    return root
