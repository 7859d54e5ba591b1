# log MESSAGE: "date (file:line:function) message", as icefall's recipes print it.
# Sourced by run.sh and prepare.sh.
log() {
  local fname=${BASH_SOURCE[1]##*/}
  echo -e "$(date '+%Y-%m-%d %H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}
