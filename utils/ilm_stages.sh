#!/usr/bin/env bash
# Internal-LM estimation, density ratio and DR-KD stages (issue 7; Chen et al., "Knowledge
# distillation approach for efficient internal language model estimation"), for one trained or
# to-be-trained ASR model (CIF or LAS). Run from a recipe directory (egs/<corpus>/asr1) after
# its data, fbank, token list (and ASR model) stages, e.g.
#
#   utils/ilm_stages.sh --asr_exp exp/asr_cif --token_list data/token_list/char/tokens.txt \
#       --decode_config conf/decode_cif.yaml --stage 1 --stop_stage 11
#
# Stages (own numbering; every stage skips work whose output exists, so reruns resume):
#   1  LAS training (only with --las_config; ESPnet transformer encoder + LSTM attention decoder)
#   2  LM statistics (shape files) of the ASR transcripts and of each external-LM text
#   3  external LMs (ELM), one per condition: intra (in-domain text) and cross (other domain)
#   4  DR-LSTM LM on the ASR training transcripts                        (--drlm_config)
#   5  DR-2gram: interpolated Kneser-Ney 2-gram on the same transcripts   (ARPA)
#   6  ILME-L context learner on the transcripts, ASR model frozen       (--ctx_config)
#   7  DR-KD students: DR-KD-Z (ILME-Z teacher) and DR-KD-L (ILME-L teacher)  (--drkd_config)
#   8  perplexities and ILM-related parameter counts on dev/test texts (paper Fig. 1)
#   9  grid search of (lambda_ILM, lambda_ELM) per condition and method on the dev set (Fig. 3;
#      --dev_max_utts: on an evenly spaced subset)
#  10  decoding of the test sets with the tuned weights + sclite
#      (9 and 10 run their jobs in one Python process each: espnet_ext.recipe.bin.ilm_jobs)
#  11  results table in the paper's Table 3 layout -> ${ilm_exp}/RESULTS.md (+ throughput)
#
# Methods (rows of Table 3): none (no LM), sf (shallow fusion), ilme_z, ilme_l, dr, dr_2gram,
# drkd_z, drkd_l. Decoding: log P(W|X) - lambda_ILM log P_ILM(W) + lambda_ELM log P_ELM(W).
# Logs of every step are under the step's exp directory (train.log, decode.log, ...).
set -euo pipefail

stage=1                      # first stage to run
stop_stage=100               # last stage to run
python=python3               # Python with espnet_ext installed (path.sh activates .venv)
cmd=utils/run.py             # job runner with run.pl's interface: utils/run.py or utils/slurm.py
ngpu=0                       # GPUs for training (0: CPU)
asr_exp=                     # ASR model dir: config.yaml + ${asr_model_name} (stage 1 trains here)
asr_model_name=valid.acc.ave.pth  # checkpoint in ${asr_exp} (LAS/CIF: valid.acc.ave.pth)
las_config=                  # stage 1: LAS config (e.g. conf/train_las_mini.yaml); empty: skip
ilm_exp=                     # output root (default: ${asr_exp}/ilm)
data_dir=data                # Kaldi data dirs: <set>/{text,utt2spk}
dump_dir=dump/fbank          # features: <set>/feats.scp (kaldi_ark), utt2num_frames
feats_dim=80                 # feature dimension (LAS training --input_size)
train_set=train              # ASR training set: its transcripts train DR, 2-gram, ILME-L, DR-KD
dev_set=dev                  # dev set: LM validation and intra-domain weight tuning
dev_set_cross=               # dev set of the cross condition (empty: tune on ${dev_set})
test_sets_intra="test_in"    # test sets of the intra-domain condition
test_sets_cross="test_cross" # test sets of the cross-domain condition
elm_text_intra=data/local/lm_in/text     # ELM training text, intra condition (empty: skip)
elm_text_cross=data/local/lm_cross/text  # ELM training text, cross condition (empty: skip)
elm_exp_intra=               # an already trained intra ELM dir (skips its training)
elm_exp_cross=               # an already trained cross ELM dir (skips its training)
elm_config=conf/train_lm_lstm_tiny.yaml   # ELM config (both conditions)
token_list=                  # tokens.txt shared by the ASR model and every LM (<sos/eos> last)
token_type=char              # char | bpe | word | hugging_face (as for the ASR model)
bpemodel=none                # sentencepiece model (bpe) or tokenizer dir (hugging_face)
score_type=cer               # sclite unit: cer | wer | ter
drlm_config=conf/train_drlm_lstm_mini.yaml   # DR-LSTM LM (same size as the DR-KD student)
drkd_config=conf/train_drkd_lstm_mini.yaml   # DR-KD student
ctx_config=conf/train_ilm_ctx_mini.yaml      # ILME-L context learner
methods="none sf ilme_z ilme_l dr dr_2gram drkd_z drkd_l"  # Table 3 rows to tune and decode
ilm_weights="0.1,0.2,0.3,0.4,0.5"    # lambda_ILM grid (stage 9)
lm_weights="0.1,0.2,0.3,0.4,0.5,0.6" # lambda_ELM grid (stage 9)
dev_max_utts=0               # stage 9 tunes on at most this many utterances per dev set (0: all)
transcript_shape=            # existing token-count shape file of the train transcripts (skips its stats)
dev_shape=                   # existing token-count shape file of the dev text (skips its stats)
decode_config=               # asr_inference --config (e.g. conf/decode_cif.yaml)
decode_args=""               # extra asr_inference options (e.g. "--batch_size 32 --beam_size 10")
lm_fold_length=150           # folded batching of the LM-like tasks

