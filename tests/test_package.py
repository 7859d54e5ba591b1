"""The installed package: every entry script runs both as `python zipformer_rwkv/X.py` (what users
type) and as `python -m zipformer_rwkv.X`, from any folder, with no sys.path edit anywhere; run as a
file, no module of the package is imported a second time under a top-level name (its folder is
sys.path[0] then, so `zipformer`, `rwkv7`, `checkpoint`, ... would be importable that way)."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENTRY_SCRIPTS = ("train", "decode", "export", "transcribe")

_PROBE = """
import runpy, sys
from pathlib import Path
script = Path(sys.argv[1])
sys.argv = [str(script), "--help"]
sys.path[0] = str(script.parent)  # what `python zipformer_rwkv/X.py` does
try:
    runpy.run_path(str(script), run_name="__main__")
except SystemExit as e:
    assert e.code in (0, None), e.code
pkg = script.parent
names = {p.stem for p in pkg.glob("*.py")} | {p.name for p in pkg.iterdir() if (p / "__init__.py").is_file()}
print(sorted(m for m in sys.modules if m.split(".")[0] in names))
"""


@pytest.mark.parametrize("name", ENTRY_SCRIPTS)
def test_entry_script_runs_both_ways_from_any_folder(name, tmp_path):
    as_file = subprocess.run([sys.executable, str(ROOT / "zipformer_rwkv" / f"{name}.py"), "--help"], cwd=tmp_path,
                             capture_output=True, text=True)
    assert as_file.returncode == 0 and as_file.stdout.startswith(f"usage: {name}.py"), as_file.stderr[-2000:]
    as_module = subprocess.run([sys.executable, "-m", f"zipformer_rwkv.{name}", "--help"], cwd=tmp_path,
                               capture_output=True, text=True)
    assert as_module.returncode == 0 and "usage:" in as_module.stdout, as_module.stderr[-2000:]


@pytest.mark.parametrize("name", ENTRY_SCRIPTS)
def test_no_package_module_is_imported_twice(name, tmp_path):
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(ROOT / "zipformer_rwkv" / f"{name}.py")],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"  # no top-level `checkpoint`, `zipformer`, ...


def test_no_sys_path_edits():
    files = [p for d in ("zipformer_rwkv", "local", "bench", "tests", "egs") for p in (ROOT / d).rglob("*.py")]
    edits = [f"{p.relative_to(ROOT)}:{i}" for p in files
             for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
             if "sys.path" in line and p.name != "test_package.py"]
    assert not edits, f"sys.path edits (install the package instead): {edits}"
