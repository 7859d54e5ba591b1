#!/usr/bin/env bash
# GPU checks of the compiled Triton WKV7 kernel and of training at real scale, in one command
# (about 4-5 minutes on one H100; each step has a time limit, 8 minutes in all at most):
#   1. tests/rwkv7/test_wkv7_cuda.py: compiled kernel vs the float64 reference (fwd, state, every gradient)
#   2. bench/bench_wkv7.py --device cuda: ours vs fla's chunk_rwkv7, (8, 4096, 64, 64) and (1, 65536, 16, 64) bf16
#   3. bench/bench_scale.py: Zipformer2 large + RWKV-7 0.4B-shape training throughput, then one epoch of
#      train.py via mp.spawn (NCCL) on a tiny synthetic corpus
# --dry-run also compiles the kernels ahead of time for sm_90 (bench/wkv7_compile_check.py).
# Tables go to --out FILE (default $OUT/gpu_check.md when OUT is set, else ./gpu_check.md), the full
# output to the same name with .log. Wheels in .whl/ (git-ignored; carry it) of packages this Python
# lacks are installed into a temporary folder for this run only: the project's lhotse, lilcom, soundfile,
# rwkv, ... (the GPU image lacks them) and the optional flash-linear-attention (fla_core, einops).
#
# Usage:
#   bash bench/gpu_check.sh                    # on a CUDA machine
#   bash bench/gpu_check.sh --dry-run --out /tmp/gpu_check.md   # CPU, small shapes, TRITON_INTERPRET=1
# Exit status: the number of steps that failed (0: all ran and passed).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DRY=0
MD=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1; shift ;;
    --out) [ $# -ge 2 ] || { echo "gpu_check.sh: --out needs a FILE" >&2; exit 2; }; MD=$2; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1 (--dry-run, --out FILE)" >&2; exit 2 ;;
  esac
done
[ "$DRY" = 1 ] || unset TRITON_INTERPRET  # the compiled kernel is what the GPU run checks
if [ "$DRY" = 0 ] && ! $PY -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  echo "gpu_check.sh: no CUDA device (torch.cuda.is_available() is False); use --dry-run on CPU" >&2
  exit 2
fi
[ -n "$MD" ] || MD=${OUT:+$OUT/}gpu_check.md
LOG=${MD%.md}.log
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$(dirname "$MD")"
: > "$MD"
: > "$LOG"
export PYTHONUNBUFFERED=1

# Wheels in .whl/ of distributions this Python lacks go into a temporary folder on PYTHONPATH, for this
# run only (the GPU image has no lhotse, lilcom, soundfile, rwkv, ...; fla is optional everywhere).
missing=()
for w in .whl/*.whl; do
  [ -e "$w" ] || continue
  $PY -c "import importlib.metadata as m, sys; m.version(sys.argv[1])" "$(basename "$w" | cut -d- -f1)" \
    2>/dev/null || missing+=("$w")
done
if [ ${#missing[@]} -gt 0 ]; then
  if $PY -m pip install -q --no-deps --no-index --target "$TMP/site" "${missing[@]}" >>"$LOG" 2>&1; then
    export PYTHONPATH="$TMP/site${PYTHONPATH:+:$PYTHONPATH}"
    WHEELS="wheels installed from .whl/ for this run: ${missing[*]##*/}"
  else
    WHEELS="pip could not install ${missing[*]##*/} (see the log)"
  fi
fi

FAILED=0
step() {  # step TITLE SECONDS CMD... : run CMD with a time limit; its stdout table lines go to $MD
  local title=$1 limit=$2 rc t0=$SECONDS
  shift 2
  printf '\n## %s\n\n`%s`\n\n' "$title" "$*" >> "$MD"
  echo "== $title: $*" | tee -a "$LOG"
  timeout "$limit" "$@" > "$TMP/out" 2>> "$LOG"
  rc=$?
  cat "$TMP/out" >> "$LOG"
  grep -E '^$|^\||^(torch|triton|fla vs|Training|train\.py via|[0-9]+ (passed|failed|skipped)|SKIPPED|FAILED|ERROR)' "$TMP/out" \
    | cat -s >> "$MD"
  [ $rc = 124 ] && echo "TIMED OUT after ${limit} s" >> "$MD"
  printf '\nexit status %s, %s s\n' "$rc" "$((SECONDS - t0))" >> "$MD"
  [ $rc = 0 ] || FAILED=$((FAILED + 1))
}

{
  echo "# GPU checks ($(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
  echo
  if [ "$DRY" = 1 ]; then
    echo "DRY RUN on CPU: small shapes, Triton interpreter (TRITON_INTERPRET=1); no number here is a GPU measurement."
  else
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | sed 's/^/GPU: /'
  fi
  $PY -c "import torch, triton; print(f'torch {torch.__version__}, triton {triton.__version__}')" 2>&1
  echo "${WHEELS:-no wheels needed from .whl/}"
} >> "$MD"

if [ "$DRY" = 1 ]; then
  export TRITON_INTERPRET=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  step "WKV7 kernel vs float64 reference (interpreter; CUDA tests skip)" 300 \
    $PY -m pytest -q -rs -p no:cacheprovider tests/rwkv7/test_wkv7_triton.py tests/rwkv7/test_wkv7_cuda.py
  step "Compiled WKV7 kernels build for sm_90 (ahead of time, no GPU)" 300 \
    $PY bench/wkv7_compile_check.py --num-warps 4 8
  step "WKV7 speed (dry run shape)" 300 \
    $PY bench/bench_wkv7.py --device cpu --shape 1 64 2 64 --chunk-sizes 16 --repeats 1 --naive-repeats 1
  step "Training throughput (dry run) and train.py via mp.spawn" 600 \
    $PY bench/bench_scale.py --dry-run --device cpu --train-py "$TMP/trainpy"
else
  step "Compiled WKV7 kernel vs float64 reference" 120 \
    $PY -m pytest -q -rs -p no:cacheprovider tests/rwkv7/test_wkv7_cuda.py
  step "WKV7 speed: ours vs fla chunk_rwkv7" 150 $PY bench/bench_wkv7.py --device cuda --chunk-sizes
  step "Training throughput at scale and train.py via mp.spawn (NCCL)" 210 \
    $PY bench/bench_scale.py --train-py "$TMP/trainpy"
fi
printf '\n%s step(s) failed; full output: %s\n' "$FAILED" "$LOG" >> "$MD"
cat "$MD"
exit "$FAILED"