help_message="Usage: $0 --asr_exp DIR --token_list FILE [options]"
. utils/parse_options.sh

log() { echo "$(date '+%F %T') $0: $*"; }
die() { echo "$0: error: $*" >&2; exit 1; }
[ -n "$asr_exp" ] || die "--asr_exp is required"
[ -n "$token_list" ] && [ -f "$token_list" ] || die "--token_list '$token_list' not found"
[ -n "$ilm_exp" ] || ilm_exp=${asr_exp}/ilm
[ "$(tail -n 1 "$token_list")" = "<sos/eos>" ] || \
    die "$token_list: <sos/eos> must be the last token (ESPnet LMs use sos=eos=V-1)"
asr_config=${asr_exp}/config.yaml
asr_model=${asr_exp}/${asr_model_name}
train_text=${data_dir}/${train_set}/text
dev_text=${data_dir}/${dev_set}/text
lm_stats=${ilm_exp}/lm_stats
run_stage() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }
tok_opts=(--token_list "$token_list" --token_type "$token_type")
[ "$bpemodel" != none ] && tok_opts+=(--bpemodel "$bpemodel")
conf_tag() { basename "$1" .yaml | sed 's/^train_//'; }
conditions=()
[ -n "$elm_text_intra$elm_exp_intra" ] && conditions+=(intra)
[ -n "$elm_text_cross$elm_exp_cross" ] && conditions+=(cross)
mkdir -p "$ilm_exp"

