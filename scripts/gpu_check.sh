#!/usr/bin/env bash
# nvfp4kv GPU check: configure for sm_90a, build, run every test (GPU ones included), run the
# small GPU cases under compute-sanitizer (memcheck, racecheck), run the benchmarks and the
# torch peer scripts, and print a short summary table last. Logs and JSON go to $OUT
# (default ./out): build.log tests.log sanitizer.log bench.log bench.json peers.json demo.log
# summary.txt.
#
#   scripts/gpu_check.sh [--bench-filter SUBSTR[,..]] [--no-bench] [--no-sanitizer] [--quick]
#                        [--tests REGEX]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
BUILD=${BUILD:-build-gpu}
bench_filter=""
do_bench=1
do_san=1
quick=""
test_regex=""
while [ $# -gt 0 ]; do
  case "$1" in
    --bench-filter) bench_filter="$2"; shift 2 ;;
    --no-bench) do_bench=0; shift ;;
    --no-sanitizer) do_san=0; shift ;;
    --quick) quick="--quick"; shift ;;
    --tests) test_regex="$2"; shift 2 ;;
    *) echo "gpu_check: unknown argument $1" >&2; exit 2 ;;
  esac
done

summary=()
note() { summary+=("$(printf '%-22s %s' "$1" "$2")"); }

echo "== device" | tee "$OUT/build.log"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 | tee -a "$OUT/build.log"
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
note "device" "${gpu:-none} ($(date -u +%Y-%m-%d))"

t0=$(date +%s)
if ! { cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a &&
       cmake --build "$BUILD" -j "$(nproc)"; } >>"$OUT/build.log" 2>&1; then
  tail -40 "$OUT/build.log"
  echo "gpu_check: BUILD FAILED (see build.log)"
  exit 1
fi
note "build" "ok ($(( $(date +%s) - t0 )) s)"

# Every test: the GPU tests run here for real; CPU tests too (cheap).
ctest_args=(--test-dir "$BUILD" --output-on-failure -j 4)
[ -n "$test_regex" ] && ctest_args+=(-R "$test_regex")
ctest "${ctest_args[@]}" >"$OUT/tests.log" 2>&1
trc=$?
passed=$(grep -Eo '[0-9]+% tests passed, [0-9]+ tests failed out of [0-9]+' "$OUT/tests.log" | tail -1)
skipped=$(grep -c 'Skipped' "$OUT/tests.log" || true)
note "tests (all)" "${passed:-?} ; skipped: ${skipped}"
[ $trc -ne 0 ] && grep -E '^\s+[0-9]+ - .*\((Failed|Timeout|SEGFAULT|Subprocess)' "$OUT/tests.log" | head -20

# compute-sanitizer on the small GPU cases.
if [ $do_san -eq 1 ] && [ -x "$BUILD/test_cuda" ]; then
  : >"$OUT/sanitizer.log"
  for tool in memcheck racecheck; do
    echo "== compute-sanitizer --tool $tool (gtest_filter=*Small*)" >>"$OUT/sanitizer.log"
    compute-sanitizer --tool "$tool" --error-exitcode 9 "$BUILD/test_cuda" --gtest_filter='*Small*' \
      >>"$OUT/sanitizer.log" 2>&1
    src=$?
    errs=$(grep -Eo 'ERROR SUMMARY: [0-9]+ error' "$OUT/sanitizer.log" | tail -1)
    ntests=$(grep -Eo '\[  PASSED  \] [0-9]+ test' "$OUT/sanitizer.log" | tail -1)
    note "sanitizer $tool" "rc=$src ${errs:-?} (${ntests:-0 tests})"
  done
fi

if [ $do_bench -eq 1 ] && [ -x "$BUILD/nvfp4kv_bench" ]; then
  bargs=(--json "$OUT/bench.json")
  [ -n "$bench_filter" ] && bargs+=(--filter "$bench_filter")
  [ -n "$quick" ] && bargs+=("$quick")
  "$BUILD/nvfp4kv_bench" "${bargs[@]}" 2>&1 | tee "$OUT/bench.log" | grep -E '^(nvfp4kv_bench|device-to-device|===)'
  note "bench" "rc=${PIPESTATUS[0]} $(grep -Eo 'copy .*TB/s' "$OUT/bench.log" | head -1)"
  # Peers in the same call: torch SDPA etc. (bench/*.py write JSON lists to stdout's last line).
  : >"$OUT/peers.json"
  for py in bench/*.py; do
    [ -f "$py" ] || continue
    name=$(basename "$py" .py)
    if [ -z "$bench_filter" ] || echo "$name" | grep -qE "$(echo "$bench_filter" | tr ',' '|')"; then
      PYTHONUNBUFFERED=1 python3 "$py" $quick --json "$OUT/peer_$name.json" 2>&1 | tee -a "$OUT/bench.log" | tail -30
      [ -f "$OUT/peer_$name.json" ] && { cat "$OUT/peer_$name.json" >>"$OUT/peers.json"; rm -f "$OUT/peer_$name.json"; }
      note "peer $name" "rc=${PIPESTATUS[0]}"
    fi
  done
fi

"$BUILD/nvfp4kv" demo >"$OUT/demo.log" 2>&1
note "demo" "rc=$?"

{
  echo
  echo "================ nvfp4kv gpu_check summary ================"
  for s in "${summary[@]}"; do echo "  $s"; done
  echo "  logs: $OUT"
} | tee "$OUT/summary.txt"
exit $trc
