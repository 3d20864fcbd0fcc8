#!/usr/bin/env bash
# One prepared command for a GPU session (at most 8 minutes on one NVIDIA GPU):
#   1. the device, its bf16 support and what `--precision auto` picks;
#   2. the tests that must hold on the device (tests/test_device.py, RGAL_TEST_DEVICE=cuda);
#   3. the throughput table of the CIFAR setting (wrn40_2 -> wrn16_1) in fp32 and bf16;
#   4. a 2-epoch CIFAR-shaped run with the seed's batch sizes and steps (synthesis batch 256,
#      student batch 128 x 2 views, 400 generator and 400 student steps per epoch);
#   5. the projected wall time of the seed's 200-epoch recipe from that run's second epoch.
#
#   benchmarks/gpu_check.sh                        # on cuda
#   benchmarks/gpu_check.sh --device cpu --tiny    # the same steps, tiny, in about a minute
#   benchmarks/gpu_check.sh --out DIR              # where gpu_check.md goes (default
#                                                  # benchmarks/gpu_check/)
# Everything printed is also in DIR/gpu_check.md, ready to append to benchmarks/throughput.md.
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICE=cuda
TINY=0
OUT=benchmarks/gpu_check
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE="$2"; shift 2 ;;
        --tiny) TINY=1; shift ;;
        --out) OUT="$2"; shift 2 ;;
        *) echo "gpu_check.sh: unknown argument $1 (use --device D, --tiny, --out DIR)" >&2
           exit 2 ;;
    esac
done
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
mkdir -p "$OUT"
REPORT="$OUT/gpu_check.md"
: > "$REPORT"
export RGAL_TEST_DEVICE="$DEVICE" PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
log() { printf '%s\n' "$*" | tee -a "$REPORT"; }
START=$(date +%s)

if [ "$TINY" = 1 ]; then
    THROUGHPUT=(--tiny)
    RUN=(--set synthesis_batch_size=16 --set batch_size=8 --set g_steps=2 --set kd_steps=2
         --set nz=16 --set ngf=8)
    TESTS=(-k "folded")
else
    THROUGHPUT=()
    RUN=(--set synthesis_batch_size=256 --set batch_size=128 --set g_steps=400
         --set kd_steps=400)
    TESTS=()
fi

log "# GPU check ($(date -u +%Y-%m-%d), device $DEVICE$([ "$TINY" = 1 ] && echo ', tiny'))"
log ""
log "## Device"
"$PY" - "$DEVICE" <<'EOF' | tee -a "$REPORT"
import sys, torch
from rgal.amp import native_bf16, resolve_precision
dev = torch.device(sys.argv[1])
name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
cap = ".".join(map(str, torch.cuda.get_device_capability(dev))) if dev.type == "cuda" else "-"
print(f"- {name}, compute capability {cap}, torch {torch.__version__}")
print(f"- native bf16: {native_bf16(dev)}; --precision auto -> {resolve_precision('auto', dev)}")
EOF

log ""
log "## Tests on the device"
set +e
"$PY" -m pytest -q -p no:cacheprovider tests/test_device.py "${TESTS[@]}" 2>&1 \
    | tail -n 3 | tee -a "$REPORT"
TEST_STATUS=${PIPESTATUS[0]}
set -e

log ""
log "## Throughput, CIFAR setting, fp32 and bf16"
"$PY" benchmarks/throughput.py --device "$DEVICE" --settings cifar --options bf16 \
    --out "$OUT/throughput.md" "${THROUGHPUT[@]}" > /dev/null
cat "$OUT/throughput.md" >> "$REPORT"
grep -E '^\|' "$OUT/throughput.md" | head -n 12

log ""
log "## Two epochs of the seed's recipe, --precision auto"
"$PY" benchmarks/speed.py --setting cifar --device "$DEVICE" --precision auto --repeat 1 \
    "${RUN[@]}" --json "$OUT/run.json" | tee -a "$REPORT"
"$PY" - "$OUT/run.json" <<'EOF' | tee -a "$REPORT"
import json, sys
run = json.load(open(sys.argv[1]))["runs"][0]
last = run["epochs"][-1]  # the second epoch: warm-up and first-call costs are behind
epoch = last["synthesis_s"] + last["distill_s"] + last["eval_s"]
total = 200 * epoch
print(f"\nProjected wall time of the seed's 200-epoch recipe ({run['precision']}): "
      f"{total / 3600:.2f} h = 200 x {epoch:.2f} s per epoch (synthesis "
      f"{last['synthesis_s']:.2f} s, student {last['distill_s']:.2f} s, evaluation of 500 "
      f"images {last['eval_s']:.2f} s; the real test set's 10,000 images cost more)")
EOF

log ""
log "gpu_check.sh: $(( $(date +%s) - START )) s in all; tests exit status $TEST_STATUS"
exit "$TEST_STATUS"
