#!/usr/bin/env bash
# KV-cache GPU check (issue 4): builds only the KV targets, runs the KV GPU tests, the small
# ones under compute-sanitizer (memcheck, racecheck), and the KV benchmarks. Logs to $OUT.
# The test and bench binaries are linked from the KV objects only (the test_cuda and
# nvfp4kv_bench targets glob every area's files, which may be mid-edit).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out}; mkdir -p "$OUT"
B=${BUILD:-build-gpu-kv}
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a \
  -DCMAKE_CUDA20_STANDARD_COMPILE_OPTION=-std=c++20 -DCMAKE_CUDA20_EXTENSION_COMPILE_OPTION=-std=c++20 \
  >"$OUT/cfg.log" 2>&1 || { tail -20 "$OUT/cfg.log"; exit 1; }
# Only the KV objects (+ device/types helpers): other areas' in-progress files cannot break this.
OBJ="$B/CMakeFiles/nvfp4kv.dir"
OBJS=("$OBJ/src/api/kv_cache.cpp.o" "$OBJ/src/api/kv_pool.cpp.o" "$OBJ/src/api/device.cpp.o"
      "$OBJ/src/api/types.cpp.o" "$OBJ/src/ref/kv_cache.cpp.o" "$OBJ/src/cuda/kv/append.cu.o"
      "$OBJ/src/cuda/kv/dequantize.cu.o" "$OBJ/src/cuda/kv/amax.cu.o")
rel=(); for o in "${OBJS[@]}"; do rel+=("${o#$B/}"); done
cmake --build "$B" -j "$(nproc)" --target "${rel[@]}" >"$OUT/build.log" 2>&1 || { grep -E "error" "$OUT/build.log" | head; tail -5 "$OUT/build.log"; exit 1; }
CU=/usr/local/cuda
LINK=(-L"$CU/lib64" -lcudart_static -ldl -lrt -lpthread)
T="$B/test_kv_gpu"
g++ -std=c++20 -O2 -ffp-contract=off -Iinclude -Isrc -Itests -I"$CU/include" -DNVFP4KV_HAVE_CUDA=1 \
  tests/cuda/test_kv.cpp "${OBJS[@]}" -o "$T" -lgtest_main -lgtest "${LINK[@]}" >>"$OUT/build.log" 2>&1 || { tail -20 "$OUT/build.log"; exit 1; }
BN="$B/kv_bench"
nvcc -std=c++20 -O3 -gencode arch=compute_90a,code=sm_90a -Xcompiler=-ffp-contract=off --expt-relaxed-constexpr \
  -Iinclude -Isrc -Ibench -DNVFP4KV_HAVE_CUDA=1 bench/main.cu bench/bench_kv.cu "${OBJS[@]}" -o "$BN" \
  >>"$OUT/build.log" 2>&1 || { tail -20 "$OUT/build.log"; exit 1; }
"$T" --gtest_filter='Kv*' >"$OUT/tests.log" 2>&1; echo "tests rc=$?"
grep -E "^\[  (PASSED|FAILED) |^\[  FAILED  \]|Failure|differs" "$OUT/tests.log" | head -20
if [ "${KV_SANITIZER:-1}" = 1 ]; then
  for tool in memcheck racecheck; do
    compute-sanitizer --tool $tool --error-exitcode 9 "$T" --gtest_filter='Kv*Small*' >"$OUT/san_$tool.log" 2>&1
    echo "sanitizer $tool rc=$? $(grep -Eo 'ERROR SUMMARY: [0-9]+ error|RACECHECK SUMMARY.*' "$OUT/san_$tool.log" | tail -1) $(grep -Eo '\[  PASSED  \] [0-9]+ test' "$OUT/san_$tool.log")"
  done
fi
"$BN" --filter kv_ --json "$OUT/bench.json" ${KV_BENCH_ARGS:-} >"$OUT/bench.log" 2>&1; echo "bench rc=$?"
grep -vE "^$" "$OUT/bench.log" | tail -32
