#!/usr/bin/env bash
# The GPU check: on a machine with CUDA, in at most ~8 minutes, run the CUDA-marked tests, the
# default run and a seqMNIST run with --device cuda (each beside its CPU twin, for the ratio), a
# sweep with --runs-per-gpu 4, a chain with --area-devices, and the decoupling benchmark on the
# GPU, printing absolute times and the same ratios as on CPU. Output: stdout, and every run
# directory and JSON figure under $OUT (default runs/gpu-check).
#
#   bash benchmarks/gpu_check.sh                # on the GPU machine, from the repository root
#   DEVICE=cpu QUICK=1 bash benchmarks/gpu_check.sh   # a dry run of the same steps on a CPU
#
# Needs MNIST in $CCDNI_DATA (or ../shared/data beside the repository). Never edit its output
# into docs by hand: docs/results-gpu.md takes the printed lines as they are.
set -uo pipefail
cd "$(dirname "$0")/.."
export CCDNI_DATA="${CCDNI_DATA:-$(cd .. && pwd)/shared/data}"
DEVICE="${DEVICE:-cuda}"
OUT="${OUT:-runs/gpu-check}"
QUICK="${QUICK:-0}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
if [ "$QUICK" = 1 ]; then EPOCHS_TR=20; SEQ_SUB=500; SWEEP_EPOCHS=5; CHAIN_SUB=600; else EPOCHS_TR=300; SEQ_SUB=4000; SWEEP_EPOCHS=100; CHAIN_SUB=6000; fi
failures=0

step() {  # step NAME TIMEOUT_S COMMAND...: run, print its wall time and status
  local name="$1" limit="$2"; shift 2
  local start end rc
  start=$(date +%s.%N)
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  rc=$?
  end=$(date +%s.%N)
  printf '%-28s rc=%-3s %7.1f s   %s\n' "$name" "$rc" "$(echo "$end - $start" | bc)" "$*"
  [ "$rc" = 0 ] || { failures=$((failures + 1)); tail -5 "$OUT/$name.log" | sed 's/^/    | /'; }
  return 0
}

summary() {  # summary RUN_DIR: the run's wall time and headline from summary.json
  "$PY" - "$1" <<'EOF'
import json, sys, tomllib
from pathlib import Path
run = Path(sys.argv[1])
if not (run / "summary.json").exists():
    print(f"    {run}: no summary.json"); raise SystemExit
s = json.loads((run / "summary.json").read_text())
spec = tomllib.loads((run / "spec.toml").read_text())
h = s.get("headline") or {}
print(f"    {run.name}: status={s.get('status')} wall={s.get('wall_seconds')} s "
      f"device={spec.get('device')} area_devices={spec.get('area_devices') or '-'} "
      f"{h.get('metric')}={h.get('final')}")
EOF
}

ratio() {  # ratio NAME_A RUN_A RUN_B: wall time A ÷ B
  "$PY" - "$@" <<'EOF'
import json, sys
from pathlib import Path
name, a, b = sys.argv[1:4]
wa = json.loads((Path(a) / "summary.json").read_text())["wall_seconds"]
wb = json.loads((Path(b) / "summary.json").read_text())["wall_seconds"]
print(f"    ratio {name}: {wa:.2f} s / {wb:.2f} s = {wa / wb:.2f}")
EOF
}

echo "== gpu_check $(date -u +%FT%TZ) device=$DEVICE quick=$QUICK"
"$PY" - <<'EOF'
import torch
print(f"torch {torch.__version__}, cuda available: {torch.cuda.is_available()}, "
      f"devices: {[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}")
EOF
nproc | sed 's/^/cpu cores: /'

# 1. the CUDA-marked tests (skipped, not failed, without a GPU)
step cuda-tests 240 "$PY" -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py

# 2. the default run on the device and on the CPU (through the processes)
R="$OUT/runs"
step default-device 180 "$PY" launch.py --device "$DEVICE" --epochs "$EPOCHS_TR" --runs-dir "$R" --run-name default-device --no-progress
step default-cpu 180 "$PY" launch.py --device cpu --epochs "$EPOCHS_TR" --runs-dir "$R" --run-name default-cpu --no-progress
summary "$R/default-device"; summary "$R/default-cpu"
ratio "default $DEVICE ÷ cpu" "$R/default-device" "$R/default-cpu"

# 3. a seqMNIST run at the paper's sizes on the device and on the CPU (one epoch of a subset)
SEQ=(--task seqmnist --model cc-dni --truncation 5 --epochs 1 --train-subset "$SEQ_SUB" --val-subset 1000 --no-progress)
step seqmnist-device 240 "$PY" launch.py "${SEQ[@]}" --device "$DEVICE" --runs-dir "$R" --run-name seqmnist-device
step seqmnist-cpu 240 "$PY" launch.py "${SEQ[@]}" --device cpu --runs-dir "$R" --run-name seqmnist-cpu
summary "$R/seqmnist-device"; summary "$R/seqmnist-cpu"
ratio "seqmnist $DEVICE ÷ cpu" "$R/seqmnist-device" "$R/seqmnist-cpu"

# 4. a sweep of 8 runs, 4 at a time on the GPU
step sweep-runs-per-gpu-4 240 "$PY" launch.py sweep --sweep-dir "$OUT/sweep" --device "$DEVICE" --runs-per-gpu 4 \
  --vary model=lstm,cc-dni --seeds 0-3 --epochs "$SWEEP_EPOCHS" --inprocess --no-figures
[ -f "$OUT/sweep/results.csv" ] && echo "    sweep: $(($(wc -l < "$OUT/sweep/results.csv") - 1)) rows in results.csv"

# 5. a chain whose areas are placed on the device (--area-devices)
step chain-area-devices 180 "$PY" launch.py --topology chain --chain-areas 2 --chain-mode backward-unlocked \
  --area-devices "$DEVICE" --train-subset "$CHAIN_SUB" --val-subset 1000 --epochs 1 --runs-dir "$R" --run-name chain-device --no-progress
summary "$R/chain-device"

# 6. the decoupling benchmark with its areas on the device (locked vs backward-unlocked)
step decoupling-device 240 "$PY" -m benchmarks.decoupling --areas 2 --mode locked,backward-unlocked \
  --area-devices "$DEVICE" --train-subset "$CHAIN_SUB" --val-subset 1000 --epochs 1 --json "$OUT/decoupling.json"
grep -iE "ratio|speed|throughput|÷" "$OUT/decoupling-device.log" | tail -8 | sed 's/^/    /'

echo "== gpu_check done: $failures step(s) failed"
exit "$failures"
