#!/usr/bin/env bash
# asr.sh options for the PLM teacher of a distillation variant, one per line (nothing for the
# CIF baseline):  local/teacher_opts.sh <variant> <plm name or dir> <download true|false>
# The PLM is resolved to a local directory (local/resolve_plm.py: a directory, the HF cache, or a
# download when allowed); the teacher-feature stage of asr.sh extracts its features per set.
set -euo pipefail
variant=$1 plm=$2 download=$3
[ "${variant}" = cif ] && exit 0

# The option of asr.sh that names the teacher PLM (teacher-feature stage, issue 6).
opt=
help=$(./asr.sh --help 2>/dev/null || true)
for name in plm_model teacher_model; do
    if [[ "${help}" == *"--${name} "* ]]; then opt=${name}; break; fi
done
if [ -z "${opt}" ]; then
    echo "$0: variant '${variant}' distils from PLM teacher features, but this asr.sh has no" \
         "teacher-feature stage (--plm_model) yet; only --variant cif runs." >&2
    exit 1
fi
dir=$(python3 local/resolve_plm.py "${plm}" --download "${download}")
echo "--${opt}"
echo "${dir}"