# hugging_face units (a PLM tokenizer's wordpieces): ESPnet's LM task has no such tokenizer, so
# every LM-side text is pre-tokenized once into ${ilm_exp}/pieces/<its path> and read with
# --token_type word (as asr.sh does for its LM); LAS training and decoding keep hugging_face.
lm_tok_opts=("${tok_opts[@]}")
lm_text() { echo "$1"; }   # the LM-side version of Kaldi text $1
if [ "$token_type" = hugging_face ]; then
    [ "$bpemodel" != none ] || die "--token_type hugging_face needs --bpemodel <tokenizer dir>"
    lm_tok_opts=(--token_list "$token_list" --token_type word)
    lm_text() { echo "${ilm_exp}/pieces/${1#/}"; }
    pre=()
    for t in "$train_text" "$dev_text" ${dev_set_cross:+"${data_dir}/${dev_set_cross}/text"} \
            $(for s in $test_sets_intra $test_sets_cross; do echo "${data_dir}/$s/text"; done) \
            ${elm_exp_intra:-$elm_text_intra} ${elm_exp_cross:-$elm_text_cross}; do
        if [ -f "$t" ] && [ ! -e "$(lm_text "$t")" ]; then pre+=(--pretokenize "$t" "$(lm_text "$t")"); fi
    done
    if [ ${#pre[@]} -gt 0 ]; then
        log "pre-tokenizing $(( ${#pre[@]} / 3 )) texts into wordpieces under ${ilm_exp}/pieces"
        ${python} -m espnet_ext.bin.make_token_list --token_type hugging_face --hf_model "$bpemodel" \
            --output_dir "${ilm_exp}/pieces/token_list" "${pre[@]}"
    fi
fi

# LM-task data options for text $1 (train) with shape file $2; validation on the dev text.
lm_data_opts() {
    echo --train_data_path_and_name_and_type "$1,text,text" \
         --valid_data_path_and_name_and_type "$(lm_text "$dev_text"),text,text" \
         --train_shape_file "$2" --valid_shape_file "${lm_stats}/dev/valid/text_shape" \
         --fold_length "$lm_fold_length" --use_tensorboard false --use_matplotlib false
}
# Run a training job unless its averaged model exists: run_train <dir> <module> <args...>
run_train() {
    local dir=$1 module=$2; shift 2
    if [ -e "$dir/valid.loss.ave.pth" ] || [ -e "$dir/valid.acc.ave.pth" ]; then
        log "$dir is trained; skipping"; return
    fi
    mkdir -p "$dir"
    log "training $dir ($module); log: $dir/train.log"
    ${cmd} --gpu "$ngpu" "$dir/train.log" ${python} -m "$module" --ngpu "$ngpu" --resume true \
        --output_dir "$dir" "$@"
}

elm_dir() {  # ELM dir of condition $1
    local given; given=$(eval echo "\${elm_exp_$1}")
    if [ -n "$given" ]; then echo "$given"; else echo "${ilm_exp}/elm_$1_$(conf_tag "$elm_config")"; fi
}
lm_ckpt() { if [ -e "$1/valid.loss.ave.pth" ]; then echo "$1/valid.loss.ave.pth"; else echo "$1/valid.acc.ave.pth"; fi; }
drlm_dir=${ilm_exp}/$(conf_tag "$drlm_config")
drkd_tag=$(conf_tag "$drkd_config")
ctx_dir=${ilm_exp}/ilm_ctx_$(conf_tag "$ctx_config" | sed 's/^ilm_ctx_\{0,1\}//')
bigram=${ilm_exp}/drlm_2gram/lm.arpa

if run_stage 1 && [ -n "$las_config" ]; then
    log "stage 1: LAS training ($las_config) -> $asr_exp"
    stats=${asr_exp}_stats
    if [ ! -e "$stats/train/feats_stats.npz" ]; then
        ${cmd} "$stats/stats.log" ${python} -m espnet2.bin.asr_train --collect_stats true \
            --config "$las_config" "${tok_opts[@]}" --input_size "$feats_dim" --normalize none \
            --train_data_path_and_name_and_type "${dump_dir}/${train_set}/feats.scp,speech,kaldi_ark" \
            --train_data_path_and_name_and_type "${train_text},text,text" \
            --valid_data_path_and_name_and_type "${dump_dir}/${dev_set}/feats.scp,speech,kaldi_ark" \
            --valid_data_path_and_name_and_type "${dev_text},text,text" \
            --train_shape_file "${dump_dir}/${train_set}/feats.scp" \
            --valid_shape_file "${dump_dir}/${dev_set}/feats.scp" --output_dir "$stats"
    fi
    run_train "$asr_exp" espnet2.bin.asr_train --config "$las_config" "${tok_opts[@]}" \
        --input_size "$feats_dim" --normalize global_mvn \
        --normalize_conf "stats_file=$stats/train/feats_stats.npz" \
        --train_data_path_and_name_and_type "${dump_dir}/${train_set}/feats.scp,speech,kaldi_ark" \
        --train_data_path_and_name_and_type "${train_text},text,text" \
        --valid_data_path_and_name_and_type "${dump_dir}/${dev_set}/feats.scp,speech,kaldi_ark" \
        --valid_data_path_and_name_and_type "${dev_text},text,text" \
        --train_shape_file "$stats/train/speech_shape" --train_shape_file "$stats/train/text_shape" \
        --valid_shape_file "$stats/valid/speech_shape" --valid_shape_file "$stats/valid/text_shape" \
        --fold_length 800 --fold_length "$lm_fold_length"
fi
[ -f "$asr_config" ] && [ -f "$asr_model" ] || \
    { [ "$stop_stage" -lt 4 ] || die "ASR model $asr_model (or $asr_config) not found"; }

lm_stats_of() {  # collect_stats for LM text $1 into $2 (validation: dev text)
    [ -e "$2/train/text_shape" ] && return
    ${cmd} "$2/stats.log" ${python} -m espnet2.bin.lm_train --collect_stats true \
        "${lm_tok_opts[@]}" --train_data_path_and_name_and_type "$1,text,text" \
        --valid_data_path_and_name_and_type "$(lm_text "$dev_text"),text,text" \
        --train_shape_file "$1" --valid_shape_file "$(lm_text "$dev_text")" --output_dir "$2"
}
# The ASR model (trained, or LAS of stage 1) must share the LMs' token list and use its last
# entry <sos/eos> as sos/eos, as every LM here does: refused before any LM trains (once per
# ASR config and token list: the marker is newer than both).
checked=${ilm_exp}/.sos_eos_checked
if [ "$stage" -le 10 ] && [ "$stop_stage" -ge 2 ] && [ -f "$asr_config" ] && \
        ! { [ "$checked" -nt "$asr_config" ] && [ "$checked" -nt "$token_list" ]; }; then
    ${python} -m espnet_ext.lm.ilm --asr_train_config "$asr_config" --token_list "$token_list" \
        || die "the ASR model $asr_exp and the LMs need one token list with <sos/eos> last"
    touch "$checked"
fi

if run_stage 2; then
    log "stage 2: LM statistics"
    # Shape files an ASR recipe already has (same texts and token list): no ESPnet process.
    for pair in "$transcript_shape:${lm_stats}/transcripts" "$dev_shape:${lm_stats}/dev"; do
        src=${pair%%:*}; dst=${pair#*:}
        if [ -n "$src" ] && [ ! -e "$dst/train/text_shape" ]; then
            [ -f "$src" ] || die "shape file $src not found"
            mkdir -p "$dst/train" "$dst/valid"
            cut -d, -f1 "$src" > "$dst/valid/text_shape"   # "utt N[,V]" -> "utt N"
            cp "$dst/valid/text_shape" "$dst/train/text_shape"
        fi
    done
    lm_stats_of "$(lm_text "$train_text")" "${lm_stats}/transcripts"
    lm_stats_of "$(lm_text "$dev_text")" "${lm_stats}/dev"
    for c in "${conditions[@]}"; do
        text=$(eval echo "\${elm_text_$c}")
        [ -n "$text" ] && [ -z "$(eval echo "\${elm_exp_$c}")" ] && lm_stats_of "$(lm_text "$text")" "${lm_stats}/elm_$c"
    done
fi
transcript_opts=$(lm_data_opts "$(lm_text "$train_text")" "${lm_stats}/transcripts/train/text_shape")

if run_stage 3; then
    for c in "${conditions[@]}"; do
        [ -n "$(eval echo "\${elm_exp_$c}")" ] && { log "stage 3: using given ELM $(elm_dir "$c")"; continue; }
        text=$(eval echo "\${elm_text_$c}")
        log "stage 3: external LM ($c) on $text"
        run_train "$(elm_dir "$c")" espnet2.bin.lm_train --config "$elm_config" "${lm_tok_opts[@]}" \
            $(lm_data_opts "$(lm_text "$text")" "${lm_stats}/elm_$c/train/text_shape")
    done
fi

if run_stage 4; then
    log "stage 4: DR-LSTM LM ($drlm_config) on the ASR transcripts"
    run_train "$drlm_dir" espnet2.bin.lm_train --config "$drlm_config" "${lm_tok_opts[@]}" $transcript_opts
fi

if run_stage 5; then
    log "stage 5: DR-2gram (interpolated Kneser-Ney) -> $bigram"
    if [ ! -e "$bigram" ]; then
        mkdir -p "$(dirname "$bigram")"
        ${cmd} "$(dirname "$bigram")/train.log" ${python} -m espnet_ext.lm.ngram \
            --text "$(lm_text "$train_text")" "${lm_tok_opts[@]}" --output "$bigram"
    fi
fi

if run_stage 6; then
    log "stage 6: ILME-L context learner ($ctx_config), ASR model frozen"
    run_train "$ctx_dir" espnet_ext.bin.ilm_context_train --config "$ctx_config" "${lm_tok_opts[@]}" \
        --asr_train_config "$asr_config" --asr_model_file "$asr_model" $transcript_opts
fi

if run_stage 7; then
    log "stage 7: DR-KD students ($drkd_config)"
    run_train "${ilm_exp}/${drkd_tag}_z" espnet_ext.bin.kd_lm_train --config "$drkd_config" \
        "${lm_tok_opts[@]}" --teacher_train_config "$asr_config" --teacher_model_file "$asr_model" \
        --teacher_ilm_type zero $transcript_opts
    run_train "${ilm_exp}/${drkd_tag}_l" espnet_ext.bin.kd_lm_train --config "$drkd_config" \
        "${lm_tok_opts[@]}" --teacher_train_config "$asr_config" --teacher_model_file "$asr_model" \
        --teacher_ilm_type label_ctx --teacher_ctx_file "$(lm_ckpt "$ctx_dir")" $transcript_opts
fi

# ILM options of a method for asr_inference / tune_fusion.
ilm_opts() {
    case "$1" in
        none|sf) echo --ilm_type none ;;
        ilme_z) echo --ilm_type zero ;;
        ilme_l) echo --ilm_type label_ctx --ilm_file "$(lm_ckpt "$ctx_dir")" ;;
        dr) echo --ilm_type dr --ilm_file "$(lm_ckpt "$drlm_dir")" ;;
        dr_2gram) echo --ilm_type dr_2gram --ilm_file "$bigram" ;;
        drkd_z) echo --ilm_type dr_kd --ilm_file "$(lm_ckpt "${ilm_exp}/${drkd_tag}_z")" ;;
        drkd_l) echo --ilm_type dr_kd --ilm_file "$(lm_ckpt "${ilm_exp}/${drkd_tag}_l")" ;;
        *) die "unknown method $1" ;;
    esac
}

