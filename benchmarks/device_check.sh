#!/usr/bin/env bash
# One GPU check of polycom, under 8 minutes on one H100/H200:
#   1. the GPU tests (tests/test_gpu.py, tests/test_triton_kernels.py), and the compiled-model ones with
#      POLYCOM_TRITON_OP=1 (Inductor compiling the Triton kernels through torch.library.triton_op);
#   2. kernel bandwidth (benchmarks/bench_kernel_bandwidth.py);
#   3. 100 steps of the `small` model, without and with activation checkpointing: tokens/s,
#      peak memory, MFU against the GPU's dense bf16 peak; FSDP2 with bf16 mixed precision
#      (train.precision=bf16-fsdp) on every GPU (one GPU: a process group of one);
#   4. the first runs of the `small` compare preset, for what is left of a fixed budget.
#
#   bash benchmarks/device_wheels.sh           # here, once: the wheels the GPU image lacks, into .whl/
#   bash benchmarks/device_check.sh [OUT]      # there (carry [".whl"]); OUT defaults to $OUT, else ./device-check
#
# It installs the carried wheels (into /tmp/site, on PYTHONPATH), puts this tree's src/ first on
# PYTHONPATH (the machine's own torch and Triton stay), then checks that the lab extra imports
# before any step runs.
#
# Everything is logged under OUT; OUT/summary.md holds the numbers to copy into
# docs/benchmarks.md with the device name and date. Each step has its own time limit, so
# one that hangs cannot eat the others' time; a failing step is reported and the rest run.
# The whole script keeps to BUDGET seconds (default 450: the device tool stops a command at
# 600 s, and the summary must be written before that): a step gets at most what is left,
# and one with under 20 s left is skipped and reported as such.
set -u
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-device-check}}
mkdir -p "$OUT"
SUMMARY="$OUT/summary.md"
CACHE="$OUT/cache"
# Dense bf16 peak of the GPU for MFU, TFLOP/s (H100/H200 SXM: 989); override with PEAK_TFLOPS.
PEAK_TFLOPS=${PEAK_TFLOPS:-989}

BUDGET=${BUDGET:-450}

if compgen -G ".whl/*.whl" > /dev/null; then
    python -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
# This tree's polycom, first on the path, with no install: an install would re-point an editable
# install of another checkout in the same environment (every command below runs `python -m`).
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
python -c "from polycom.extras import require; require('lab', 'benchmarks/device_check.sh')" || {
    echo "run bash benchmarks/device_wheels.sh here and carry .whl"; exit 1; }

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log, record the exit status
    local name=$1 limit=$2; shift 2
    local left=$((BUDGET - SECONDS))
    if [ "$left" -lt 20 ]; then
        echo "| $name | skipped: ${left} s of the ${BUDGET} s budget left | |" >> "$SUMMARY"
        echo "== $name: skipped (budget)"
        return 0
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    local start=$SECONDS
    timeout --signal=TERM --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    echo "| $name | $rc | $((SECONDS - start)) s |" >> "$SUMMARY"
    echo "== $name: exit $rc after $((SECONDS - start)) s (log: $OUT/$name.log)"
    tail -n 5 "$OUT/$name.log"
    return 0
}

{
    echo "# polycom device check, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo '```'
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
    python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" 2>&1
    echo '```'
    echo
    echo "| step | exit | time |"
    echo "|---|---|---|"
} > "$SUMMARY"

step gpu_tests 150 python -m pytest -q -x -p no:randomly tests/test_gpu.py tests/test_triton_kernels.py
# The compiled-model tests again with POLYCOM_TRITON_OP=1 read at import, as a user would set it: torch.compile
# traces triton calls through the ops' triton_op pairs and Inductor compiles the kernels itself (docs/kernels.md).
step gpu_triton_op 90 env POLYCOM_TRITON_OP=1 python -m pytest -q -x -p no:randomly tests/test_gpu.py -k "fullgraph or triton_op"
step kernel_bandwidth 60 python benchmarks/bench_kernel_bandwidth.py

# 100 steps of `small` (12 x 768, seq 512, micro-batch 16), without and with activation checkpointing,
# FSDP2 with bf16 mixed precision (train.parallel=fsdp train.precision=bf16-fsdp) on every GPU:
# under torchrun with 2+ GPUs, in one process (a process group of one) on a machine with one.
# The BPE tokenizer is trained once into $CACHE by the first run (not timed by the trainer).
NGPU=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
MODE="FSDP2 x $(( ${NGPU:-0} > 0 ? NGPU : 1 )) GPU(s), bf16-fsdp"
train_small() {  # train_small NAME CHECKPOINTING
    local common=(--preset small train.steps=100 train.eval_every=100 train.eval_batches=1
        train.checkpoint_every=100 "train.activation_checkpointing=$2" data.cache_dir="$CACHE"
        train.out_dir="$OUT/$1" train.progress=false train.parallel=fsdp train.precision=bf16-fsdp)
    if [ "${NGPU:-0}" -ge 2 ]; then
        python -m torch.distributed.run --standalone --nproc_per_node "$NGPU" -m polycom.cli train "${common[@]}"
    else
        python -m polycom.cli train "${common[@]}"
    fi
}
export -f train_small
export OUT CACHE NGPU
step small_bf16 120 bash -c 'train_small small_bf16 0'
step small_bf16_ac 120 bash -c 'train_small small_bf16_ac 1'

python - "$OUT" "$PEAK_TFLOPS" "$MODE" "${NGPU:-1}" >> "$SUMMARY" 2>&1 <<'EOF'
import json, sys
from pathlib import Path
out, peak, mode, ngpu = Path(sys.argv[1]), float(sys.argv[2]) * 1e12, sys.argv[3], max(1, int(sys.argv[4]))
print(f"\n| small, 100 steps, {mode} | tokens/s (all GPUs) | peak memory (rank 0) | MFU | final loss |")
print("|---|---|---|---|---|")
for name, label in (("small_bf16", "no activation checkpointing"), ("small_bf16_ac", "every block checkpointed")):
    path = out / name / "summary.json"
    if not path.exists():
        print(f"| {label} | (no summary.json: see {name}.log) | | | |")
        continue
    s = json.loads(path.read_text())
    mfu = s["tokens_per_s"] * s["flops_per_token"] / (peak * ngpu)
    print(f"| {label} | {s['tokens_per_s']:,.0f} | {s['peak_memory_bytes'] / 2**30:.2f} GiB | {100 * mfu:.1f}% "
          f"| {s['train_loss']:.4f} |")
EOF

# The small compare preset's first runs, for the time left: the log shows how far it got.
step compare_small 150 python -m polycom.cli compare --preset small --out "$OUT/compare-small" --throughput-rounds 0 \
    data.cache_dir="$CACHE"

echo
echo "summary: $SUMMARY"
cat "$SUMMARY"
