#!/usr/bin/env bash
# Synthesise the minisynth corpus offline and write Kaldi data dirs (run from egs/minisynth/asr1):
#   data/{train,dev,test_in,test_unseen_voice,test_cross,dev_cross}/{wav.scp,text,utt2spk,spk2utt,utt2dur}
#   data/local/{lm_in,lm_cross}/text, data/local/lm_leak_report.txt, data/local/corpus_stats.json
# Wavs go to downloads/minisynth/wav; rerunning reuses finished wavs. Logs: data/local/log/.
#
# Usage: local/data.sh [--fast true|false] [--seed N] [--nj N] [--config conf/corpus.yaml]
#                      [--data_dir data] [--corpus_dir downloads/minisynth]
#                      [--num_train N --num_dev N --num_test_in N --num_test_unseen_voice N
#                       --num_test_cross N --num_dev_cross N --num_lm_in N --num_lm_cross N]
set -euo pipefail

fast=false                       # true: the small CI preset conf/corpus_fast.yaml
seed=1
nj=2
config=                          # default: conf/corpus.yaml, or conf/corpus_fast.yaml with --fast
data_dir=data
corpus_dir=downloads/minisynth
extra_opts=()                    # --num_* size overrides, passed to the Python tool

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --fast|--seed|--nj|--config|--data_dir|--corpus_dir)
            [ $# -ge 2 ] || { echo "$0: $1 needs a value" >&2; exit 1; }
            name=${1#--}; printf -v "$name" '%s' "$2"; shift 2 ;;
        --num_*)
            [ $# -ge 2 ] || { echo "$0: $1 needs a value" >&2; exit 1; }
            extra_opts+=("$1" "$2"); shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "$0: unknown option $1" >&2; usage >&2; exit 1 ;;
    esac
done
case "$fast" in true|false) ;; *) echo "$0: --fast must be true or false, got '$fast'" >&2; exit 1 ;; esac
if [ -z "$config" ]; then
    if [ "$fast" = true ]; then config=conf/corpus_fast.yaml; else config=conf/corpus.yaml; fi
fi
[ -f "$config" ] || { echo "$0: corpus preset $config not found (run from egs/minisynth/asr1)" >&2; exit 1; }

# The recipe's path.sh activates the project environment; without it, use the repo's venv.
if [ -f ./path.sh ]; then
    set +u
    # shellcheck disable=SC1091
    . ./path.sh
    set -u
elif [ -f "$(dirname "$0")/../../../../.venv/bin/activate" ]; then
    set +u; . "$(dirname "$0")/../../../../.venv/bin/activate"; set -u
fi

mkdir -p "$data_dir/local/log"
echo "$0: synthesising the corpus ($config, seed $seed, nj $nj); log: $data_dir/local/log/synth_corpus.log"
python -m espnet_ext.recipe.bin.synth_corpus --config "$config" --seed "$seed" --nj "$nj" \
    --data_dir "$data_dir" --corpus_dir "$corpus_dir" ${extra_opts[@]+"${extra_opts[@]}"}
# The preset this data/ holds (run.sh refuses to mix corpora in one data/).
echo "fast=$fast seed=$seed" > "$data_dir/.minisynth_preset"
echo "$0: done; corpus statistics in $data_dir/local/corpus_stats.json"