if run_stage 8; then
    log "stage 8: perplexities and ILM parameter counts -> ${ilm_exp}/perplexity"
    texts=(--text "$(lm_text "$dev_text")")
    [ -n "$dev_set_cross" ] && texts+=(--text "$(lm_text "${data_dir}/${dev_set_cross}/text")")
    for s in $test_sets_intra $test_sets_cross; do texts+=(--text "$(lm_text "${data_dir}/$s/text")"); done
    ${cmd} "${ilm_exp}/perplexity/ppl.log" ${python} -m espnet_ext.bin.ilm_perplexity \
        "${lm_tok_opts[@]}" --asr_train_config "$asr_config" --asr_model_file "$asr_model" \
        "${texts[@]}" --ilm "ILME-Z=zero" --ilm "ILME-L=label_ctx:$(lm_ckpt "$ctx_dir")" \
        --ilm "DR=dr:$(lm_ckpt "$drlm_dir")" --ilm "DR-2gram=dr_2gram:$bigram" \
        --ilm "DR-KD-Z=dr_kd:$(lm_ckpt "${ilm_exp}/${drkd_tag}_z")" \
        --ilm "DR-KD-L=dr_kd:$(lm_ckpt "${ilm_exp}/${drkd_tag}_l")" \
        --output_dir "${ilm_exp}/perplexity"
