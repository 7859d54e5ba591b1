#!/usr/bin/env bash
# The main job (icefall style): data -> Zipformer2 CTC pre-training -> RWKV-7 LM pre-training ->
# speech LLM -> averaged decoding, then a results table and plots in --exp-dir.
#
# Usage: ./run.sh [--size default|tiny] [--stage N] [--stop-stage 5] [--exp-dir exp] ...
#
#   ./run.sh                           # everything; re-running skips finished stages and resumes
#                                      # an interrupted training from its newest checkpoint
#   ./run.sh --stage 4                 # re-run stages 4..5 (speech LLM and its decoding) only
#   ./run.sh --size tiny --exp-dir exp_tiny   # tiny corpus, tiny models, a few steps (CI)
#   ./run.sh --streaming true --exp-dir exp_streaming   # causal encoder, streaming decoding
#
# Stages (each prints the exact command it runs; paths are relative to the current folder):
#   1  data: ./prepare.sh (built-in TTS corpus, fbank, noise, BPE, LM text) into --data-dir
#   2  Zipformer2 + CTC on the training audio (train.py --model-type ctc) in $exp_dir/ctc,
#      then CTC greedy decoding of dev/test (decode.py): the baseline row; export.py writes the
#      decoded model (same --epoch/--avg/--use-averaged-model) to $exp_dir/ctc/pretrained.pt
#   3  RWKV-7 LM on $data_dir/lm text with the BPE vocabulary (train.py --model-type lm) in
#      $exp_dir/lm, then its perplexity on dev/test transcripts and the LM valid text; export.py
#      writes the evaluated model to $exp_dir/lm/pretrained.pt
#   4  speech LLM in $exp_dir/llm, from the models stages 2 and 3 evaluated (their pretrained.pt;
#      the encoder's structure comes with it)
#   5  speech LLM decoding (greedy and beam search, --epoch/--avg/--use-averaged-model; each also
#      as joint CTC / RWKV-7 search, --ctc-weight), pocketsphinx on the real-speech dev set
#      (local/pocketsphinx_baseline.py, the classic yardstick, in $exp_dir/pocketsphinx), the results
#      table ($exp_dir/RESULTS.md) and the PNGs (training curves, WER per test voice)
#
# Without --stage, a stage whose `.done` marker exists is skipped. An explicit --stage N re-runs
# stages N..stop-stage: their old exp folders are kept as $exp_dir/{ctc,lm,llm}.prev (data is never
# redone here: prepare.sh keeps its own markers). To train a finished stage for more epochs, delete
# its .train.done and raise --ctc-epochs/--lm-epochs/--llm-epochs: it resumes from its last epoch.
# Wall time per stage goes to $exp_dir/timing.tsv.
#
# Options (defaults in brackets; empty = from the --size preset):
#   --stage N, --stop-stage N   [1, 5]
#   --size tiny|default         [default] corpus and model preset (default: sized for 2 CPU cores)
#   --voices default|bank       [default] voices of the built-in corpus (prepare.sh --voices)
#   --augment auto|true|false   [auto] on-the-fly rooms, ambient noise, telephone band, codecs and gain
#                               on the training audio of stages 2 and 4 (train.py --enable-augment;
#                               auto: the conf's augment.enabled); true also makes stage 1 build the
#                               RIR bank and the ambient noise (prepare.sh --augment-assets true)
#   --world-size N              [1] DDP processes for train.py (GPUs, or gloo processes on CPU)
#   --use-gpu auto|true|false   [auto] false hides GPUs (CUDA_VISIBLE_DEVICES=); true fails without one
#   --streaming true|false      [false] a streaming model: stage 2 trains a causal Zipformer2 whose chunk is
#                               the interleave chunk (--causal true --chunk-size 2K --left-context-frames 8K
#                               at 50 Hz for K = --interleave-chunk-frames at 25 Hz) with --running-cmn instead
#                               of --utterance-cmn; stage 5 decodes with decode.py --streaming true (no joint
#                               CTC: --ctc-weight is set to 0). Use its own --exp-dir.
#   --nj N                      [2] parallel jobs of prepare.sh
#   --exp-dir DIR               [exp]
#   --dl-dir DIR, --data-dir DIR  [download, data] as in prepare.sh
#   --corpus NAME               [tts_en] corpus of prepare.sh / egs/NAME/conf.yaml (else
#                               $data_dir/egs/NAME/conf.yaml, written by prepare.sh)
#   --vocab-size N              [500] BPE vocabulary (CTC targets and the RWKV-7 vocabulary)
#   --perturb-speed true|false  []  prepare.sh offline 0.9/1.1 speed perturbation (tiny: false)
#   --real-dev true|false       []  build and decode the real-speech dev set, and run pocketsphinx
#                               on it (prepare.sh --real-dev; tiny: false, default: true)
#   --install-deps true|false   [true] run local/install_deps.sh first
#   --use-tcmalloc auto|false   [auto] preload libtcmalloc_minimal for train.py/decode.py when it is
#                               installed: glibc hands big tensors back to the OS every step and
#                               page-faults them in again; training steps get 7-18% shorter (README)
#   --ctc-epochs N, --lm-epochs N, --llm-epochs N   []  training epochs per stage
#   --ctc-avg N, --llm-avg N    []  --avg of decode.py (--use-averaged-model true when N < epochs)
#   --freeze-encoder true|false []  speech LLM: keep the stage-2 encoder frozen (tiny: false,
#                               default: true)
#   --llm-peft none|lora|state|lora+state  [none] speech LLM: how RWKV-7 is tuned (none = fully)
#   --beam-size N               [4] stage 5 beam search
#   --ctc-weight X              [0.7] stage 5 also decodes with joint CTC / RWKV-7 search (decode.py
#                               --ctc-weight; the speech LLM keeps a CTC head, --ctc-loss-scale 0.3);
#                               0 skips it
#   --ctc-opts, --lm-opts, --llm-opts, --decode-opts "..."   [] extra options appended to the
#                               train.py (decode.py) commands of each stage; later options win
set -eou pipefail
{ # bash reads this whole block before running it: editing run.sh during a run cannot derail the run

stage=
stop_stage=5
size=default
voices=default
augment=auto
world_size=1
use_gpu=auto
streaming=false
nj=2
exp_dir=exp
dl_dir=download
data_dir=data
corpus=tts_en
vocab_size=500
perturb_speed=
real_dev=
install_deps=true
use_tcmalloc=auto
ctc_epochs=
lm_epochs=
llm_epochs=
ctc_avg=
llm_avg=
freeze_encoder=
llm_peft=none
beam_size=4
ctc_weight=0.7
ctc_opts=
lm_opts=
llm_opts=
decode_opts=

root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$root/local/parse_options.sh" || exit 1
python=${PYTHON:-python3}

. "$root/local/log.sh"

die() { echo "$(date "+%Y-%m-%d %H:%M:%S") run.sh: error: $*" >&2; exit 1; }

force=false
if [ -n "$stage" ]; then force=true; else stage=1; fi
[[ "$stage" =~ ^[0-9]+$ && "$stop_stage" =~ ^[0-9]+$ ]] || die "--stage/--stop-stage must be integers"

# ------------------------------------------------------------------------------------ presets
# Encoder (Zipformer2), RWKV-7 and training options per size. tiny: a CI smoke run of a few steps.
# default: sized to run in about an hour on 2 CPU cores (README "Results" has what it reaches).
case "$size" in
  tiny)
    enc_opts="--num-encoder-layers 1,1 --downsampling-factor 1,2 --feedforward-dim 64,64 --num-heads 2,2
      --encoder-dim 32,32 --encoder-unmasked-dim 16,16 --cnn-module-kernel 15,15 --query-head-dim 8
      --value-head-dim 8 --pos-head-dim 4 --pos-dim 16 --utterance-cmn true"
    rwkv_opts="--rwkv-n-layer 2 --rwkv-n-embd 64"
    # a few steps: utterances <= 3 s only; prepare.sh --size tiny caps data/lm at 2000 sentences
    common_opts="--num-workers 0 --log-interval 2 --average-period 1 --warmup-batches 5 --lr-batches 50
      --lr-epochs 2 --num-buckets 2 --min-utt-duration 0.5 --max-utt-duration 3"
    ctc_train_opts="--max-duration 30 --base-lr 0.05"
    lm_train_opts="--max-tokens 20000 --llm-lr 3e-3"
    interleave_chunk=8  # encoder frames (25 Hz) per chunk: 0.32 s
    llm_train_opts="--max-duration 30 --base-lr 0.03 --llm-lr 2e-3 --ctc-loss-scale 0.3 --adapter-type ctc
      --interleave-chunk-frames $interleave_chunk"
    decode_max_duration=60
    : "${perturb_speed:=false}" "${real_dev:=false}"
    : "${ctc_epochs:=2}" "${lm_epochs:=1}" "${llm_epochs:=2}" "${ctc_avg:=1}" "${llm_avg:=1}"
    : "${freeze_encoder:=false}"
    ;;
  default)
    # Sized for 2 CPU cores (README "Results"): a 6.36 M-param Zipformer2 (4 stacks, 128-192 wide;
    # encoder_embed 32 channels instead of icefall's 128: CTC decoding 1.6x faster, CTC training
    # 12% faster, same WER), a 4 x 256 RWKV-7; 3 CTC epochs of 30 s batches, 1 LM epoch, 2
    # speech-LLM epochs (frozen encoder); no speed perturbation (3x the audio); no SpecAugment (it
    # slowed the escape from CTC's blank-only plateau in our short runs); CutMix noise on.
    # --ref-duration 0.1 ends the Zipformer's warm-up regularisation schedules (layer skipping,
    # dropout 0.3 -> 0.1) within the first ~70 updates. --utterance-cmn: per-utterance fbank mean
    # removed (full run: test CTC greedy WER 69.96 vs 75.65, mostly on voices unlike the training ones).
    enc_opts="--num-encoder-layers 2,2,2,2 --downsampling-factor 1,2,4,2 --feedforward-dim 384,512,512,384
      --num-heads 4,4,4,4 --encoder-dim 128,192,192,128 --encoder-unmasked-dim 128,128,128,128
      --cnn-module-kernel 31,31,15,31 --query-head-dim 32 --value-head-dim 12 --pos-head-dim 4 --pos-dim 48
      --encoder-embed-channels 32 --utterance-cmn true"
    rwkv_opts="--rwkv-n-layer 4 --rwkv-n-embd 256"
    common_opts="--log-interval 50 --average-period 10 --warmup-batches 100 --lr-batches 5000 --lr-epochs 10
      --ref-duration 0.1 --num-workers 1 --enable-spec-aug false"
    ctc_train_opts="--max-duration 30 --base-lr 0.045"
    lm_train_opts="--max-tokens 8000 --llm-lr 2e-3"
    # --adapter-type ctc: RWKV-7 reads CTC-compressed, posterior-weighted sums of its own embeddings;
    # --interleave-chunk-frames 16: it writes each 0.64 s chunk's text before it reads the next chunk
    interleave_chunk=16  # 0.64 s
    llm_train_opts="--max-duration 80 --base-lr 0.02 --llm-lr 2e-3 --ctc-loss-scale 0.3
      --adapter-type ctc --interleave-chunk-frames $interleave_chunk"
    # bf16 autocast for the LM and speech-LLM stages where the CPU multiplies bf16 natively
    # (AVX512-BF16 / AMX): 1.2x / 1.38x the float32 throughput there at the same WER (RESULTS.md);
    # the CTC stage stays float32 (0.99x: its matmuls are too small to gain). Where bf16 is
    # emulated it would be slower, so it stays off there.
    if grep -qw -e avx512_bf16 -e amx_bf16 /proc/cpuinfo 2>/dev/null; then
      lm_train_opts+=" --use-bf16 true"
      llm_train_opts+=" --use-bf16 true"
    fi
    decode_max_duration=300
    : "${perturb_speed:=false}" "${real_dev:=true}"
    : "${ctc_epochs:=3}" "${lm_epochs:=1}" "${llm_epochs:=2}" "${ctc_avg:=1}" "${llm_avg:=1}"
    : "${freeze_encoder:=true}"
    # the CTC and speech-LLM stages anneal within their budget, whatever their number of epochs: Eden
    # --lr-batches 200 per CTC epoch and 100 per speech-LLM epoch (~1,280 / ~430 updates per epoch) puts
    # the rate at x ~0.4 / ~0.5 by the stage's last update, where the common 5000 keeps it at x ~0.99
    # (RESULTS.md); --ctc-opts / --llm-opts "--lr-batches N" still win
    ctc_lr_batches_per_epoch=200 llm_lr_batches_per_epoch=100
    ;;
  *) die "--size must be tiny or default, got '$size'" ;;
