#!/usr/bin/env bash
# Internal-LM estimation and DR-KD (utils/ilm_stages.sh, paper Table 3) for a recipe's CIF model,
# and optionally a LAS model: the "--ilm true" part of egs/aishell and egs/librispeech run.sh.
# Run from the recipe directory after asr.sh's stages 1-16, with the options the recipe gave
# asr.sh after "--": the token list, stage-7 LM, ASR model and data sets are derived from them
# exactly as asr.sh names them.
#
#   utils/ilm_recipe.sh [--cross_text FILE --cross_dev SET --cross_test "SETS"] \
#       [--las_config conf/train_las_zh1kh.yaml] [--ilm_opts "..."] -- <asr.sh options>
#
# Per model (exp/ilm_<asr tag>, one timed step per ilm_stages.sh stage in its stage_times.tsv):
#   intra-domain condition: external LM = the recipe's stage-7 LM (with use_lm=false: an LM of
#     --lm_config trained by ilm_stages.sh on the training transcripts, or --elm_text_intra given
#     in --ilm_opts), weights tuned on the valid set, decoded on --intra_test_sets;
#   cross-domain condition (only with --cross_text, a Kaldi text "id sentence" of another domain):
#     an LM of the same config on it, weights tuned on --cross_dev (default: the valid set),
#     decoded on --cross_test (default: the intra test sets). --cross_dev/--cross_test must be
#     among asr.sh's --test_sets so that they have features (run.sh adds them).
# Then Table 3 and the ILM perplexities/parameter counts are appended to RESULTS.md.
set -euo pipefail

cross_text=             # cross-domain ELM text, Kaldi format (empty: no cross condition)
cross_dev=              # data set tuning the cross-domain weights (empty: the valid set)
cross_test=             # cross-domain test sets (empty: the intra test sets)
intra_test_sets=        # intra-domain test sets (default: asr.sh's test sets without the valid set)
las_config=             # also train a LAS model (ilm_stages.sh stage 1) and run everything for it
las_decode_args="--beam_size 10 --batch_size 16"  # LAS decoding (no CIF decode config)
drlm_config=conf/train_drlm_lstm_2x128.yaml  # DR-LSTM LM (paper: {2,128} at 1kh, {2,256} at 10kh+)
drkd_config=conf/train_drkd_lstm_2x128.yaml  # DR-KD student (same size as the DR-LM)
ctx_config=conf/train_ilm_ctx.yaml           # ILME-L context learner
ilm_opts=               # other utils/ilm_stages.sh options (they come last, so they win)
results_md=RESULTS.md   # Table 3 is appended here

help_message="Usage: $0 [options] -- <asr.sh options of the recipe>"
. utils/parse_options.sh

log() { echo "$(date '+%Y-%m-%dT%H:%M:%S') (ilm_recipe.sh) $*" >&2; }

# asr.sh's derived names (token list, LM and ASR experiment dirs, ...), printed by asr.sh itself.
names_sh=$(./asr.sh "$@" --print_names true) || { log "asr.sh rejected the options: $*"; exit 2; }
eval "${names_sh}"
cfg_name() { local c=${1##*/}; echo "${c%.*}"; }
# One metric for Table 3: WER for words (English), else asr.sh's first (CER for Chinese).
score_type=${score_types%% *}
if ! "${remove_space}" && [[ " ${score_types} " == *" wer "* ]]; then score_type=wer; fi
if [ -z "${intra_test_sets}" ]; then
    for s in ${test_sets}; do
        [ "${s}" = "${valid_set}" ] || [[ " ${cross_dev} ${cross_test} " == *" ${s} "* ]] || \
            intra_test_sets+="${intra_test_sets:+ }${s}"
    done
fi

cmd=utils/run.py; [ "${cmd_backend}" = slurm ] && cmd=utils/slurm.py
common=(
    --cmd "${cmd}" --ngpu "$(( ngpu > 0 ? 1 : 0 ))"   # LM-sized jobs: one GPU at most
    --token_list "${token_list}" --token_type "${token_type}"
    --bpemodel "${bpemodel}" --score_type "${score_type}"
    --data_dir "${dumpdir}/fbank" --dump_dir "${dumpdir}/fbank"
    --train_set "${train_set}" --dev_set "${valid_set}" --test_sets_intra "${intra_test_sets}"
    --transcript_shape "${asr_stats_dir}/train/text_shape.${token_type}"
    --dev_shape "${asr_stats_dir}/valid/text_shape.${token_type}"
    --elm_config "${lm_config}" --drlm_config "${drlm_config}" --drkd_config "${drkd_config}"
    --ctx_config "${ctx_config}"
)
if "${use_lm}"; then
    common+=(--elm_exp_intra "${lm_exp}"
             --elm_text_intra "")
else
    log "use_lm=false (no stage-7 LM): the intra-domain ELM (${lm_config}) is trained on" \
        "data/${train_set}/text (other text: --ilm_opts \"--elm_text_intra FILE\")"
    common+=(--elm_text_intra "data/${train_set}/text")
fi
if [ -n "${cross_text}" ]; then
    [ -f "${cross_text}" ] || { log "--cross_text ${cross_text} not found"; exit 2; }
    common+=(--elm_text_cross "${cross_text}" --dev_set_cross "${cross_dev}"
             --test_sets_cross "${cross_test:-${intra_test_sets}}")
else
    log "no --cross_text: the cross-domain condition is skipped (intra-domain only)"
    common+=(--elm_text_cross "" --test_sets_cross "")
fi

names=([1]="LAS training" [2]="LM statistics" [3]="external LMs" [4]="DR-LSTM" [5]="DR-2gram"
       [6]="ILME-L learner" [7]="DR-KD students" [8]="ILM perplexity" [9]="fusion weight grid"
       [10]="fused decoding" [11]="Table 3")
# run_model <asr exp> <first ilm stage> <ilm_stages.sh options...>
run_model() {
    local asr_exp=$1 first=$2 s t0 ilm_exp
    shift 2
    ilm_exp=${expdir}/ilm_${asr_exp##*/asr_}
    mkdir -p "${ilm_exp}"
    for s in $(seq "${first}" 11); do
        t0=$(date +%s)
        log "ILM stage ${s} (${names[s]}) of ${asr_exp} -> ${ilm_exp}"
        # shellcheck disable=SC2086
        utils/ilm_stages.sh "${common[@]}" --asr_exp "${asr_exp}" --ilm_exp "${ilm_exp}" "$@" \
            ${ilm_opts} --stage "${s}" --stop_stage "${s}"
        printf '%s\t%s\t%s\t%s\n' "${s}" "${names[s]}" "$(( $(date +%s) - t0 ))" \
            "$(date '+%Y-%m-%dT%H:%M:%S')" >> "${ilm_exp}/stage_times.tsv"
    done
    # ilm_stages.sh's table without its heading line (the heading here names the ASR model).
    { echo; echo "## Internal-LM estimation and DR-KD: ${asr_exp} (${ilm_exp})"
      sed '1{/^## /d}' "${ilm_exp}/RESULTS.md"; echo
      echo "### ILM perplexity and parameters (${ilm_exp}/perplexity)"; echo
      cat "${ilm_exp}/perplexity/perplexity.md"; } >> "${results_md}"
}

run_model "${asr_exp}" 2 --decode_config "${inference_config}"
if [ -n "${las_config}" ]; then
    run_model "${expdir}/asr_$(cfg_name "${las_config}")_${token_tag}" 1 --las_config "${las_config}" \
        --decode_config "" --decode_args "${las_decode_args}"
fi
log "Table 3 appended to ${results_md}"
