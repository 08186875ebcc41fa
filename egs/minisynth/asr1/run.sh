#!/usr/bin/env bash
# minisynth: the offline mini corpus recipe, end to end on a CPU (the project's main job).
# A synthetic English corpus (festival + espeak-ng reading fortunes and Bible clauses), 80-d fbank,
# sentencepiece BPE, a small LSTM LM, the CIF model, batched beam search with and without LM
# shallow fusion, sclite WER on the in-domain, unseen-voice and cross-domain test sets, RESULTS.md
# and a PNG of CIF fire positions. A thin layer over the shared stages of asr.sh
# (../../TEMPLATE/asr1/asr.sh); README.md has the measured times and WERs.
#
#   ./run.sh                                   # every stage, default configuration (<= 30 min, 2 cores)
#   ./run.sh --fast true                       # CI preset: small corpus and model (<= 8 min)
#   ./run.sh --stage 11                        # from ASR training on (earlier stages are done)
#   ./run.sh --asr_configs "conf/a.yaml conf/b.yaml"   # several models, each decoded on every test set
#
# Recipe options are listed below; every other option goes to asr.sh (./asr.sh --help).
set -euo pipefail

fast=false              # true: CI preset (conf/corpus_fast.yaml, *_fast.yaml configs)
asr_configs=            # ASR configs, space separated (default: conf/train_asr_cif_mini[_fast].yaml)
lm_config=              # LM config (default: conf/train_lm_mini[_fast].yaml)
inference_config=conf/decode_mini.yaml  # beam search and LM weight
decode_without_lm=true  # also decode every model without the LM
plot_fires=true         # PNG of CIF fire positions over the fbank of one test_in utterance
nbpe=1000               # sentencepiece unigram pieces (token list: data/token_list/bpe_unigram<nbpe>)
seed=1                  # corpus seed (local/data.sh --seed)
nj=2                    # parallel jobs: synthesis, fbank, statistics, decoding

log() { echo "$(date '+%Y-%m-%dT%H:%M:%S') (run.sh) $*" >&2; }
own_options=" fast asr_configs lm_config inference_config decode_without_lm plot_fires nbpe seed nj "
# shellcheck disable=SC1091
. local/recipe_options.sh   # splits "$@" into the options above and asr_opts for asr.sh

sfx=
"${fast}" && sfx=_fast
asr_configs=${asr_configs:-conf/train_asr_cif_mini${sfx}.yaml}
lm_config=${lm_config:-conf/train_lm_mini${sfx}.yaml}
# shellcheck disable=SC2206
configs=(${asr_configs})
for c in "${configs[@]}" "${lm_config}" "${inference_config}"; do
    [ -f "${c}" ] || { log "config ${c} does not exist"; exit 2; }
done
set +u; . ./path.sh; set -u   # the project's Python for local/ helpers
# OpenMP threads that wait by sleeping, not spinning: with the default policy a 2-thread torch
# process on a busy 2-core machine spends its time spinning at barriers (measured: a training
# step 7x the CPU time and 15x the wall time of PASSIVE); on an idle machine it costs nothing.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

test_sets="test_in test_unseen_voice test_cross"
common=(
    --train_set train --valid_set dev --test_sets "${test_sets}"
    --local_data_opts "--fast ${fast} --seed ${seed} --nj ${nj}"
    --nj "${nj}" --inference_nj "${nj}" --inference_num_threads 1
    --fs 16000 --num_mel_bins 80
    # Sentencepiece unigram pieces learnt from the in-domain LM text (17k sentences, which
    # include the training transcripts but no dev/test sentence): ~1.4 pieces per word, so the
    # 80 ms CIF encoder has >2 frames per token.
    --token_type bpe --nbpe "${nbpe}" --bpemode unigram --token_train_text data/local/lm_in/text
    # LM text: the in-domain pool (dev/test sentences are removed again in stage 4, and reported).
    --use_lm true --lm_config "${lm_config}" --lm_train_text data/local/lm_in/text
    --asr_train_module espnet_ext.bin.asr_cif_train
    --asr_inference_module espnet_ext.bin.asr_inference
    --inference_config "${inference_config}" --inference_batch_size 16
    --inference_asr_model valid.acc.ave.pth
    --score_types wer
)