esac
for epochs in "$ctc_epochs" "$lm_epochs" "$llm_epochs"; do
  [[ "$epochs" =~ ^[1-9][0-9]*$ ]] ||
    die "--ctc-epochs/--lm-epochs/--llm-epochs must be positive integers, got '$epochs'"
done
if [ -n "${ctc_lr_batches_per_epoch:-}" ]; then
  ctc_train_opts+=" --lr-batches $((ctc_lr_batches_per_epoch * ctc_epochs))"
  llm_train_opts+=" --lr-batches $((llm_lr_batches_per_epoch * llm_epochs))"
fi

# --streaming true: the encoder's chunk (50 Hz frames) is the interleave chunk, so each chunk's text is
# written as soon as its audio (plus the encoder's 13-frame look-ahead) has arrived
case "$streaming" in
  true)
    enc_opts="${enc_opts/--utterance-cmn true/--running-cmn true} --causal true
      --chunk-size $((2 * interleave_chunk)) --left-context-frames $((8 * interleave_chunk))"
    stream_opts="--streaming true"
    if [ "$ctc_weight" != 0 ]; then
      log "--streaming true: joint CTC / RWKV-7 search is not streamed, stage 5 decodes without --ctc-weight"
      ctc_weight=0
    fi
    ;;
  false) stream_opts= ;;
  *) die "--streaming must be true or false, got '$streaming'" ;;