fi

decode_common=(--asr_train_config "$asr_config" --asr_model_file "$asr_model" --ngpu "$ngpu")
[ -n "$decode_config" ] && decode_common+=(--config "$decode_config")
input_of() { echo "${dump_dir}/$1/feats.scp,speech,kaldi_ark"; }
elm_opts() { local d; d=$(elm_dir "$1"); echo --lm_train_config "$d/config.yaml" --lm_file "$(lm_ckpt "$d")"; }

# Tuning subset of dev set $1 (every k-th utterance, so every speaker stays in): prints a dir with
# text and utt2spk (the text's ids also serve as --key_file).
dev_subset() {
    local src=${data_dir}/$1 dir=${ilm_exp}/dev_subsets/$1_max${dev_max_utts} n
    n=$(wc -l < "$src/text")
    if [ "$dev_max_utts" -le 0 ] || [ "$n" -le "$dev_max_utts" ]; then echo "$src"; return; fi
    if [ ! -s "$dir/utt2spk" ]; then
        mkdir -p "$dir"
        awk -v n="$n" -v m="$dev_max_utts" 'NR - 1 == int(j * n / m) { print; j++ }' \
            "$src/text" > "$dir/text"
        awk 'NR == FNR { keep[$1] = 1; next } $1 in keep' "$dir/text" "$src/utt2spk" > "$dir/utt2spk.tmp"
        mv "$dir/utt2spk.tmp" "$dir/utt2spk"
    fi
    echo "$dir"
}

