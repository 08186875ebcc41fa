#!/usr/bin/env bash
# LibriSpeech data preparation (stage 1 of asr.sh; run from egs/librispeech/asr1):
#   <corpus>/LibriSpeech/<part>/<reader>/<chapter>/{*.flac,<reader>-<chapter>.trans.txt}
#   -> data/<part with _>/ for every part, data/train_960 = train-clean-100 + train-clean-360 +
#      train-other-500, data/dev = dev-clean + dev-other (the validation set)
# The corpus comes from --corpus_dir (default: the LIBRISPEECH environment variable), a directory
# that holds LibriSpeech/ (or is LibriSpeech itself). With --download true and network, missing
# parts are fetched from openslr.org/12 into --download_dir first.
#
# Usage: local/data.sh [--corpus_dir DIR] [--download true|false] [--download_dir downloads]
#                      [--mirror URL] [--train_parts "..."] [--train_set train_960]
set -euo pipefail

corpus_dir=${LIBRISPEECH:-} # directory holding LibriSpeech/ (default: $LIBRISPEECH)
download=false              # true: download and extract missing parts from openslr 12
download_dir=downloads      # where --download puts the corpus
mirror=https://www.openslr.org/resources/12   # openslr 12 or a mirror (https://us.openslr.org/resources/12)
train_parts="train-clean-100 train-clean-360 train-other-500"  # parts combined into train_set
train_set=train_960         # name of the combined training set
dev_parts="dev-clean dev-other"                # parts combined into valid_set
valid_set=dev               # name of the combined validation set
test_parts="test-clean test-other"             # evaluation-only parts
data_dir=data               # output data directories

log() { echo "$(date '+%Y-%m-%dT%H:%M:%S') (local/data.sh) $*" >&2; }
help_message=$(sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//')
. utils/parse_options.sh
if [ $# -ne 0 ]; then
    log "unexpected arguments: $*"; exit 2
fi
# shellcheck disable=SC2206
parts=(${train_parts} ${dev_parts} ${test_parts})

# DIR/LibriSpeech or DIR itself, whichever holds the first part.
find_corpus() {
    local d=$1
    if [ -d "${d}/LibriSpeech/${parts[0]}" ]; then
        echo "${d}/LibriSpeech"
    elif [ -d "${d}/${parts[0]}" ]; then
        echo "${d}"
    fi
}

download_parts() {
    local dest=${download_dir} part url missing=()
    for part in "${parts[@]}"; do
        [ -f "${dest}/LibriSpeech/${part}/.complete" ] || missing+=("${part}")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        log "LibriSpeech parts already downloaded in ${dest}"
        return 0
    fi
    url=${mirror}/${missing[0]}.tar.gz
    log "checking that ${url} is reachable (10 s timeout)"
    if ! curl -sSfIL --max-time 10 "${url}" >/dev/null 2>&1; then
        log "ERROR: cannot reach ${url}: this machine has no network access to openslr.org."
        log "Download ${missing[*]} (https://www.openslr.org/12/) on a machine with network, extract"
        log "them, and rerun with LIBRISPEECH=<directory holding LibriSpeech/> (or --librispeech DIR)."
        exit 1
    fi
    mkdir -p "${dest}"
    for part in "${missing[@]}"; do
        url=${mirror}/${part}.tar.gz
        if [ ! -f "${dest}/${part}.tar.gz.complete" ]; then
            log "downloading ${url} to ${dest}"
            curl -fL --retry 3 -C - -o "${dest}/${part}.tar.gz" "${url}"
            touch "${dest}/${part}.tar.gz.complete"
        fi
        log "extracting ${dest}/${part}.tar.gz"
        tar -xzf "${dest}/${part}.tar.gz" -C "${dest}"
        touch "${dest}/LibriSpeech/${part}/.complete"
    done
}

has_all_parts() {
    local root part
    root=$(find_corpus "$1")
    [ -n "${root}" ] || return 1
    for part in "${parts[@]}"; do [ -d "${root}/${part}" ] || return 1; done
}
if [ -n "${corpus_dir}" ] && has_all_parts "${corpus_dir}"; then
    :  # the corpus is there: never download
elif "${download}"; then
    download_parts
    corpus_dir=${download_dir}
fi
if [ -z "${corpus_dir}" ]; then
    log "ERROR: the LibriSpeech location is not set. Set the environment variable LIBRISPEECH to"
    log "the directory holding LibriSpeech/ (export LIBRISPEECH=/data/librispeech), or pass"
    log "--librispeech DIR to run.sh (--corpus_dir DIR to local/data.sh), or add --download true"
    log "to fetch it from openslr.org/12 when this machine has network."
    exit 1
fi
root=$(find_corpus "${corpus_dir}")
if [ -z "${root}" ]; then
    log "ERROR: ${corpus_dir} does not hold LibriSpeech: expected ${corpus_dir}/LibriSpeech/${parts[0]}"
    log "(official layout of the openslr.org/12 tarballs); set LIBRISPEECH to the directory that"
    log "holds LibriSpeech/."
    exit 1
fi
absent=()
for part in "${parts[@]}"; do
    [ -d "${root}/${part}" ] || absent+=("${part}")
done
if [ ${#absent[@]} -gt 0 ]; then
    log "ERROR: ${root} lacks ${absent[*]} (needed: ${parts[*]}); download them (--download true)"
    log "or choose the parts with --train_parts/--dev_parts/--test_parts in --local_data_opts."
    exit 1
fi

for part in "${parts[@]}"; do
    python3 local/prepare_librispeech.py --part_dir "${root}/${part}" \
        --data_dir "${data_dir}/${part//-/_}"
done
_dirs=()
for part in ${train_parts}; do _dirs+=("${data_dir}/${part//-/_}"); done
utils/data_dir.py combine "${data_dir}/${train_set}" "${_dirs[@]}"
_dirs=()
for part in ${dev_parts}; do _dirs+=("${data_dir}/${part//-/_}"); done
utils/data_dir.py combine "${data_dir}/${valid_set}" "${_dirs[@]}"
for d in "${train_set}" "${valid_set}"; do
    log "${data_dir}/${d}: $(wc -l < "${data_dir}/${d}/text") utterances"
done
log "done"
