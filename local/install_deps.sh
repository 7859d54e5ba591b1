#!/usr/bin/env bash
# Installs what this project needs on a fresh Debian/Ubuntu machine; a no-op where all is present.
#   Python packages: requirements.txt (CPU torch 2.13.0 first, so pip never pulls a CUDA build), then
#   this repository itself, editable (`pip install -e . --no-deps`), so `import zipformer_rwkv` works
#   from any folder and `python zipformer_rwkv/train.py` needs no path set-up.
#   Debian packages: the TTS engines and sox used to build the built-in corpus (egs/tts_en), the
#   libraries RHVoice links against, libtcmalloc-minimal4 (run.sh preloads it for CPU training:
#   7-18% shorter steps, see README), and libglib2.0-bin (`gresource`, to unpack the ambient noise
#   recordings of local/prepare_ambient_noise.py).
#   Voice bank (prepare.sh --voices bank): local/fetch_voice_bank.sh download/voice_bank downloads the
#   contrib/non-free voice .debs with a private apt sources list (the machine's apt sources stay as
#   they are) and unpacks them there with dpkg-deb -x, plus npm kokoro-js 1.2.1's voice styles.
# As root it runs apt-get itself; otherwise it prints the exact command to run and stops.
# Source it (`. local/install_deps.sh`) or run it; PYTHON selects the interpreter (default python3).
set -eu
_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}

DEB_PACKAGES="sox libsox-fmt-all espeak-ng espeak-ng-data flite festival festvox-kallpc16k \
festvox-kdlpc16k festvox-us-slt-hts festlex-cmu festlex-poslex libtcmalloc-minimal4 \
libglib2.0-0 libpulse0 libao4 libasound2 libdb5.3 libopus0 libsamplerate0 libglib2.0-bin"

missing_debs=""
for p in $DEB_PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing_debs="$missing_debs $p"
done
if [ -n "$missing_debs" ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "install_deps: apt-get install$missing_debs"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing_debs
  else
    echo "install_deps: missing Debian packages. Run:" >&2
    echo "  sudo apt-get install -y --no-install-recommends$missing_debs" >&2
    exit 1
  fi
fi

if ! $PYTHON -c "import torch" 2>/dev/null; then
  echo "install_deps: pip install torch==2.13.0 (CPU)"
  $PYTHON -m pip install -q torch==2.13.0
fi
if ! $PYTHON "$_root/local/check_requirements.py" "$_root/requirements.txt"; then
  echo "install_deps: pip install -r requirements.txt"
  $PYTHON -m pip install -q -r "$_root/requirements.txt"
fi
"$_root/local/fetch_voice_bank.sh" "$_root/download/voice_bank" || echo "install_deps: warning: the voice bank" \
  "could not be fetched (needed only by prepare.sh --voices bank, which fetches it again)" >&2
# The package itself, editable; re-installed when it is missing or points at another checkout.
if ! (cd / && $PYTHON - "$_root" <<'PYEOF'
import importlib.util, pathlib, sys
spec = importlib.util.find_spec("zipformer_rwkv")
want = pathlib.Path(sys.argv[1]).resolve() / "zipformer_rwkv" / "__init__.py"
sys.exit(0 if spec is not None and pathlib.Path(spec.origin).resolve() == want else 1)
PYEOF
); then
  echo "install_deps: pip install -e $_root --no-deps"
  # with setuptools >= 70.1 at hand, build with it (works offline); else pip fetches one
  isolation=""
  $PYTHON -c "import setuptools, sys; sys.exit(tuple(map(int, setuptools.__version__.split('.')[:2])) < (70, 1))" \
    2>/dev/null && isolation="--no-build-isolation"
  $PYTHON -m pip install -q --no-deps $isolation -e "$_root"
fi
