#!/usr/bin/env bash
# One device session: install the carried wheels, then run the GPU benchmarks and GPU tests.
# Usage (device machine, repo root): bash bench/gpu_check.sh [train_step args...]
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, lightning, huggingface_hub, diffusers; print(torch.__version__, transformers.__version__, lightning.__version__, huggingface_hub.__version__, diffusers.__version__)" | tee -a "$OUT/gpu.txt"
if [ -f tests/test_fsdp_gpu.py ]; then
  timeout 240 python3 -m pytest -m gpu tests/test_fsdp_gpu.py -q -p no:cacheprovider -o addopts="" 2>&1 | tee "$OUT/fsdp_gpu.log" | tail -15
fi
timeout 420 python3 bench/train_step.py "$@" 2>"$OUT/train_step.err" | tee "$OUT/train_step.jsonl"
tail -5 "$OUT/train_step.err"
timeout 120 python3 bench/loss_head.py 2>"$OUT/loss_head.err" | tee "$OUT/loss_head.jsonl"
