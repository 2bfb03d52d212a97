#!/usr/bin/env bash
# Every CUDA check in one call (at most 8 minutes), one summary:
#   the CUDA-marked tests (pytest -m cuda), gpu_step.py (DiT-B eager + inductor compile), gpu_step.py
#   --model pixart-xl (the reference's shape, checkpointing off/on) and bench/data.py (CPU vs device degradation).
# Usage: bash bench/gpu_check.sh            (logs and summary.txt under $OUT, or under gpu-check/)
set -u
out=${OUT:-gpu-check}
mkdir -p "$out"
summary=$out/summary.txt
{
    echo "# gpu_check $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null)"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
    python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
} > "$summary"

part() {  # part NAME SECONDS COMMAND...: run with a time limit, keep its log, put its tail in the summary
    local name=$1 limit=$2 start rc
    shift 2
    start=$(date +%s)
    timeout "$limit" "$@" > "$out/$name.log" 2>&1
    rc=$?
    {
        echo
        echo "## $name: exit $rc in $(( $(date +%s) - start )) s$([ $rc = 124 ] && echo " (time limit $limit s)")"
        tail -n 20 "$out/$name.log"
    } >> "$summary"
}

part cuda-tests 120 python -m pytest -q -m cuda -p no:cacheprovider tests
part gpu-step-dit 120 python bench/gpu_step.py --size gpu --steps 10
part gpu-step-pixart-xl 300 python bench/gpu_step.py --model pixart-xl --train scripts --batches 1,4 --steps 6
part gpu-step-pixart-xl-lora 180 python bench/gpu_step.py --model pixart-xl --train lora --batches 4 --steps 6
part data 60 python bench/data.py --workers 4
cat "$summary"
