#!/usr/bin/env bash
# Lint the repository: ruff (settings in ruff.toml) on the Python code, shellcheck (settings in
# .shellcheckrc) on every tracked shell script: *.sh and extension-less files with a sh/bash
# shebang; a symlink is checked once, at its target. Exit 1 when either finds a problem.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 1
ruff=${RUFF:-$root/.venv/bin/ruff}

scripts=()
while IFS= read -r -d '' f; do
  if [ ! -f "$f" ] || [ -L "$f" ]; then continue; fi
  case "${f##*/}" in
    *.sh) scripts+=("$f") ;;
    *.*) ;;
    *) head -n 1 "$f" | grep -qE '^#!.*[/ ](ba)?sh( |$)' && scripts+=("$f") ;;
  esac
done < <(git ls-files -z)

rc=0
echo "[lint] ruff check ."
"$ruff" check . || rc=1
echo "[lint] shellcheck (${#scripts[@]} scripts)"
shellcheck "${scripts[@]}" || rc=1
exit "$rc"
