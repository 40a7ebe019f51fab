#!/usr/bin/env bash
# Build the isolated virtualenv that runs the MPEG NNC reference software
# (Fraunhofer HHI NNCodec 2.1.3, PyPI name "nncodec" -- the same import name as
# this project, which is why it must never be installed next to it).
#
#   bash bench/reference/setup_reference_venv.sh
#
# Env:
#   NNCODEC_REF_VENV  where the venv goes   (default: $HOME/.cache/nncodec/reference-venv)
#   NNCODEC_REF_PYTHON interpreter to build the venv from (default: python3.11, else python3;
#                      must be CPython 3.11 because the kept CPU torch wheel is cp311)
#   NNCODEC_REF_FORCE=1 rebuild even if the venv already works
#
# Idempotent: if the venv exists and the smoke check passes, nothing is installed.
# Safety: torch is pinned to 2.13.0 and the script aborts *before* installing if pip
# would pull any CUDA (nvidia-*/triton) package or a non-CPU torch build; every later
# pip call runs under a constraints file that keeps torch at 2.13.0. torchvision is
# never installed (run_reference.py registers a stand-in module instead).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${NNCODEC_REF_VENV:-$HOME/.cache/nncodec/reference-venv}"
RUNNER="$HERE/run_reference.py"
NNCODEC_VERSION="2.1.3"
TORCH_VERSION="2.13.0"

T0=$(date +%s)
log() { printf '[setup_reference_venv +%ss] %s\n' "$(( $(date +%s) - T0 ))" "$*" >&2; }