# Stages 9-10 queue their decodings as job lists for espnet_ext.recipe.bin.ilm_jobs: one Python process
# per stage instead of one per job (ESPnet's start-up costs more than a mini-recipe decoding).
job() { printf '%q ' "$@"; echo; }   # one shell-quoted job line: LOG MODULE ARGS...
run_jobs() {  # run_jobs <jobs file> <log>
    if [ -s "$1" ]; then
        log "$(wc -l < "$1") jobs in one process ($1); log: $2"
        ${cmd} "$2" ${python} -m espnet_ext.recipe.bin.ilm_jobs --jobs "$1"
    fi
}

if run_stage 9; then
    jobs=${ilm_exp}/tune_jobs.txt
    : > "$jobs"
    for c in "${conditions[@]}"; do
        dev=$dev_set
        if [ "$c" = cross ] && [ -n "$dev_set_cross" ]; then dev=$dev_set_cross; fi
        sub=$(dev_subset "$dev")
        for m in $methods; do
            [ "$m" = none ] && continue
            out=${ilm_exp}/tune_${c}/${m}
            [ -e "$out/best.sh" ] && { log "stage 9: $out tuned; skipping"; continue; }
            grid=$ilm_weights; [ "$m" = sf ] && grid=0
            log "stage 9: tuning $m ($c ELM) on $sub ($(wc -l < "$sub/text") utts) -> $out/grid.md"
            # shellcheck disable=SC2046,SC2086
            job "$out/tune.log" espnet_ext.bin.tune_fusion "${decode_common[@]}" \
                --data_path_and_name_and_type "$(input_of "$dev")" $(elm_opts "$c") $(ilm_opts "$m") \
                --key_file "$sub/text" --ref_text "$sub/text" --utt2spk "$sub/utt2spk" \
                --score_type "$score_type" --ilm_weights "$grid" --lm_weights "$lm_weights" \
                --output_dir "$out" $decode_args >> "$jobs"
        done
    done
    run_jobs "$jobs" "${ilm_exp}/tune_jobs.log"
fi

if run_stage 10; then
    jobs=${ilm_exp}/decode_jobs.txt
    : > "$jobs"
    for c in "${conditions[@]}"; do
        for m in $methods; do
            lm=()
            if [ "$m" = none ]; then ilm_weight=0; lm_weight=0   # no ELM at all (its speed too)
            else
                [ -e "${ilm_exp}/tune_${c}/${m}/best.sh" ] || die "run stage 9 first (tune_${c}/${m})"
                . "${ilm_exp}/tune_${c}/${m}/best.sh"
                # shellcheck disable=SC2207
                lm=($(elm_opts "$c"))
            fi
            for s in $(eval echo "\${test_sets_$c}"); do
                out=${ilm_exp}/decode_${c}_${m}/$s
                [ -e "$out/score_${score_type}/result.txt" ] && continue
                log "stage 10: decoding $s with $m ($c ELM, ilm $ilm_weight, lm $lm_weight)"
                # shellcheck disable=SC2046,SC2086
                job "$out/decode_job.log" espnet_ext.bin.asr_inference "${decode_common[@]}" \
                    --data_path_and_name_and_type "$(input_of "$s")" ${lm[@]+"${lm[@]}"} \
                    --lm_weight "$lm_weight" $(ilm_opts "$m") --ilm_weight "$ilm_weight" \
                    --output_dir "$out" $decode_args >> "$jobs"
                job "$out/score_job.log" espnet_ext.recipe.bin.score_sclite --ref "${data_dir}/$s/text" \
                    --hyp "$out/1best_recog/text" --utt2spk "${data_dir}/$s/utt2spk" \
                    --score_type "$score_type" --output_dir "$out/score_${score_type}" >> "$jobs"
            done
        done
    done
    run_jobs "$jobs" "${ilm_exp}/decode_jobs.log"
fi

if run_stage 11; then
    log "stage 11: Table 3 -> ${ilm_exp}/RESULTS.md"
    ${python} -m espnet_ext.recipe.bin.ilm_results --ilm_exp "$ilm_exp" --methods "$methods" \
        --conditions "${conditions[*]}" --score_type "$score_type" \
        --test_sets_intra "$test_sets_intra" --test_sets_cross "$test_sets_cross" \
        > "${ilm_exp}/RESULTS.md"
    cat "${ilm_exp}/RESULTS.md"
fi
log "done"
