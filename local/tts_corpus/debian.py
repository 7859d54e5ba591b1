"""Fetch Debian packages with ``apt-get download`` and unpack them with ``dpkg-deb -x`` (no install, no root).

`package_root`: files of an installed package are used directly when present; otherwise the ``.deb``
is downloaded once (the machine's apt sources) into a cache folder (default ``download/deb``) and
extracted to ``<cache>/<package>/``.

`private_download`: ``.deb`` files from a suite or component the machine's apt sources lack (trixie's
``blanket``, contrib/non-free voices), with a private apt configuration: its own sources list, package
lists and cache under one folder, so /etc/apt and /var/lib/apt are never touched. The voice bank's
shell fetcher calls it as a script:

    python local/tts_corpus/debian.py --apt-dir DIR/apt --dest DIR/debs --suite bookworm \
        --components "main contrib non-free" PACKAGE ...
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

MIRROR = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


class DebianPackageError(RuntimeError):
    """Raised when a package can be neither found on the system nor downloaded/extracted."""


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise DebianPackageError(f"'{cmd[0]}' not found: this step needs a Debian/Ubuntu system") from None


def _last_line(proc: subprocess.CompletedProcess, default: str) -> str:
    """The last non-empty line of a command's stderr (else stdout): apt-get's error, in one line."""
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    return lines[-1].strip() if lines else default


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
            raise DebianPackageError(
                f"cannot download Debian package '{package}' into {cache_dir}: "
                f"{_last_line(proc, 'apt-get failed')}. Run 'apt-get update' or put the .deb there by hand "
                f"(cd {cache_dir} && apt-get download {package}).")
    tmp = cache_dir / f".{package}.partial"
    proc = _run(["dpkg-deb", "-x", str(debs[-1]), str(tmp)])
    if proc.returncode != 0 or not (tmp / probe).is_file():
        raise DebianPackageError(f"{debs[-1]}: cannot extract or lacks {probe}: {proc.stderr.strip()}")
    tmp.rename(root)
    return root


def private_download(packages: list[str], dest: str | Path, apt_dir: str | Path, suite: str,
                     components: str = "main", mirror: str = MIRROR, keyring: str = KEYRING) -> list[Path]:
    """Download the ``.deb`` of each of `packages` not yet in `dest`, with a private apt configuration.

    Writes ``apt_dir/sources.list`` (``deb [signed-by=keyring] mirror suite components``) and keeps the
    package lists and cache under `apt_dir`; runs ``apt-get update`` and ``apt-get download`` only when
    a package is missing. Returns the ``.deb`` paths, one per package, in the order given.

    Raises:
      DebianPackageError: apt-get is absent or fails (the message is one line: the step and apt's last
        line), or a package's ``.deb`` is not in `dest` afterwards.
    """
    dest, apt_dir = Path(dest).resolve(), Path(apt_dir).resolve()

    def found(p: str) -> list[Path]:
        return sorted(dest.glob(f"{p}_*.deb"))

    missing = [p for p in packages if not found(p)]
    if missing:
        lists, cache = apt_dir / "lists", apt_dir / "cache"
        for d in (lists / "partial", cache / "archives" / "partial", dest):
            d.mkdir(parents=True, exist_ok=True)
        sources = apt_dir / "sources.list"
        sources.write_text(f"deb [signed-by={keyring}] {mirror} {suite} {components}\n")
        print(f"apt-get download {' '.join(missing)} (private sources list {sources})", file=sys.stderr)
        opts = [f"-o=Dir::Etc::SourceList={sources}", "-o=Dir::Etc::SourceParts=/dev/null",
                f"-o=Dir::State::Lists={lists}", f"-o=Dir::Cache={cache}",
                "-o=Debug::NoLocking=1", "-o=APT::Sandbox::User=root", "-qq"]
        for what, cmd in ((f"apt-get update ({mirror} {suite} {components})", ["update"]),
                          (f"apt-get download {' '.join(missing)}", ["download", *missing])):
            proc = _run(["apt-get", *opts, *cmd], cwd=dest)
            if proc.returncode != 0:
                raise DebianPackageError(f"{what} failed: {_last_line(proc, '(no message)')}")
    out = []
    for p in packages:
        debs = found(p)
        if not debs:
            raise DebianPackageError(f"apt-get download {p}: no {p}_*.deb in {dest}")
        out.append(debs[-1])
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line of `private_download`: prints the .deb paths; exit status 1 with one line on error."""
    p = argparse.ArgumentParser(description="Download .debs with a private apt configuration.")
    p.add_argument("packages", nargs="+")
    p.add_argument("--dest", type=Path, required=True, help="folder of the .deb files")
    p.add_argument("--apt-dir", type=Path, required=True, help="folder of the private sources list, lists, cache")
    p.add_argument("--suite", required=True, help="Debian suite, e.g. bookworm or trixie")
    p.add_argument("--components", default="main", help='e.g. "main contrib non-free"')
    p.add_argument("--mirror", default=MIRROR)
    args = p.parse_args(argv)
    try:
        for deb in private_download(args.packages, args.dest, args.apt_dir, args.suite, args.components,
                                    args.mirror):
            print(deb)
    except DebianPackageError as e:
        print(f"{Path(__file__).name}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
