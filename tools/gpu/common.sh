# Sourced by the tools/gpu/*.sh recipes: usage and subcommand checks, data paths, logging and the provenance file.
# Nothing here touches CUDA or Python until a recipe calls start_run (after its arguments are checked).
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT" || exit 1
PY=${PYTHON:-python3}
DATA=${DATA:-../shared/data}
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} HF_DATASETS_OFFLINE=${HF_DATASETS_OFFLINE:-1} PYTHONUNBUFFERED=1

usage() {  # the recipe's header comment (from line 2 to the first line that is not a comment)
  sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p;}' "$0"
}

# check_args "STAGE ..." ARG...: -h/--help prints the usage (exit 0); an argument that is not a stage prints it to
# stderr (exit 2). Sets STAGES to the arguments, or to "all" when there are none.
check_args() {
  local known=" $1 " arg
  shift
  STAGES=("$@")
  [ ${#STAGES[@]} -gt 0 ] || STAGES=(all)
  for arg in "${STAGES[@]}"; do
    case "$arg" in
      -h|--help) usage; exit 0 ;;
    esac
    if [[ "$known" != *" $arg "* ]]; then
      echo "error: unknown subcommand '$arg'" >&2
      usage >&2
      exit 2
    fi
  done
}

# wants STAGE: whether the stage was asked for (directly or through "all")
wants() {
  local s
  for s in "${STAGES[@]}"; do
    [ "$s" = "$1" ] || [ "$s" = all ] && return 0
  done
  return 1
}

# data NAME: the path prefix of a data set in $DATA (NAME.hin_Deva beside NAME.eng_Latn), found at the top of $DATA
# or in its parallel-eng-hin/ folder (the layout of ../shared/data)
data() {
  local p
  for p in "$DATA/$1" "$DATA/parallel-eng-hin/$1"; do
    if [ -f "$p.hin_Deva" ]; then echo "$p"; return 0; fi
  done
  echo "error: no $1.hin_Deva in $DATA or $DATA/parallel-eng-hin (set DATA=folder)" >&2
  return 1
}

# start_run RECIPE: makes $OUT and $OUT/logs, writes $OUT/provenance.json (recipe, arguments, commit, date, GPUs,
# library versions) and prints it
start_run() {
  mkdir -p "$OUT/logs"
  GIT_COMMIT=${GIT_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
  if [ "$GIT_COMMIT" != unknown ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    GIT_COMMIT="$GIT_COMMIT+local-changes"
  fi
  export GIT_COMMIT
  local gpus
  gpus=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo none)
  "$PY" - "$OUT/provenance.json" "$1" "$GIT_COMMIT" "$gpus" "${STAGES[*]}" <<'EOF'
import json, platform, sys, time
out, recipe, commit, gpus, stages = sys.argv[1:]
record = {"recipe": recipe, "subcommands": stages, "commit": commit, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
          "gpus": gpus.splitlines(), "python": platform.python_version()}
for name in ("torch", "transformers", "peft", "accelerate"):
    try:
        record[name] = __import__(name).__version__
    except ImportError:
        record[name] = None
try:
    import torch
    record["cuda"] = torch.version.cuda
except ImportError:
    pass
open(out, "w").write(json.dumps(record, indent=2) + "\n")
print(json.dumps(record))
EOF
}

# step NAME COMMAND...: runs COMMAND from the repository root, its output shown and kept in $OUT/logs/NAME.log, its
# command line in $OUT/logs/NAME.command
step() {
  local name=$1
  shift
  echo "== $name: $*"
  echo "$*" > "$OUT/logs/$name.command"
  "$@" 2>&1 | tee "$OUT/logs/$name.log"
}