# data/ holds one corpus: refuse to mix the --fast and the default preset (or two seeds).
preset="fast=${fast} seed=${seed}"
if [ -f data/.done.data_prep ] && [ -f data/.minisynth_preset ] \
        && [ "$(cat data/.minisynth_preset)" != "${preset}" ]; then
    log "data/ holds the corpus '$(cat data/.minisynth_preset)', not '${preset}':" \
        "remove data/ dump/ exp/ first (or run in a copy of the recipe)"
    exit 2
fi

mkdir -p exp
run_times=exp/run_times.tsv
[ -f "${run_times}" ] || printf 'step\tstages\tconfig\twall_s\tcpu_s\tload_1_5_15\tdate\n' > "${run_times}"
# timed STEP STAGES CONFIG cmd...: run cmd; append wall time, CPU time (user+sys of every
# descendant) and the machine load to exp/run_times.tsv (the machine may be shared: CPU time is
# the figure that carries over to an idle machine).
timed() {
    local step=$1 stages=$2 cfg=$3 tf rc=0 wall user sys TIMEFORMAT='%R %U %S'
    shift 3
    tf=$(mktemp)
    { time "$@" 2>&4 4>&-; } 4>&2 2>"${tf}" || rc=$?
    read -r wall user sys < "${tf}" || true
    rm -f "${tf}"
    [[ "${wall:-}" =~ ^[0-9.]+$ ]] || { wall=0; user=0; sys=0; }  # interrupted: no timing line
    printf '%s\t%s\t%s\t%.0f\t%.0f\t%s\t%s\n' "${step}" "${stages}" "${cfg}" "${wall:-0}" \
        "$(awk -v u="${user:-0}" -v s="${sys:-0}" 'BEGIN { print u + s }')" "$(cut -d' ' -f1-3 /proc/loadavg)" \
        "$(date '+%Y-%m-%dT%H:%M:%S')" >> "${run_times}"
    return "${rc}"
}
in_range() { [ "$1" -le "${stop_stage}" ] && [ "$2" -ge "${stage}" ]; }  # [a,b] meets [stage,stop]
from() { echo $(( $1 > stage ? $1 : stage )); }
upto() { echo $(( $1 < stop_stage ? $1 : stop_stage )); }

# Stages 1-10 (data, features, tokens, LM, ASR statistics) are shared by every ASR config.
for s in $(seq "$(from 1)" "$(upto 10)"); do
    timed "stage ${s}" "${s}" "${configs[0]}" \
        ./asr.sh "${common[@]}" --asr_config "${configs[0]}" "${asr_opts[@]}" --stage "${s}" --stop_stage "${s}"
    if [ "${s}" = 1 ]; then echo "${preset}" > data/.minisynth_preset; fi
done
# Stages 11-15 (training, reserved ILM stages, decoding, scoring) per ASR config; then the same
# model decoded without the LM (its own decode_* directory: RESULTS.md lists both).
for cfg in "${configs[@]}"; do
    for s in $(seq "$(from 11)" "$(upto 15)"); do
        timed "stage ${s}" "${s}" "${cfg}" \
            ./asr.sh "${common[@]}" --asr_config "${cfg}" "${asr_opts[@]}" --stage "${s}" --stop_stage "${s}"
    done
    if "${decode_without_lm}" && "${use_lm}" && in_range 14 15; then
        timed "stages 14-15 without LM" "$(from 14)-$(upto 15)" "${cfg}" \
            ./asr.sh "${common[@]}" --asr_config "${cfg}" "${asr_opts[@]}" --use_lm false \
                --stage "$(from 14)" --stop_stage "$(upto 15)"
    fi
done

# The PNG: CIF fires of the first ASR config's model on the first test_in utterance, labelled
# with the tokens of its LM decoding.
if "${plot_fires}" && in_range 16 16; then
    cfg=$(basename "${configs[0]}"); cfg=${cfg%.*}
    asr_exp=exp/asr_${cfg}_bpe_unigram${nbpe}
    decode_dir=$(ls -d "${asr_exp}"/decode_*_lm_*/test_in 2>/dev/null | head -1 || true)
    timed "CIF fire plot" - "${configs[0]}" \
        python3 local/plot_cif_fires.py --asr_exp "${asr_exp}" --data_dir dump/fbank/test_in \
            ${decode_dir:+--decode_dir "${decode_dir}"}
fi
if in_range 16 16; then
    timed "stage 16" 16 - \
        ./asr.sh "${common[@]}" --asr_config "${configs[0]}" "${asr_opts[@]}" --stage 16 --stop_stage 16
    python3 local/recipe_report.py --exp exp >> RESULTS.md
    log "results: $(pwd)/RESULTS.md"
fi
