#!/usr/bin/env bash
# Decode-attention profile on a GPU machine: ncu --set full of one decode_kernel launch per format
# at batch 16 x 8K (reports to $OUT), the key counters printed compactly, then the decode bench.
# BIN is a directory holding nvfp4kv_bench built for sm_90a (a build dir, or binaries built on the
# CPU box and carried, as scripts/gpu_check.sh --prebuilt uses).
# Usage: BIN=build-gpu scripts/profile_decode.sh [formats-to-profile (default "nvfp4 fp8")]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out}; mkdir -p "$OUT"
BIN=${BIN:-build-gpu}
export PATH=$PATH:/usr/local/cuda/bin
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
for f in ${1:-nvfp4 fp8}; do
  DECODE_FORMATS=$f DECODE_SHAPES=16x8192 DECODE_NO_CHECK=1 DECODE_NO_HND=1 timeout 120 \
    ncu --clock-control none --set full -k regex:decode_kernel --launch-skip 3 --launch-count 1 -f -o "$OUT/ncu_$f" \
    "$BIN/nvfp4kv_bench" --filter decode --runs 20 >"$OUT/ncu_$f.log" 2>&1 || { echo "ncu $f failed"; tail -3 "$OUT/ncu_$f.log"; continue; }
  ncu --import "$OUT/ncu_$f.ncu-rep" --page raw >"$OUT/ncu_$f.raw.txt" 2>&1
  ncu --import "$OUT/ncu_$f.ncu-rep" --page details >"$OUT/ncu_$f.details.txt" 2>&1
  echo "== $f"
  grep -E "^\s+(gpu__time_duration.sum|sm__inst_issued.avg.pct_of_peak_sustained_active|smsp__issue_active.avg.pct_of_peak_sustained_active|sm__warps_active.avg.pct_of_peak_sustained_active|dram__throughput.avg.pct_of_peak_sustained_elapsed|smsp__inst_executed.sum|smsp__warps_launched.sum|launch__registers_per_thread|launch__occupancy_limit_registers|smsp__average_warp_latency_per_inst_issued.ratio|l1tex__data_bank_conflicts_pipe_lsu_mem_shared.sum) " "$OUT/ncu_$f.raw.txt" | awk '{print $1, $(NF)}' | tr '\n' ';'; echo
  grep -E "smsp__average_warps_issue_stalled_[a-z_]+_per_issue_active.ratio " "$OUT/ncu_$f.raw.txt" | awk '{print $NF, $1}' | sort -rn | head -7 | sed 's/smsp__average_warps_issue_stalled_//;s/_per_issue_active.ratio//' | tr '\n' ';'; echo
  grep -E "sm__inst_executed_pipe_[a-z_]+.avg.pct_of_peak_sustained_active " "$OUT/ncu_$f.raw.txt" | awk '{print $NF, $1}' | sort -rn | head -5 | sed 's/sm__inst_executed_pipe_//;s/.avg.pct_of_peak_sustained_active//' | tr '\n' ';'; echo
done
[ -n "${NO_BENCH:-}" ] || { timeout 150 "$BIN/nvfp4kv_bench" --filter decode --runs 20 >"$OUT/bench.log" 2>&1; echo "bench rc=$?"; grep -E "copy|check" "$OUT/bench.log" | head -4; sed -n '/decode attention, 32/,$p' "$OUT/bench.log" | head -20; }
