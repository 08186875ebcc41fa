# shellcheck shell=bash
# Environment of every recipe (recipes symlink this file). Source it from the recipe directory.
# Finds the repository from this file's real location, so symlinks and copies of recipes work.
MAIN_ROOT=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../../.." && pwd)
export MAIN_ROOT
if [ -f "$MAIN_ROOT/.venv/bin/activate" ]; then
    # shellcheck disable=SC1091
    . "$MAIN_ROOT/.venv/bin/activate"
else
    echo "path.sh: $MAIN_ROOT/.venv is missing; run tools/setup.sh first" >&2
fi
# Debian's sctk puts sclite outside PATH.
export PATH="$MAIN_ROOT/utils:/usr/lib/sctk/bin:$PATH"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export PYTHONUNBUFFERED=1
export PYTHONIOENCODING=UTF-8
export LC_ALL=C.UTF-8
# OpenMP threads that wait by sleeping, not spinning: with the default policy a 2-thread torch
# process on a busy 2-core machine spends its time spinning at barriers (measured on minisynth: a
# training step 7x the CPU time and 15x the wall time of PASSIVE); on an idle machine it costs nothing.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