esac

case "$augment" in
  auto) aug_opts= ; augment_assets=auto ;;
  true|false) aug_opts="--enable-augment $augment"; augment_assets=$augment ;;
  *) die "--augment must be auto, true or false, got '$augment'" ;;
esac

case "$use_gpu" in
  auto) ;;
  false) export CUDA_VISIBLE_DEVICES= ;;
  true)
    $python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" \
      || die "--use-gpu true, but torch sees no CUDA device"
    ;;
  *) die "--use-gpu must be auto, true or false, got '$use_gpu'" ;;
esac

conf=$root/egs/$corpus/conf.yaml
[ -f "$conf" ] || conf=$data_dir/egs/$corpus/conf.yaml  # prepare.sh writes an imported corpus's here
lang_dir=$data_dir/lang_bpe_$vocab_size
bpe_model=$lang_dir/bpe.model
data_opts=(--conf "$conf" --manifest-dir "$data_dir/fbank" --bpe-model "$bpe_model")
timing=$exp_dir/timing.tsv
mkdir -p "$exp_dir"

if [ "$install_deps" = true ]; then
  PYTHON=$python bash "$root/local/install_deps.sh"
fi

# train.py / decode.py run as "${py[@]}": the interpreter, with tcmalloc preloaded if available
py=($python)
if [ "$use_tcmalloc" = auto ]; then
  # ldconfig from PATH (tests put a fake one there), else /sbin. awk reads all of ldconfig's output:
  # exiting at the first match would kill ldconfig with SIGPIPE (141), which pipefail makes fatal.
  ldconfig=$(command -v ldconfig || echo /sbin/ldconfig)
  tcmalloc=$("$ldconfig" -p 2>/dev/null \
    | awk '/libtcmalloc_minimal\.so\.4 / && lib == "" {lib = $NF} END {print lib}') || tcmalloc=
  if [ -n "$tcmalloc" ]; then
    py=(env "LD_PRELOAD=$tcmalloc${LD_PRELOAD:+:$LD_PRELOAD}" $python)
    log "train.py/decode.py preload $tcmalloc (--use-tcmalloc false to not)"
  fi
