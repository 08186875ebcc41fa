#!/usr/bin/env bash
# The one ASR pipeline of every espnet_ext recipe (recipes symlink it and call it from run.sh).
# Stages and options: ./asr.sh --help (help_message and the option block below).
#
# Conventions of every stage:
#   - a step is done when its done marker <output dir>/.done.<step>, written after the step
#     succeeded, holds. The markers of the steps whose files change under a finished pipeline
#     (features and length filter, decodings, scores, the Table-3 jobs) record the step's inputs
#     (content of lists and configs; size and time of audio files and checkpoints) and outputs
#     (size and time): when one changed since (a replaced recording, a truncated ark, a deleted
#     hypothesis file) this is said and the step redone with its old outputs removed first
#     (espnet_ext.recipe.done_marker: is_done/mark_done). The other markers hold while they exist
#     (trainings resume from ESPnet's own checkpoints). Delete a marker (or the output dir) to redo
#     a step by hand;
#   - one row per stage and config/tag is appended to ${expdir}/stage_times.tsv: stage, name,
#     tag, wall s, CPU s (user+sys of every process the step waited for), load average, date and
#     ran|skipped (RESULTS.md keeps, per stage and tag, the latest row that did work);
#   - log lines: "<date> (asr.sh:<line>) <message>" on stderr.
set -euo pipefail

log() {
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (asr.sh:${BASH_LINENO[0]}) $*" >&2
}
min() { local a=$1; for b in "$@"; do [ "$b" -lt "$a" ] && a=$b; done; echo "$a"; }

# General
stage=1                 # first stage to run
stop_stage=16           # last stage to run
nj=4                    # parallel jobs of the feature stage
stats_nj=               # parallel jobs of the statistics stages (default: nj)
inference_nj=4          # parallel decoding jobs per test set
ngpu=0                  # GPUs for ASR/LM training (0: CPU); ILM-stage trainings use at most 1
num_nodes=1             # nodes for ASR/LM training (> 1: cmd_backend=slurm, one Slurm job)
train_cpu_procs=1       # ngpu=0: ASR training processes (DDP over gloo, one thread each)
gpu_inference=false     # decode on GPU (one per job)
cmd_backend=${cmd_backend:-}  # job backend: local or slurm (default: environment, then cmd.sh)
python=python3          # python interpreter (the project's .venv after path.sh)
dumpdir=dump            # features and LM text
expdir=exp              # experiments
results_md=RESULTS.md   # output of stage 16

# Data
local_data_opts=        # options of local/data.sh (stage 1)
train_set=              # training set name (data/<train_set>)
valid_set=              # validation set name
test_sets=              # sets to decode and score (space separated)
speed_perturb_factors=  # stage 2: e.g. "0.9 1.0 1.1" (empty: no speed perturbation)
fs=16000                # sample rate of the audio
num_mel_bins=80         # fbank dimension
skip_bad_audio=false    # true: log and drop unreadable audio instead of failing
min_frames=10           # stage 4: drop shorter train/valid utterances
max_frames=3000         # stage 4: drop longer train/valid utterances (0: no limit)

# Token list
token_type=char         # char, word, bpe or hugging_face
token_tag=              # token list directory name (default: from token_type)
token_train_text=       # text for the token list (default: data/<train_set>/text)
remove_space=false      # char: drop spaces (Chinese) instead of emitting <space>
nbpe=300                # bpe: vocabulary size
bpemode=unigram         # bpe: unigram or bpe
hf_model=               # hugging_face: tokenizer (a local dir or a Hugging Face name in the cache)
hf_vocab=full           # hugging_face: full (the PLM vocabulary, ids kept) or compact (pieces of token_train_text)
plm_download=false      # true: fetch hf_model/plm_model names that are not cached (needs network)
token_listdir=data/token_list  # token lists: <token_listdir>/<token_tag>/tokens.txt

# LM
use_lm=true             # train an LM (stages 6-8) and decode with it (shallow fusion)
lm_config=conf/train_lm_lstm_tiny.yaml  # LM config; also the external LMs of stage 12
lm_args=                # extra options of the LM training module
lm_tag=                 # LM experiment name (default: config name + token tag)
lm_train_text=          # Kaldi-format LM text(s) (default: data/<train_set>/text)
lm_fold_length=150      # folded batching of every LM-like training
lm_ppl_sets=            # stage 8 perplexity sets (default: valid_set + test_sets)

# PLM teacher features (stage 9; HKD distillers)
plm_model=              # frozen teacher (a local dir or a cached Hugging Face name; empty: no stage 9)
plm_layer=-1            # teacher layer (-1: last; 0: embeddings)
plm_batch_size=64       # sentences per teacher forward pass
plm_misaligned_policy=skip  # skip: empty features (no distillation) for misaligned utts; fail: stop
plm_gpu=false           # extract on a GPU (cuda_cmd --gpu 1)
plm_dir=                # teacher features (default: <dumpdir>/plm)

# ASR
asr_config=             # training config (required from stage 10)
asr_args=               # extra options of the training module
use_tensorboard=        # true/false: ASR and LM trainings write tensorboard logs to <exp>/tensorboard
                        # (empty: the training config's use_tensorboard, ESPnet's default true)
asr_tag=                # experiment name (default: config name + token tag)
asr_stats_dir=          # stage 10 output (default: <expdir>/asr_stats_fbank_<token tag>)
asr_train_module=espnet2.bin.asr_train          # e.g. espnet_ext.bin.cif_asr_train
asr_inference_module=espnet2.bin.asr_inference  # e.g. espnet_ext.bin.asr_inference
feats_normalize=global_mvn  # global_mvn (stats of stage 10) or utterance_mvn
speech_fold_length=800  # folded batching of speech
text_fold_length=150    # folded batching of text
distillers=none         # one model per entry (none, acd, lrd, hkd, mse, cos, ...): --distiller of the CIF trainer; tag suffix _<d>

# Internal LM, density ratio and DR-KD (stages 12-13, fused decoding in 14-15)
use_ilm=false           # true: ILM estimators, DR/DR-KD LMs, weight tuning, fused decodings, Table 3
ilm_methods="none sf ilme_z ilme_l dr dr_2gram drkd_z drkd_l"  # Table 3 rows to tune and decode
ilm_test_sets=          # intra-domain test sets (default: test_sets without valid and cross sets)
ilm_intra_text=         # intra external-LM text with use_lm=false (default: data/<train_set>/text)
ilm_cross_text=         # cross-domain external-LM text, Kaldi "id sentence" (empty: intra only)
ilm_cross_valid_set=    # set tuning the cross-domain weights (default: valid_set)
ilm_cross_test_sets=    # cross-domain test sets (default: ilm_test_sets)
drlm_config=conf/train_drlm_lstm_mini.yaml    # DR-LSTM LM on the ASR transcripts
drkd_config=conf/train_drkd_lstm_mini.yaml    # DR-KD students (DR-KD-Z, DR-KD-L)
ilm_ctx_config=conf/train_ilm_ctx_mini.yaml   # ILME-L context learner (ASR model frozen)
ilm_train_args=         # extra options of every stage-12 training (external LMs, DR-LSTM, ILME-L, DR-KD), e.g. "--seed 2"
ilm_weights=0.1,0.2,0.3,0.4,0.5     # stage 13 lambda_ILM grid
ilm_lm_weights=0.1,0.2,0.3,0.4,0.5,0.6  # stage 13 lambda_ELM grid
ilm_tune_max_utts=0     # stage 13 tunes on at most this many utterances per dev set (0: all)

# Decoding, scoring and report
inference_config=       # decoding config (beam size, lm_weight, ...)
inference_args=         # extra options of the inference module
inference_tag=          # decoding dir name (default: decode_<config>[_lm_<lm tag>]_<model>)
inference_asr_model=valid.acc.ave.pth  # ASR checkpoint to decode with
inference_lm=valid.loss.ave.pth        # LM checkpoint of shallow fusion
inference_batch_size=1  # utterances per decoding batch (stock ESPnet: 1)
inference_num_threads=1 # CPU threads per decoding job
inference_without_lm=false  # use_lm=true: also decode and score without the LM (own decode_* dir)
score_types=            # cer, wer, ter (default: "cer wer"; "cer" with remove_space=true)
plot_cif_fires=false    # stage 16: PNG of the CIF fires on the first utterance of the first test set
timestamp_test_sets=    # stage 15: word-time errors on these test sets (default: those with data/<set>/word_times.ctm)
pack_models=true        # stage 16: pack each model (+ decode config, LM) into exp/asr_<tag>/packed_model.zip

help_message=$(cat <<EOF
Usage: $0 --train_set <set> --valid_set <set> --test_sets "<sets>" --asr_config <yaml> [options]

Stages (--stage N --stop_stage M; every step skips work already done):
   1  data preparation: local/data.sh, fix + validate data/<set>
   2  speed perturbation of the training set (--speed_perturb_factors)
   3  fbank features: dump/fbank/<set>
   4  length filter of train/valid; LM training text without dev/test sentences
   5  token list (char | word | bpe | hugging_face)
   6  LM statistics                                                    (use_lm)
   7  LM training                                                      (use_lm)
   8  LM perplexity on the valid and test sets                         (use_lm)
   9  PLM teacher features of train/valid (plm_model, a distiller other than none)
  10  ASR statistics (shapes, feats_stats.npz for GlobalMVN)
  11  ASR training, one model per distiller
  12  internal LM: LM statistics, external LMs (intra without use_lm, cross with
      ilm_cross_text), DR-LSTM, DR-2gram, ILME-L context learner, DR-KD-Z/L     (use_ilm)
  13  ILM perplexities and parameter counts; fusion-weight grid on the dev set(s) (use_ilm)
  14  decoding: with the LM (shallow fusion) and/or without; use_ilm: every Table 3 method
      with the tuned weights
  15  sclite scoring of every decoding; word timestamp errors (CIF fires and a CTC-alignment
      baseline) on test sets with reference word times (data/<set>/word_times.ctm)
  16  RESULTS.md: packed models, sclite tables, LM perplexities, stage times, learning curves, CIF fire
      plot, Table 3 (use_ilm) and Table 1 (several distillers)
EOF
)
replaced_options=(
    "print_names=the derived names are fixed by the options (see --help)"
    "decode_without_lm=--inference_without_lm true"
    "variant=--distillers <d> (one model per distiller, e.g. --distillers \"none acd lrd hkd\")"
    "ilm=--use_ilm true"
    "ilm_opts=the ilm_* options of asr.sh (--ilm_weights, --ilm_lm_weights, --ilm_tune_max_utts, ...)"
    "cross_text=--ilm_cross_text"
    "cross_dev=--ilm_cross_valid_set"
    "cross_test=--ilm_cross_test_sets"
    "dev_max_utts=--ilm_tune_max_utts"
    "lm_weights=--ilm_lm_weights"
    "ctx_config=--ilm_ctx_config"
)

