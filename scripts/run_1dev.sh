#!/usr/bin/env bash
# One Ascend device, no msrun: bf16 weights and model offloading so that the A14B experts fit one 64 GB NPU.
#   scripts/run_1dev.sh TASK CKPT_DIR [more generate.py flags...]
#   e.g. scripts/run_1dev.sh ti2v-5B ./Wan2.2-TI2V-5B --size 1280*704 --prompt "..."
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 TASK CKPT_DIR [generate.py flags...]" >&2
  exit 2
fi
TASK=$1; CKPT_DIR=$2; shift 2
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec python "$ROOT/generate.py" --task "$TASK" --ckpt_dir "$CKPT_DIR" --device_target "${DEVICE_TARGET:-Ascend}" \
  --offload_model True --convert_model_dtype "$@"
