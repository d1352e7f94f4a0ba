#!/usr/bin/env bash
# Launch generate.py on N Ascend devices of one machine with msrun: ZeRO3 for the DiT and T5 weights and Ulysses
# sequence parallelism over all N devices.
#
#   scripts/run_msrun.sh N TASK CKPT_DIR [more generate.py flags...]
#   e.g. scripts/run_msrun.sh 8 t2v-A14B ./Wan2.2-T2V-A14B --size 1280*720 --prompt "..."
#
# Environment: MASTER_PORT (default 8118), LOG_DIR (default ./msrun_logs/<task>_<N>dev), MS_NODE_TIMEOUT
# (seconds the scheduler waits for a dead rank, default 60), DEVICE_TARGET (default Ascend; CPU for a dry run
# with the tiny checkpoints in examples/tiny). Only rank 0's log is tailed to the console; every rank's log is in
# LOG_DIR/worker_<rank>.log. A failing rank ends the whole job with a non-zero exit.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 N TASK CKPT_DIR [generate.py flags...]" >&2
  exit 2
fi
N=$1; TASK=$2; CKPT_DIR=$3; shift 3
case "$N" in ''|*[!0-9]*) echo "N must be a positive integer, got '$N'" >&2; exit 2;; esac
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOG_DIR=${LOG_DIR:-./msrun_logs/${TASK}_${N}dev}
export MS_NODE_TIMEOUT=${MS_NODE_TIMEOUT:-60}
PARALLEL=()
if [ "$N" -gt 1 ]; then
  PARALLEL=(--dit_zero3 --t5_zero3 --ulysses_size "$N")
fi
exec msrun --worker_num="$N" --local_worker_num="$N" --master_port="${MASTER_PORT:-8118}" --log_dir="$LOG_DIR" \
  --join=True --tail_worker_log=0 \
  "$ROOT/generate.py" --task "$TASK" --ckpt_dir "$CKPT_DIR" --device_target "${DEVICE_TARGET:-Ascend}" \
  "${PARALLEL[@]}" "$@"
