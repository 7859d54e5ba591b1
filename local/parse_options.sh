#!/usr/bin/env bash
# Kaldi-style option parser, sourced by prepare.sh after it sets its defaults:
#
#   stage=0; nj=2; dl_dir=download
#   . local/parse_options.sh || exit 1
#
# Each `--some-name VALUE` (or `--some-name=VALUE`) sets the shell variable `some_name`, which must
# already exist (dashes become underscores). `--help` / `-h` prints the script's header comment
# (the lines starting with `#` after the shebang) and exits 0. Anything that is not an option ends
# option parsing; the remaining words stay in "$@" for the caller.
# Errors (unknown option, missing value) print one line naming the option and exit 1.

_po_usage() {
  sed -n '2,/^[^#]/{/^#/!q;s/^# \{0,1\}//;p}' "$0"
}

while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help)
      _po_usage
      exit 0
      ;;
    --*=*)
      _po_name="${1%%=*}"; _po_value="${1#*=}"; shift
      ;;
    --*)
      _po_name="$1"
      if [ $# -lt 2 ]; then
        echo "$0: option $_po_name needs a value" >&2
        exit 1
      fi
      _po_value="$2"; shift 2
      ;;
    *)
      break
      ;;
  esac
  _po_var=$(echo "${_po_name#--}" | tr '-' '_')
  if ! [[ "$_po_var" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
    echo "$0: invalid option name $_po_name" >&2
    exit 1
  fi
  if [ -z "${!_po_var+set}" ]; then
    echo "$0: unknown option $_po_name (no variable '$_po_var' in this script)" >&2
    exit 1
  fi
  printf -v "$_po_var" '%s' "$_po_value"
done
unset _po_name _po_value _po_var
true
