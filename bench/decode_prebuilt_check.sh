#!/usr/bin/env bash
# Decode GPU check with prebuilt binaries (bench/decode_host_build.sh on the host, carried in
# build-attnperf/bin): decode tests, memcheck on the Small ones, SASS opcode histogram of the
# nvfp4 bf16-query hd128 kernel, then each decode_bench* binary on $DECODE_SHAPES (all formats).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out}; mkdir -p "$OUT"
BIN=${BIN:-build-attnperf/bin}
export PATH=$PATH:/usr/local/cuda/bin
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
for t in "$BIN"/test_decode*; do
  n=$(basename "$t")
  "$t" >"$OUT/$n.log" 2>&1; echo "$n rc=$? $(grep -E '^\[  (PASSED|FAILED)' "$OUT/$n.log" | tr '\n' ' ')"
  grep -E "^\[  FAILED  \]|Failure|Which is" "$OUT/$n.log" | head -6
  timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 "$t" --gtest_filter='*Small*' >"$OUT/memcheck_$n.log" 2>&1
  echo "memcheck $n rc=$? $(grep -Eo 'ERROR SUMMARY: [0-9]+ error' "$OUT/memcheck_$n.log" | tail -1) $(grep -Eo '\[  PASSED  \] [0-9]+ test' "$OUT/memcheck_$n.log")"
done
for b in "$BIN"/decode_bench*; do
  n=$(basename "$b")
  cuobjdump -sass "$b" | awk '/Function : .*decode_kernelI13__nv_bfloat16Li128ELi3E/{f=1;next} f&&/Function : /{f=0} f' >"$OUT/sass_$n.txt"
  echo "$n sass: $(grep -cE '^\s+/\*[0-9a-f]{4,6}\*/' "$OUT/sass_$n.txt") instr; $(grep -oE '^\s+/\*[0-9a-f]{4,6}\*/\s+(@!?U?P[0-9T] )?[A-Z][A-Z0-9]+' "$OUT/sass_$n.txt" | awk '{print $NF}' | sort | uniq -c | sort -rn | head -16 | awk '{printf "%s %s, ", $2, $1}')"
  DECODE_NO_HND=1 timeout 150 "$b" --filter decode --runs 20 >"$OUT/bench_$n.log" 2>&1; echo "$n rc=$?"
  grep -E "copy|check" "$OUT/bench_$n.log" | head -7
  sed -n '/decode attention, 32/,$p' "$OUT/bench_$n.log" | sed -n '3,20p'
done
