# shellcheck shell=bash
# Option splitting of a recipe's run.sh (sourced after its own option variables are set):
#   own_options=" name1 name2 "    the run.sh variables that "--name value" sets here
#   . local/recipe_options.sh "$@"
# Every other "--name value" is passed on to asr.sh in the array asr_opts (asr.sh checks the
# names); the last occurrence wins there, so a user's option overrides the recipe's default.
# Also tracks stage, stop_stage and use_lm as asr.sh will see them. "--help" prints the recipe's
# options, then asr.sh's.
stage=1
stop_stage=100
use_lm=true
asr_opts=()
while [ $# -gt 0 ]; do
    case "$1" in
        --help|-h)
            sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
            echo "Recipe options (default or current value):"
            for _name in ${own_options}; do
                _comment=$(grep -m1 "^${_name}=" "$0" | sed -n 's/^[^#]*#[[:space:]]*/  # /p' || true)
                printf '  --%-22s %s%s\n' "${_name}" "'${!_name}'" "${_comment}"
            done
            echo
            ./asr.sh --help
            exit 0 ;;
        --*=*) _name=${1%%=*}; _value=${1#*=}; shift ;;
        --*)
            if [ $# -lt 2 ]; then echo "$0: option $1 needs a value" >&2; exit 2; fi
            _name=$1; _value=$2; shift 2 ;;
        *) echo "$0: unexpected argument '$1' (options are --name value)" >&2; exit 2 ;;
    esac
    _name=${_name#--}
    _name=${_name//-/_}
    if [[ "${own_options}" == *" ${_name} "* ]]; then
        case "${!_name}" in
            true|false)
                case "${_value}" in
                    true|false) ;;
                    *) echo "$0: --${_name} expects true or false, got '${_value}'" >&2; exit 2 ;;
                esac ;;
        esac
        printf -v "${_name}" '%s' "${_value}"
    else
        asr_opts+=("--${_name}" "${_value}")
        case "${_name}" in
            stage|stop_stage|use_lm) printf -v "${_name}" '%s' "${_value}" ;;
        esac
    fi
done
unset _name _value _comment
