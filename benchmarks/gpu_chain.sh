#!/usr/bin/env bash
# Runs the stages of gpu_train_embedded.sh one after another in the background (setsid), logging to
# $RUN/log.txt, so that work outlives a single device call; poll with: tail -c 4000 $RUN/log.txt
export RUN=${RUN:-/root/run} OUT=/root/out LOG_ALL=1
mkdir -p "$RUN"
setsid nohup bash -c "for s in $*; do echo \"=== stage \$s \$(date +%T)\"; bash benchmarks/gpu_train_embedded.sh \$s || echo \"=== stage \$s failed\"; done; echo '=== all done'" \
  > "$RUN/log.txt" 2>&1 < /dev/null &
