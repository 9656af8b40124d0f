#!/usr/bin/env bash
# nvfp4kv GPU check: configure for sm_90a, build, run every test (GPU ones included), run the
# small GPU cases under compute-sanitizer (memcheck, racecheck), run the benchmarks and the
# torch peer scripts, and print a short summary table last. Logs and JSON go to $OUT
# (default ./out): build.log tests.log sanitizer.log bench.log bench.json peers.json demo.log
# summary.txt.
#
#   scripts/gpu_check.sh [--bench-filter SUBSTR|=NAME[,..]] [--no-bench] [--no-sanitizer] [--no-tests]
#                        [--quick] [--tests REGEX] [--prebuilt DIR]
#
# --prebuilt DIR: use test_cuda, nvfp4kv_bench and nvfp4kv already built for sm_90a in DIR (for
# example on a CPU machine: `cmake -S . -B build-sm90 -G Ninja && ninja -C build-sm90 test_cuda
# nvfp4kv_bench nvfp4kv_cli`), so the GPU machine's time is not spent compiling; then only the
# GPU test binary runs (the CPU tests run in CI).
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
prebuilt=""
do_tests=1
while [ $# -gt 0 ]; do
  case "$1" in
    --bench-filter) bench_filter="$2"; shift 2 ;;
    --no-bench) do_bench=0; shift ;;
    --no-sanitizer) do_san=0; shift ;;
    --quick) quick="--quick"; shift ;;
    --tests) test_regex="$2"; shift 2 ;;
    --prebuilt) prebuilt="$2"; shift 2 ;;
    --no-tests) do_tests=0; shift ;;
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
if [ -n "$prebuilt" ]; then
  BIN=$prebuilt
  for exe in test_cuda nvfp4kv_bench nvfp4kv; do
    [ -x "$BIN/$exe" ] || { echo "gpu_check: $BIN/$exe missing"; exit 1; }
  done
  note "build" "prebuilt binaries from $BIN"
else
  if ! { cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a &&
         cmake --build "$BUILD" -j "$(nproc)"; } >>"$OUT/build.log" 2>&1; then
    tail -40 "$OUT/build.log"
    echo "gpu_check: BUILD FAILED (see build.log)"
    exit 1
  fi
  BIN=$BUILD
  note "build" "ok ($(( $(date +%s) - t0 )) s)"
fi

trc=0
if [ $do_tests -eq 1 ]; then
  if [ -n "$prebuilt" ]; then
    # GPU test binary only; its gtest summary is the record.
    gargs=()
    [ -n "$test_regex" ] && gargs+=(--gtest_filter="$test_regex")
    timeout 480 "$BIN/test_cuda" "${gargs[@]}" >"$OUT/tests.log" 2>&1
    trc=$?
    p=$(grep -Eo '\[  PASSED  \] [0-9]+ test' "$OUT/tests.log" | grep -Eo '[0-9]+' | tail -1)
    f=$(grep -Eo '\[  FAILED  \] [0-9]+ test' "$OUT/tests.log" | grep -Eo '[0-9]+' | tail -1)
    sk=$(grep -Eo '\[  SKIPPED \] [0-9]+ test' "$OUT/tests.log" | grep -Eo '[0-9]+' | tail -1)
    note "GPU tests" "rc=$trc passed ${p:-0}, failed ${f:-0}, skipped ${sk:-0} ($(grep -Eo 'ran\. \([0-9]+ ms' "$OUT/tests.log" | tail -1 | grep -Eo '[0-9]+') ms)"
    grep -E '^\[  FAILED  \]' "$OUT/tests.log" | head -20
  else
    # Every test: the GPU tests run here for real; CPU tests too (cheap).
    ctest_args=(--test-dir "$BUILD" --output-on-failure -j 4)
    [ -n "$test_regex" ] && ctest_args+=(-R "$test_regex")
    ctest "${ctest_args[@]}" >"$OUT/tests.log" 2>&1
    trc=$?
    passed=$(grep -Eo '[0-9]+% tests passed, [0-9]+ tests failed out of [0-9]+' "$OUT/tests.log" | tail -1)
    skipped=$(grep -c 'Skipped' "$OUT/tests.log" || true)
    note "tests (all)" "${passed:-?} ; skipped: ${skipped}"
    [ $trc -ne 0 ] && grep -E '^\s+[0-9]+ - .*\((Failed|Timeout|SEGFAULT|Subprocess)' "$OUT/tests.log" | head -20
  fi
