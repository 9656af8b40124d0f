#!/bin/bash
# Host-side (no GPU) build of the decode test and bench binaries for bench/decode_prebuilt_check.sh
# and bench/decode_profile.sh, so that a device call spends no time compiling. Needs a built
# libnvfp4kv.a copied to $B (e.g. from a cmake build dir); `lib` recompiles decode.cu into it.
# usage: bench/decode_host_build.sh lib|api|test|bench   (env: EXTRA nvcc flags, SUFFIX, APIOBJ)
cd "$(dirname "$0")/.."
B=${B:-build-attnperf}
mkdir -p $B/bin
NV=(nvcc -std=c++20 -O3 -gencode arch=compute_90a,code=sm_90a -Xcompiler=-ffp-contract=off --expt-relaxed-constexpr -lineinfo -Iinclude -Isrc -Itests -Ibench -DNVFP4KV_HAVE_CUDA=1)
case $1 in
  lib) "${NV[@]}" ${EXTRA:-} -Xptxas=-v,-warn-spills -c src/cuda/attention/decode.cu -o $B/decode.cu.o 2> $B/ptxas.log && cp $B/libnvfp4kv.a $B/lib.tmp.a && ar r $B/lib.tmp.a $B/decode.cu.o && mv $B/lib.tmp.a $B/libnvfp4kv.a ;;
  api) g++ -std=c++20 -O2 -ffp-contract=off -Iinclude -Isrc -DNVFP4KV_HAVE_CUDA=1 -I/usr/local/cuda/include -c src/api/attention.cpp -o $B/attention_api.o ;;
  test) "${NV[@]}" -c tests/cuda/test_decode.cu -o $B/test_decode.o && "${NV[@]}" $B/test_decode.o ${APIOBJ:-} $B/libnvfp4kv.a -o $B/bin/test_decode${SUFFIX:-} -lgtest_main -lgtest ;;
  bench) "${NV[@]}" -c bench/main.cu -o $B/bench_main.o && "${NV[@]}" -c bench/bench_decode.cu -o $B/bench_decode.o && "${NV[@]}" $B/bench_main.o $B/bench_decode.o ${APIOBJ:-} $B/libnvfp4kv.a -o $B/bin/decode_bench${SUFFIX:-} ;;
  *) echo "usage: $0 lib|api|test|bench"; exit 2 ;;
esac
