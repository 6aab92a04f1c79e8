#!/usr/bin/env bash
# Runs benchmark stages one after another in the background (setsid), logging to $RUN/log.txt, so that work
# outlives a single device call; poll with: tail -c 4000 $RUN/log.txt. A stage is STAGE of gpu_train_embedded.sh,
# or SCRIPT:STAGE for benchmarks/gpu_SCRIPT.sh (e.g. speed_embedded:tau). Environment settings pass through.
export RUN=${RUN:-/root/run} OUT=/root/out LOG_ALL=1
mkdir -p "$RUN"
setsid nohup bash -c '
for s in "$@"; do
  case "$s" in *:*) script=benchmarks/gpu_${s%%:*}.sh stage=${s#*:} ;; *) script=benchmarks/gpu_train_embedded.sh stage=$s ;; esac
  echo "=== stage $s $(date +%T)"
  bash "$script" "$stage" || echo "=== stage $s failed"
done
echo "=== all done $(date +%T)"' chain "$@" > "$RUN/log.txt" 2>&1 < /dev/null &
