#!/usr/bin/env bash
# Create a new recipe directory wired to the shared pipeline:
#   egs/TEMPLATE/asr1/setup.sh egs/<corpus>/asr1
# Symlinks asr.sh, path.sh, utils (and conf/slurm.conf) to this template, copies cmd.sh (recipes
# may change their backend options), and creates local/ and conf/ for the recipe's own files.
set -euo pipefail
if [ $# -ne 1 ]; then
    echo "Usage: $0 <new recipe dir>" >&2
    exit 1
fi
template=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
dir=$1
if [ -e "${dir}/asr.sh" ]; then
    echo "$0: ${dir} already has asr.sh" >&2
    exit 1
fi
mkdir -p "${dir}/local" "${dir}/conf"
dir=$(cd "${dir}" && pwd)
rel() { python3 -c 'import os, sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' "$1" "$2"; }
for f in asr.sh path.sh utils; do
    ln -s "$(rel "${template}/${f}" "${dir}")" "${dir}/${f}"
done
cp "${template}/cmd.sh" "${dir}/cmd.sh"
ln -s "$(rel "${template}/../../../conf/slurm.conf" "${dir}/conf")" "${dir}/conf/slurm.conf"
echo "created ${dir}: add local/data.sh, conf/*.yaml and a run.sh calling ./asr.sh"
