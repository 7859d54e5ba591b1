#!/usr/bin/env python3
"""Exit 0 when every requirement in a requirements file is installed at a matching version, else 1.

Usage: python3 local/check_requirements.py requirements.txt
Lets the set-up scripts skip `pip install` (slow, and needs the network) when nothing is missing.
"""
import sys
from importlib.metadata import PackageNotFoundError, version

try:
    from packaging.requirements import Requirement
except ImportError:  # a bare machine: let the caller run pip
    print("check_requirements: 'packaging' is not installed", file=sys.stderr)
    sys.exit(1)


def main(path: str) -> int:
    missing = []
    for line in open(path, encoding="utf-8"):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        try:
            have = version(req.name)
        except PackageNotFoundError:
            missing.append(f"{req.name} (not installed)")
            continue
        if req.specifier and not req.specifier.contains(have, prereleases=True):
            missing.append(f"{req.name} {have} (want {req.specifier})")
    for m in missing:
        print(f"check_requirements: {m}", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