fi

# compute-sanitizer on the small GPU cases.
if [ $do_san -eq 1 ] && [ -x "$BIN/test_cuda" ]; then
  : >"$OUT/sanitizer.log"
  for tool in memcheck racecheck; do
    echo "== compute-sanitizer --tool $tool (gtest_filter=*Small*)" >>"$OUT/sanitizer.log"
    # Each tool's figures from its own output only (a run cut by the timeout, rc 124, then shows
    # "?" and "0 tests" instead of the previous tool's lines).
    timeout 400 compute-sanitizer --tool "$tool" --error-exitcode 9 "$BIN/test_cuda" --gtest_filter='*Small*' \
      >"$OUT/sanitizer_$tool.log" 2>&1
    src=$?
    cat "$OUT/sanitizer_$tool.log" >>"$OUT/sanitizer.log"
    # memcheck ends with "ERROR SUMMARY: N errors", racecheck with "RACECHECK SUMMARY: N hazards
    # displayed (E errors, W warnings)".
    errs=$(grep -Eo '(ERROR SUMMARY: [0-9]+ errors?|RACECHECK SUMMARY: [0-9]+ hazards displayed \([0-9]+ errors?, [0-9]+ warnings?\))' \
      "$OUT/sanitizer_$tool.log" | tail -1)
    ntests=$(grep -Eo '\[  PASSED  \] [0-9]+ test' "$OUT/sanitizer_$tool.log" | tail -1)
    rm -f "$OUT/sanitizer_$tool.log"
    note "sanitizer $tool" "rc=$src ${errs:-?} (${ntests:-0 tests})"
  done
fi

if [ $do_bench -eq 1 ] && [ -x "$BIN/nvfp4kv_bench" ]; then
  bargs=(--json "$OUT/bench.json")
  [ -n "$bench_filter" ] && bargs+=(--filter "$bench_filter")
  [ -n "$quick" ] && bargs+=("$quick")
  timeout 450 "$BIN/nvfp4kv_bench" "${bargs[@]}" 2>&1 | tee "$OUT/bench.log" | grep -E '^(nvfp4kv_bench|device-to-device|===)'
  note "bench" "rc=${PIPESTATUS[0]} $(grep -Eo 'copy .*TB/s' "$OUT/bench.log" | head -1)"
  # Peers in the same call: torch SDPA etc. (bench/*.py write JSON lists to stdout's last line).
  : >"$OUT/peers.json"
  for py in bench/*.py; do
    [ -f "$py" ] || continue
    name=$(basename "$py" .py)
    if [ -z "$bench_filter" ] || echo "$name" | grep -qE "$(echo "$bench_filter" | tr ',' '|' | tr -d '=')"; then
      PYTHONUNBUFFERED=1 python3 "$py" $quick --json "$OUT/peer_$name.json" 2>&1 | tee -a "$OUT/bench.log" | tail -30
      [ -f "$OUT/peer_$name.json" ] && { cat "$OUT/peer_$name.json" >>"$OUT/peers.json"; rm -f "$OUT/peer_$name.json"; }
      note "peer $name" "rc=${PIPESTATUS[0]}"
    fi
  done
fi

timeout 120 "$BIN/nvfp4kv" demo >"$OUT/demo.log" 2>&1
note "demo" "rc=$?"

{
  echo
  echo "================ nvfp4kv gpu_check summary ================"
  for s in "${summary[@]}"; do echo "  $s"; done
  echo "  logs: $OUT"
} | tee "$OUT/summary.txt"
exit $trc
