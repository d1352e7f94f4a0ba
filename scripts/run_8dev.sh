#!/usr/bin/env bash
# 8 Ascend devices: ZeRO3 (DiT + T5) and Ulysses over 8 ranks (each device holds ~1/8 of the weights and
# computes ~1/8 of every attention sequence). Heads: A14B 40, TI2V-5B 24, both divisible by 8.
#   scripts/run_8dev.sh TASK CKPT_DIR [more generate.py flags...]
#   e.g. scripts/run_8dev.sh t2v-A14B ./Wan2.2-T2V-A14B --size 1280*720 --convert_model_dtype --prompt "..."
exec "$(dirname "${BASH_SOURCE[0]}")/run_msrun.sh" 8 "$@"