# Refuse to touch the project's own environment or the system Python.
case "$VENV" in
  */main/.venv|*/main/.venv/*) log "refusing: $VENV is the project's own venv"; exit 2 ;;
esac
if [ -n "${VIRTUAL_ENV:-}" ] && [ "$(cd "$VIRTUAL_ENV" && pwd -P)" != "$(cd "$VENV" 2>/dev/null && pwd -P || echo -)" ]; then
  log "note: a different venv is active ($VIRTUAL_ENV); it is not used or modified"
fi

smoke() {
  "$VENV/bin/python" "$RUNNER" --self-check
}

if [ "${NNCODEC_REF_FORCE:-0}" != "1" ] && [ -x "$VENV/bin/python" ]; then
  if SMOKE_OUT="$(smoke 2>&1)"; then
    log "reference venv at $VENV already works; nothing to do (NNCODEC_REF_FORCE=1 to rebuild)"
    printf '%s\n' "$SMOKE_OUT"
    exit 0
  fi
  log "venv at $VENV exists but the smoke check fails; rebuilding it"
fi

START=$(date +%s)

# ---- interpreter -------------------------------------------------------------
PY="${NNCODEC_REF_PYTHON:-}"
if [ -z "$PY" ]; then
  if command -v python3.11 >/dev/null 2>&1; then PY=python3.11; else PY=python3; fi
fi
PYVER="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [ "$PYVER" != "3.11" ]; then
  log "need CPython 3.11 for the kept cp311 CPU torch wheel, $PY is $PYVER (set NNCODEC_REF_PYTHON)"
  exit 2
fi

rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
"$PY" -m venv "$VENV"
VPY="$VENV/bin/python"
PIP=("$VPY" -m pip --disable-pip-version-check)
# The kept CPU wheel lives in /opt/wheels (also in the global pip config here; repeated
# so the script works when run with a clean pip config).
EXTRA=()
[ -d /opt/wheels ] && EXTRA+=(--find-links /opt/wheels)

CONSTRAINTS="$VENV/reference-constraints.txt"
printf 'torch==%s\n' "$TORCH_VERSION" > "$CONSTRAINTS"

# ---- 1. torch (CPU build only) ----------------------------------------------
log "checking what 'pip install torch==$TORCH_VERSION' would install (dry run)"
REPORT="$VENV/torch-dry-run.json"
"${PIP[@]}" install "${EXTRA[@]}" --dry-run --quiet --report "$REPORT" "torch==$TORCH_VERSION"
"$VPY" - "$REPORT" <<'EOF'
import json, sys
rep = json.load(open(sys.argv[1]))
bad, torch = [], None
for item in rep.get("install", []):
    name = item["metadata"]["name"].lower()
    ver = item["metadata"]["version"]
    if name == "torch":
        torch = (ver, item.get("download_info", {}).get("url", ""))
    if name.startswith("nvidia") or name.startswith("triton") or name.startswith("cuda"):
        bad.append(f"{name}=={ver}")
if torch is None:
    sys.exit("dry run: torch is not in the install set?")
if "+cpu" not in torch[0]:
    bad.append(f"torch=={torch[0]} (not a +cpu build; from {torch[1]})")
if bad:
    sys.exit("refusing to install, pip would pull CUDA packages / a non-CPU torch: " + ", ".join(bad))
print(f"[setup_reference_venv] ok: torch {torch[0]} from {torch[1]}, no CUDA packages", file=sys.stderr)
EOF
"${PIP[@]}" install "${EXTRA[@]}" "torch==$TORCH_VERSION"

# ---- 2. nncodec 2.1.3 (source build of the deepCABAC pybind11 extension) ----
# Build deps are setuptools>=61, wheel, pybind11 (pyproject.toml). Try the normal
# isolated build first; fall back to installing them here + --no-build-isolation.
log "building nncodec==$NNCODEC_VERSION from source (--no-deps; about 2 minutes)"
if ! "${PIP[@]}" install "${EXTRA[@]}" -c "$CONSTRAINTS" --no-deps "nncodec==$NNCODEC_VERSION"; then
  log "isolated build failed; retrying with --no-build-isolation"
  "${PIP[@]}" install "${EXTRA[@]}" -c "$CONSTRAINTS" "setuptools>=61" wheel pybind11
  "${PIP[@]}" install "${EXTRA[@]}" -c "$CONSTRAINTS" --no-deps --no-build-isolation "nncodec==$NNCODEC_VERSION"
fi

# ---- 3. runtime deps (what the package's import needs; no torchvision) ------
# nncodec's own metadata also asks for torchvision, opencv-python, ptflops and
# torchmetrics: torchvision is replaced by a stand-in in run_reference.py, the
# headless OpenCV provides cv2, and ptflops/torchmetrics are never imported by
# nncodec.nnc. pip's resolver therefore reports them missing; that is expected.
# numpy<2 is required by nncodec 2.1.3; pandas>=3.1 and opencv-python-headless>=4.12
# need numpy>=2, so they are capped here (otherwise pip backtracks through ~250 MB of
# OpenCV wheels before settling on the same versions).
log "installing runtime dependencies"
"${PIP[@]}" install "${EXTRA[@]}" -c "$CONSTRAINTS" \
  "numpy<2" click scikit-learn tqdm h5py pybind11 "pandas<3.1" "opencv-python-headless<4.12"

# Final guard: nothing CUDA-ish or torchvision slipped in, torch is still the CPU build.
"$VPY" - <<'EOF'
import importlib.metadata as md, sys
names = {d.metadata["Name"].lower(): d.version for d in md.distributions()}
bad = [n for n in names if n.startswith(("nvidia", "triton")) or n in ("torchvision", "torchaudio")]
if bad:
    sys.exit(f"unexpected packages in the reference venv: {bad}")
if not names.get("torch", "").startswith("2.13.0+cpu"):
    sys.exit(f"torch is {names.get('torch')}, expected 2.13.0+cpu")
print(f"[setup_reference_venv] torch {names['torch']}, nncodec {names.get('nncodec')}, numpy {names.get('numpy')}", file=sys.stderr)
EOF

# ---- 4. smoke check through run_reference.py --------------------------------
log "smoke check"
smoke
log "done in $(( $(date +%s) - START )) s: $VENV"