. utils/parse_options.sh
if [ $# -ne 0 ]; then
    log "unexpected arguments: $*\n${help_message}"
    exit 2
fi

[ -n "${cmd_backend}" ] && export cmd_backend
# shellcheck disable=SC1091
. ./path.sh
# shellcheck disable=SC1091
. ./cmd.sh

# ------------------------------------------------------------------------- derived settings
for _opt in stage stop_stage; do
    if ! [[ "${!_opt}" =~ ^[0-9]+$ ]]; then
        log "--${_opt} '${!_opt}' is not a stage number: the stages are 1-16 (./asr.sh --help)"
        exit 2
    fi
done
if [ "${stage}" -lt 1 ] || [ "${stage}" -gt 16 ]; then
    log "there is no stage ${stage}: the stages are 1-16 (internal LM: --use_ilm true --stage 12)"
    exit 2
fi
if [ "${stop_stage}" -lt "${stage}" ]; then
    log "--stop_stage ${stop_stage} comes before --stage ${stage}: no stage would run (stages 1-16)"
    exit 2
fi
if ! [[ "${num_nodes}" =~ ^[1-9][0-9]*$ ]]; then
    log "--num_nodes '${num_nodes}' is not a number of nodes (1, 2, ...)"
    exit 2
elif [ "${num_nodes}" -gt 1 ] && [ "${cmd_backend}" != slurm ]; then
    log "--num_nodes ${num_nodes}: training over several nodes needs the Slurm backend (cmd_backend=slurm, not '${cmd_backend}')"
    exit 2
elif [ "${num_nodes}" -gt 1 ] && [ "${ngpu}" -eq 0 ] && [ "${train_cpu_procs}" -gt 1 ]; then
    log "--num_nodes ${num_nodes} trains on CPU with one process per node: drop --train_cpu_procs ${train_cpu_procs}"
    exit 2
fi
[ -z "${train_set}" ] && { log "--train_set is required"; exit 2; }
[ -z "${valid_set}" ] && { log "--valid_set is required"; exit 2; }
run_stage() { [ "$1" -ge "${stage}" ] && [ "$1" -le "${stop_stage}" ]; }
train_set_orig=${train_set}
[ -n "${speed_perturb_factors}" ] && train_set=${train_set}_sp
data_feats=${dumpdir}/fbank
stats_nj=${stats_nj:-${nj}}
token_train_text=${token_train_text:-data/${train_set_orig}/text}
lm_train_text=${lm_train_text:-data/${train_set_orig}/text}
uniq_words() { printf '%s\n' "$@" | awk 'NF && !seen[$0]++' | tr '\n' ' '; }
# shellcheck disable=SC2086
lm_ppl_sets=$(uniq_words ${lm_ppl_sets:-${valid_set} ${test_sets}})
# Sets of the internal-LM conditions; they get features with the others (stage 3), while stage 14
# decodes them only with the Table 3 methods.
ilm_cross_sets=
if "${use_ilm}"; then
    ilm_cross_valid_set=${ilm_cross_valid_set:-${valid_set}}
    if [ -z "${ilm_test_sets}" ]; then
        for s in ${test_sets}; do
            [ "${s}" = "${valid_set}" ] && continue
            [ -n "${ilm_cross_text}" ] && [[ " ${ilm_cross_valid_set} ${ilm_cross_test_sets} " == *" ${s} "* ]] && continue
            ilm_test_sets+="${ilm_test_sets:+ }${s}"
        done
    fi
    if [ -n "${ilm_cross_text}" ]; then
        ilm_cross_test_sets=${ilm_cross_test_sets:-${ilm_test_sets}}
        ilm_cross_sets="${ilm_cross_valid_set} ${ilm_cross_test_sets}"
    fi
fi
# shellcheck disable=SC2086
all_sets=$(uniq_words "${train_set}" "${valid_set}" ${test_sets} ${ilm_cross_sets})
# shellcheck disable=SC2086
eval_sets=$(uniq_words "${valid_set}" ${test_sets} ${ilm_cross_sets})
# The sets the chosen stages read must exist: a data directory where stage 3 will make their
# features, otherwise stage-3 features.
check_sets() {
    local s have=() f
    for s in "$@"; do
        if run_stage 3; then
            [ "${stage}" -le 2 ] || [ -f "data/${s}/wav.scp" ] || {
                log "set '${s}' has no data directory (data/${s}/wav.scp): run stage 1, or name an existing set"
                exit 2; }
        elif [ "${stage}" -gt 3 ] && [ ! -f "${data_feats}/${s}/feats.scp" ]; then
            for f in "${data_feats}"/*/feats.scp; do [ -f "${f}" ] && have+=("$(basename "$(dirname "${f}")")"); done
            log "set '${s}' has no features (${data_feats}/${s}/feats.scp): run stage 3 for it" \
                "(from data/${s}); sets with features: ${have[*]:-none}"
            exit 2
        fi
    done
}
runs_any() { local n; for n in "$@"; do run_stage "${n}" && return 0; done; return 1; }
if runs_any 3 4 9 10 11; then check_sets "${train_set}" "${valid_set}"; fi
# shellcheck disable=SC2086
if runs_any 3 13 14 15; then check_sets ${eval_sets}; fi

# A Hugging Face name is resolved to its local directory (cache, or a download with
# plm_download=true) once, when a stage that reads it runs.
resolve_plm() {
    if [ -d "$1" ]; then echo "$1"; else
        ${python} -m espnet_ext.recipe.bin.resolve_plm "$1" --download "${plm_download}"
    fi
}
case "${token_type}" in
    char|word) token_tag=${token_tag:-${token_type}}; bpemodel=none ;;
    bpe) token_tag=${token_tag:-bpe_${bpemode}${nbpe}}
         bpemodel=${token_listdir}/${token_tag}/bpe.model ;;
    hugging_face)
        [ -z "${hf_model}" ] && { log "--token_type hugging_face needs --hf_model <path or name>"; exit 2; }
        case "${hf_vocab}" in
            full) token_tag=${token_tag:-hugging_face} ;;
            compact) token_tag=${token_tag:-hugging_face_compact} ;;
            *) log "unknown --hf_vocab ${hf_vocab} (full or compact)"; exit 2 ;;
        esac
        if [ "${stop_stage}" -ge 5 ]; then hf_model=$(resolve_plm "${hf_model}"); fi
        bpemodel=${hf_model} ;;
    *) log "unknown --token_type ${token_type}"; exit 2 ;;
esac
token_list=${token_listdir}/${token_tag}/tokens.txt
if [ -z "${score_types}" ]; then
    if "${remove_space}"; then score_types=cer; else score_types="cer wer"; fi
fi
[ "${token_type}" = bpe ] && [[ " ${score_types} " != *" ter "* ]] && score_types+=" ter"

# ESPnet's LM task has no hugging_face tokenizer: it reads pre-tokenized pieces as words
# (dump/lm/*.<token_tag>.txt, one set per token list, so several lists never share a marker).
lm_dir=${dumpdir}/lm
if [ "${token_type}" = hugging_face ]; then
    lm_token_type=word; lm_bpemodel=none; lm_sfx=.${token_tag}
else
    lm_token_type=${token_type}; lm_bpemodel=${bpemodel}; lm_sfx=
fi
lm_train_txt=${lm_dir}/train${lm_sfx}.txt
lm_dev_txt=${lm_dir}/dev${lm_sfx}.txt
plm_dir=${plm_dir:-${dumpdir}/plm}
use_plm=false  # stage 9 runs for a teacher and a distiller other than none
for d in ${distillers}; do [ -n "${plm_model}" ] && [ "${d}" != none ] && use_plm=true; done
if "${use_plm}" && run_stage 9; then plm_model=$(resolve_plm "${plm_model}"); fi

cfg_name() { local c=${1##*/}; echo "${c%.*}"; }
lm_tag=${lm_tag:-$(cfg_name "${lm_config}")_${token_tag}}
lm_stats_dir=${expdir}/lm_stats_${token_tag}
lm_exp=${expdir}/lm_${lm_tag}
asr_stats_dir=${asr_stats_dir:-${expdir}/asr_stats_fbank_${token_tag}}
if [ -n "${asr_config}" ]; then
    asr_tag=${asr_tag:-$(cfg_name "${asr_config}")_${token_tag}}
else
    asr_tag=${asr_tag:-train_${token_tag}}
fi
# One ASR model per distiller: exp/asr_<asr_tag>[_<distiller>].
models=()
for d in ${distillers}; do
    if [ "${d}" = none ]; then models+=("${asr_tag}"); else models+=("${asr_tag}_${d}"); fi
