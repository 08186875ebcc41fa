#!/usr/bin/env bash
# Shared ASR pipeline of every espnet_ext recipe (recipes symlink it and call it from run.sh).
#
# Stages (run a range with --stage N --stop_stage M; every stage skips work already done):
#   1  data preparation: local/data.sh -> data/<set>/{wav.scp,text,utt2spk,spk2utt}, fix+validate
#   2  speed perturbation of the training set (only with --speed_perturb_factors)
#   3  80-dim Kaldi fbank -> dump/fbank/<set>/{feats.scp,utt2num_frames,feats_dim} (JOB=1:nj)
#   4  length filtering of train/valid; LM training text without dev/test sentences
#   5  token list (char | word | bpe | hugging_face) -> data/token_list/<tag>/tokens.txt
#   6  LM statistics        7  LM training (--resume true)        8  LM perplexity on dev/test
#   9  PLM teacher features for HKD (only with --plm_model): dump/plm/<set>/feats.scp (fp16)
#  10  ASR statistics: shapes and feats_stats.npz for GlobalMVN (ESPnet --collect_stats)
#  11  ASR training (ESPnet launcher, --resume true)
#  12  (reserved: internal-LM estimation, issue 7)   13  (reserved: DR-KD LM, issue 7)
#  14  decoding (JOB=1:inference_nj)   15  sclite scoring   16  RESULTS.md
#
# Done markers: data/.done.data_prep, <dump>/<set>/.done.{fbank,filter}, <exp>/.done.* and the
# outputs themselves; delete a marker (or the output) to redo a step. Stage wall times are
# appended to <expdir>/stage_times.tsv.
set -euo pipefail

log() {
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (asr.sh:${BASH_LINENO[0]}) $*" >&2
}
min() { local a=$1; for b in "$@"; do [ "$b" -lt "$a" ] && a=$b; done; echo "$a"; }

# General
stage=1                 # first stage to run
stop_stage=100          # last stage to run
nj=4                    # parallel jobs of the feature stage
stats_nj=               # parallel jobs of the statistics stages (default: nj)
inference_nj=4          # parallel decoding jobs per test set
ngpu=0                  # GPUs for training (0: CPU)
num_nodes=1             # nodes for training
train_cpu_procs=1       # ngpu=0: training processes (DistributedDataParallel over gloo, one
                        #   thread each); on a small CPU two 1-thread processes train ~1.4x
                        #   faster than one 2-thread process (egs/minisynth/asr1/README.md)
gpu_inference=false     # decode on GPU (one per job)
cmd_backend=${cmd_backend:-}  # job backend: local or slurm (default: environment, then cmd.sh)
python=python3          # python interpreter (the project's .venv after path.sh)
dumpdir=dump            # features and LM text
expdir=exp              # experiments
results_md=RESULTS.md   # output of stage 16

# Data
local_data_opts=        # options of local/data.sh
train_set=              # training set name (data/<train_set>)
valid_set=              # validation set name
test_sets=              # sets to decode and score (space separated)
speed_perturb_factors=  # e.g. "0.9 1.0 1.1" (stage 2)
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
hf_model=               # hugging_face: local path of the tokenizer (e.g. the PLM teacher)
hf_vocab=full           # hugging_face: full (the PLM vocabulary, ids kept) or compact (pieces of token_train_text)
token_listdir=data/token_list

# LM
use_lm=true             # train an LM and use it in decoding
lm_config=conf/train_lm_lstm_tiny.yaml
lm_args=                # extra options of espnet2.bin.lm_train (espnet_ext.bin.lm_train)
lm_tag=                 # default: config name + token tag
lm_train_text=          # Kaldi-format LM text(s) (default: data/<train_set>/text)
lm_fold_length=150
lm_ppl_sets=            # sets for perplexity (default: valid_set + test_sets)

