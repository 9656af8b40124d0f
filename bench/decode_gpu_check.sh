#!/usr/bin/env bash
# Decode-attention GPU check (issue 5): builds the library, test_cuda, the bench and the CLI,
# runs the decode GPU tests, the decode benchmark, the torch SDPA peer, the demo, and (unless
# DECODE_SANITIZER=0) the Small decode tests under compute-sanitizer memcheck/racecheck.
# Full logs go to $OUT; a short summary is printed last. If a target that globs other areas'
# files fails to build, the decode test / bench are compiled alone against the library.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out}; mkdir -p "$OUT"
B=${BUILD:-build-gpu-attn}
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
t0=$(date +%s)
cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a \
  -DCMAKE_CUDA20_STANDARD_COMPILE_OPTION=-std=c++20 -DCMAKE_CUDA20_EXTENSION_COMPILE_OPTION=-std=c++20 \
  >"$OUT/cfg.log" 2>&1 || { tail -20 "$OUT/cfg.log"; exit 1; }
cmake --build "$B" -j "$(nproc)" --target nvfp4kv >"$OUT/build.log" 2>&1 || { grep -E "error" "$OUT/build.log" | head; exit 1; }
CU=/usr/local/cuda
NVCC=(nvcc -std=c++20 -O3 -gencode arch=compute_90a,code=sm_90a -Xcompiler=-ffp-contract=off --expt-relaxed-constexpr
      -Iinclude -Isrc -Itests -Ibench -DNVFP4KV_HAVE_CUDA=1)
T="$B/test_cuda"
if ! cmake --build "$B" -j "$(nproc)" --target test_cuda >>"$OUT/build.log" 2>&1; then
  echo "test_cuda target failed; building the decode test alone"
  T="$B/test_decode_gpu"
  "${NVCC[@]}" tests/cuda/test_decode.cu "$B/libnvfp4kv.a" -o "$T" -lgtest_main -lgtest >>"$OUT/build.log" 2>&1 ||
    { grep error "$OUT/build.log" | head; exit 1; }
fi
BN="$B/nvfp4kv_bench"
if ! cmake --build "$B" -j "$(nproc)" --target nvfp4kv_bench >>"$OUT/build.log" 2>&1; then
  echo "nvfp4kv_bench target failed; building main.cu + bench_decode.cu alone"
  BN="$B/decode_bench"
  "${NVCC[@]}" bench/main.cu bench/bench_decode.cu "$B/libnvfp4kv.a" -o "$BN" >>"$OUT/build.log" 2>&1 ||
    { grep error "$OUT/build.log" | head; exit 1; }
fi
cmake --build "$B" -j "$(nproc)" --target nvfp4kv_cli test_attention >>"$OUT/build.log" 2>&1 || echo "CLI/test_attention build failed"
[ -x "$B/test_attention" ] && { "$B/test_attention" >"$OUT/cpu_tests.log" 2>&1; echo "cpu tests rc=$? $(grep -E '^\[  (PASSED|FAILED)' "$OUT/cpu_tests.log" | head -2 | tr '\n' ' ')"; }
# SASS opcode histogram of the nvfp4 / bf16-query / hd128 kernel (what the loop really executes).
export PATH=$PATH:/usr/local/cuda/bin
OBJ=$(find "$B" -name 'decode.cu.o' | head -1)
if [ -n "$OBJ" ] && command -v cuobjdump >/dev/null; then
  cuobjdump -sass "$OBJ" | awk '/Function : .*decode_kernelI13__nv_bfloat16Li128ELi3E/{f=1;print;next} f&&/Function : /{f=0} f' >"$OUT/sass_nvfp4_hd128.txt"
  { echo "sass nvfp4 hd128 (both variants): $(grep -cE '^\s+/\*[0-9a-f]{4,6}\*/' "$OUT/sass_nvfp4_hd128.txt") instructions; top opcodes:"
  grep -oE '^\s+/\*[0-9a-f]{4,6}\*/\s+(@!?U?P[0-9T] )?[A-Z][A-Z0-9]+' "$OUT/sass_nvfp4_hd128.txt" | awk '{print $NF}' | sort | uniq -c | sort -rn | head -24 | tr '\n' ' '; echo; } >"$OUT/sass_summary.txt"
  rm -f "$OUT/sass_nvfp4_hd128.txt"
fi
echo "build $(( $(date +%s) - t0 )) s"
"$T" --gtest_filter='*Decode*' >"$OUT/decode_tests.log" 2>&1; echo "tests rc=$?"
grep -E "^\[  (PASSED|FAILED) |^\[  FAILED  \]" "$OUT/decode_tests.log" | head -12
grep -E "Failure|Expected|actual|Which is" "$OUT/decode_tests.log" | head -12
timeout ${BENCH_TIMEOUT:-200} "$BN" --filter decode --json "$OUT/decode_bench.json" ${DECODE_BENCH_ARGS:-} >"$OUT/decode_bench.log" 2>&1
echo "bench rc=$?"
[ "${TORCH:-1}" = 1 ] && timeout 150 python3 bench/torch_decode.py --json "$OUT/torch_decode.json" ${TORCH_ARGS:-} >"$OUT/torch_decode.log" 2>&1
echo "torch rc=$?"
[ -x "$B/nvfp4kv" ] && timeout 90 "$B/nvfp4kv" demo --rows 64 --cols 256 --json "$OUT/demo.json" >"$OUT/demo.log" 2>&1; echo "demo rc=$?"
if [ "${DECODE_SANITIZER:-1}" = 1 ]; then
  for tool in memcheck racecheck; do
    timeout 120 compute-sanitizer --tool $tool --error-exitcode 9 "$T" --gtest_filter='*Decode*Small*' >"$OUT/san_$tool.log" 2>&1
    echo "sanitizer $tool rc=$? $(grep -Eo 'ERROR SUMMARY: [0-9]+ error|RACECHECK SUMMARY.*' "$OUT/san_$tool.log" | tail -1) $(grep -Eo '\[  PASSED  \] [0-9]+ test' "$OUT/san_$tool.log")"
  done
fi
echo "== summary"
cat "$OUT/sass_summary.txt" 2>/dev/null
rm -f "$OUT/cfg.log"
grep -E "check |copy" "$OUT/decode_bench.log" | head -8
sed -n '/decode attention, 32/,$p' "$OUT/decode_bench.log" | head -32
tail -16 "$OUT/torch_decode.log"
grep -A8 "kv format" "$OUT/demo.log" | head -10