elif [ "$use_tcmalloc" != false ]; then
  die "--use-tcmalloc must be auto or false, got '$use_tcmalloc'"
fi

run() {
  # Print a command, then run it.
  log "$*"
  "$@"
}

record_time() {
  # record_time STAGE NAME SECONDS: keep the newest wall time of each stage in $timing
  local tmp=$timing.tmp
  { [ -f "$timing" ] && grep -v "^$1	" "$timing" || true; } > "$tmp"
  printf '%s\t%s\t%s\n' "$1" "$2" "$3" >> "$tmp"
  sort -n "$tmp" > "$timing" && rm -f "$tmp"
}

begin_stage() {
  # begin_stage N DIR: true if stage N runs; with an explicit --stage, its DIR is moved to DIR.prev
  local n=$1 dir=$2
  [ "$stage" -le "$n" ] && [ "$stop_stage" -ge "$n" ] || return 1
  if [ "$force" = true ] && [ -d "$dir" ] && [ -n "$(ls -A "$dir")" ]; then
    log "Stage $n re-run (--stage $stage): moving the old $dir to $dir.prev"
    rm -rf "$dir.prev"
    mv "$dir" "$dir.prev"
  fi
  mkdir -p "$dir"
  stage_t0=$(date +%s)
  stage_work=false
}

