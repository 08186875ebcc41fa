#!/usr/bin/env bash
# LibriSpeech 960 h recipe of Han et al., "Knowledge Transfer from Pre-trained Language Models to
# Cif-based Speech Recognizers via Hierarchical Distillation" (Interspeech 2023), Table 3: CIF
# baseline and its distillation variants with the PLM's WordPiece vocabulary, beam-10 decoding,
# sclite WER of dev-clean/dev-other/test-clean/test-other into RESULTS.md. A thin layer over the
# shared stages of asr.sh (../../TEMPLATE/asr1/asr.sh); README.md has the paper's numbers and
# the cluster set-up.
#
#   ./run.sh --librispeech /data/librispeech          # CIF baseline, every stage (1-16)
#   ./run.sh --variant hkd --stage 9                  # "+HKD" on the same data and tokens
#   ./run.sh --cmd_backend slurm --ngpu 2             # on a Slurm cluster (conf/slurm.conf)
#   ./run.sh --ilm true --stage 17                    # + internal-LM estimation / DR-KD (Table 3
#                                                     #   of Chen et al.; after stages 1-16)
#
# Recipe options are listed below; every other option goes to asr.sh (./asr.sh --help).
set -euo pipefail

librispeech=${LIBRISPEECH:-}  # directory holding LibriSpeech/ (default: $LIBRISPEECH)
download=false          # true: fetch the 7 parts (openslr 12) and the PLM if absent (needs network)
variant=cif             # cif (baseline) | acd | lrd | hkd (Table 3) | mse | cos | mse_lrd | cos_lrd | acd_xsame
plm=bert-base-uncased   # PLM: its WordPiece vocabulary is the ASR vocabulary, and the teacher
                        # of the distillation variants (a local dir or a cached HF name)
ilm=false               # true: after stage 16, ILME/DR/DR-KD fusion of the CIF model (utils/ilm_recipe.sh)
ilm_opts=               # other utils/ilm_stages.sh options, e.g. "--elm_text_intra data/local/lm_norm/text"
las_config=             # --ilm true: also a LAS model of this config (e.g. conf/train_las_zh1kh.yaml)
cross_text=             # --ilm true: cross-domain ELM text, Kaldi "id sentence" (empty: intra only)
cross_dev=              # --ilm true: data/<set> tuning the cross-domain weights (empty: dev)
cross_test=             # --ilm true: data/<sets> of the cross-domain test (empty: test_clean test_other)

log() { echo "$(date '+%Y-%m-%dT%H:%M:%S') (run.sh) $*" >&2; }
own_options=" librispeech download variant plm ilm ilm_opts las_config cross_text cross_dev cross_test "
# shellcheck disable=SC1091
. local/recipe_options.sh   # splits "$@" into the options above and asr_opts for asr.sh

asr_config=conf/train_asr_cif_librispeech.yaml
[ "${variant}" != cif ] && asr_config=conf/train_asr_cif_librispeech_${variant}.yaml
if [ ! -f "${asr_config}" ]; then
    log "unknown --variant ${variant}: ${asr_config} does not exist"; exit 2
fi
data_opts="--download ${download}"
if [ -n "${librispeech}" ]; then
    [[ "${librispeech}" =~ [[:space:]] ]] && { log "--librispeech must not contain spaces"; exit 2; }
    data_opts+=" --corpus_dir ${librispeech}"
fi
set +u; . ./path.sh; set -u   # the project's Python for local/ helpers
# --ilm true with cross-domain sets: they need features (stage 3), so asr.sh treats them as test sets.
ilm_sets=
"${ilm}" && for s in ${cross_dev} ${cross_test}; do
    [[ " test_clean test_other dev_clean dev_other${ilm_sets} " == *" ${s} "* ]] || ilm_sets+=" ${s}"
done
# The WordPiece vocabulary is needed from stage 5 on (token list, training, decoding).
plm_dir=
if [ "${stop_stage}" -ge 5 ]; then
    plm_dir=$(python3 local/resolve_plm.py "${plm}" --download "${download}")
fi
# Teacher features are made in stage 9 and read by stages 10-11 (distillation variants only).
teacher_opts=()
if [ "${stop_stage}" -ge 9 ]; then
    # shellcheck disable=SC2207
    teacher_opts=($(local/teacher_opts.sh "${variant}" "${plm}" "${download}"))
fi

common=(
    --train_set train_960 --valid_set dev
    --test_sets "test_clean test_other dev_clean dev_other${ilm_sets}"
    --local_data_opts "${data_opts}"
    # 80-d fbank (25 ms / 10 ms) of the 16 kHz flacs (read directly, no pipe).
    --fs 16000 --num_mel_bins 80
    # §3.1: "we directly use the vocabulary of PLM for the ASR model": WordPiece of bert-base-uncased
    # (30,522 pieces; the transcripts' upper-case words are lower-cased by its tokenizer). sclite
    # compares words case-insensitively, so upper-case references score against its output.
    --token_type hugging_face --hf_model "${plm_dir:-${plm}}"
    # The paper fuses an LM for Chinese only (§3.2); Table 3 has no LM.
    --use_lm false
    # LM config of --use_lm true and of the external LMs of --ilm true (intra: trained on the
    # training transcripts unless --ilm_opts "--elm_text_intra FILE" names e.g. the LM corpus).
    --lm_config conf/train_lm_transformer.yaml
    # Batch sizes of conf/train_asr_cif_librispeech*.yaml are global: 62,000 bins ~ 30,000 input
    # frames per GPU on 2 GPUs, as the reference's AISHELL-1 run. With N GPUs give
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
    --inference_config conf/decode_cif.yaml   # beam 10, tail threshold 0.4
    --score_types wer
)

./asr.sh "${common[@]}" "${teacher_opts[@]}" "${asr_opts[@]}"

# Internal-LM estimation and DR-KD (the README section of that name): LAS (with --las_config), ILME-L,
# DR-LM, DR-2gram and DR-KD training, external LMs, weight grid, fused decoding, sclite WER, all
# on the WordPiece units; Table 3 appended to RESULTS.md. dev (= dev_clean + dev_other) tunes.
if "${ilm}" && [ "${stop_stage}" -ge 16 ]; then
    utils/ilm_recipe.sh --ilm_opts "${ilm_opts}" --las_config "${las_config}" \
        --intra_test_sets "test_clean test_other" \
        --cross_text "${cross_text}" --cross_dev "${cross_dev}" --cross_test "${cross_test}" \
        -- "${common[@]}" "${teacher_opts[@]}" "${asr_opts[@]}"
fi
