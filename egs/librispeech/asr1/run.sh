#!/usr/bin/env bash
# LibriSpeech 960 h recipe of Han et al., "Knowledge Transfer from Pre-trained Language Models to
# Cif-based Speech Recognizers via Hierarchical Distillation" (Interspeech 2023), Table 3: CIF
# baseline and its distillers with the PLM's WordPiece vocabulary, beam-10 decoding, sclite WER of
# dev-clean/dev-other/test-clean/test-other into RESULTS.md; with --ilm true the internal-LM
# estimation and DR-KD of Chen et al. The stages are asr.sh's (./asr.sh --help); README.md has the
# paper's numbers and the cluster set-up.
#
#   ./run.sh --librispeech /data/librispeech          # CIF baseline, every stage (1-16)
#   ./run.sh --distillers "none acd lrd hkd"          # one model per distiller (+ Table 1)
#   ./run.sh --cmd_backend slurm --ngpu 2             # on a Slurm cluster (conf/slurm.conf)
#   ./run.sh --ilm true [--stage 12]                  # + internal LMs, DR, DR-KD, fused decoding
set -euo pipefail

librispeech=${LIBRISPEECH:-}  # directory holding LibriSpeech/ (default: $LIBRISPEECH)
download=false          # true: fetch the 7 parts (openslr 12) and the PLM if absent (needs network)
plm=bert-base-uncased   # PLM: its WordPiece vocabulary is the ASR vocabulary, and the distillers' teacher
ilm=false               # true: asr.sh --use_ilm true (stages 12-13, Table 3 methods in 14-16)
las_config=             # also a LAS model of this config, through the same stages (stock ESPnet trainer)
forward_opts=()
help_message="Usage: ./run.sh [options]; every other option goes to ./asr.sh (./asr.sh --help)"
. utils/parse_options.sh

[[ "${librispeech}" =~ [[:space:]] ]] && { echo "run.sh: --librispeech must not contain spaces" >&2; exit 2; }
opts=(
    --train_set train_960 --valid_set dev --test_sets "test_clean test_other dev_clean dev_other"
    --local_data_opts "--download ${download}${librispeech:+ --corpus_dir ${librispeech}}"
    # 80-d fbank (25 ms / 10 ms) of the 16 kHz flacs (read directly, no pipe).
    --fs 16000 --num_mel_bins 80
    # §3.1: "we directly use the vocabulary of PLM for the ASR model": WordPiece of bert-base-uncased
    # (30,522 pieces; the transcripts' upper-case words are lower-cased by its tokenizer). sclite
    # compares words case-insensitively, so upper-case references score against its output.
    --token_type hugging_face --hf_model "${plm}" --plm_model "${plm}" --plm_download "${download}"
    --score_types wer
    # The paper fuses an LM for Chinese only (§3.2); Table 3 has no LM. The LM config is that of
    # --use_lm true and of the external LMs of --ilm true (intra: trained on the training
    # transcripts, or on --ilm_intra_text FILE).
    --use_lm false --lm_config conf/train_lm_transformer.yaml
    # Batch sizes of conf/train_asr_cif_librispeech.yaml are global: 62,000 bins ~ 30,000 input
    # frames per GPU on 2 GPUs, as the reference's AISHELL-1 run. With N GPUs give
    # --asr_args "--batch_bins $((N * 31000))" to keep 30k frames per GPU.
    --ngpu 2 --asr_config conf/train_asr_cif_librispeech.yaml
    --asr_train_module espnet_ext.bin.cif_asr_train --asr_inference_module espnet_ext.bin.asr_inference
    # Averaged model (ESPnet keeps the 10 best epochs); beam 10, tail threshold 0.4; 16 utterances
    # decoded together (results do not depend on it: CIF fixes each utterance's length).
    --inference_asr_model valid.acc.ave.pth --inference_config conf/decode_cif.yaml --inference_batch_size 16
    # --ilm true: intra-domain = test_clean + test_other, tuned on dev (= dev_clean + dev_other).
    --use_ilm "${ilm}" --ilm_test_sets "test_clean test_other" --drlm_config conf/train_drlm_lstm_2x128.yaml
    --drkd_config conf/train_drkd_lstm_2x128.yaml --ilm_ctx_config conf/train_ilm_ctx.yaml)
./asr.sh "${opts[@]}" "${forward_opts[@]}"
if [ -n "${las_config}" ]; then
    ./asr.sh "${opts[@]}" "${forward_opts[@]}" --asr_config "${las_config}" --asr_train_module espnet2.bin.asr_train \
        --inference_config "" --inference_args "--beam_size 10" --distillers none
fi