end_stage() {
  # end_stage N NAME: record the stage's wall time if it trained or decoded anything (a stage
  # skipped by its markers keeps the time of the run that did the work)
  if [ "$stage_work" = true ]; then record_time "$1" "$2" $(( $(date +%s) - stage_t0 )); fi
}

use_avg() {
  # use_avg EPOCH AVG: true when epoch-(EPOCH-AVG).pt exists to average from (icefall's
  # --use-averaged-model needs it), false for --avg = --epoch (then the last epoch is decoded)
  if [ "$1" -gt "$2" ]; then echo true; else echo false; fi
}

last_epoch() {
  # The largest N of DIR/epoch-N.pt (0 if none).
  local n=0 f e
  for f in "$1"/epoch-*.pt; do
    [ -e "$f" ] || continue
    e=${f##*/epoch-}; e=${e%.pt}
    [[ "$e" =~ ^[0-9]+$ ]] && [ "$e" -gt "$n" ] && n=$e
  done
  echo "$n"
}

train() {
  # train DIR NUM_EPOCHS [train.py options]: train into DIR unless DIR/.train.done exists; an
  # interrupted run continues from its newest epoch-N.pt or mid-epoch checkpoint-N.pt (train.py
  # finds it; a time-based checkpoint-N.pt is written every --save-every-minutes, default 5).
  local dir=$1 epochs=$2; shift 2
  if [ -f "$dir/.train.done" ]; then
    log "$dir/.train.done exists: skipping training"; return 0
  fi
  if [ "$(last_epoch "$dir")" -lt "$epochs" ]; then
    stage_work=true
    run "${py[@]}" "$root/zipformer_rwkv/train.py" --exp-dir "$dir" --num-epochs "$epochs" \
      --world-size "$world_size" "$@"
  fi
  touch "$dir/.train.done"
}

decode() {
  # decode DIR MARKER [decode.py options]: decode unless DIR/.MARKER.done exists
  local dir=$1 marker=$2; shift 2
  if [ -f "$dir/.$marker.done" ]; then
    log "$dir/.$marker.done exists: skipping decoding"; return 0
  fi
  stage_work=true
  run "${py[@]}" "$root/zipformer_rwkv/decode.py" --exp-dir "$dir" "$@"
  touch "$dir/.$marker.done"
}

export_model() {
  # export_model DIR EPOCH AVG USE_AVG: DIR/pretrained.pt = the model the stage's decode.py
  # evaluated (same --epoch/--avg/--use-averaged-model), unless DIR/.export-epoch-EPOCH-avg-AVG.done
  local dir=$1 marker=$1/.export-epoch-$2-avg-$3.done
  if [ -f "$marker" ] && [ -f "$dir/pretrained.pt" ]; then
    log "$marker exists: skipping export"; return 0
  fi
  rm -f "$dir"/.export-*.done
  run $python "$root/zipformer_rwkv/export.py" --exp-dir "$dir" --epoch "$2" --avg "$3" --use-averaged-model "$4"
  touch "$marker"
}

export_ctc() { export_model "$exp_dir/ctc" "$ctc_epochs" "$ctc_avg" "$(use_avg "$ctc_epochs" "$ctc_avg")"; }
export_lm() { export_model "$exp_dir/lm" "$lm_epochs" 1 false; }  # stage 3 evaluates the last epoch

log "run.sh: size=$size stages $stage..$stop_stage exp_dir=$exp_dir data_dir=$data_dir world_size=$world_size"

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log "Stage 1: data ($corpus, --size $size) in $data_dir"
  stage_t0=$(date +%s)
  stage_work=true  # unless prepare.sh's last marker shows the data was there already
  [ -f "$data_dir/lm/.$corpus.done" ] && [ -f "$lang_dir/.done" ] && stage_work=false
  run "$root/prepare.sh" --corpus "$corpus" --size "$size" --voices "$voices" --nj "$nj" --dl-dir "$dl_dir" \
    --data-dir "$data_dir" --vocab-size "$vocab_size" --perturb-speed "$perturb_speed" --real-dev "$real_dev" \
    --augment-assets "$augment_assets"
  end_stage 1 data
fi

if begin_stage 2 "$exp_dir/ctc"; then
  log "Stage 2: Zipformer2 + CTC in $exp_dir/ctc, then CTC greedy decoding (baseline)"
  train "$exp_dir/ctc" "$ctc_epochs" --model-type ctc "${data_opts[@]}" $enc_opts $common_opts $ctc_train_opts \
    $aug_opts $ctc_opts
  decode "$exp_dir/ctc" "decode-greedy_search-epoch-$ctc_epochs-avg-$ctc_avg" \
    --epoch "$ctc_epochs" --avg "$ctc_avg" \
    --use-averaged-model "$(use_avg "$ctc_epochs" "$ctc_avg")" --decoding-method greedy_search \
    --max-duration "$decode_max_duration" \
    "${data_opts[@]}" $decode_opts
  export_ctc  # stage 4 starts from the model decoded here
  end_stage 2 ctc
fi

if begin_stage 3 "$exp_dir/lm"; then
  log "Stage 3: RWKV-7 language model in $exp_dir/lm on $data_dir/lm, then perplexity"
  train "$exp_dir/lm" "$lm_epochs" --model-type lm --lm-dir "$data_dir/lm" --bpe-model "$bpe_model" \
    --tokenizer bpe $rwkv_opts $common_opts $lm_train_opts $lm_opts
  # perplexity of the last epoch's weights (an LM epoch is long: averaging epochs would reach far back)
  decode "$exp_dir/lm" "decode-ppl-epoch-$lm_epochs" --epoch "$lm_epochs" --avg 1 --use-averaged-model false \
    --lm-dir "$data_dir/lm" "${data_opts[@]}" $decode_opts
  export_lm
  end_stage 3 lm
fi

if begin_stage 4 "$exp_dir/llm"; then
  log "Stage 4: speech LLM in $exp_dir/llm (encoder: $exp_dir/ctc, RWKV-7: $exp_dir/lm)"
  for f in "$exp_dir/ctc/epoch-$ctc_epochs.pt" "$exp_dir/lm/epoch-$lm_epochs.pt"; do
    [ -f "$f" ] || die "$f not found: run stages 2 and 3 first (with the same --ctc-epochs/--lm-epochs)"
  done
  export_ctc  # no-ops after stages 2 and 3; here for exp folders from before they exported
  export_lm
  encoder_ckpt=$exp_dir/ctc/pretrained.pt
  rwkv_ckpt=$exp_dir/lm/pretrained.pt
  # the encoder's structure (and --utterance-cmn) comes from $encoder_ckpt, as decode.py reads a model's
  train "$exp_dir/llm" "$llm_epochs" --model-type llm --encoder-checkpoint "$encoder_ckpt" \
    --rwkv-checkpoint "$rwkv_ckpt" --tokenizer bpe --freeze-encoder "$freeze_encoder" \
    --llm-peft "$llm_peft" "${data_opts[@]}" $common_opts $llm_train_opts $aug_opts $llm_opts
  end_stage 4 llm
fi

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  log "Stage 5: speech LLM decoding (greedy, beam $beam_size; joint CTC weight $ctc_weight), results table and plots"
  stage_t0=$(date +%s)
  stage_work=false
  if [ "$force" = true ]; then rm -f "$exp_dir"/llm/.decode-*.done; fi
  dec_tag=epoch-$llm_epochs-avg-$llm_avg${stream_opts:+-streaming}  # in the markers: other settings decode anew
  dec_common="--epoch $llm_epochs --avg $llm_avg --use-averaged-model $(use_avg "$llm_epochs" "$llm_avg")
    --max-duration $decode_max_duration $stream_opts"
  decode "$exp_dir/llm" "decode-greedy_search-$dec_tag" $dec_common --decoding-method greedy_search \
    "${data_opts[@]}" $decode_opts
  decode "$exp_dir/llm" "decode-beam_search-$beam_size-$dec_tag" $dec_common --decoding-method beam_search --beam-size "$beam_size" \
    "${data_opts[@]}" $decode_opts
  if [ "$ctc_weight" != 0 ]; then  # joint CTC / RWKV-7 search through the speech LLM's CTC head
    decode "$exp_dir/llm" "decode-greedy_search-ctc-$ctc_weight-$dec_tag" $dec_common --decoding-method greedy_search \
      --ctc-weight "$ctc_weight" "${data_opts[@]}" $decode_opts
    decode "$exp_dir/llm" "decode-beam_search-$beam_size-ctc-$ctc_weight-$dec_tag" $dec_common \
      --decoding-method beam_search --beam-size "$beam_size" --ctc-weight "$ctc_weight" "${data_opts[@]}" $decode_opts
  fi
  # the yardstick: pocketsphinx's WER on the real-speech dev set, a row of the results table
  real_split=$($python "$root/local/data_conf.py" get "$conf" real_speech)
  real_cuts=$data_dir/fbank/${corpus}_cuts_$real_split.jsonl.gz
  if [ "$real_dev" = true ] && [ -n "$real_split" ] && [ ! -f "$exp_dir/pocketsphinx/.$real_split.done" ]; then
    if ! $python -c "import pocketsphinx" 2>/dev/null; then
      log "warning: pocketsphinx is not installed (pip install pocketsphinx): no yardstick row for $real_split"
    else
      stage_work=true
      run $python "$root/local/pocketsphinx_baseline.py" --cuts "$real_cuts" --name "$real_split" --exp-dir "$exp_dir"
      touch "$exp_dir/pocketsphinx/.$real_split.done"
    fi
  fi
  run $python "$root/local/plot_training.py" --exp-dir "$exp_dir" --output "$exp_dir/training_curves.png"
  run $python "$root/local/plot_wer_per_voice.py" --exp-dir "$exp_dir" --test-set test \
    --cuts "$data_dir/fbank/${corpus}_cuts_test.jsonl.gz" --output "$exp_dir/wer_per_voice_test.png"
  run $python "$root/local/plot_wer_per_voice.py" --exp-dir "$exp_dir" --test-set test --group-by duration \
    --cuts "$data_dir/fbank/${corpus}_cuts_test.jsonl.gz" --output "$exp_dir/wer_per_length_test.png"
  end_stage 5 decode
  run $python "$root/local/summarize_results.py" --exp-dir "$exp_dir" --output "$exp_dir/RESULTS.md"
fi

log "Done (stages $stage..$stop_stage)"
exit 0
}
