#!/usr/bin/env bash
# AISHELL-1 recipe of Han et al., "Knowledge Transfer from Pre-trained Language Models to
# Cif-based Speech Recognizers via Hierarchical Distillation" (Interspeech 2023), Tables 1-2:
# CIF baseline and its distillation variants, the 16-layer Transformer LM, beam-10 decoding with
# and without the LM, sclite CER into RESULTS.md. A thin layer over the shared stages of asr.sh
# (../../TEMPLATE/asr1/asr.sh); README.md has the paper's numbers and the cluster set-up.
#
#   ./run.sh --aishell /data/aishell                  # CIF baseline, every stage (1-16)
#   ./run.sh --variant hkd --stage 9                  # "+HKD" on the same data, LM and tokens
#   ./run.sh --cmd_backend slurm --ngpu 2             # on a Slurm cluster (conf/slurm.conf)
#   ./run.sh --ilm true --stage 17                    # + internal-LM estimation / DR-KD (Table 3
#                                                     #   of Chen et al.; after stages 1-16)
#
# Recipe options are listed below; every other option goes to asr.sh (./asr.sh --help).
set -euo pipefail

aishell=${AISHELL:-}    # directory holding data_aishell/ (official layout; default: $AISHELL)
download=false          # true: fetch AISHELL-1 (openslr 33) and the PLM if absent (needs network)
variant=cif             # cif | acd | lrd | hkd (Table 1) | mse | cos | mse_lrd | cos_lrd (Table 2) | acd_xsame
plm=bert-base-chinese   # teacher PLM of the distillation variants: a local dir or a cached HF name
decode_without_lm=true  # also decode without the LM (Table 1 reports both)
ilm=false               # true: after stage 16, ILME/DR/DR-KD fusion of the CIF model (utils/ilm_recipe.sh)
ilm_opts=               # other utils/ilm_stages.sh options, e.g. "--ilm_weights 0.1,0.3 --dev_max_utts 500"
las_config=             # --ilm true: also a LAS model of this config (e.g. conf/train_las_zh1kh.yaml)
cross_text=             # --ilm true: cross-domain ELM text, Kaldi "id sentence" (empty: intra only)
cross_dev=              # --ilm true: data/<set> tuning the cross-domain weights (empty: dev)
cross_test=             # --ilm true: data/<sets> of the cross-domain test (empty: test)

log() { echo "$(date '+%Y-%m-%dT%H:%M:%S') (run.sh) $*" >&2; }
own_options=" aishell download variant plm decode_without_lm ilm ilm_opts las_config cross_text cross_dev cross_test "
# shellcheck disable=SC1091
. local/recipe_options.sh   # splits "$@" into the options above and asr_opts for asr.sh

asr_config=conf/train_asr_cif_aishell.yaml
[ "${variant}" != cif ] && asr_config=conf/train_asr_cif_aishell_${variant}.yaml
if [ ! -f "${asr_config}" ]; then
    log "unknown --variant ${variant}: ${asr_config} does not exist"; exit 2
fi
data_opts="--download ${download}"
if [ -n "${aishell}" ]; then
    [[ "${aishell}" =~ [[:space:]] ]] && { log "--aishell must not contain spaces"; exit 2; }
    data_opts+=" --corpus_dir ${aishell}"
fi
set +u; . ./path.sh; set -u   # the project's Python for local/ helpers
# --ilm true with cross-domain sets: they need features (stage 3), so asr.sh treats them as test sets.
ilm_sets=
"${ilm}" && for s in ${cross_dev} ${cross_test}; do
    [[ " dev test${ilm_sets} " == *" ${s} "* ]] || ilm_sets+=" ${s}"
done
# Teacher features are made in stage 9 and read by stages 10-11 (distillation variants only).
teacher_opts=()
if [ "${stop_stage}" -ge 9 ]; then
    # shellcheck disable=SC2207
    teacher_opts=($(local/teacher_opts.sh "${variant}" "${plm}" "${download}"))
fi

common=(
    --train_set train --valid_set dev --test_sets "dev test${ilm_sets}"
    --local_data_opts "${data_opts}"
    # 80-d fbank (25 ms / 10 ms) of the 16 kHz wavs; no speed perturbation (reference run).
    --fs 16000 --num_mel_bins 80
    # Characters without the corpus's word-segmentation spaces: the 4,230 characters of the
    # training text + <blank> (CTC blank, padding), <unk>, <sos/eos> (BOS and EOS) = 4,233 ids.
    # The reference's fairseq dictionary has 4,234 (<s>, <pad>, </s>, <unk>): ESPnet shares one
    # id for BOS/EOS, so the output layers are one row smaller; nothing else changes.
    --token_type char --remove_space true
    --use_lm true --lm_config conf/train_lm_transformer_aishell.yaml
    # Batch sizes of conf/train_asr_cif_aishell*.yaml are global: 62,000 bins ~ 30,000 input
    # frames per GPU on 2 GPUs, as the reference (2 x A100). With N GPUs give
    # --asr_args "--batch_bins $((N * 31000))" to keep 30k frames per GPU.
    --ngpu 2
    --asr_config "${asr_config}"
    --asr_train_module espnet_ext.bin.cif_asr_train
    --asr_inference_module espnet_ext.bin.asr_inference
    # Averaged model: ESPnet keeps the 10 best epochs (keep_nbest_models: 10) and averages them.
    --inference_asr_model valid.acc.ave.pth
    # Utterances decoded together (the reference decoded batches of 8; results do not depend
    # on it: CIF fixes each utterance's length and the search is per utterance).
    --inference_batch_size 16
    --inference_config conf/decode_cif.yaml   # beam 10, tail threshold 0.4, LM weight 0.2
    --score_types cer
)

./asr.sh "${common[@]}" "${teacher_opts[@]}" "${asr_opts[@]}"

# Table 1 also reports every model without the LM: decode and score again with use_lm=false
# (a separate decode_* directory; RESULTS.md lists both).
if "${decode_without_lm}" && "${use_lm}" && [ "${stop_stage}" -ge 14 ]; then
    _from=$(( stage > 14 ? stage : 14 ))
    log "decoding without the LM (stages ${_from}-${stop_stage})"
    ./asr.sh "${common[@]}" "${teacher_opts[@]}" "${asr_opts[@]}" --use_lm false \
        --stage "${_from}" --stop_stage "${stop_stage}"
fi

# Internal-LM estimation and DR-KD (the README section of that name): LAS (with --las_config), ILME-L,
# DR-LM, DR-2gram and DR-KD training, cross-domain ELM, weight grid, fused decoding, sclite CER;
# the intra-domain ELM is the LM of stage 7; Table 3 appended to RESULTS.md.
if "${ilm}" && [ "${stop_stage}" -ge 16 ]; then
    utils/ilm_recipe.sh --ilm_opts "${ilm_opts}" --las_config "${las_config}" \
        --intra_test_sets test \
        --cross_text "${cross_text}" --cross_dev "${cross_dev}" --cross_test "${cross_test}" \
        -- "${common[@]}" "${teacher_opts[@]}" "${asr_opts[@]}"
fi