# ASR
asr_config=             # training config (required from stage 10)
asr_args=               # extra options of the training module
asr_tag=                # default: config name + token tag
asr_stats_dir=          # default: exp/asr_stats_fbank_<token tag>
asr_train_module=espnet2.bin.asr_train          # e.g. espnet_ext.bin.cif_asr_train
asr_inference_module=espnet2.bin.asr_inference  # e.g. espnet_ext.bin.asr_inference
feats_normalize=global_mvn  # global_mvn (stats of stage 10) or utterance_mvn
speech_fold_length=800
text_fold_length=150

# PLM teacher features (stage 9; HKD, issue 6)
plm_model=              # HF model path/name of the frozen teacher (empty: stage 9 and plm_feats off)
plm_layer=-1            # teacher layer (-1: last; 0: embeddings)
plm_batch_size=64       # sentences per teacher forward pass
plm_misaligned_policy=skip  # skip: empty features (no distillation) for misaligned utts; fail: stop
plm_gpu=false           # extract on a GPU (cuda_cmd --gpu 1)
plm_dir=                # default: <dumpdir>/plm

# Decoding and scoring
inference_config=       # decoding config (beam size, lm_weight, ...)
inference_args=         # extra options of the inference module
inference_tag=          # default: decode_<config>[_lm]_<model>
inference_asr_model=valid.acc.ave.pth
inference_lm=valid.loss.ave.pth
inference_batch_size=1  # stock ESPnet decodes one utterance at a time
inference_num_threads=1 # CPU threads per decoding job
score_types=            # cer, wer, ter (default: "cer wer"; "cer" with remove_space=true)
print_names=false       # true: print the derived names (token list, LM/ASR exp dirs, ...) as
                        #   shell assignments and exit; utils/ilm_recipe.sh reads them

help_message="Usage: $0 --train_set <set> --valid_set <set> --test_sets \"<sets>\" [options]"

. utils/parse_options.sh
if [ $# -ne 0 ]; then
    log "unexpected arguments: $*\n${help_message}"
    exit 2
fi

[ -n "${cmd_backend}" ] && export cmd_backend
. ./path.sh
. ./cmd.sh

# ------------------------------------------------------------------------- derived settings
[ -z "${train_set}" ] && { log "--train_set is required"; exit 2; }
[ -z "${valid_set}" ] && { log "--valid_set is required"; exit 2; }
train_set_orig=${train_set}
if [ -n "${speed_perturb_factors}" ]; then
    train_set=${train_set}_sp
fi
data_feats=${dumpdir}/fbank
stats_nj=${stats_nj:-${nj}}
token_train_text=${token_train_text:-data/${train_set_orig}/text}
lm_train_text=${lm_train_text:-data/${train_set_orig}/text}
lm_ppl_sets=${lm_ppl_sets:-${valid_set} ${test_sets}}
uniq_words() { printf '%s\n' "$@" | awk 'NF && !seen[$0]++' | tr '\n' ' '; }
# shellcheck disable=SC2086
all_sets=$(uniq_words "${train_set}" "${valid_set}" ${test_sets})
# shellcheck disable=SC2086
lm_ppl_sets=$(uniq_words ${lm_ppl_sets})

case "${token_type}" in
    char|word) token_tag=${token_tag:-${token_type}}; bpemodel=none ;;
    bpe) token_tag=${token_tag:-bpe_${bpemode}${nbpe}}
         bpemodel=${token_listdir}/${token_tag}/bpe.model ;;
    hugging_face)
        [ -z "${hf_model}" ] && { log "--token_type hugging_face needs --hf_model <path>"; exit 2; }
        case "${hf_vocab}" in
            full) token_tag=${token_tag:-hugging_face} ;;
            compact) token_tag=${token_tag:-hugging_face_compact} ;;
            *) log "unknown --hf_vocab ${hf_vocab} (full or compact)"; exit 2 ;;
        esac
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

