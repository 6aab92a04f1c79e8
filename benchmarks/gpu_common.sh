# Sourced by the gpu_session*.sh device plans: the device machine's environment and two helpers.
export MEDUSA_EMBEDDED_GGUF=${MEDUSA_EMBEDDED_GGUF:-/root/stage/smollm2.gguf} MEDUSA_CACHE=${MEDUSA_CACHE:-/root/medusa-cache}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
OUT=${OUT:-/tmp/out}
RUN=/root/run D=/root/data
mkdir -p "$OUT" "$RUN" /root/stage
quiet() { grep -v -E 'it/s\]|s/it\]|step/s\]|ex/s\]|batch/s\]|row/s\]|s/row\]|^\s*$' || true; }  # progress bars out of the logs
wait_for() {  # wait_for PATTERN SECONDS: until no process matches PATTERN (0), or the time is up (1); the shells
  # that call it are left out (an inline device command that names the pattern used to match itself)
  for _ in $(seq "$(( $2 / 5 ))"); do
    pgrep -f "$1" | grep -qvxE "$$|$BASHPID|$PPID" || return 0; sleep 5
  done
  echo "still running: $1"; return 1
}
# bring_measurement PATTERN LINES: wait (up to WAIT_MEASURE seconds) for the detached measurement PATTERN, show the
# last LINES of $RUN/measure.log, then copy its files ($RUN/out) back with this call; 1 while it still runs
bring_measurement() {
  wait_for "$1" "${WAIT_MEASURE:-300}"; local done_now=$?
  quiet < "$RUN/measure.log" | tail -"$2"
  [ $done_now = 0 ] || return 1
  cp "$RUN"/out/* "$OUT"/ && ls -la "$OUT"
}
# A process a device call leaves running is killed when the call returns, unless it started its own session: work
# that must outlive the call runs as `detach LOG COMMAND...` (the machine itself still goes back after 30 s idle,
# so the next call must follow at once).
detach() { local log=$1; shift; setsid nohup "$@" > "$log" 2>&1 < /dev/null & }
