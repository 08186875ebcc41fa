#!/usr/bin/env bash
# AISHELL-1 data preparation (stage 1 of asr.sh; run from egs/aishell/asr1):
#   <corpus>/data_aishell/wav/{train,dev,test}/<spk>/*.wav + transcript/aishell_transcript_v0.8.txt
#   -> data/{train,dev,test}/{wav.scp,text,utt2spk,spk2utt}
# The corpus comes from --corpus_dir (default: the AISHELL environment variable), a directory that
# holds data_aishell/ (or is data_aishell itself). With --download true and network, the corpus
# is fetched from openslr.org/33 (data_aishell.tgz, 15 GB) into --download_dir first.
#
# Usage: local/data.sh [--corpus_dir DIR] [--download true|false] [--download_dir downloads]
#                      [--mirror URL] [--data_dir data]
set -euo pipefail

corpus_dir=${AISHELL:-}     # directory holding data_aishell/ (default: $AISHELL)
download=false              # true: download and extract openslr 33 into download_dir if absent
download_dir=downloads      # where --download puts the corpus
mirror=https://www.openslr.org/resources/33   # openslr 33 or a mirror (https://us.openslr.org/resources/33)
data_dir=data               # output data directories

log() { echo "$(date '+%Y-%m-%dT%H:%M:%S') (local/data.sh) $*" >&2; }
help_message=$(sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//')
. utils/parse_options.sh
if [ $# -ne 0 ]; then
    log "unexpected arguments: $*"; exit 2
fi

# The corpus directory: DIR/data_aishell or DIR itself.
find_corpus() {
    local d=$1
    if [ -f "${d}/data_aishell/transcript/aishell_transcript_v0.8.txt" ]; then
        echo "${d}/data_aishell"
    elif [ -f "${d}/transcript/aishell_transcript_v0.8.txt" ]; then
        echo "${d}"
    fi
}

# The official archive keeps the audio as one tarball per speaker (wav/S0002.tar.gz, ...), which
# extract to wav/{train,dev,test}/<spk>/. Extract those not yet extracted.
extract_speaker_tarballs() {
    local wav_dir=$1/wav n=0 tgz spk
    for tgz in "${wav_dir}"/*.tar.gz; do
        [ -e "${tgz}" ] || continue
        spk=$(basename "${tgz}" .tar.gz)
        if compgen -G "${wav_dir}/*/${spk}" >/dev/null; then continue; fi
        tar -xzf "${tgz}" -C "${wav_dir}"
        n=$((n + 1))
    done
    [ "${n}" -gt 0 ] && log "extracted ${n} speaker tarballs in ${wav_dir}"
    return 0
}

download_corpus() {
    local url=${mirror}/data_aishell.tgz dest=${download_dir}
    if [ -n "$(find_corpus "${dest}")" ] && [ -f "${dest}/data_aishell/.complete" ]; then
        log "AISHELL-1 already downloaded in ${dest}"
        return 0
    fi
    log "checking that ${url} is reachable (10 s timeout)"
    if ! curl -sSfIL --max-time 10 "${url}" >/dev/null 2>&1; then
        log "ERROR: cannot reach ${url}: this machine has no network access to openslr.org."
        log "Download data_aishell.tgz (https://www.openslr.org/33/) on a machine with network,"
        log "extract it, and rerun with AISHELL=<directory holding data_aishell> (or --aishell DIR)."
        exit 1
    fi
    mkdir -p "${dest}"
    if [ ! -f "${dest}/data_aishell.tgz.complete" ]; then
        log "downloading ${url} (15 GB) to ${dest}"
        curl -fL --retry 3 -C - -o "${dest}/data_aishell.tgz" "${url}"
        touch "${dest}/data_aishell.tgz.complete"
    fi
    log "extracting ${dest}/data_aishell.tgz"
    tar -xzf "${dest}/data_aishell.tgz" -C "${dest}"
    extract_speaker_tarballs "${dest}/data_aishell"
    touch "${dest}/data_aishell/.complete"
}

if [ -n "${corpus_dir}" ] && [ -n "$(find_corpus "${corpus_dir}")" ]; then
    :  # the corpus is there: never download
elif "${download}"; then
    download_corpus
    corpus_dir=${download_dir}
fi
if [ -z "${corpus_dir}" ]; then
    log "ERROR: the AISHELL-1 location is not set. Set the environment variable AISHELL to the"
    log "directory holding data_aishell/ (export AISHELL=/data/aishell), or pass"
    log "--aishell DIR to run.sh (--corpus_dir DIR to local/data.sh), or add --download true to"
    log "fetch it from openslr.org/33 when this machine has network."
    exit 1
fi
root=$(find_corpus "${corpus_dir}")
if [ -z "${root}" ]; then
    log "ERROR: ${corpus_dir} does not hold AISHELL-1: expected"
    log "${corpus_dir}/data_aishell/transcript/aishell_transcript_v0.8.txt (official layout of"
    log "data_aishell.tgz from openslr.org/33); set AISHELL to the directory that holds data_aishell/."
    exit 1
fi
extract_speaker_tarballs "${root}"

mkdir -p "${data_dir}/local"
log "preparing ${data_dir}/{train,dev,test} from ${root}"
python3 local/prepare_aishell.py --corpus_dir "${root}" --data_dir "${data_dir}"
log "done"