cfg_name() { local c=$1; c=${c##*/}; echo "${c%.*}"; }
lm_tag=${lm_tag:-$(cfg_name "${lm_config}")_${token_tag}}
lm_stats_dir=${expdir}/lm_stats_${token_tag}
lm_exp=${expdir}/lm_${lm_tag}
asr_stats_dir=${asr_stats_dir:-${expdir}/asr_stats_fbank_${token_tag}}
if [ -n "${asr_config}" ]; then
    asr_tag=${asr_tag:-$(cfg_name "${asr_config}")_${token_tag}}
else
    asr_tag=${asr_tag:-train_${token_tag}}
fi
asr_exp=${expdir}/asr_${asr_tag}
if [ -z "${inference_tag}" ]; then
    inference_tag=decode
    if [ -n "${inference_config}" ]; then
        _c=$(cfg_name "${inference_config}"); _c=${_c#decode}; _c=${_c#_}
        [ -n "${_c}" ] && inference_tag+=_${_c}
    fi
    "${use_lm}" && inference_tag+=_lm_${lm_tag}
    inference_tag+=_$(cfg_name "${inference_asr_model}")
fi

if "${print_names}"; then  # one source of truth for the names other scripts need
    for _v in train_set valid_set test_sets dumpdir expdir token_type token_tag token_list \
              bpemodel use_lm lm_config lm_tag lm_exp asr_config asr_tag asr_exp asr_stats_dir \
              inference_config score_types ngpu remove_space; do
        printf '%s=%q\n' "${_v}" "${!_v}"
    done
    printf 'cmd_backend=%q\n' "${cmd_backend:-local}"
    exit 0
fi

mkdir -p "${expdir}"
stage_times=${expdir}/stage_times.tsv
_stage_t0=0; _stage_no=0; _stage_name=; _stage_work=false
begin_stage() {  # begin_stage N name -> true if N is in [stage, stop_stage]
    [ "$1" -ge "${stage}" ] && [ "$1" -le "${stop_stage}" ] || return 1
    _stage_no=$1; _stage_name=$2; _stage_t0=$(date +%s); _stage_work=false
    log "Stage $1: $2"
}
did_work() { _stage_work=true; }
end_stage() {
    local status=skipped
    "${_stage_work}" && status=ran
    printf '%s\t%s\t%s\t%s\t%s\n' "${_stage_no}" "${_stage_name}" \
        "$(( $(date +%s) - _stage_t0 ))" "${status}" "$(date '+%Y-%m-%dT%H:%M:%S')" \
        >> "${stage_times}"
    log "Stage ${_stage_no} (${_stage_name}) ${status} in $(( $(date +%s) - _stage_t0 )) s"
}
num_lines() { wc -l < "$1" | tr -d ' '; }
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
        for dset in $(uniq_words "${train_set_orig}" "${valid_set}" ${test_sets}); do
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
        if [ -f "${_dst}/.done.fbank" ]; then
            log "${_dst}: features done"
        else
            _pending+=("${dset}")
        fi
    done
    if [ ${#_pending[@]} -gt 0 ]; then
        _logdir=${data_feats}/log
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
            ${python} -m espnet_ext.recipe.bin.compute_fbank --manifest "${_logdir}/fbank.JOB.list" \
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
            touch "${_dst}/.done.fbank"
        done
        did_work
    fi
    end_stage
fi

# ------------------------------------------------------------------------- 4: filter, LM text
if begin_stage 4 "length filter and LM text"; then
    for dset in "${train_set}" "${valid_set}"; do
        if [ ! -f "${data_feats}/${dset}/.done.filter" ]; then
            utils/data_dir.py filter "${data_feats}/${dset}" --min_frames "${min_frames}" \
                --max_frames "${max_frames}"
            utils/data_dir.py validate "${data_feats}/${dset}"
            touch "${data_feats}/${dset}/.done.filter"
            did_work
        fi
    done
    if "${use_lm}" && [ ! -f "${lm_dir}/.done" ]; then
        _exclude=()
        # shellcheck disable=SC2086
        for dset in $(uniq_words "${valid_set}" ${test_sets}); do
            _exclude+=("data/${dset}/text")
        done
        # shellcheck disable=SC2086
        utils/data_dir.py lm_text "${lm_dir}/train.txt" --input ${lm_train_text} \
            --exclude "${_exclude[@]}"
        cp "data/${valid_set}/text" "${lm_dir}/dev.txt"
        touch "${lm_dir}/.done"
        did_work
    fi
    end_stage
fi

# ------------------------------------------------------------------------- 5: token list
if begin_stage 5 "token list (${token_type})"; then
    _hf_opts=(--hf_model "${hf_model}" --hf_vocab "${hf_vocab}")
    [ "${hf_vocab}" = compact ] && _hf_opts+=(--input "${token_train_text}")
    if [ -f "${token_list}" ]; then
        log "${token_list} exists"
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
        ${python} -m espnet_ext.bin.make_token_list --token_type "${token_type}" \
            --output_dir "${token_listdir}/${token_tag}" "${_opts[@]}" \
            --report_unknown "${_unk[@]}"
        did_work
    fi
    if "${use_lm}" && [ "${token_type}" = hugging_face ] && [ ! -f "${lm_dir}/.done${lm_sfx}" ]; then
        _pre=(--pretokenize "${lm_dir}/train.txt" "${lm_train_txt}"
              --pretokenize "${lm_dir}/dev.txt" "${lm_dev_txt}")
        for dset in ${lm_ppl_sets}; do
            _pre+=(--pretokenize "data/${dset}/text" "${lm_dir}/ppl_${dset}${lm_sfx}.txt")
        done
        # (same options as above: the list is rewritten identically)
        ${python} -m espnet_ext.bin.make_token_list --token_type hugging_face "${_hf_opts[@]}" \
            --output_dir "${token_listdir}/${token_tag}" "${_pre[@]}"
        touch "${lm_dir}/.done${lm_sfx}"
        did_work
    fi
    end_stage
fi

_vocab_size() { num_lines "${token_list}"; }

# ------------------------------------------------------------------------- 6: LM stats
if begin_stage 6 "LM statistics"; then
    if ! "${use_lm}"; then
        log "use_lm=false: nothing to do"
    elif [ -f "${lm_stats_dir}/.done" ]; then
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
            ${python} -m espnet2.bin.lm_train --collect_stats true --use_preprocessor true \
                --bpemodel "${lm_bpemodel}" --token_type "${lm_token_type}" \
                --token_list "${token_list}" --non_linguistic_symbols none --cleaner none \
                --g2p none --train_data_path_and_name_and_type "${lm_train_txt},text,text" \
                --valid_data_path_and_name_and_type "${lm_dev_txt},text,text" \
                --train_shape_file "${_logdir}/train.JOB.scp" \
                --valid_shape_file "${_logdir}/dev.JOB.scp" \
                --output_dir "${_logdir}/stats.JOB" --config "${lm_config}" ${lm_args}
        _dirs=()
        for i in $(seq "${_nj}"); do _dirs+=(--input_dir "${_logdir}/stats.${i}"); done
        ${python} -m espnet2.bin.aggregate_stats_dirs "${_dirs[@]}" --output_dir "${lm_stats_dir}"
        for s in train valid; do
            awk -v v="$(_vocab_size)" '{ print $0 "," v }' "${lm_stats_dir}/${s}/text_shape" \
                > "${lm_stats_dir}/${s}/text_shape.${lm_token_type}"
        done
        touch "${lm_stats_dir}/.done"
        did_work
    fi
    end_stage
fi

# ------------------------------------------------------------------------- 7: LM training
if begin_stage 7 "LM training"; then
    if ! "${use_lm}"; then
        log "use_lm=false: nothing to do"
    elif [ -f "${lm_exp}/.done.train" ]; then
        log "${lm_exp} trained (remove ${lm_exp}/.done.train to train further)"
    else
        mkdir -p "${lm_exp}"
        log "LM training: log in ${lm_exp}/train.log"
        # shellcheck disable=SC2086
        ${python} -m espnet2.bin.launch --cmd "${cuda_cmd} --name lm_train" \
            --log "${lm_exp}/train.log" --ngpu "${ngpu}" --num_nodes "${num_nodes}" \
            --init_file_prefix "${lm_exp}/.dist_init_" --multiprocessing_distributed true -- \
            ${python} -m espnet_ext.bin.lm_train --use_preprocessor true \
                --bpemodel "${lm_bpemodel}" --token_type "${lm_token_type}" \
                --token_list "${token_list}" --non_linguistic_symbols none --cleaner none \
                --g2p none --train_data_path_and_name_and_type "${lm_train_txt},text,text" \
                --valid_data_path_and_name_and_type "${lm_dev_txt},text,text" \
                --train_shape_file "${lm_stats_dir}/train/text_shape.${lm_token_type}" \
                --valid_shape_file "${lm_stats_dir}/valid/text_shape.${lm_token_type}" \
                --fold_length "${lm_fold_length}" --resume true --output_dir "${lm_exp}" \
                --config "${lm_config}" ${lm_args}
        touch "${lm_exp}/.done.train"
        did_work
    fi
    end_stage
fi

# ------------------------------------------------------------------------- 8: LM perplexity
if begin_stage 8 "LM perplexity"; then
    if ! "${use_lm}"; then
        log "use_lm=false: nothing to do"
    else
        _todo=()
        for dset in ${lm_ppl_sets}; do
            [ -f "${lm_exp}/perplexity_${dset}/ppl" ] || _todo+=("${dset}")
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
                ${python} -m espnet2.bin.lm_calc_perplexity --ngpu 0 \
                    --data_path_and_name_and_type "${_logdir}/text.JOB,text,text" \
                    --train_config "${lm_exp}/config.yaml" --model_file "${lm_exp}/${inference_lm}" \
                    --output_dir "${_logdir}/out.JOB"
            i=0
            for dset in "${_todo[@]}"; do
                i=$((i + 1))
                rm -rf "${lm_exp}/perplexity_${dset}"
                mv "${_logdir}/out.${i}" "${lm_exp}/perplexity_${dset}"
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
if begin_stage 9 "PLM teacher features"; then
    if [ -z "${plm_model}" ]; then
        log "plm_model is empty: nothing to do"
    else
        if "${plm_gpu}"; then _cmd=${cuda_cmd}; _ngpu=1; _dev=cuda; else _cmd=${train_cmd}; _ngpu=0; _dev=cpu; fi
        _opts=()
        [ "${bpemodel}" != none ] && _opts+=(--bpemodel "${bpemodel}")
        for dset in $(uniq_words "${train_set}" "${valid_set}"); do
            _out=${plm_dir}/${dset}
            if [ -f "${_out}/feats.scp" ] && [ "${_out}/feats.scp" -nt "${data_feats}/${dset}/text" ]; then
                log "${_out}/feats.scp exists"
            else
                [ -f "${data_feats}/${dset}/text" ] || { log "${data_feats}/${dset}/text missing (run stages 3-4)"; exit 1; }
                # Without feats.scp an interrupted run resumes by chunks; an older one means the
                # text changed since (the extractor refuses a changed text), so start over.
                [ -f "${_out}/feats.scp" ] && { log "${dset} text changed: redoing ${_out}"; rm -rf "${_out}"; }
                mkdir -p "${expdir}/plm_logs"
                _log=${expdir}/plm_logs/extract_${dset}.log
                log "PLM features of ${dset} (${plm_model}, layer ${plm_layer}): log in ${_log}"
                ${_cmd} --gpu "${_ngpu}" "${_log}" \
                    ${python} -m espnet_ext.bin.extract_plm_feats --model "${plm_model}" \
                        --text "${data_feats}/${dset}/text" --token_list "${token_list}" \
                        --token_type "${token_type}" "${_opts[@]}" --layer "${plm_layer}" \
                        --batch_size "${plm_batch_size}" --misaligned_policy "${plm_misaligned_policy}" \
                        --device "${_dev}" --output_dir "${_out}"
                did_work
            fi
            log "PLM features of ${dset}: $(num_lines "${_out}/feats.scp") utterances," \
                "$(num_lines "${_out}/misaligned") misaligned (empty features; listed in ${_out}/misaligned)"
        done
    fi
    end_stage
fi

# ------------------------------------------------------------------------- 10: ASR stats
if begin_stage 10 "ASR statistics"; then
    [ -z "${asr_config}" ] && { log "--asr_config is required from stage 10"; exit 2; }
    if [ -f "${asr_stats_dir}/.done" ]; then
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
            ${python} -m "${asr_train_module}" --collect_stats true --use_preprocessor true \
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
        _dirs=()
        for i in $(seq "${_nj}"); do _dirs+=(--input_dir "${_logdir}/stats.${i}"); done
        ${python} -m espnet2.bin.aggregate_stats_dirs "${_dirs[@]}" --output_dir "${asr_stats_dir}"
        for s in train valid; do
            awk -v v="$(_vocab_size)" '{ print $0 "," v }' "${asr_stats_dir}/${s}/text_shape" \
                > "${asr_stats_dir}/${s}/text_shape.${token_type}"
        done
        touch "${asr_stats_dir}/.done"
        did_work
    fi
    end_stage
fi

# ------------------------------------------------------------------------- 11: ASR training
if begin_stage 11 "ASR training"; then
    [ -z "${asr_config}" ] && { log "--asr_config is required from stage 10"; exit 2; }
    if [ -f "${asr_exp}/.done.train" ]; then
        log "${asr_exp} trained (remove ${asr_exp}/.done.train to train further)"
    else
        mkdir -p "${asr_exp}"
        _train=${data_feats}/${train_set}
        _valid=${data_feats}/${valid_set}
        _norm=(--normalize "${feats_normalize}")
        if [ "${feats_normalize}" = global_mvn ]; then
            _norm+=(--normalize_conf "stats_file=${asr_stats_dir}/train/feats_stats.npz")
        fi
        # Teacher features only for distillation configs, so baseline configs are unaffected.
        _plm=()
        if [ -n "${plm_model}" ] && grep -Eq '^[[:space:]]*distill_conf:' "${asr_config}"; then
            for s in train valid; do
                [ "${s}" = train ] && _d=${train_set} || _d=${valid_set}
                [ -f "${plm_dir}/${_d}/feats.scp" ] || { log "${plm_dir}/${_d}/feats.scp missing (run stage 9)"; exit 1; }
                _plm+=(--${s}_data_path_and_name_and_type "${plm_dir}/${_d}/feats.scp,plm_feats,kaldi_ark")
            done
            log "distillation config: teacher features from ${plm_dir}"
        fi
        log "ASR training (${asr_train_module}): log in ${asr_exp}/train.log"
        if [ "${ngpu}" -eq 0 ] && [ "${train_cpu_procs}" -gt 1 ]; then
            # CPU data parallelism: ESPnet's launcher only spawns one process per GPU, so
            # torchrun starts the ranks; ESPnet splits each batch across them (same updates).
            log "CPU training with ${train_cpu_procs} DDP processes (gloo, 1 thread each)"
            _launch=(${cuda_cmd} --name asr_train --num_threads "${train_cpu_procs}"
                     "${asr_exp}/train.log" env OMP_NUM_THREADS=1
                     ${python} -m torch.distributed.run --standalone
                     --nproc_per_node "${train_cpu_procs}")
            _dist=(--ngpu 0 --multiprocessing_distributed false --dist_backend gloo)
        else
            _launch=(${python} -m espnet2.bin.launch --cmd "${cuda_cmd} --name asr_train"
                     --log "${asr_exp}/train.log" --ngpu "${ngpu}" --num_nodes "${num_nodes}"
                     --init_file_prefix "${asr_exp}/.dist_init_" --multiprocessing_distributed true
                     -- ${python})
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
                --valid_data_path_and_name_and_type "${_valid}/text,text,text" "${_plm[@]}" \
                --train_shape_file "${asr_stats_dir}/train/speech_shape" \
                --train_shape_file "${asr_stats_dir}/train/text_shape.${token_type}" \
                --valid_shape_file "${asr_stats_dir}/valid/speech_shape" \
                --valid_shape_file "${asr_stats_dir}/valid/text_shape.${token_type}" \
                --fold_length "${speech_fold_length}" --fold_length "${text_fold_length}" \
                --resume true --output_dir "${asr_exp}" --config "${asr_config}" ${asr_args}
        touch "${asr_exp}/.done.train"
        did_work
    fi
    end_stage
fi

# ------------------------------------------------------------------------- 12-13: reserved
# Stages 12-13 are reserved for internal-LM estimation and the DR-KD student LM (issue 7).
if begin_stage 12 "internal LM (reserved)"; then log "nothing to do yet"; end_stage; fi
if begin_stage 13 "DR-KD LM (reserved)"; then log "nothing to do yet"; end_stage; fi

# ------------------------------------------------------------------------- 14: decoding
if begin_stage 14 "decoding"; then
    if "${gpu_inference}"; then _cmd=${cuda_cmd}; _ngpu=1; else _cmd=${decode_cmd}; _ngpu=0; fi
    _lm_opts=
    if "${use_lm}"; then
        _lm_opts="--lm_train_config ${lm_exp}/config.yaml --lm_file ${lm_exp}/${inference_lm}"
    fi
    _cfg_opt=
    [ -n "${inference_config}" ] && _cfg_opt="--config ${inference_config}"
    for dset in ${test_sets}; do
        _dir=${asr_exp}/${inference_tag}/${dset}
        _logdir=${_dir}/logdir
        if [ -f "${_dir}/.done.decode" ]; then
            log "${_dir}: decoded"
            continue
        fi
        _keys=${data_feats}/${dset}/feats.scp
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
                --asr_train_config ${asr_exp}/config.yaml \
                --asr_model_file ${asr_exp}/${inference_asr_model} \
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
        touch "${_dir}/.done.decode"
        did_work
    done
    end_stage
fi

# ------------------------------------------------------------------------- 15: scoring
if begin_stage 15 "sclite scoring"; then
    for dset in ${test_sets}; do
        _dir=${asr_exp}/${inference_tag}/${dset}
        for t in ${score_types}; do
            _out=${_dir}/score_${t}
            if [ -f "${_out}/result.txt" ] && [ "${_out}/result.txt" -nt "${_dir}/text" ]; then
                log "${_out}: scored"
                continue
            fi
            _bpe_opt=()
            [ "${t}" = ter ] && _bpe_opt=(--bpemodel "${bpemodel}")
            ${python} -m espnet_ext.recipe.bin.score_sclite --ref "${data_feats}/${dset}/text" \
                --hyp "${_dir}/text" --utt2spk "${data_feats}/${dset}/utt2spk" \
                --score_type "${t}" "${_bpe_opt[@]}" --output_dir "${_out}"
            did_work
        done
    done
    end_stage
fi

# ------------------------------------------------------------------------- 16: RESULTS.md
if begin_stage 16 "RESULTS.md"; then
    did_work
    end_stage  # recorded first so that this run's table includes every stage
    ${python} -m espnet_ext.recipe.bin.collect_results --output "${results_md}" "${expdir}"
    log "results: ${results_md}"
fi

log "asr.sh finished (stages ${stage}-${stop_stage})"
