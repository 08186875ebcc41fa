# shellcheck shell=bash
# Command-line options for recipe scripts. Source it after the script has set its variables:
#
#     stage=1; stop_stage=100; nj=4; lm_config=conf/lm.yaml
#     help_message="Usage: $0 [options] <args>"     # optional, printed by --help
#     . utils/parse_options.sh
#
# Every leading "--name value" (or "--name=value") sets the variable "name" (dashes become
# underscores), which must already be set in the script: an unknown name is an error, so a typo
# never passes silently. A variable holding true/false only accepts true/false. "--help" prints
# the options with their current values and comments (from the script's own "name=value  # ..."
# lines) and exits. Parsing stops at "--" or at the first word that is not an option; the
# remaining words stay in "$@" (this file shifts the caller's positional parameters).
#
# Two optional arrays of the caller change what happens to an unknown name:
#   forward_opts=()      a script that hands its other options on (a recipe's run.sh calling
#                        ./asr.sh "${forward_opts[@]}") collects them here; the callee checks them.
#   replaced_options=("old=what replaces it" ...)   names of earlier versions: refused with one
#                        line naming the replacement.

_po_prog=${0##*/}

_po_help() {
  [ -n "${help_message:-}" ] && printf '%s\n\n' "$help_message"
  echo "Options (default or current value):"
  # Top-level "name=value  # comment" lines of the calling script, up to where it sources us
  # (arrays, the help message and the option tables of this file are not options).
  local _po_line _po_name _po_comment
  while IFS= read -r _po_line; do
    _po_name=${_po_line%%=*}
    _po_comment=""
    case "$_po_line" in
      *"#"*) _po_comment=${_po_line#*#}; _po_comment="  # ${_po_comment# }" ;;
    esac
    printf '  --%-28s %s%s\n' "$_po_name" "'${!_po_name-}'" "$_po_comment"
  done < <(awk '/parse_options\.sh/ {exit} /^help_message=/ {next} /^[A-Za-z_][A-Za-z0-9_]*=\(/ {next}
                /^[A-Za-z_][A-Za-z0-9_]*=/ {print}' "$0")
}

_po_is_array() { [[ "$(declare -p "$1" 2>/dev/null)" == "declare -"[aA]* ]]; }

while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h) _po_help; exit 0 ;;
    --) shift; break ;;
    --*=*) _po_name=${1%%=*}; _po_value=${1#*=}; shift ;;
    --*)
      if [ $# -lt 2 ]; then
        echo "$_po_prog: option $1 needs a value" >&2; exit 1
      fi
      _po_name=$1; _po_value=$2; shift 2 ;;
    *) break ;;
  esac
  _po_name=${_po_name#--}
  _po_name=${_po_name//-/_}
  if [[ ! $_po_name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
    echo "$_po_prog: invalid option name --$_po_name" >&2; exit 1
  fi
  if [ -z "${!_po_name+set}" ] || [ "$_po_name" = forward_opts ] || [ "$_po_name" = replaced_options ]; then
    if _po_is_array forward_opts; then
      forward_opts+=("--$_po_name" "$_po_value")
      continue
    fi
    if _po_is_array replaced_options; then
      # shellcheck disable=SC2154
      for _po_old in "${replaced_options[@]}"; do
        if [ "${_po_old%%=*}" = "$_po_name" ]; then
          echo "$_po_prog: --$_po_name no longer exists: ${_po_old#*=}" >&2; exit 1
        fi
      done
    fi
    echo "$_po_prog: unknown option --$_po_name (see $_po_prog --help)" >&2; exit 1
  fi
  if _po_is_array "$_po_name"; then
    echo "$_po_prog: --$_po_name names an array; it cannot be set from the command line" >&2
    exit 1
  fi
  case "${!_po_name}" in
    true|false)
      case "$_po_value" in
        true|false) ;;
        *) echo "$_po_prog: --$_po_name expects true or false, got '$_po_value'" >&2; exit 1 ;;
      esac ;;
  esac
  printf -v "$_po_name" '%s' "$_po_value"
done
unset _po_name _po_value _po_prog _po_old
unset -f _po_help _po_is_array
