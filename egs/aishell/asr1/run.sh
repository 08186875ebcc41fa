#!/usr/bin/env bash
# AISHELL-1 recipe of Han et al., "Knowledge Transfer from Pre-trained Language Models to
# Cif-based Speech Recognizers via Hierarchical Distillation" (Interspeech 2023), Tables 1-2:
# CIF baseline and its distillers, the 16-layer Transformer LM, beam-10 decoding with and without
# the LM, sclite CER into RESULTS.md; with --ilm true the internal-LM estimation and DR-KD of Chen
# et al. (Table 3). The stages are asr.sh's (./asr.sh --help); README.md has the paper's numbers.
#
#   ./run.sh --aishell /data/aishell                  # CIF baseline, every stage (1-16)
#   ./run.sh --distillers "none acd lrd hkd"          # Table 1: one model per distiller (+ Table 1)
#   ./run.sh --cmd_backend slurm --ngpu 2             # on a Slurm cluster (conf/slurm.conf)
#   ./run.sh --ilm true [--stage 12]                  # + internal LMs, DR, DR-KD, fused decoding
#   ./run.sh --ilm true --las_config conf/train_las_zh1kh.yaml   # ... and the same for a LAS model
set -euo pipefail

aishell=${AISHELL:-}    # directory holding data_aishell/ (official layout; default: $AISHELL)
download=false          # true: fetch AISHELL-1 (openslr 33) and the PLM if absent (needs network)
plm=bert-base-chinese   # teacher PLM of the distillers: a local dir or a cached Hugging Face name
ilm=false               # true: asr.sh --use_ilm true (stages 12-13, Table 3 methods in 14-16)
las_config=             # also a LAS model of this config, through the same stages (stock ESPnet trainer)
forward_opts=()
help_message="Usage: ./run.sh [options]; every other option goes to ./asr.sh (./asr.sh --help)"
. utils/parse_options.sh

[[ "${aishell}" =~ [[:space:]] ]] && { echo "run.sh: --aishell must not contain spaces" >&2; exit 2; }
opts=(
    --train_set train --valid_set dev --test_sets "dev test"
    --local_data_opts "--download ${download}${aishell:+ --corpus_dir ${aishell}}"
    # 80-d fbank (25 ms / 10 ms) of the 16 kHz wavs; no speed perturbation (reference run).
    --fs 16000 --num_mel_bins 80
    # Characters without the corpus's word-segmentation spaces: the 4,230 characters of the
    # training text + <blank> (CTC blank, padding), <unk>, <sos/eos> (BOS and EOS) = 4,233 ids.
    # The reference's fairseq dictionary has 4,234 (<s>, <pad>, </s>, <unk>): ESPnet shares one
    # id for BOS/EOS, so the output layers are one row smaller; nothing else changes.
    --token_type char --remove_space true --score_types cer
    --use_lm true --lm_config conf/train_lm_transformer_aishell.yaml
    # Batch sizes of conf/train_asr_cif_aishell.yaml are global: 62,000 bins ~ 30,000 input
    # frames per GPU on 2 GPUs, as the reference (2 x A100). With N GPUs give
    # --asr_args "--batch_bins $((N * 31000))" to keep 30k frames per GPU.
    --ngpu 2 --asr_config conf/train_asr_cif_aishell.yaml
    --asr_train_module espnet_ext.bin.cif_asr_train --asr_inference_module espnet_ext.bin.asr_inference
    --plm_model "${plm}" --plm_download "${download}"
    # Averaged model (ESPnet keeps the 10 best epochs); beam 10, tail threshold 0.4, LM weight 0.2,
    # 16 utterances decoded together (results do not depend on it: CIF fixes each length); Table 1
    # reports every model with and without the LM.
    --inference_asr_model valid.acc.ave.pth --inference_config conf/decode_cif.yaml
    --inference_batch_size 16 --inference_without_lm true
    # --ilm true: intra-domain = test with the stage-7 LM; the DR-LM and DR-KD student of the
    # paper's 1k-hour size; a cross-domain condition with --ilm_cross_text FILE.
    --use_ilm "${ilm}" --ilm_test_sets test --drlm_config conf/train_drlm_lstm_2x128.yaml
    --drkd_config conf/train_drkd_lstm_2x128.yaml --ilm_ctx_config conf/train_ilm_ctx.yaml)
./asr.sh "${opts[@]}" "${forward_opts[@]}"
if [ -n "${las_config}" ]; then
    ./asr.sh "${opts[@]}" "${forward_opts[@]}" --asr_config "${las_config}" --asr_train_module espnet2.bin.asr_train \
        --inference_config "" --inference_args "--beam_size 10" --distillers none
fi