done
[ ${#models[@]} -gt 0 ] || { log "--distillers is empty (none: the config as it is)"; exit 2; }
distiller_of() { local d; for d in ${distillers}; do [ "$1" = "${asr_tag}_${d}" ] && { echo "${d}"; return; }; done; echo none; }
# Decoding directory names (one per LM mode: with the LM, without it).
inference_tags=()
_tag() {
    local t=decode c
    if [ -n "${inference_config}" ]; then
        c=$(cfg_name "${inference_config}"); c=${c#decode}; c=${c#_}
        [ -n "${c}" ] && t+=_${c}
    fi
    [ "$1" = lm ] && t+=_lm_${lm_tag}
    echo "${t}_$(cfg_name "${inference_asr_model}")"
}
if "${use_lm}"; then
    inference_tags+=("lm:${inference_tag:-$(_tag lm)}")
    "${inference_without_lm}" && inference_tags+=("nolm:${inference_tag:+${inference_tag}_nolm}")
else
    inference_tags+=("nolm:${inference_tag}")
fi
for i in "${!inference_tags[@]}"; do  # empty names: the default of that mode
    [ -n "${inference_tags[i]#*:}" ] || inference_tags[i]+=$(_tag nolm)
done
# Table 3's metric: WER for words (English), else the first of score_types (CER for Chinese).
ilm_score_type=${score_types%% *}
if ! "${remove_space}" && [[ " ${score_types} " == *" wer "* ]]; then ilm_score_type=wer; fi

# ------------------------------------------------------------------------- stage time rows
mkdir -p "${expdir}"
stage_times=${expdir}/stage_times.tsv
[ -s "${stage_times}" ] || printf 'stage\tname\ttag\twall_s\tcpu_s\tload_1_5_15\tdate\tstatus\n' > "${stage_times}"
_times_file=${expdir}/.times.$$
trap 'rm -f "${_times_file}"' EXIT
_cpu_ms=0
cpu_ms() {  # _cpu_ms = user + system CPU milliseconds of the finished children of this shell
    local t=()
    times > "${_times_file}"
    mapfile -t t < "${_times_file}"
    if [[ "${t[1]:-}" =~ ^([0-9]+)m([0-9]+)\.([0-9]{3})s\ ([0-9]+)m([0-9]+)\.([0-9]{3})s$ ]]; then
        _cpu_ms=$(( (BASH_REMATCH[1] * 60 + 10#${BASH_REMATCH[2]}) * 1000 + 10#${BASH_REMATCH[3]}
                    + (BASH_REMATCH[4] * 60 + 10#${BASH_REMATCH[5]}) * 1000 + 10#${BASH_REMATCH[6]} ))
    fi
}
_row_stage=0; _row_name=; _row_tag=; _row_t0=0; _row_cpu0=0; _row_work=false
row_begin() {  # row_begin N NAME [TAG]: start timing a step of stage N
    _row_stage=$1; _row_name=$2; _row_tag=${3:--}; _row_work=false
    _row_t0=${EPOCHREALTIME/[.,]/}
    cpu_ms; _row_cpu0=${_cpu_ms}
    log "Stage $1: $2${3:+ (${3})}"
}
did_work() { _row_work=true; }
row_end() {  # append the step's row to stage_times.tsv
    local status=skipped wall cpu l1 l2 l3 rest
    "${_row_work}" && status=ran
    cpu_ms
    wall=$(( (${EPOCHREALTIME/[.,]/} - _row_t0 + 500000) / 1000000 ))
    cpu=$(( (_cpu_ms - _row_cpu0 + 500) / 1000 ))
    read -r l1 l2 l3 rest < /proc/loadavg || true
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%(%Y-%m-%dT%H:%M:%S)T\t%s\n' "${_row_stage}" "${_row_name}" \
        "${_row_tag}" "${wall}" "${cpu}" "${l1:-} ${l2:-} ${l3:-}" -1 "${status}" >> "${stage_times}"
    log "Stage ${_row_stage} (${_row_name}${_row_tag:+, ${_row_tag}}) ${status}: ${wall} s wall, ${cpu} s CPU"
}
begin_stage() { run_stage "$1" || return 1; row_begin "$@"; }
end_stage() { row_end; }

num_lines() { wc -l < "$1" | tr -d ' '; }
# multi_node_launch <exp dir> <job name>: _launch and _dist of a training over ${num_nodes} Slurm
# nodes, as ESPnet's launcher does for slurm.pl: utils/slurm.py --num_nodes runs the command once
# per node (srun), node 0 logging to <exp>/train.log, node k to <exp>/train.node<k>.log; ESPnet's
# --dist_launcher slurm takes rank and world size from srun (with --ngpu G: G processes per node,
# NCCL; CPU: one, gloo) and the ranks meet through a new file in <exp> (file:// init).
multi_node_launch() {
    local init
    init=$(mktemp -u -p "$(cd "$1" && pwd)" .dist_init_XXXXXXXXXX)
    # shellcheck disable=SC2206
    _launch=(${cuda_cmd} --name "$2" --gpu "${ngpu}" --num_threads "$(( ngpu > 1 ? ngpu : 1 ))"
             --num_nodes "${num_nodes}" "$1/train.log" "${python}")
    _dist=(--ngpu "${ngpu}" --multiprocessing_distributed true --dist_launcher slurm
           --dist_init_method "file://${init}")
    [ "${ngpu}" -eq 0 ] && _dist+=(--dist_backend gloo)
    log "training over ${num_nodes} Slurm nodes: logs $1/train.log (node 0) and $1/train.node<k>.log"
}
# is_done MARKER [--options S]: the marker holds (says why not when it exists but no longer holds).
is_done() { "${python}" -m espnet_ext.recipe.bin.done_marker check "$@"; }
# not_done_why MARKER: print why the marker does not hold; fails when it holds.
not_done_why() { ! "${python}" -m espnet_ext.recipe.bin.done_marker why "$@"; }
# mark_done MARKER [--inputs F...] [--audio_of WAV_SCP...] [--outputs F...] [--exists F...] [--options S]
mark_done() { "${python}" -m espnet_ext.recipe.bin.done_marker write "$@"; }
# aggregate_stats LOGDIR NJ OUT_DIR TOKEN_TYPE: ESPnet's sum of the statistics jobs' LOGDIR/stats.*,
# and the token shape files the trainers read (text_shape.TOKEN_TYPE: length,vocabulary size).
aggregate_stats() {
    local dirs=() i s
    for i in $(seq "$2"); do dirs+=(--input_dir "$1/stats.${i}"); done
    "${python}" -m espnet2.bin.aggregate_stats_dirs "${dirs[@]}" --output_dir "$3"
    for s in train valid; do
        awk -v v="$(_vocab_size)" '{ print $0 "," v }' "$3/${s}/text_shape" > "$3/${s}/text_shape.$4"
    done
}
# split FILE N OUT_PREFIX: OUT_PREFIX.{1..N}.scp
split_keys() {
    local outs=() i
    for i in $(seq "$2"); do outs+=("$3.${i}.scp"); done
    utils/data_dir.py split_scp "$1" "${outs[@]}"
}

# ------------------------------------------------------------------------- 1: data
if begin_stage 1 "data preparation"; then
    if [ -f data/.done.data_prep ]; then
        log "data/ already prepared (remove data/.done.data_prep to redo)"
    else
        [ -x local/data.sh ] || { log "local/data.sh not found or not executable"; exit 1; }
        # shellcheck disable=SC2086
        local/data.sh ${local_data_opts}
        # shellcheck disable=SC2086
        for dset in $(uniq_words "${train_set_orig}" ${eval_sets}); do
            utils/data_dir.py fix "data/${dset}"
            utils/data_dir.py validate "data/${dset}"
        done
        touch data/.done.data_prep
        did_work
    fi
    end_stage
fi

# ------------------------------------------------------------------------- 2: speed perturbation
if begin_stage 2 "speed perturbation"; then
    if [ -z "${speed_perturb_factors}" ]; then
        log "no --speed_perturb_factors: nothing to do"
    elif [ -f "data/${train_set}/.done.sp" ]; then
        log "data/${train_set} already prepared"
    else
        _dirs=()
        for f in ${speed_perturb_factors}; do
            if [ "${f}" = 1.0 ] || [ "${f}" = 1 ]; then
                _dirs+=("data/${train_set_orig}")
            else
                utils/data_dir.py perturb_speed "${f}" "data/${train_set_orig}" \
                    "data/${train_set_orig}_sp${f}"
                _dirs+=("data/${train_set_orig}_sp${f}")
            fi
        done
        utils/data_dir.py combine "data/${train_set}" "${_dirs[@]}"
        utils/data_dir.py validate "data/${train_set}"
        touch "data/${train_set}/.done.sp"
        did_work
    fi
    end_stage
fi

# ------------------------------------------------------------------------- 3: fbank
if begin_stage 3 "fbank features"; then
    # One array job serves every pending set: job j computes part j of each set.
    _pending=()
    for dset in ${all_sets}; do
        _dst=${data_feats}/${dset}
        if is_done "${_dst}/.done.fbank"; then
            log "${_dst}: features done"
        else
            rm -f "${_dst}/.done.fbank" "${_dst}/.done.filter"
            _pending+=("${dset}")
        fi
    done
    if [ ${#_pending[@]} -gt 0 ]; then
        _row_tag="${_pending[*]}"  # a later run for other sets gets a row of its own
        # and a log directory of its own (the logs of earlier runs stay)
        _logdir=$(IFS=+; echo "${_pending[*]}")
        [ ${#_logdir} -le 80 ] || _logdir="${_pending[0]}+$(( ${#_pending[@]} - 1 ))_more_$(echo "${_logdir}" | md5sum | cut -c1-8)"
        _logdir=${data_feats}/log/${_logdir}
        mkdir -p "${_logdir}"
        _nj=1
        for dset in "${_pending[@]}"; do
            _src=data/${dset}
            _dst=${data_feats}/${dset}
            utils/data_dir.py validate "${_src}"
            mkdir -p "${_dst}/data"
            for f in wav.scp segments text utt2spk spk2utt utt2lang utt2category spk2gender; do
                if [ -f "${_src}/${f}" ]; then cp -p "${_src}/${f}" "${_dst}/${f}"; fi
            done
            _n=$(min "${nj}" "$(num_lines "${_dst}/utt2spk")")
            utils/data_dir.py split "${_dst}" "${_n}"
            echo "${_n}" > "${_dst}/data/num_parts"
            [ "${_n}" -gt "${_nj}" ] && _nj=${_n}
        done
        for j in $(seq "${_nj}"); do
            for dset in "${_pending[@]}"; do
                _dst=${data_feats}/${dset}
                _n=$(cat "${_dst}/data/num_parts")
                [ "${j}" -le "${_n}" ] || continue
                _part=${_dst}/split${_n}utt/${j}
                echo "${_part}/wav.scp ${_dst}/data/feats.${j}.ark ${_dst}/data/feats.${j}.scp" \
                    "${_dst}/data/utt2num_frames.${j}" \
                    "$([ -f "${_part}/segments" ] && echo "${_part}/segments")"
            done > "${_logdir}/fbank.${j}.list"
        done
        log "fbank of ${_pending[*]}: ${_nj} jobs, logs in ${_logdir}/fbank.*.log"
        ${train_cmd} --num_threads 1 JOB=1:"${_nj}" "${_logdir}"/fbank.JOB.log \
            "${python}" -m espnet_ext.recipe.bin.compute_fbank --manifest "${_logdir}/fbank.JOB.list" \
                --skip_bad "${skip_bad_audio}" --fs "${fs}" --num_mel_bins "${num_mel_bins}"
        for dset in "${_pending[@]}"; do
            _dst=${data_feats}/${dset}
            _n=$(cat "${_dst}/data/num_parts")
            for i in $(seq "${_n}"); do cat "${_dst}/data/feats.${i}.scp"; done \
                | LC_ALL=C sort -k1,1 > "${_dst}/feats.scp"
            for i in $(seq "${_n}"); do cat "${_dst}/data/utt2num_frames.${i}"; done \
                | LC_ALL=C sort -k1,1 > "${_dst}/utt2num_frames"
            echo "${num_mel_bins}" > "${_dst}/feats_dim"
            echo fbank > "${_dst}/feats_type"
            # Utterances whose audio was skipped (skip_bad_audio=true) leave the set here, counted.
            utils/data_dir.py fix "${_dst}"
            utils/data_dir.py validate "${_dst}"
            _parts=()
            for i in $(seq "${_n}"); do
                _parts+=("${_dst}/data/feats.${i}.ark" "${_dst}/data/feats.${i}.scp" "${_dst}/data/utt2num_frames.${i}")
            done
            # The set-level lists are only required to exist: stage 4 filters them in place.
            mark_done "${_dst}/.done.fbank" --inputs data/"${dset}"/{wav.scp,segments,text,utt2spk} \
                --audio_of "data/${dset}/wav.scp" --outputs "${_parts[@]}" \
                --exists "${_dst}"/{feats.scp,utt2num_frames,text,utt2spk,feats_dim} \
                --options "${fs} ${num_mel_bins} ${skip_bad_audio}"
        done
        did_work
    fi
    end_stage
fi

# ------------------------------------------------------------------------- 4: filter, LM text
if begin_stage 4 "length filter and LM text"; then
    for dset in "${train_set}" "${valid_set}"; do
        _dst=${data_feats}/${dset}
        if ! is_done "${_dst}/.done.filter" --options "${min_frames} ${max_frames}"; then
            utils/data_dir.py filter "${_dst}" --min_frames "${min_frames}" --max_frames "${max_frames}"
            utils/data_dir.py validate "${_dst}"
            mark_done "${_dst}/.done.filter" --inputs "${_dst}"/data/feats.*.scp \
                --outputs "${_dst}"/{feats.scp,utt2num_frames,text,utt2spk} --options "${min_frames} ${max_frames}"
            did_work
        fi
    done
    if "${use_lm}" && [ ! -f "${lm_dir}/.done.lm_text" ]; then
        _exclude=()
        for dset in ${eval_sets}; do _exclude+=("data/${dset}/text"); done
        # shellcheck disable=SC2086
        utils/data_dir.py lm_text "${lm_dir}/train.txt" --input ${lm_train_text} \
            --exclude "${_exclude[@]}"
        cp "data/${valid_set}/text" "${lm_dir}/dev.txt"
        touch "${lm_dir}/.done.lm_text"
        did_work
    fi
    end_stage
fi

# ------------------------------------------------------------------------- 5: token list
if begin_stage 5 "token list (${token_type})" "${token_tag}"; then
    _hf_opts=(--hf_model "${hf_model}" --hf_vocab "${hf_vocab}")
    [ "${hf_vocab}" = compact ] && _hf_opts+=(--input "${token_train_text}")
    if [ -f "${token_listdir}/${token_tag}/.done.tokens" ]; then
        log "${token_list} done"
    else
        _opts=()
        case "${token_type}" in
            char) _opts+=(--remove_space "${remove_space}" --input "${token_train_text}") ;;
            word) _opts+=(--input "${token_train_text}") ;;
            bpe) _opts+=(--nbpe "${nbpe}" --bpemode "${bpemode}" --input "${token_train_text}") ;;
            hugging_face) _opts+=("${_hf_opts[@]}") ;;
        esac
        # Tokens of every set that ESPnet would silently map to <unk> are counted and logged.
        _unk=()
        for dset in ${all_sets}; do _unk+=("data/${dset}/text"); done
        "${python}" -m espnet_ext.bin.make_token_list --token_type "${token_type}" \
            --output_dir "${token_listdir}/${token_tag}" "${_opts[@]}" \
            --report_unknown "${_unk[@]}"
        touch "${token_listdir}/${token_tag}/.done.tokens"
        did_work
    fi
    if "${use_lm}" && [ "${token_type}" = hugging_face ] && [ ! -f "${lm_dir}/.done.pieces${lm_sfx}" ]; then
        _pre=(--pretokenize "${lm_dir}/train.txt" "${lm_train_txt}"
              --pretokenize "${lm_dir}/dev.txt" "${lm_dev_txt}")
        for dset in ${lm_ppl_sets}; do
            _pre+=(--pretokenize "data/${dset}/text" "${lm_dir}/ppl_${dset}${lm_sfx}.txt")
        done
        # (same options as above: the list is rewritten identically)
        "${python}" -m espnet_ext.bin.make_token_list --token_type hugging_face "${_hf_opts[@]}" \
            --output_dir "${token_listdir}/${token_tag}" "${_pre[@]}"
        touch "${lm_dir}/.done.pieces${lm_sfx}"
        did_work
    fi
    end_stage
fi

_vocab_size() { num_lines "${token_list}"; }

# ------------------------------------------------------------------------- 6: LM stats
if begin_stage 6 "LM statistics" "${lm_tag}"; then
    if ! "${use_lm}"; then
        log "use_lm=false: nothing to do"
    elif [ -f "${lm_stats_dir}/.done.stats" ]; then
        log "${lm_stats_dir} done"
    else
        _logdir=${lm_stats_dir}/logdir
        mkdir -p "${_logdir}"
        _nj=$(min "${stats_nj}" "$(num_lines "${lm_train_txt}")" "$(num_lines "${lm_dev_txt}")")
        split_keys "${lm_train_txt}" "${_nj}" "${_logdir}/train"
        split_keys "${lm_dev_txt}" "${_nj}" "${_logdir}/dev"
        log "LM statistics: ${_nj} jobs, logs in ${_logdir}/stats.*.log"
        # shellcheck disable=SC2086
        ${train_cmd} JOB=1:"${_nj}" "${_logdir}"/stats.JOB.log \
            "${python}" -m espnet2.bin.lm_train --collect_stats true --use_preprocessor true \
                --bpemodel "${lm_bpemodel}" --token_type "${lm_token_type}" \
                --token_list "${token_list}" --non_linguistic_symbols none --cleaner none \
                --g2p none --train_data_path_and_name_and_type "${lm_train_txt},text,text" \
                --valid_data_path_and_name_and_type "${lm_dev_txt},text,text" \
                --train_shape_file "${_logdir}/train.JOB.scp" \
                --valid_shape_file "${_logdir}/dev.JOB.scp" \
                --output_dir "${_logdir}/stats.JOB" --config "${lm_config}" ${lm_args}
        aggregate_stats "${_logdir}" "${_nj}" "${lm_stats_dir}" "${lm_token_type}"
        touch "${lm_stats_dir}/.done.stats"
        did_work
    fi
    end_stage
fi

# ------------------------------------------------------------------------- 7: LM training
if begin_stage 7 "LM training" "${lm_tag}"; then
    if ! "${use_lm}"; then
        log "use_lm=false: nothing to do"
    elif [ -f "${lm_exp}/.done.train" ]; then
        log "${lm_exp} trained (remove ${lm_exp}/.done.train to train further)"
    else
        mkdir -p "${lm_exp}"
        log "LM training: log in ${lm_exp}/train.log"
        if [ "${num_nodes}" -gt 1 ]; then
            multi_node_launch "${lm_exp}" lm_train
        else
            _launch=("${python}" -m espnet2.bin.launch --cmd "${cuda_cmd} --name lm_train"
                     --log "${lm_exp}/train.log" --ngpu "${ngpu}" --num_nodes 1
                     --init_file_prefix "${lm_exp}/.dist_init_" --multiprocessing_distributed true
                     -- "${python}")
            _dist=()
        fi
        # shellcheck disable=SC2086
        "${_launch[@]}" -m espnet_ext.bin.lm_train "${_dist[@]}" --use_preprocessor true \
                --bpemodel "${lm_bpemodel}" --token_type "${lm_token_type}" \
                --token_list "${token_list}" --non_linguistic_symbols none --cleaner none \
                --g2p none --train_data_path_and_name_and_type "${lm_train_txt},text,text" \
                --valid_data_path_and_name_and_type "${lm_dev_txt},text,text" \
                --train_shape_file "${lm_stats_dir}/train/text_shape.${lm_token_type}" \
                --valid_shape_file "${lm_stats_dir}/valid/text_shape.${lm_token_type}" \
                --fold_length "${lm_fold_length}" --resume true --output_dir "${lm_exp}" \
                --config "${lm_config}" ${use_tensorboard:+--use_tensorboard ${use_tensorboard}} ${lm_args}
        touch "${lm_exp}/.done.train"
        did_work
    fi
    end_stage
fi

# ------------------------------------------------------------------------- 8: LM perplexity
if begin_stage 8 "LM perplexity" "${lm_tag}"; then
    if ! "${use_lm}"; then
        log "use_lm=false: nothing to do"
    else
        _todo=()
        for dset in ${lm_ppl_sets}; do
            [ -f "${lm_exp}/perplexity_${dset}/.done.ppl" ] || _todo+=("${dset}")
        done
        if [ ${#_todo[@]} -gt 0 ]; then
            _logdir=${lm_exp}/perplexity_logdir
            mkdir -p "${_logdir}"
            # One array job over the sets: each job reads its set's text by index.
            i=0
            for dset in "${_todo[@]}"; do
                i=$((i + 1))
                if [ "${token_type}" = hugging_face ]; then
                    cp "${lm_dir}/ppl_${dset}${lm_sfx}.txt" "${_logdir}/text.${i}"
                else
                    cp "data/${dset}/text" "${_logdir}/text.${i}"
                fi
            done
            ${cuda_cmd} JOB=1:${i} "${_logdir}/ppl.JOB.log" \
                "${python}" -m espnet2.bin.lm_calc_perplexity --ngpu 0 \
                    --data_path_and_name_and_type "${_logdir}/text.JOB,text,text" \
                    --train_config "${lm_exp}/config.yaml" --model_file "${lm_exp}/${inference_lm}" \
                    --output_dir "${_logdir}/out.JOB"
            i=0
            for dset in "${_todo[@]}"; do
                i=$((i + 1))
                rm -rf "${lm_exp}/perplexity_${dset}"
                mv "${_logdir}/out.${i}" "${lm_exp}/perplexity_${dset}"
                touch "${lm_exp}/perplexity_${dset}/.done.ppl"
                log "LM perplexity on ${dset}: $(cat "${lm_exp}/perplexity_${dset}/ppl")"
            done
            did_work
        else
            log "perplexities done"
        fi
    fi
    end_stage
fi

# ------------------------------------------------------------------------- 9: PLM features
# Teacher features of the texts stage 11 trains on (the length-filtered ${data_feats}/<set>/text),
# tokenised with the training token list/type/bpe model; only train and valid sets: distillation is
# a training loss, decoding never reads them. Misaligned utterances get empty (0 x D) features.
if begin_stage 9 "PLM teacher features" "${token_tag}"; then
    if ! "${use_plm}"; then
        log "no plm_model or no distiller: nothing to do"
    else
        if "${plm_gpu}"; then _cmd=${cuda_cmd}; _ngpu=1; _dev=cuda; else _cmd=${train_cmd}; _ngpu=0; _dev=cpu; fi
        _opts=()
        [ "${bpemodel}" != none ] && _opts+=(--bpemodel "${bpemodel}")
        for dset in $(uniq_words "${train_set}" "${valid_set}"); do
            _out=${plm_dir}/${dset}
            if [ -f "${_out}/.done.plm" ] && [ "${_out}/.done.plm" -nt "${data_feats}/${dset}/text" ]; then
                log "${_out} done"
            else
                [ -f "${data_feats}/${dset}/text" ] || { log "${data_feats}/${dset}/text missing (run stages 3-4)"; exit 1; }
                # Without the marker an interrupted run resumes by chunks; an older one means the
                # text changed since (the extractor refuses a changed text), so start over.
                [ -f "${_out}/.done.plm" ] && { log "${dset} text changed: redoing ${_out}"; rm -rf "${_out}"; }
                mkdir -p "${expdir}/plm_logs"
                _log=${expdir}/plm_logs/extract_${dset}.log
                log "PLM features of ${dset} (${plm_model}, layer ${plm_layer}): log in ${_log}"
                ${_cmd} --gpu "${_ngpu}" "${_log}" \
                    "${python}" -m espnet_ext.bin.extract_plm_feats --model "${plm_model}" \
                        --text "${data_feats}/${dset}/text" --token_list "${token_list}" \
                        --token_type "${token_type}" "${_opts[@]}" --layer "${plm_layer}" \
                        --batch_size "${plm_batch_size}" --misaligned_policy "${plm_misaligned_policy}" \
                        --device "${_dev}" --output_dir "${_out}"
                # The teacher dimension (stage 11's distiller_conf), from "utt rows,dim" lines.
                awk 'NR == 1 { n = split($2, a, ","); print a[n] }' "${_out}/feats_shape" > "${_out}/feats_dim"
                touch "${_out}/.done.plm"
                did_work
            fi
            log "PLM features of ${dset}: $(num_lines "${_out}/feats.scp") utterances," \
                "$(num_lines "${_out}/misaligned") misaligned (empty features; listed in ${_out}/misaligned)"
        done
    fi
    end_stage
fi

# ------------------------------------------------------------------------- 10: ASR stats
if run_stage 10 || run_stage 11 || { "${use_ilm}" && run_stage 12; }; then
    [ -z "${asr_config}" ] && { log "--asr_config is required from stage 10"; exit 2; }
fi
if begin_stage 10 "ASR statistics" "${token_tag}"; then
    if [ -f "${asr_stats_dir}/.done.stats" ]; then
        log "${asr_stats_dir} done"
    else
        _logdir=${asr_stats_dir}/logdir
        mkdir -p "${_logdir}"
        _train=${data_feats}/${train_set}
        _valid=${data_feats}/${valid_set}
        _nj=$(min "${stats_nj}" "$(num_lines "${_train}/feats.scp")" \
                  "$(num_lines "${_valid}/feats.scp")")
        split_keys "${_train}/feats.scp" "${_nj}" "${_logdir}/train"
        split_keys "${_valid}/feats.scp" "${_nj}" "${_logdir}/valid"
        log "ASR statistics: ${_nj} jobs, logs in ${_logdir}/stats.*.log"
        # shellcheck disable=SC2086
        ${train_cmd} JOB=1:"${_nj}" "${_logdir}"/stats.JOB.log \
            "${python}" -m "${asr_train_module}" --collect_stats true --use_preprocessor true \
                --bpemodel "${bpemodel}" --token_type "${token_type}" --token_list "${token_list}" \
                --non_linguistic_symbols none --cleaner none --g2p none \
                --input_size "$(cat "${_train}/feats_dim")" --normalize none \
                --train_data_path_and_name_and_type "${_train}/feats.scp,speech,kaldi_ark" \
                --train_data_path_and_name_and_type "${_train}/text,text,text" \
                --valid_data_path_and_name_and_type "${_valid}/feats.scp,speech,kaldi_ark" \
                --valid_data_path_and_name_and_type "${_valid}/text,text,text" \
                --train_shape_file "${_logdir}/train.JOB.scp" \
                --valid_shape_file "${_logdir}/valid.JOB.scp" \
                --output_dir "${_logdir}/stats.JOB" --config "${asr_config}" ${asr_args}
        aggregate_stats "${_logdir}" "${_nj}" "${asr_stats_dir}" "${token_type}"
        touch "${asr_stats_dir}/.done.stats"
        did_work
    fi
    end_stage
fi

# ------------------------------------------------------------------------- 11: ASR training
if run_stage 11; then
    for tag in "${models[@]}"; do
        row_begin 11 "ASR training" "${tag}"
        _exp=${expdir}/asr_${tag}
        _d=$(distiller_of "${tag}")
        if [ -f "${_exp}/.done.train" ]; then
            log "${_exp} trained (remove ${_exp}/.done.train to train further)"
            row_end
            continue
        fi
        mkdir -p "${_exp}"
        _train=${data_feats}/${train_set}
        _valid=${data_feats}/${valid_set}
        _norm=(--normalize "${feats_normalize}")
        if [ "${feats_normalize}" = global_mvn ]; then
            _norm+=(--normalize_conf "stats_file=${asr_stats_dir}/train/feats_stats.npz")
        fi
        # A distiller reads the stage-9 teacher features of every training utterance.
        _distill=()
        if [ "${_d}" != none ]; then
            for s in train valid; do
                [ "${s}" = train ] && _set=${train_set} || _set=${valid_set}
                [ -f "${plm_dir}/${_set}/.done.plm" ] || { log "${plm_dir}/${_set} missing (run stage 9 with --plm_model)"; exit 1; }
                _distill+=("--${s}_data_path_and_name_and_type" "${plm_dir}/${_set}/feats.scp,plm_feats,kaldi_ark")
            done
            _dim=$(cat "${plm_dir}/${train_set}/feats_dim")
            _distill+=(--distiller "${_d}" --distiller_conf "teacher_dim=${_dim}")
            log "distiller ${_d}: teacher features from ${plm_dir} (${_dim}-d)"
        fi
        log "ASR training (${asr_train_module}): log in ${_exp}/train.log"
        if [ "${num_nodes}" -gt 1 ]; then
            multi_node_launch "${_exp}" asr_train
        elif [ "${ngpu}" -eq 0 ] && [ "${train_cpu_procs}" -gt 1 ]; then
            # CPU data parallelism: ESPnet's launcher only spawns one process per GPU, so
            # torchrun starts the ranks; ESPnet splits each batch across them (same updates).
            log "CPU training with ${train_cpu_procs} DDP processes (gloo, 1 thread each)"
            # shellcheck disable=SC2206
            _launch=(${cuda_cmd} --name asr_train --num_threads "${train_cpu_procs}"
                     "${_exp}/train.log" env OMP_NUM_THREADS=1
                     "${python}" -m torch.distributed.run --standalone
                     --nproc_per_node "${train_cpu_procs}")
            _dist=(--ngpu 0 --multiprocessing_distributed false --dist_backend gloo)
        else
            _launch=("${python}" -m espnet2.bin.launch --cmd "${cuda_cmd} --name asr_train"
                     --log "${_exp}/train.log" --ngpu "${ngpu}" --num_nodes 1
                     --init_file_prefix "${_exp}/.dist_init_" --multiprocessing_distributed true
                     -- "${python}")
            _dist=()
        fi
        # shellcheck disable=SC2086
        "${_launch[@]}" -m "${asr_train_module}" "${_dist[@]}" --use_preprocessor true \
                --bpemodel "${bpemodel}" --token_type "${token_type}" --token_list "${token_list}" \
                --non_linguistic_symbols none --cleaner none --g2p none \
                --input_size "$(cat "${_train}/feats_dim")" "${_norm[@]}" \
                --train_data_path_and_name_and_type "${_train}/feats.scp,speech,kaldi_ark" \
                --train_data_path_and_name_and_type "${_train}/text,text,text" \
                --valid_data_path_and_name_and_type "${_valid}/feats.scp,speech,kaldi_ark" \
                --valid_data_path_and_name_and_type "${_valid}/text,text,text" "${_distill[@]}" \
                --train_shape_file "${asr_stats_dir}/train/speech_shape" \
                --train_shape_file "${asr_stats_dir}/train/text_shape.${token_type}" \
                --valid_shape_file "${asr_stats_dir}/valid/speech_shape" \
                --valid_shape_file "${asr_stats_dir}/valid/text_shape.${token_type}" \
                --fold_length "${speech_fold_length}" --fold_length "${text_fold_length}" \
                --resume true --output_dir "${_exp}" --config "${asr_config}" \
                ${use_tensorboard:+--use_tensorboard ${use_tensorboard}} ${asr_args}
        touch "${_exp}/.done.train"
        did_work
        row_end
    done
fi

# ------------------------------------------------------------------------- internal-LM helpers
# Everything of the internal-LM stages of model <tag> lives in ${expdir}/ilm_<tag> (outside the
# ASR experiment, so the sclite tables of stage 16 do not list its decodings). ilm_setup <tag>
# sets the paths below; LM-side texts go through lm_text (hugging_face: pre-tokenized pieces).
lm_ckpt() { if [ -e "$1/valid.loss.ave.pth" ]; then echo "$1/valid.loss.ave.pth"; else echo "$1/valid.acc.ave.pth"; fi; }
conf_tag() { local c; c=$(cfg_name "$1"); echo "${c#train_}"; }
ilm_conditions=(intra)
[ -n "${ilm_cross_text}" ] && ilm_conditions+=(cross)
_lm_ngpu=$(( ngpu > 0 ? 1 : 0 ))
ilm_train_text=${data_feats}/${train_set}/text
ilm_dev_text=${data_feats}/${valid_set}/text
ilm_intra_text=${ilm_intra_text:-data/${train_set}/text}
ilm_setup() {
    _asr_exp=${expdir}/asr_$1
    _ilm=${expdir}/ilm_$1
    _asr_cfg=${_asr_exp}/config.yaml
    _asr_model=${_asr_exp}/${inference_asr_model}
    _lm_stats=${_ilm}/lm_stats
    _drlm=${_ilm}/$(conf_tag "${drlm_config}")
    _drkd=${_ilm}/$(conf_tag "${drkd_config}")
    _ctx=${_ilm}/ilm_ctx_$(conf_tag "${ilm_ctx_config}" | sed 's/^ilm_ctx_\{0,1\}//')
    _bigram=${_ilm}/drlm_2gram/lm.arpa
    _elm_intra=${_ilm}/elm_intra_$(conf_tag "${lm_config}")
    "${use_lm}" && _elm_intra=${lm_exp}
    _elm_cross=${_ilm}/elm_cross_$(conf_tag "${lm_config}")
    _lm_tok=(--token_list "${token_list}" --token_type "${lm_token_type}")
    [ "${lm_bpemodel}" != none ] && _lm_tok+=(--bpemodel "${lm_bpemodel}")
    mkdir -p "${_ilm}"
}
lm_text() {  # the LM-side version of Kaldi text $1
    if [ "${token_type}" = hugging_face ]; then echo "${_ilm}/pieces/${1#/}"; else echo "$1"; fi
}
elm_dir() { if [ "$1" = intra ]; then echo "${_elm_intra}"; else echo "${_elm_cross}"; fi; }
elm_text() { if [ "$1" = intra ]; then echo "${ilm_intra_text}"; else echo "${ilm_cross_text}"; fi; }
elm_opts() { local d; d=$(elm_dir "$1"); echo --lm_train_config "${d}/config.yaml" --lm_file "$(lm_ckpt "${d}")"; }
cond_valid_set() { if [ "$1" = cross ]; then echo "${ilm_cross_valid_set}"; else echo "${valid_set}"; fi; }
cond_test_sets() { if [ "$1" = cross ]; then echo "${ilm_cross_test_sets}"; else echo "${ilm_test_sets}"; fi; }
ilm_opts() {  # the ILM options of a Table 3 method for asr_inference / tune_fusion
    case "$1" in
        none|sf) echo --ilm_type none ;;
        ilme_z) echo --ilm_type zero ;;
        ilme_l) echo --ilm_type label_ctx --ilm_file "$(lm_ckpt "${_ctx}")" ;;
        dr) echo --ilm_type dr --ilm_file "$(lm_ckpt "${_drlm}")" ;;
        dr_2gram) echo --ilm_type dr_2gram --ilm_file "${_bigram}" ;;
        drkd_z) echo --ilm_type dr_kd --ilm_file "$(lm_ckpt "${_drkd}_z")" ;;
        drkd_l) echo --ilm_type dr_kd --ilm_file "$(lm_ckpt "${_drkd}_l")" ;;
        *) log "unknown ILM method $1 (--ilm_methods)"; exit 2 ;;
    esac
}
# An LM-like training unless its done marker exists: ilm_train <dir> <module> <args...>
ilm_train() {
    local dir=$1 module=$2
    shift 2
    if [ -f "${dir}/.done.train" ]; then log "${dir} trained"; return; fi
    mkdir -p "${dir}"
    log "training ${dir} (${module}): log in ${dir}/train.log"
    # shellcheck disable=SC2086
    ${cuda_cmd} --gpu "${_lm_ngpu}" "${dir}/train.log" "${python}" -m "${module}" \
        --ngpu "${_lm_ngpu}" --resume true --output_dir "${dir}" "$@" ${ilm_train_args}
    touch "${dir}/.done.train"
    did_work
}
# LM-task data options: training text $1 with shape file $2, validation on the dev text.
lm_data_opts() {
    echo --train_data_path_and_name_and_type "$1,text,text" \
         --valid_data_path_and_name_and_type "$(lm_text "${ilm_dev_text}"),text,text" \
         --train_shape_file "$2" --valid_shape_file "${_lm_stats}/dev/valid/text_shape" \
         --fold_length "${lm_fold_length}" --use_tensorboard false --use_matplotlib false
}
# Decoding-side jobs run in one Python process per step (espnet_ext.recipe.bin.ilm_jobs): ESPnet's
# start-up costs more than a whole mini-recipe decoding. job <done marker> <log> <module> <args...>
# The marker vouches for the files named in _job_files (--input F / --output F pairs).
_job_files=()
job() { local m=$1; shift; printf '%q ' --done "${m}" "${_job_files[@]}" "$@"; echo; _job_files=(); }
run_jobs() {  # run_jobs <jobs file> <log>
    if [ -s "$1" ]; then
        log "$(num_lines "$1") jobs in one process ($1); log: $2"
        ${decode_cmd} --gpu "$(${gpu_inference} && echo 1 || echo 0)" "$2" \
            "${python}" -m espnet_ext.recipe.bin.ilm_jobs --jobs "$1"
        did_work
    fi
}
ilm_decode_common() {
    printf '%s\n' --asr_train_config "${_asr_cfg}" --asr_model_file "${_asr_model}" \
        --ngpu "$(${gpu_inference} && echo 1 || echo 0)" --batch_size "${inference_batch_size}"
    [ -n "${inference_config}" ] && printf '%s\n' --config "${inference_config}"
    return 0
}

# ------------------------------------------------------------------------- 12: internal LMs
if "${use_ilm}" && run_stage 12; then
    for tag in "${models[@]}"; do
        ilm_setup "${tag}"
        if [ ! -f "${_asr_cfg}" ] || [ ! -f "${_asr_model}" ]; then log "${_asr_model} not found (run stage 11)"; exit 1; fi

        row_begin 12 "internal LM: texts and LM statistics" "${tag}"
        # The ASR model and every LM share one token list with <sos/eos> last (ESPnet LMs use
        # sos = eos = V-1): refused before any LM trains, once per ASR config and token list.
        if [ ! -f "${_ilm}/.done.token_check" ] || [ "${_asr_cfg}" -nt "${_ilm}/.done.token_check" ]; then
            "${python}" -m espnet_ext.bin.check_token_lists --asr_train_config "${_asr_cfg}" \
                --token_list "${token_list}" \
                || { log "the ASR model ${_asr_exp} and the LMs need one token list with <sos/eos> last"; exit 1; }
            touch "${_ilm}/.done.token_check"
        fi
        # hugging_face units: every LM-side text pre-tokenized once into ${_ilm}/pieces/<its path>.
        if [ "${token_type}" = hugging_face ] && [ ! -f "${_ilm}/pieces/.done.pieces" ]; then
            _pre=()
            _texts=("${ilm_train_text}" "${ilm_dev_text}")
            for s in ${ilm_cross_sets} ${ilm_test_sets}; do _texts+=("${data_feats}/${s}/text"); done
            "${use_lm}" || _texts+=("${ilm_intra_text}")
            [ -n "${ilm_cross_text}" ] && _texts+=("${ilm_cross_text}")
            for t in $(uniq_words "${_texts[@]}"); do _pre+=(--pretokenize "${t}" "$(lm_text "${t}")"); done
            log "pre-tokenizing $(( ${#_pre[@]} / 3 )) texts into wordpieces under ${_ilm}/pieces"
            "${python}" -m espnet_ext.bin.make_token_list --token_type hugging_face --hf_model "${hf_model}" \
                --output_dir "${_ilm}/pieces/token_list" "${_pre[@]}"
            touch "${_ilm}/pieces/.done.pieces"
            did_work
        fi
        # Shape files of the transcripts and the dev text: stage 10's (same texts and token list).
        for pair in "train:transcripts" "valid:dev"; do
            _dst=${_lm_stats}/${pair#*:}
            if [ ! -f "${_dst}/.done.stats" ]; then
                mkdir -p "${_dst}/train" "${_dst}/valid"
                cut -d, -f1 "${asr_stats_dir}/${pair%%:*}/text_shape.${token_type}" > "${_dst}/valid/text_shape"
                cp "${_dst}/valid/text_shape" "${_dst}/train/text_shape"
                touch "${_dst}/.done.stats"
            fi
        done
        for c in "${ilm_conditions[@]}"; do
            [ "${c}" = intra ] && "${use_lm}" && continue  # the stage-7 LM
            _dst=${_lm_stats}/elm_${c}
            [ -f "${_dst}/.done.stats" ] && continue
            _text=$(lm_text "$(elm_text "${c}")")
            ${train_cmd} "${_dst}/stats.log" "${python}" -m espnet2.bin.lm_train --collect_stats true \
                "${_lm_tok[@]}" --train_data_path_and_name_and_type "${_text},text,text" \
                --valid_data_path_and_name_and_type "$(lm_text "${ilm_dev_text}"),text,text" \
                --train_shape_file "${_text}" --valid_shape_file "$(lm_text "${ilm_dev_text}")" \
                --output_dir "${_dst}"
            touch "${_dst}/.done.stats"
            did_work
        done
        row_end
        _transcripts=$(lm_data_opts "$(lm_text "${ilm_train_text}")" "${_lm_stats}/transcripts/train/text_shape")

        row_begin 12 "internal LM: external LMs" "${tag}"
        for c in "${ilm_conditions[@]}"; do
            if [ "${c}" = intra ] && "${use_lm}"; then log "intra-domain external LM: ${lm_exp} (stage 7)"; continue; fi
            # shellcheck disable=SC2046
            ilm_train "$(elm_dir "${c}")" espnet2.bin.lm_train --config "${lm_config}" "${_lm_tok[@]}" \
                $(lm_data_opts "$(lm_text "$(elm_text "${c}")")" "${_lm_stats}/elm_${c}/train/text_shape")
        done
        row_end

        row_begin 12 "internal LM: DR-LSTM" "${tag}"
        # shellcheck disable=SC2086
        ilm_train "${_drlm}" espnet2.bin.lm_train --config "${drlm_config}" "${_lm_tok[@]}" ${_transcripts}
        row_end

        row_begin 12 "internal LM: DR-2gram" "${tag}"
        if [ -f "$(dirname "${_bigram}")/.done.train" ]; then
            log "${_bigram} done"
        else
            mkdir -p "$(dirname "${_bigram}")"
            ${train_cmd} "$(dirname "${_bigram}")/train.log" "${python}" -m espnet_ext.bin.ngram_lm_train \
                --text "$(lm_text "${ilm_train_text}")" "${_lm_tok[@]}" --output "${_bigram}"
            touch "$(dirname "${_bigram}")/.done.train"
            did_work
        fi
        row_end

        row_begin 12 "internal LM: ILME-L learner" "${tag}"
        # shellcheck disable=SC2086
        ilm_train "${_ctx}" espnet_ext.bin.ilm_context_train --config "${ilm_ctx_config}" "${_lm_tok[@]}" \
            --asr_train_config "${_asr_cfg}" --asr_model_file "${_asr_model}" ${_transcripts}
        row_end

        row_begin 12 "internal LM: DR-KD students" "${tag}"
        # shellcheck disable=SC2086
        ilm_train "${_drkd}_z" espnet_ext.bin.kd_lm_train --config "${drkd_config}" "${_lm_tok[@]}" \
            --teacher_train_config "${_asr_cfg}" --teacher_model_file "${_asr_model}" \
            --teacher_ilm_type zero ${_transcripts}
        # shellcheck disable=SC2086
        ilm_train "${_drkd}_l" espnet_ext.bin.kd_lm_train --config "${drkd_config}" "${_lm_tok[@]}" \
            --teacher_train_config "${_asr_cfg}" --teacher_model_file "${_asr_model}" \
            --teacher_ilm_type label_ctx --teacher_ctx_file "$(lm_ckpt "${_ctx}")" ${_transcripts}
        row_end
    done
fi

# ------------------------------------------------------------------------- 13: ILM ppl, tuning
# Tuning subset of a dev set (every k-th utterance, so every speaker stays in): prints a dir with
# text and utt2spk (the text's ids also serve as --key_file).
dev_subset() {
    local src=${data_feats}/$1 dir=${_ilm}/dev_subsets/$1_max${ilm_tune_max_utts} n
    n=$(num_lines "${src}/text")
    if [ "${ilm_tune_max_utts}" -le 0 ] || [ "${n}" -le "${ilm_tune_max_utts}" ]; then echo "${src}"; return; fi
    if [ ! -f "${dir}/.done.subset" ]; then
        mkdir -p "${dir}"
        awk -v n="${n}" -v m="${ilm_tune_max_utts}" 'NR - 1 == int(j * n / m) { print; j++ }' \
            "${src}/text" > "${dir}/text"
        awk 'NR == FNR { keep[$1] = 1; next } $1 in keep' "${dir}/text" "${src}/utt2spk" > "${dir}/utt2spk"
        touch "${dir}/.done.subset"
    fi
    echo "${dir}"
}
if "${use_ilm}" && run_stage 13; then
    for tag in "${models[@]}"; do
        ilm_setup "${tag}"
        row_begin 13 "ILM perplexity" "${tag}"
        if [ -f "${_ilm}/perplexity/.done.ppl" ]; then
            log "${_ilm}/perplexity done"
        else
            _texts=()
            # shellcheck disable=SC2086
            for s in $(uniq_words "${valid_set}" ${ilm_cross_sets} ${ilm_test_sets}); do
                _texts+=(--text "$(lm_text "${data_feats}/${s}/text")")
            done
            ${train_cmd} "${_ilm}/perplexity/ppl.log" "${python}" -m espnet_ext.bin.ilm_perplexity \
                "${_lm_tok[@]}" --asr_train_config "${_asr_cfg}" --asr_model_file "${_asr_model}" \
                "${_texts[@]}" --ilm "ILME-Z=zero" --ilm "ILME-L=label_ctx:$(lm_ckpt "${_ctx}")" \
                --ilm "DR=dr:$(lm_ckpt "${_drlm}")" --ilm "DR-2gram=dr_2gram:${_bigram}" \
                --ilm "DR-KD-Z=dr_kd:$(lm_ckpt "${_drkd}_z")" --ilm "DR-KD-L=dr_kd:$(lm_ckpt "${_drkd}_l")" \
                --output_dir "${_ilm}/perplexity"
            touch "${_ilm}/perplexity/.done.ppl"
            did_work
        fi
        row_end

        row_begin 13 "fusion weight grid" "${tag}"
        mapfile -t _common < <(ilm_decode_common)
        _jobs=${_ilm}/tune_jobs.txt
        : > "${_jobs}"
        for c in "${ilm_conditions[@]}"; do
            _dev=$(cond_valid_set "${c}")
            _sub=$(dev_subset "${_dev}")
            for m in ${ilm_methods}; do
                [ "${m}" = none ] && continue
                _out=${_ilm}/tune_${c}/${m}
                is_done "${_out}/.done.tune" && { log "${_out} tuned"; continue; }
                _job_files=(--input "${data_feats}/${_dev}/feats.scp" --input "${_sub}/text" --output "${_out}/best.sh")
                _grid=${ilm_weights}; [ "${m}" = sf ] && _grid=0
                log "tuning ${m} (${c} external LM) on ${_sub} ($(num_lines "${_sub}/text") utts) -> ${_out}/grid.md"
                # shellcheck disable=SC2046,SC2086
                job "${_out}/.done.tune" "${_out}/tune.log" espnet_ext.bin.tune_fusion "${_common[@]}" \
                    --data_path_and_name_and_type "${data_feats}/${_dev}/feats.scp,speech,kaldi_ark" \
                    $(elm_opts "${c}") $(ilm_opts "${m}") --key_file "${_sub}/text" \
                    --ref_text "${_sub}/text" --utt2spk "${_sub}/utt2spk" --score_type "${ilm_score_type}" \
                    --ilm_weights "${_grid}" --lm_weights "${ilm_lm_weights}" --output_dir "${_out}" \
                    ${inference_args} >> "${_jobs}"
            done
        done
        run_jobs "${_jobs}" "${_ilm}/tune_jobs.log"
        row_end
    done
fi

# ------------------------------------------------------------------------- 14: decoding
if run_stage 14; then
    if "${gpu_inference}"; then _cmd=${cuda_cmd}; _ngpu=1; else _cmd=${decode_cmd}; _ngpu=0; fi
    _cfg_opt=
    [ -n "${inference_config}" ] && _cfg_opt="--config ${inference_config}"
    for tag in "${models[@]}"; do
        _exp=${expdir}/asr_${tag}
        row_begin 14 "decoding" "${tag}"
        for mode_tag in "${inference_tags[@]}"; do
            _lm_opts=
            # shellcheck disable=SC2206
            _dec_in=("${_exp}/config.yaml" "${_exp}/${inference_asr_model}" ${inference_config})
            if [ "${mode_tag%%:*}" = lm ]; then
                _lm_opts="--lm_train_config ${lm_exp}/config.yaml --lm_file ${lm_exp}/${inference_lm}"
                _dec_in+=("${lm_exp}/config.yaml" "${lm_exp}/${inference_lm}")
            fi
            _dec_opts="${asr_inference_module} ${inference_batch_size} ${_lm_opts} ${_cfg_opt} ${inference_args}"
            for dset in ${test_sets}; do
                _dir=${_exp}/${mode_tag#*:}/${dset}
                _logdir=${_dir}/logdir
                _keys=${data_feats}/${dset}/feats.scp
                if is_done "${_dir}/.done.decode" --options "${_dec_opts}"; then
                    log "${_dir}: decoded"
                    continue
                fi
                # A decoding that no longer holds is redone whole; without a marker (an
                # interrupted run) the jobs that finished are kept. Stale hypotheses and their
                # scores go first, so that nothing reports them if this decoding fails.
                [ -f "${_dir}/.done.decode" ] && rm -rf "${_logdir}"
                rm -rf "${_dir}/.done.decode" "${_dir}"/{token,token_int,score,text} "${_dir}"/score_*
                _nj=$(min "${inference_nj}" "$(num_lines "${_keys}")")
                mkdir -p "${_logdir}"
                split_keys "${_keys}" "${_nj}" "${_logdir}/keys"
                log "decoding ${dset}: ${_nj} jobs, logs in ${_logdir}/asr_inference.*.log"
                # Jobs that finished in an earlier (interrupted) run are not redone.
                ${_cmd} --gpu "${_ngpu}" --num_threads "${inference_num_threads}" JOB=1:"${_nj}" \
                    "${_logdir}"/asr_inference.JOB.log \
                    "if [ -f ${_logdir}/output.JOB/.done ]; then echo 'decoded in an earlier run'; exit 0; fi; \
                     ${python} -m ${asr_inference_module} --ngpu ${_ngpu} \
                        --batch_size ${inference_batch_size} \
                        --data_path_and_name_and_type ${_keys},speech,kaldi_ark \
                        --key_file ${_logdir}/keys.JOB.scp \
                        --asr_train_config ${_exp}/config.yaml \
                        --asr_model_file ${_exp}/${inference_asr_model} \
                        ${_lm_opts} ${_cfg_opt} --output_dir ${_logdir}/output.JOB ${inference_args} \
                     && touch ${_logdir}/output.JOB/.done"
                for f in token token_int score text; do
                    if [ -f "${_logdir}/output.1/1best_recog/${f}" ]; then
                        for i in $(seq "${_nj}"); do cat "${_logdir}/output.${i}/1best_recog/${f}"; done \
                            | LC_ALL=C sort -k1,1 > "${_dir}/${f}"
                    fi
                done
                if [ ! -f "${_dir}/text" ] || \
                   [ "$(num_lines "${_dir}/text")" -ne "$(num_lines "${_keys}")" ]; then
                    log "decoding ${dset} produced $(num_lines "${_dir}/text" 2>/dev/null || echo 0)" \
                        "hypotheses for $(num_lines "${_keys}") utterances; see ${_logdir}"
                    exit 1
                fi
                _outs=()
                for f in token token_int score text; do [ -f "${_dir}/${f}" ] && _outs+=("${_dir}/${f}"); done
                mark_done "${_dir}/.done.decode" --inputs "${_keys}" "${_dec_in[@]}" \
                    --outputs "${_outs[@]}" --options "${_dec_opts}"
                did_work
            done
        done
        row_end

        "${use_ilm}" || continue
        ilm_setup "${tag}"
        row_begin 14 "fused decoding (Table 3)" "${tag}"
        mapfile -t _common < <(ilm_decode_common)
        _jobs=${_ilm}/decode_jobs.txt
        : > "${_jobs}"
        for c in "${ilm_conditions[@]}"; do
            for m in ${ilm_methods}; do
                _lm=()
                if [ "${m}" = none ]; then ilm_weight=0; lm_weight=0   # no external LM at all (its speed too)
                else
                    [ -f "${_ilm}/tune_${c}/${m}/.done.tune" ] || { log "run stage 13 first (${_ilm}/tune_${c}/${m})"; exit 1; }
                    # shellcheck disable=SC1090
                    . "${_ilm}/tune_${c}/${m}/best.sh"
                    read -r -a _lm <<< "$(elm_opts "${c}")"
                fi
                for s in $(cond_test_sets "${c}"); do
                    _out=${_ilm}/decode_${c}_${m}/${s}
                    is_done "${_out}/.done.decode" && continue
                    _job_files=(--input "${data_feats}/${s}/feats.scp" --output "${_out}/1best_recog/text")
                    [ "${m}" = none ] || _job_files+=(--input "${_ilm}/tune_${c}/${m}/best.sh")
                    log "decoding ${s} with ${m} (${c} external LM, ilm ${ilm_weight}, lm ${lm_weight})"
                    # shellcheck disable=SC2046,SC2086
                    job "${_out}/.done.decode" "${_out}/decode_job.log" espnet_ext.bin.asr_inference \
                        "${_common[@]}" --data_path_and_name_and_type "${data_feats}/${s}/feats.scp,speech,kaldi_ark" \
                        ${_lm[@]+"${_lm[@]}"} --lm_weight "${lm_weight}" $(ilm_opts "${m}") \
                        --ilm_weight "${ilm_weight}" --output_dir "${_out}" ${inference_args} >> "${_jobs}"
                done
            done
        done
        run_jobs "${_jobs}" "${_ilm}/decode_jobs.log"
        row_end
    done
fi

# ------------------------------------------------------------------------- 15: scoring
if run_stage 15; then
    for tag in "${models[@]}"; do
        _exp=${expdir}/asr_${tag}
        row_begin 15 "sclite scoring" "${tag}"
        for mode_tag in "${inference_tags[@]}"; do
            for dset in ${test_sets}; do
                _dir=${_exp}/${mode_tag#*:}/${dset}
                for t in ${score_types}; do
                    _out=${_dir}/score_${t}
                    _ref=${data_feats}/${dset}/text
                    if is_done "${_out}/.done.score"; then
                        log "${_out}: scored"
                        continue
                    fi
                    rm -rf "${_out}"  # a refused or failed scoring leaves no earlier result behind
                    if _why=$(not_done_why "${_dir}/.done.decode"); then
                        log "${_dir} has no complete decoding (${_why}): run stage 14 first"
                        exit 1
                    fi
                    _bpe_opt=()
                    [ "${t}" = ter ] && _bpe_opt=(--bpemodel "${bpemodel}")
                    "${python}" -m espnet_ext.recipe.bin.score_sclite --ref "${_ref}" \
                        --hyp "${_dir}/text" --utt2spk "${data_feats}/${dset}/utt2spk" \
                        --score_type "${t}" "${_bpe_opt[@]}" --output_dir "${_out}"
                    mark_done "${_out}/.done.score" --inputs "${_ref}" "${_dir}/text" \
                        "${data_feats}/${dset}/utt2spk" "${_bpe_opt[@]:1}" --outputs "${_out}"/{result.txt,result.dtl}
                    did_work
                done
            done
        done
        # Word times of the model's 1-best (no LM) against the reference word times.
        for dset in ${timestamp_test_sets:-${test_sets}}; do
            _ref=data/${dset}/word_times.ctm
            _out=${_exp}/timestamps/${dset}
            [ -f "${_ref}" ] || { [ -z "${timestamp_test_sets}" ] && continue; log "${_ref} missing: no word timestamps for ${dset}"; exit 1; }
            _in=("${_exp}/config.yaml" "${_exp}/${inference_asr_model}" "${data_feats}/${dset}/feats.scp" "${_ref}")
            _opts=()
            [ -n "${inference_config}" ] && { _in+=("${inference_config}"); _opts=(--config "${inference_config}"); }
            is_done "${_out}/.done.timestamps" && continue
            mkdir -p "${_out}"
            log "word timestamps of ${dset}: ${_out}/timestamps.md (log ${_out}/timestamp_report.log)"
            _rc=0
            "${python}" -m espnet_ext.recipe.bin.timestamp_report --asr_exp "${_exp}" \
                --model "${inference_asr_model}" --data_dir "${data_feats}/${dset}" \
                --ref_ctm "${_ref}" --output_dir "${_out}" --batch_size "${inference_batch_size}" \
                "${_opts[@]}" > "${_out}/timestamp_report.log" 2>&1 || _rc=$?
            if [ "${_rc}" -eq 3 ]; then
                log "${_exp}: a model without CIF fires or CTC branch has no word timestamps"; break
            elif [ "${_rc}" -ne 0 ]; then
                log "word timestamps of ${dset} failed; log: ${_out}/timestamp_report.log"
                exit 1
            fi
            mark_done "${_out}/.done.timestamps" --inputs "${_in[@]}" \
                --outputs "${_out}"/{timestamps.json,timestamps.md,cif.ctm,ctc.ctm}
            did_work
        done
        if "${use_ilm}"; then
            ilm_setup "${tag}"
            _jobs=${_ilm}/score_jobs.txt
            : > "${_jobs}"
            for c in "${ilm_conditions[@]}"; do
                for m in ${ilm_methods}; do
                    for s in $(cond_test_sets "${c}"); do
                        _out=${_ilm}/decode_${c}_${m}/${s}
                        _score=${_out}/score_${ilm_score_type}
                        is_done "${_score}/.done.score" && continue
                        _job_files=(--input "${data_feats}/${s}/text" --input "${_out}/1best_recog/text"
                                    --output "${_score}/result.txt")
                        job "${_score}/.done.score" "${_out}/score_job.log" espnet_ext.recipe.bin.score_sclite \
                            --ref "${data_feats}/${s}/text" --hyp "${_out}/1best_recog/text" \
                            --utt2spk "${data_feats}/${s}/utt2spk" --score_type "${ilm_score_type}" \
                            --output_dir "${_score}" >> "${_jobs}"
                    done
                done
            done
            run_jobs "${_jobs}" "${_ilm}/score_jobs.log"
        fi
        row_end
    done
fi

# ------------------------------------------------------------------------- 16: RESULTS.md
if run_stage 16; then
    row_begin 16 "RESULTS.md" "${asr_tag}"
    # CIF fires of the first model on the first utterance of the first test set, labelled with the
    # tokens of its first decoding.
    _first_test=${test_sets%% *}
    if "${plot_cif_fires}" && [ -n "${_first_test}" ]; then
        _exp=${expdir}/asr_${models[0]}
        if [ -f "${_exp}/.done.fire_plot" ] && [ "${_exp}/.done.fire_plot" -nt "${_exp}/.done.train" ]; then
            log "${_exp}: CIF fire plot done"
        else
            "${python}" -m espnet_ext.recipe.bin.plot_cif_fires --asr_exp "${_exp}" \
                --data_dir "${data_feats}/${_first_test}" --model "${inference_asr_model}" \
                --decode_dir "${_exp}/${inference_tags[0]#*:}/${_first_test}"
            touch "${_exp}/.done.fire_plot"
            did_work
        fi
    fi
    # One file per model for a colleague or the transcribe command (espnet_ext.bin.pack_model).
    if "${pack_models}"; then
        for tag in "${models[@]}"; do
            _exp=${expdir}/asr_${tag}
            _in=("${_exp}/config.yaml" "${_exp}/${inference_asr_model}")
            _opts=(--fs "${fs}" --num_mel_bins "${num_mel_bins}")
            [ -n "${inference_config}" ] && { _in+=("${inference_config}"); _opts+=(--decode_config "${inference_config}"); }
            if "${use_lm}"; then
                _in+=("${lm_exp}/config.yaml" "${lm_exp}/${inference_lm}")
                _opts+=(--lm_train_config "${lm_exp}/config.yaml" --lm_file "${lm_exp}/${inference_lm}")
            fi
            is_done "${_exp}/.done.pack" --options "${_opts[*]}" && continue
            "${python}" -m espnet_ext.bin.pack_model --asr_train_config "${_exp}/config.yaml" \
                --asr_model_file "${_exp}/${inference_asr_model}" "${_opts[@]}" \
                --outpath "${_exp}/packed_model.zip"
            mark_done "${_exp}/.done.pack" --inputs "${_in[@]}" --outputs "${_exp}/packed_model.zip" \
                --options "${_opts[*]}"
            did_work
        done
    fi
    # Table 3 of every model of this run (its section file: ${expdir}/ilm_<tag>/RESULTS.md).
    if "${use_ilm}"; then
        for tag in "${models[@]}"; do
            ilm_setup "${tag}"
            if [ ! -f "${_ilm}/perplexity/.done.ppl" ]; then
                log "${_ilm}: no internal-LM results yet (stages 12-15 with --use_ilm true)"
                continue
            fi
            "${python}" -m espnet_ext.recipe.bin.ilm_results --ilm_exp "${_ilm}" --asr_exp "${_asr_exp}" \
                --methods "${ilm_methods}" --conditions "${ilm_conditions[*]}" \
                --score_type "${ilm_score_type}" --test_sets_intra "${ilm_test_sets}" \
                --test_sets_cross "${ilm_cross_test_sets}" --output "${_ilm}/RESULTS.md"
        done
    fi
    # HKD Table 1 over the distillers (its section file: ${expdir}/table1_<asr_tag>.md).
    if [ ${#models[@]} -gt 1 ]; then
        _rows=()
        for tag in "${models[@]}"; do
            _d=$(distiller_of "${tag}")
            if [ "${_d}" = none ]; then _rows+=(--row "CIF=${expdir}/asr_${tag}"); else _rows+=(--row "+${_d^^}=${expdir}/asr_${tag}"); fi
        done
        _note="Units: ${token_type} token list ${token_listdir}/${token_tag}; config ${asr_config}"
        _note+=" with --distiller <d> of the row"
        "${use_plm}" && _note+="; teacher ${plm_model} ($(cat "${plm_dir}/${train_set}/feats_dim" 2>/dev/null || echo "?")-d features in ${plm_dir})"
        "${python}" -m espnet_ext.recipe.bin.hkd_table1 --test_set "${_first_test}" \
            --score_type "${ilm_score_type}" --plm_dir "${plm_dir}" \
            --sets "$(uniq_words "${train_set}" "${valid_set}")" --note "${_note}." "${_rows[@]}" \
            --output "${expdir}/table1_${asr_tag}.md"
    fi
    did_work
    row_end  # recorded first so that this run's table includes every stage
    "${python}" -m espnet_ext.recipe.bin.collect_results --output "${results_md}" "${expdir}"
    log "results: ${results_md}"
fi

log "asr.sh finished (stages ${stage}-${stop_stage})"
