// nvfp4kv — decode attention over the paged KV cache on tensor cores (mma.sync m16n8k16,
// fp32 accumulators), split-KV (flash-decoding) with a merge kernel.
//
// Computes attention.h's function for q [batch, qo_len, num_qo_heads, head_dim] bf16/f16 over a
// bf16 / f16 / fp8_e4m3 / nvfp4 / fp4_block16 cache (NHD or HND, any strides).
//
// Mapping. Grid (num_splits, num_kv_heads / hpc × m_tiles, batch), 4 warps per CTA. A CTA owns
// one request b, hpc = 1, 2 or 4 consecutive kv heads (decode_heads_per_cta; warp w computes
// head w % hpc; the paired tile: hpc = 8, warp w heads 2w and 2w + 1), one tile of 16 query rows
// (row = t·group_size + g over the qo_len tokens t and the group's heads g; padded with zero
// rows) and one split of the request's visible KV range.
// The split is cut into chunks of 16·U tokens dealt round-robin to the warps of a head; each
// warp keeps its own running max / sum / O (FlashAttention-2 online softmax) and the warps are
// merged through shared memory at the end. With num_splits > 1 the CTA writes a normalised
// partial O and its log2-sum-exp to the workspace and merge_kernel combines the splits; with
// few splits and one warp per head (or head pair) the last warp of each to finish combines
// them instead (decode_fused_merge, fused_merge_rows: no merge launch).
// Dynamic rounds (kDyn, narrow tile; decode_dynamic_rounds): the grid is (head groups × row
// tiles, batch, splits), the split index slowest, and the CTAs of a request and head group do
// not take fixed slices but the request's ring rounds from a counter in the workspace (reset
// by the previous call's merge, in the merge kernel or in this kernel's last warp, so no memset
// node precedes the launch; a counter that
// was not reset falls back to fixed round-robin rounds), so faster CTAs take more and later
// CTAs join the requests still running.
//
// Loads. First the CTA copies its split's page-table entries to shared memory. bf16/f16 caches
// (and hd ≤ 128) are then read straight into registers, one chunk per warp iteration; every other
// cache goes through a CTA-wide cp.async ring of kStages rounds (a round = the next chunk of
// every warp), consecutive threads copying consecutive 16-byte pieces of one token's rows over
// the CTA's heads, one __syncthreads per round. The nvfp4 narrow tiles (4 heads per CTA, paired)
// with dynamic rounds on NHD-form views fill the same ring with TMA tensor copies instead (kTma,
// decode v22, v22b): one
// thread per round arms the slot's mbarrier and issues a K, V and two scale boxes per 16-token
// block (TmaStage layout, 128-byte swizzle); the warps wait on the mbarrier after the barrier.
//
// Narrow tile (kNarrow; nvfp4 and fp8 at hd128 with ≤ 8 query rows per kv head): the products
// are transposed — Sᵀ = K·Qᵀ and Oᵀ = Vᵀ·Pᵀ, the rows as the mma's n = 8 — see
// compute_chunk_narrow. Paired tile (kPair; nvfp4, ≤ 4 rows per kv head, decode_use_pair_tile):
// the narrow tile with two heads per warp in the two halves of n. The layout below is the wide
// tile's.
//
// Operand layout (no shared-memory round trip for dequantization): the k index of an mma is a free
// relabelling as long as both operands agree. In S = Q·Kᵀ (B = K, k = head dim, n = token) the
// lane with lane%4 == q reads dims q·D/4 … q·D/4 + D/4 − 1 of token lane/4 (16 contiguous bytes
// of nvfp4 at hd128, plus 2 scale bytes), dequantizes them into its B fragments (register e =
// dims 2e, 2e+1 of the run; k-step j uses e = 2j, 2j+1), and Q is stored in shared memory with
// the same permutation. For O = P·V (B = V, k = token, n = head dim) V is read exactly like K
// (the same lane ↔ token ↔ dims map), dequantized the same way, and each 8×8 block is
// transposed in registers with movmatrix.trans so that a lane holds two tokens of one dim: the
// B fragment. Then n-tile e, column 2q+c is dim q·D/4 + 2e + c, so each lane's O accumulators
// are one contiguous run of D/4 dims per row. P comes from S's accumulators (two n8 tiles = one
// k16 A fragment). Dequantization is exact (SPEC.md §5); k_scale·sm_scale scales the fp32
// logits and v_scale the output.
//
// Preconditions (checked by src/api/attention.cpp): byte strides and bases of the K/V data
// aligned to a lane's run (min(16, D/4·elem) bytes), scales to 4 bytes; q/out 16-byte aligned.
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "api/check.h"

#include "cuda/attention/decode_dequant.cuh"
#include "cuda/attention/decode_params.h"
#include "cuda/common/cp_async.cuh"
#include "cuda/common/l2_flush.h"
#include "cuda/common/pdl.cuh"
#include "cuda/common/tma.cuh"

namespace nvfp4kv::cuda {
namespace {

using namespace attn;

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr float kLog2e = 1.4426950408889634f;

// Division by the runtime page size with a multiply-high (Granlund–Montgomery, the
// "uint_fastdiv" of FlashInfer): tokens < 2^30, so t + n never overflows 32 bits.
struct FastDiv {
  uint32_t mul = 0, shift = 0, div = 1;
  __device__ __forceinline__ uint32_t quo(uint32_t n) const { return (__umulhi(n, mul) + n) >> shift; }
};

FastDiv make_fastdiv(uint32_t d) {
  FastDiv f;
  f.div = d;
  uint32_t l = 0;
  while ((uint64_t{1} << l) < d) ++l;
  f.shift = l;
  f.mul = static_cast<uint32_t>(((uint64_t{1} << 32) * ((uint64_t{1} << l) - d)) / d + 1);
  return f;
}

__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1,
                                         bool f16) {
  if (f16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

__device__ __forceinline__ uint32_t movmatrix_trans(uint32_t x) {
  uint32_t r;
  asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;" : "=r"(r) : "r"(x));
  return r;
}

template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  if constexpr (std::is_same_v<T, __half>) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
  } else {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
  }
}

template <typename T>
__device__ __forceinline__ float to_float(T x) {
  if constexpr (std::is_same_v<T, __half>) return __half2float(x);
  else return __bfloat162float(x);
}

template <typename T>
__device__ __forceinline__ T from_float(float x) {
  if constexpr (std::is_same_v<T, __half>) return __float2half_rn(x);
  else return __float2bfloat16_rn(x);
}

// Loads `W` words from a W·4-byte aligned address (vector loads, read-only path).
template <int W>
__device__ __forceinline__ void load_run(const uint8_t* p, uint32_t* dst) {
  if constexpr (W >= 4) {
#pragma unroll
    for (int i = 0; i < W / 4; ++i) {
      const uint4 v = __ldg(reinterpret_cast<const uint4*>(p) + i);
      dst[4 * i] = v.x, dst[4 * i + 1] = v.y, dst[4 * i + 2] = v.z, dst[4 * i + 3] = v.w;
    }
  } else if constexpr (W == 2) {
    const uint2 v = __ldg(reinterpret_cast<const uint2*>(p));
    dst[0] = v.x, dst[1] = v.y;
  } else {
    dst[0] = __ldg(reinterpret_cast<const uint32_t*>(p));
  }
}

template <int N>
__device__ __forceinline__ uint32_t load_scales(const uint8_t* p) {
  if constexpr (N == 4) return __ldg(reinterpret_cast<const uint32_t*>(p));
  else if constexpr (N == 2) return __ldg(reinterpret_cast<const uint16_t*>(p));
  else return __ldg(p);
}

// Address of (page, token offset) in a KV view: base + pg·page_stride + off·token_stride with
// 32-bit page ids, offsets and strides (src/api/attention.cpp checks |stride| < 2^31), written as
// two mad.wide.s32 = two IMAD.WIDE. The plain C++ form (int64 × int32) compiled to full 64 × 64
// products with sign-extension of every stride (~20 instructions per address, bench/NOTES.md v7).
__device__ __forceinline__ const uint8_t* at(const uint8_t* base, int pg, int off, int32_t page_stride,
                                             int32_t token_stride) {
  uint64_t a = reinterpret_cast<uint64_t>(base);
  asm("mad.wide.s32 %0, %1, %2, %0;" : "+l"(a) : "r"(pg), "r"(page_stride));
  asm("mad.wide.s32 %0, %1, %2, %0;" : "+l"(a) : "r"(off), "r"(token_stride));
  return reinterpret_cast<const uint8_t*>(a);
}
// Linear views (page_stride = lin_ratio · token_stride for every view, DecodeParams::lin_ratio):
// base + lin · token_stride with lin = pg · lin_ratio + off shared by all four views, one
// IMAD.WIDE per address instead of two plus the lin product once per token.
__device__ __forceinline__ const uint8_t* at_lin(const uint8_t* base, int lin, int32_t token_stride) {
  uint64_t a = reinterpret_cast<uint64_t>(base);
  asm("mad.wide.s32 %0, %1, %2, %0;" : "+l"(a) : "r"(lin), "r"(token_stride));
  return reinterpret_cast<const uint8_t*>(a);
}
__device__ __forceinline__ const uint8_t* at(const uint8_t* base, int pg, int off, const KvStrides& s) {
  return at(base, pg, off, static_cast<int32_t>(s.page), static_cast<int32_t>(s.token));
}

// 2^x with the MUFU alone: ex2.approx.ftz (exp2f adds a range test and two multiplies to keep
// subnormal results; a probability below 2^-126 next to a running max of 2^0 is 0 either way,
// and −inf still gives +0).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Experiment knob (never set in the library build): compute_chunk only reads the staged runs.
#ifndef NVFP4KV_DECODE_EXPERIMENT_LOADS_ONLY
#define NVFP4KV_DECODE_EXPERIMENT_LOADS_ONLY 0
#endif

// Experiment knob (timing only, wrong results): the FP4 scale rows are not copied.
#ifndef NVFP4KV_DECODE_EXPERIMENT_NO_SCALE_COPIES
#define NVFP4KV_DECODE_EXPERIMENT_NO_SCALE_COPIES 0
#endif
#ifndef NVFP4KV_DECODE_NVFP4_KU
#define NVFP4KV_DECODE_NVFP4_KU 2
#endif

// Ring stages of the nvfp4 hd128 kernel: 2 (bench/NOTES.md, decode v11: against 3, 1 × 32K
// −9 %, 16 × 1K −10 %, 16 × 8K −3 %, 128 × 32K within ±1 %; 4 lost 5-10 %); 0: chosen from the
// stage size like the other formats. An experiment knob.
#ifndef NVFP4KV_DECODE_NVFP4_STAGES
#define NVFP4KV_DECODE_NVFP4_STAGES 2
#endif
// The same for the fp8 hd128 narrow-tile kernel: 2 (decode v14, H100 A/B against 3, same call,
// both orders: 1 × 32K −2.1 %, 4 × 8K −2.2 %, 16 × 1K −3.2 %, 16 × 8K −0.4 %, 16 × 32K / 64 × 8K
// −0.2 / −0.3 %, 128 × 8K +0.1 %; v11 had measured 2 within ±1 % at batch ≥ 16 × 8K); 0: the
// stage-size rule (3). The wide tile keeps the rule. An experiment knob.
#ifndef NVFP4KV_DECODE_FP8_STAGES
#define NVFP4KV_DECODE_FP8_STAGES 2
#endif

template <typename T, int D, int FMT, bool kNarrowTile = false, bool kPairTile = false>
struct Config {
  // Narrow tile (≤ 8 query rows, nvfp4 at hd128): S^T = K·Q^T and O^T = V^T·P^T, see decode_kernel.
  static constexpr bool kNarrow = kNarrowTile;
  // Paired narrow tile (nvfp4 at hd128, ≤ 4 query rows per kv head): each warp computes two kv
  // heads, their rows as columns 0-3 and 4-7 of the mma's n = 8, so a CTA of 4 warps covers 8
  // heads — whole NHD token rows per ring round (see compute_chunk_narrow).
  static constexpr bool kPair = kPairTile;
  static_assert(!kPair || (kNarrowTile && FMT == kFmtNvfp4 && D == 128), "the paired tile is nvfp4 hd128 narrow");
  static constexpr int kHeadsPerWarp = kPair ? 2 : 1;
  static constexpr int kUnits = kWarps * kHeadsPerWarp;         // ring units per stage (see below)
  static constexpr int kWords = D * kBitsPerElem<FMT> / 128;  // raw words per lane per token
  // 16-token subtiles per chunk: at least 16 bytes per lane per token and chunk; nvfp4 at hd128
  // takes 32-token chunks (NVFP4KV_DECODE_NVFP4_KU), which amortise the per-chunk softmax
  // reductions, waits and Q fragment loads (bench/NOTES.md, v6: 64 × 32K 1246 → 1155 µs). The
  // paired tile takes 16-token chunks of two heads (the same bytes and softmax work per chunk).
  static constexpr int kU = kPair ? 1
                            : kExpTrick<FMT> && kWords == 4 ? NVFP4KV_DECODE_NVFP4_KU
                                                            : (kWords >= 4 ? 1 : 4 / kWords);
  static constexpr bool kFp4 = FMT == kFmtNvfp4 || FMT == kFmtFp4Block16;
  static constexpr bool kDirect = kBitsPerElem<FMT> == 16 && D <= 128;  // 16-bit caches: no smem ring
  static constexpr int kScaleBytes = kFp4 ? D / 64 : 0;        // per lane per token
  static constexpr int kKSteps = D / 16;
  static constexpr int kPairs = D / 8;                          // dequantized regs per token
  static constexpr int kChunk = 16 * kU;
  // Ring (compressed caches and hd256): one CTA-wide stage per round = kUnits units, unit w =
  // the chunk warp w computes next (kChunk tokens of one kv head; paired tile: units 2w, 2w + 1
  // are warp w's two heads), stored as the cache rows:
  // K data [unit][token][kRow], V data likewise, then K and V scales [unit][token][kScaleRow].
  // The whole CTA fills a stage with cp.async: consecutive threads copy consecutive bytes of a
  // token's row run over the CTA's heads (NHD: one contiguous run of heads_per_cta · kRow bytes),
  // so requests are whole lines even though one head's row is only 64 bytes (nvfp4, hd128).
  static constexpr int kRow = kWords * 4 * 4;                   // data bytes per token and head
  static constexpr int kScaleRow = kFp4 ? D / 16 : 0;           // scale bytes per token and head
  static constexpr int kCp = kRow >= 64 ? 16 : 8;               // cp.async width of data (alignment)
  static constexpr int kUnitBytes = kChunk * (2 * kRow + 2 * kScaleRow);
  static constexpr int kStageBytes = kUnits * kUnitBytes;
  static constexpr int kScaleOffset = kUnits * kChunk * 2 * kRow;  // scales after K and V data
  // Stages: keep ~8-12 KB per warp in flight (bytes × latency for HBM) without starving
  // occupancy for the wide formats.
  static constexpr int kStages = kExpTrick<FMT> && kWords == 4 && NVFP4KV_DECODE_NVFP4_STAGES > 0
                                     ? NVFP4KV_DECODE_NVFP4_STAGES
                                 : FMT == kFmtFP8 && D == 128 && kNarrowTile && NVFP4KV_DECODE_FP8_STAGES > 0
                                     ? NVFP4KV_DECODE_FP8_STAGES
                                     : (kUnitBytes <= 3072 ? 4 : (kUnitBytes <= 6144 ? 3 : 2));
  // Q fragments: one set per head of the CTA (ring path: up to kWarps heads per CTA).
  // (The narrow tile keeps its Q fragments in registers.)
  static constexpr int kSmemQ = kNarrow ? 0 : kKSteps * 32 * 16 * (kDirect ? 1 : kWarps);
  static constexpr int kSmemRing = kDirect ? 0 : kStages * kStageBytes;
  static constexpr int kOStride = D + 4;                        // padded fp32 row of the merge
  static constexpr int kSmemMerge = kWarps * 16 * kOStride * 4 + 3 * kWarps * 16 * 4;  // O, m, l, weights
  static constexpr int kSmemMain = kSmemRing > kSmemMerge ? kSmemRing : kSmemMerge;
  // Dynamic shared memory: Q fragments, the split's page ids (runtime count), ring | merge.
  static int smem_bytes(int split_pages) { return kSmemQ + ((split_pages * 4 + 15) / 16) * 16 + kSmemMain; }
};

// Reads back this lane's raw run of (u, slot, k|v) — token 16u + 8s + lane/4 of ring unit
// `unit`, quarter lane%4 of the row — from a completed stage of configuration C.
template <typename C>
__device__ __forceinline__ void read_run(const uint8_t* stage, int unit, int u, int s, int kv, uint32_t* dst,
                                         uint32_t* scale) {
  const int lane = threadIdx.x & 31;
  constexpr int kRunBytes = C::kWords * 4;
  const int row = unit * C::kChunk + 16 * u + 8 * s + (lane >> 2);
  const uint8_t* src = stage + (kv * C::kUnits * C::kChunk + row) * C::kRow + (lane & 3) * kRunBytes;
  if constexpr (kRunBytes >= 16) {
#pragma unroll
    for (int i = 0; i < kRunBytes / 16; ++i) {
      const uint4 v = *reinterpret_cast<const uint4*>(src + 16 * i);
      dst[4 * i] = v.x, dst[4 * i + 1] = v.y, dst[4 * i + 2] = v.z, dst[4 * i + 3] = v.w;
    }
  } else {
    const uint2 v = *reinterpret_cast<const uint2*>(src);
    dst[0] = v.x, dst[1] = v.y;
  }
  if constexpr (C::kFp4) {
    const int sb = (lane & 3) * C::kScaleBytes;
    const uint32_t w = *reinterpret_cast<const uint32_t*>(stage + C::kScaleOffset +
                                                         (kv * C::kUnits * C::kChunk + row) * C::kScaleRow + (sb & ~3));
    *scale = w >> (8 * (sb & 3));
  } else {
    *scale = 0;
  }
}

// Narrow tile (hd128): byte offset of 16-byte piece `piece` of V row `row` in a ring stage's V
// area, rows of kRow bytes, XOR-swizzled so that the P·V reads — lane (g, q) takes dims
// 16g … 16g + 15 of rows 2q, 2q + 1 (and 2q + 8, 2q + 9) — are conflict-free; unswizzled, the
// rows 2q of a half-warp (64-byte rows) or quarter-warp (128-byte rows) share banks: 4-way
// conflicts on every load.
// nvfp4 (kRow 64, lane reads 8 bytes): rows are paired into 128-byte lines whose eight pieces are
// XOR-ed with 2·(line % 4); row 2i + 1's piece is row 2i's at offset ^ 64.
// fp8 (kRow 128, lane reads one 16-byte piece): a row's eight pieces are XOR-ed with
// 2·((row / 2) % 4), the same for rows 2i and 2i + 1.
template <int kRow>
__device__ __forceinline__ int narrow_v_offset(int row, int piece) {
  static_assert(kRow == 64 || kRow == 128, "narrow tile rows: nvfp4 or fp8 at hd128");
  if constexpr (kRow == 64) {
    const int line = row >> 1;
    return line * 128 + ((((row & 1) << 2) | piece) ^ ((line & 3) << 1)) * 16;
  } else {
    return row * 128 + (piece ^ (((row >> 1) & 3) << 1)) * 16;
  }
}

// Tensor maps of the TMA ring (decode v22), __grid_constant__ kernel parameters: K and V data as
// bytes [pages][tokens of a page][head pairs][128] (the pair = two heads' 64-byte rows, which
// NHD keeps adjacent), boxes of 16 tokens × the CTA's pairs (paired tile: × one pair); the scale pools as bytes [pages]
// [tokens][heads × 8], boxes of 16 tokens × the CTA's heads. Unused (zero) on the other paths.
struct DecodeTmaMaps {
  CUtensorMap kd, vd, ks, vs;
};

// Stage layout of the TMA ring (4-head nvfp4 narrow tile, kChunk = 32 = kBlocks blocks of 16
// tokens, each inside one page): K data [block][token 16][pair][128 B], V data likewise, then K
// scales [block][token 16][head][8 B], V scales likewise — one tensor copy per block and view.
// The data boxes land with the 128-byte swizzle: 16-byte chunk c of 128-byte line L is stored
// at chunk c ^ (L % 8), line L = token · kPairs + pair, so that the K reads (8 tokens × 64
// bytes of one head) and the V reads (rows 2q of a head) spread over all banks.
// The paired tile (8 heads, one 16-token block per round) takes one box per head pair instead,
// [pair][token 16][128 B]: with all four pairs in a line's place, lines 2q of one pair would share
// a bank half under the swizzle (a 2-way conflict on the V reads); here line L = 16·pair + token,
// and the swizzle spreads the 8 tokens of a read.
template <typename C>
struct TmaStage {
  static constexpr bool kBoxPerPair = C::kPair;
  static constexpr int kPairs = C::kUnits / 2;
  static constexpr int kBlocks = C::kChunk / 16;
  static constexpr int kBlockData = 16 * kPairs * 128;          // one view's data box
  static constexpr int kBlockScale = 16 * C::kUnits * C::kScaleRow;  // one view's scale box
  static constexpr int kV = kBlocks * kBlockData;               // V data after K data
  static constexpr int kScales = 2 * kBlocks * kBlockData;      // K scales, then V scales
  static constexpr int kVScales = kScales + kBlocks * kBlockScale;
  static constexpr int kBlockBytes = 2 * (kBlockData + kBlockScale);  // expect_tx per block
  // Byte offset of 16-byte chunk `chunk` (0-3) of head `unit`'s 64-byte row of token r of a block.
  static __device__ __forceinline__ int data_offset(int r, int unit, int chunk) {
    const int line = kBoxPerPair ? (unit >> 1) * 16 + r : r * kPairs + (unit >> 1);
    return line * 128 + ((((unit & 1) << 2) | chunk) ^ (line & 7)) * 16;
  }
  static __device__ __forceinline__ int scale_offset(int r, int unit) { return (r * C::kUnits + unit) * C::kScaleRow; }
};

// read_run for the TMA stage layout (TmaStage): this lane's 16-byte run (chunk lane % 4 of the
// head's row) of token 16u + 8s + lane/4 of ring unit `unit`, and its two scale bytes.
template <typename C>
__device__ __forceinline__ void read_run_tma(const uint8_t* stage, int unit, int u, int s, int kv, uint32_t* dst,
                                             uint32_t* scale) {
  using TS = TmaStage<C>;
  static_assert(C::kWords == 4 && C::kScaleBytes == 2, "nvfp4 at hd128");
  const int lane = threadIdx.x & 31;
  const int r = 8 * s + (lane >> 2);
  const uint4 v = *reinterpret_cast<const uint4*>(stage + kv * TS::kV + u * TS::kBlockData +
                                                  TS::data_offset(r, unit, lane & 3));
  dst[0] = v.x, dst[1] = v.y, dst[2] = v.z, dst[3] = v.w;
  const int sb = (lane & 3) * C::kScaleBytes;
  const uint32_t w = *reinterpret_cast<const uint32_t*>(stage + (kv ? TS::kVScales : TS::kScales) + u * TS::kBlockScale +
                                                       TS::scale_offset(r, unit) + (sb & ~3));
  *scale = w >> (8 * (sb & 3));
}

// nvfp4 at hd ≤ 128: capped at 168 registers = 3 CTAs per SM (without the cap ptxas takes 187
// and only 2 fit); 4 CTAs (128 registers) spills and ran slower (bench/NOTES.md, v5).
#ifndef NVFP4KV_DECODE_NVFP4_MIN_CTAS
#define NVFP4KV_DECODE_NVFP4_MIN_CTAS 3
#endif
// The narrow tile likewise (fp8 took 174 registers without the cap, 2 CTAs/SM).
template <int D, int FMT, bool kNarrow>
inline constexpr int kMinCtas = ((kExpTrick<FMT> && D <= 128) || kNarrow) ? NVFP4KV_DECODE_NVFP4_MIN_CTAS : 1;

// Timeline experiment (bench/NOTES.md, decode v10): built with -DNVFP4KV_DECODE_TRACE, thread 0
// of each CTA stamps %globaltimer at entry, after pdl_wait, at the start of the KV loop, after
// it and at exit (merge CTAs: entry, after pdl_wait, exit); decode_trace_report() prints the spread.
#ifdef NVFP4KV_DECODE_TRACE
constexpr int kTraceMax = 16384;
__device__ unsigned long long g_trace[kTraceMax][13];
__device__ unsigned int g_trace_sm[kTraceMax];
__device__ unsigned long long g_trace_merge[kTraceMax][3];
__device__ int g_trace_rounds[kTraceMax];  // ring rounds the CTA computed
__device__ __forceinline__ unsigned long long trace_now() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
__device__ __forceinline__ int trace_cta() {
  return static_cast<int>((blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x);
}
#define DECODE_TRACE(i)                                                            \
  do {                                                                             \
    if (threadIdx.x == 0 && trace_cta() < kTraceMax) {                             \
      g_trace[trace_cta()][i] = trace_now();                                       \
      if (i == 0) {                                                                \
        unsigned int sm;                                                           \
        asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));                           \
        g_trace_sm[trace_cta()] = sm;                                              \
      }                                                                            \
    }                                                                              \
  } while (0)
#define MERGE_TRACE(i) \
  do { if (threadIdx.x == 0 && trace_cta() < kTraceMax) g_trace_merge[trace_cta()][i] = trace_now(); } while (0)
#else
#define DECODE_TRACE(i) do {} while (0)
#define MERGE_TRACE(i) do {} while (0)
#endif

// Merge in the decode kernel (p.done_counters; decode_fused_merge). Counts the calling warp in
// at its unit's arrival counter {count, tag} and returns its place, 0 … num_splits − 1; called
// by one lane after a __syncwarp, so that the atomic's release (cumulative over what the warp's
// barrier ordered before it) publishes the whole warp's partial rows and its acquire orders the
// last warp's reads of the others' rows (after the place is shuffled to the warp): one lane's
// MEMBAR.ALL.GPU, where __threadfence in every lane is a MEMBAR.SC.GPU per lane. A counter
// without kDecodeTicketTag (a fresh or reused workspace: no earlier call reset it) is
// taken over with a compare-and-swap: the first warp to succeed installs {1, tag}, and every
// warp whose add found no tag counts itself in by CAS, so each warp counts exactly once either
// way. (A 64-bit add of 1 to stale bytes can carry into the tag word only from a low word of
// all ones under a high word of kDecodeTicketTag − 1.)
__device__ __forceinline__ unsigned long long atomic_add_acq_rel(unsigned long long* a, unsigned long long v) {
  unsigned long long old;
  asm volatile("atom.acq_rel.gpu.global.add.u64 %0, [%1], %2;" : "=l"(old) : "l"(a), "l"(v) : "memory");
  return old;
}
__device__ __forceinline__ unsigned long long atomic_cas_acq_rel(unsigned long long* a, unsigned long long cmp,
                                                                 unsigned long long v) {
  unsigned long long old;
  asm volatile("atom.acq_rel.gpu.global.cas.b64 %0, [%1], %2, %3;" : "=l"(old) : "l"(a), "l"(cmp), "l"(v) : "memory");
  return old;
}
__device__ __forceinline__ int fused_arrive(unsigned long long* ctr) {
  constexpr unsigned long long kTagged = static_cast<unsigned long long>(kDecodeTicketTag) << 32;
  const unsigned long long old = atomic_add_acq_rel(ctr, 1ull);
  if (static_cast<uint32_t>(old >> 32) == kDecodeTicketTag) return static_cast<int>(static_cast<uint32_t>(old));
  unsigned long long cur = old + 1;
  for (;;) {
    const unsigned long long want = static_cast<uint32_t>(cur >> 32) == kDecodeTicketTag ? cur + 1 : kTagged | 1ull;
    const unsigned long long prev = atomic_cas_acq_rel(ctr, cur, want);
    if (prev == cur) return static_cast<int>(static_cast<uint32_t>(want)) - 1;
    cur = prev;
  }
}

// The last warp of a unit (decode_fused_merge) combines the unit's rows over the splits, as
// merge_kernel does: lse = log2 Σ 2^lse_s, out = Σ 2^(lse_s − max) · O_s / Σ 2^(lse_s − max) ·
// v_scale. `n_rows` ≤ kRows unit rows: row u is query row u % rows_per_head of kv head h +
// u / rows_per_head. Lane l takes float4 column l of every row (D = 128: one per lane) and the
// LSE of split l. The loads go out in batches of kSplits splits × kRows rows (24 or 16 float4
// per lane: decode_fused_merge_batch), with no branch between them (rows past n_rows and
// splits past n_splits read row n_rows − 1 and split n_splits − 1 again, with weight 0), so
// that a batch costs one L2 round trip; the first batch is requested with the LSEs, before the
// weights are known. (A first
// version with a `break` at n_rows between the loads waited one round trip per row and split:
// +10 µs at 16 × 8K and 16 × 1K, 12 splits; bench/NOTES.md, decode v19.) Not inlined: inlined,
// it changed the register allocation of the KV loop above its call (+170 SASS instructions in
// the nvfp4 loop, 161 → 166 registers).
template <typename T, int D, int kRows>
__device__ __noinline__ void fused_merge_rows(const DecodeParams& p, int b, int h, int rows_per_head, int n_rows,
                                              float v_scale, int lane) {
  static_assert(D == 128, "one float4 column per lane");
  constexpr int kSplits = decode_fused_merge_batch(kRows);
  const int n = p.num_splits;
  const int G = p.group_size;
  // Output row (t, hq) of unit row u.
  auto out_row = [&](int u, int* t, int* hq) {
    const int hh = h + u / rows_per_head, r = u % rows_per_head;
    *t = r / G;
    *hq = hh * G + r % G;
  };
  // Float4 column `lane` of split 0 of row u: col0 + cofs[u] (partial rows < 2^31 float4s:
  // launch_kernel).
  const float4* const col0 = reinterpret_cast<const float4*>(p.partial_out) + lane;
  uint32_t cofs[kRows];
  float lse[kRows];
#pragma unroll
  for (int u = 0; u < kRows; ++u) {
    int t, hq;
    out_row(min(u, n_rows - 1), &t, &hq);
    const uint32_t prow = static_cast<uint32_t>(((b * p.qo_len + t) * p.num_qo_heads + hq) * n);
    lse[u] = __ldcg(p.partial_lse + prow + min(lane, n - 1));
    cofs[u] = prow * (D / 4);
  }
  float4 v[kSplits][kRows];
  auto load_batch = [&](int s0) {
#pragma unroll
    for (int j = 0; j < kSplits; ++j)
#pragma unroll
      for (int u = 0; u < kRows; ++u) v[j][u] = __ldcg(col0 + cofs[u] + min(s0 + j, n - 1) * (D / 4));
  };
  load_batch(0);
  float w[kRows], l[kRows], m[kRows];
  float4 acc[kRows];
#pragma unroll
  for (int u = 0; u < kRows; ++u) {
    const float x = lane < n ? lse[u] : -INFINITY;
    float mx = x;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xFFFFFFFFu, mx, o));
    const float m_use = mx == -INFINITY ? 0.f : mx;
    w[u] = lane < n ? exp2f(x - m_use) : 0.f;
    float sum = w[u];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xFFFFFFFFu, sum, o);
    l[u] = sum;
    m[u] = mx;
    acc[u] = make_float4(0.f, 0.f, 0.f, 0.f);
  }
  for (int s0 = 0;;) {
#pragma unroll
    for (int j = 0; j < kSplits; ++j)
#pragma unroll
      for (int u = 0; u < kRows; ++u) {
        const float ws = __shfl_sync(0xFFFFFFFFu, w[u], (s0 + j) & 31);
        const float wj = s0 + j < n ? ws : 0.f;
        acc[u].x += wj * v[j][u].x, acc[u].y += wj * v[j][u].y, acc[u].z += wj * v[j][u].z, acc[u].w += wj * v[j][u].w;
      }
    s0 += kSplits;
    if (s0 >= n) break;
    load_batch(s0);
  }
#pragma unroll
  for (int u = 0; u < kRows; ++u) {
    if (u >= n_rows) break;
    int t, hq;
    out_row(u, &t, &hq);
    const float f = l[u] > 0.f ? v_scale / l[u] : 0.f;
    T* dst = static_cast<T*>(p.out) + b * p.out_stride[0] + t * p.out_stride[1] + hq * p.out_stride[2] + 4 * lane;
    *reinterpret_cast<uint2*>(dst) = make_uint2(pack2<T>(acc[u].x * f, acc[u].y * f), pack2<T>(acc[u].z * f, acc[u].w * f));
    if (lane == 0 && p.lse)
      p.lse[b * p.lse_stride[0] + t * p.lse_stride[1] + hq * p.lse_stride[2]] =
          l[u] > 0.f ? (m[u] + log2f(l[u])) / kLog2e : -INFINITY;
  }
}

// kDyn: dynamic rounds (p.round_tickets), instantiated for the narrow tile only: a runtime
// switch in one kernel cost ~20 registers and 5-12 % at every shape (bench/NOTES.md, v10).
// kTma: the ring filled by tensor copies (decode v22; decode_tma_maps, TmaStage).
template <typename T, int D, int FMT, bool kNarrow = false, bool kDyn = false, bool kPair = false, bool kTma = false>
__global__ void __launch_bounds__(kThreads, kMinCtas<D, FMT, kNarrow>) decode_kernel(const __grid_constant__ DecodeParams p,
                                                          const FastDiv pdiv, const int split_pages,
                                                          const __grid_constant__ DecodeTmaMaps tm) {
  using C = Config<T, D, FMT, kNarrow, kPair>;
  using TS = TmaStage<C>;
  static_assert(!kTma || (kNarrow && kDyn && FMT == kFmtNvfp4 && D == 128),
                "the TMA ring is written for the nvfp4 narrow tiles with dynamic rounds");
  static_assert(!kNarrow || ((FMT == kFmtNvfp4 || FMT == kFmtFP8) && D == 128),
                "the narrow tile is written for nvfp4 and fp8 at hd128");
  constexpr bool kF16 = std::is_same_v<T, __half>;
  extern __shared__ __align__(16) uint8_t smem[];
  uint4* q_frag_all = reinterpret_cast<uint4*>(smem);  // [heads of the CTA][kKSteps][32]
  int32_t* split_page_ids = reinterpret_cast<int32_t*>(smem + C::kSmemQ);  // [split_pages]
  uint8_t* main_area = smem + C::kSmemQ + ((split_pages * 4 + 15) / 16) * 16;
  // TMA ring: the stages (and the merge area that overlaps them) start 1024-byte aligned, as the
  // 128-byte swizzle of the tensor copies needs; the stages' mbarriers sit just below.
  if constexpr (kTma) {
    const uint32_t a = smem_addr(main_area);
    main_area += ((a + 32 + 1023) & ~1023u) - a;
  }
  [[maybe_unused]] const uint32_t full_bar = smem_addr(main_area) - 8 * C::kStages;  // TMA ring: [kStages] mbarriers
  float* merge_o = reinterpret_cast<float*>(main_area);  // [kWarps][16][kOStride]
  float* merge_m = merge_o + kWarps * 16 * C::kOStride;          // [kWarps][16]
  float* merge_l = merge_m + kWarps * 16;                        // [kWarps][16]

  // The CTA's heads: hpc consecutive kv heads (ring path; 1 on the direct path). Warp w computes
  // head hg·hpc + w % hpc and, of the split's chunks, those ≡ w / hpc (mod kWarps / hpc). Paired
  // tile: hpc = 8, warp w computes heads 2w and 2w + 1 of every chunk.
  const int hpc = C::kDirect ? 1 : (kPair ? 2 * kWarps : p.heads_per_cta);
  const int n_hg = p.num_kv_heads / hpc;
  // Grid (splits, head groups × row tiles, batch); dynamic rounds launch (head groups × row
  // tiles, batch, splits): the split index slowest, so that the CTAs of splits ≥
  // p.dyn_first_splits start as earlier ones finish and join the requests still running.
  const int row_y = kDyn ? blockIdx.x : blockIdx.y;
  const int n_row_y = kDyn ? gridDim.x : gridDim.y;
  const int split = kDyn ? blockIdx.z : blockIdx.x;
  const int hg = row_y % n_hg;
  const int m_tile = row_y / n_hg;
  const int b = kDyn ? blockIdx.y : blockIdx.z;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int wh = kPair ? 2 * warp : warp % hpc, tw = kPair ? 0 : warp / hpc, tpw = kPair ? 1 : kWarps / hpc;
  const int h = hg * hpc + wh;
  const uint4* q_frag = q_frag_all + wh * C::kKSteps * 32;
  const int G = p.group_size;
  const int rows = G * p.qo_len;
  const int row0 = m_tile * (kNarrow ? 8 : 16);

  DECODE_TRACE(0);
  // PDL (src/cuda/common/pdl.cuh): the previous kernel's writes are visible after this.
  pdl_wait();
  DECODE_TRACE(1);
  // Dynamic rounds. First-wave CTA s (of S = p.dyn_first_splits) takes rounds s·kTk … s·kTk +
  // kTk − 1 (kTk = kStages + 1) without an atomic, and every later round from the request's
  // counter: ticket S·kTk + count. (v13: the first tickets came from an atomic here, compiled as
  // a warp-aggregated atomic whose shuffle waited for it at once, so warp 0 issued its seq_lens
  // and page-table loads ~1 µs late and the prologue's barrier waited for it.) Round counters:
  // two 32-bit words {count, tag}; the tag is kDecodeTicketTag where the previous call's merge
  // (kernel, or fused: decode_fused_merge) reset the counter to {0, tag} (no memset node before
  // the launch: v13). Any other tag (a fresh or reused workspace; the same for every CTA of the
  // request, since no CTA changes it before all of them have read it) means the count is not
  // known to start at 0: then the first-wave CTAs take fixed round-robin rounds (split s:
  // rounds s, s + S, s + 2S, …) and no late CTA joins. The tag is only written by the merge
  // kernel, after this grid, or by the fused merge's last warp, after every CTA of the group
  // has counted in: a plain load, by every thread (no divergent region whose end would wait for
  // it), read where rr_fixed is first used.
  uint32_t* const tick_ctr = kDyn ? reinterpret_cast<uint32_t*>(p.round_tickets + 2 * (static_cast<int64_t>(b) * n_row_y + row_y)) : nullptr;
  [[maybe_unused]] const bool late = kDyn && split >= p.dyn_first_splits;
  [[maybe_unused]] constexpr int kTk = C::kStages + 1;
  [[maybe_unused]] const int dyn_base = p.dyn_first_splits * kTk;  // ticket of count 0
  const uint32_t tag = kDyn ? reinterpret_cast<volatile uint32_t*>(tick_ctr)[1] : 0u;
  [[maybe_unused]] const bool rr_fixed = kDyn && tag != kDecodeTicketTag;
  int first_ticket = kDyn ? split * kTk : 0;
  const int max_kv = p.max_pages * p.page_size;
  const int32_t* table = p.block_tables + b * p.block_table_stride;
  // The prologue's loads go out before anything waits for one (v14): the request's length, its
  // query run and a guess of the split's page-table entries. Consumed in this order, the
  // length's latency came first and the query loads were issued only after it (two global
  // latencies before the first KV load; the trace put the loop start 2.3 µs after entry).
  const int seq_len_raw = __ldg(p.seq_lens + b * p.seq_len_stride);
  // Narrow tile: the lane's query run (D/4 dims = D/32 16-byte words; q's base and strides are
  // multiples of 16 bytes, src/api/attention.cpp) as raw words, packed into the mma's B fragments
  // only after round 0's copies are issued (pack_q), so its latency overlaps theirs.
  uint4 q_raw[kNarrow ? D / 32 : 1];
  if constexpr (kNarrow) {
    // Paired tile: column n = lane / 4 is row n % 4 of head h + n / 4.
    const int row = kPair ? (lane >> 2) & 3 : row0 + (lane >> 2);
    if (row < rows) {
      const int t = row / G, g = row % G;
      const int hq = (kPair ? h + (lane >> 4) : h) * G + g;
      const uint4* src = reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(p.q) + b * p.q_stride[0] +
                                                        t * p.q_stride[1] + hq * p.q_stride[2] +
                                                        (lane & 3) * (D / 4));
#pragma unroll
      for (int i = 0; i < D / 32; ++i) q_raw[i] = __ldg(src + i);
    } else {
#pragma unroll
      for (int i = 0; i < D / 32; ++i) q_raw[i] = make_uint4(0u, 0u, 0u, 0u);
    }
  }
  // This CTA's token range [s_begin, s_end) and page-table entries [first, first + count) for a
  // request of kvl tokens. Dynamic rounds: the CTAs of a request and head group share its whole
  // visible range (the first query, t = 0, starts the window) and take its ring rounds from a
  // counter, so that CTAs that run faster take more (bench/NOTES.md, decode v10); otherwise
  // split `split` is a fixed slice.
  auto split_range = [&](int kvl, int* sb, int* se, int* first, int* count) {
    const int bg = p.window_left >= 0 ? max(0, kvl - p.qo_len - p.window_left) : 0;
    const int ln = max(kvl - bg, 0);
    const int ps = kDyn ? ln : ((ln + p.num_splits - 1) / p.num_splits + 15) & ~15;
    *sb = kDyn ? bg : bg + split * ps;
    *se = min(kvl, *sb + ps);
    *first = *se > *sb ? static_cast<int>(pdiv.quo(static_cast<uint32_t>(*sb))) : 0;
    *count = *se > *sb ? min(static_cast<int>(pdiv.quo(static_cast<uint32_t>(*se - 1))) - *first + 1, split_pages) : 0;
  };
  // The guess: the request fills its page table (kv_len = max_pages · page_size, as a batch's
  // longest request does). Its entries are copied now by cp.async (no register round trip, no
  // wait until the barrier below); where the real range turns out different, they are loaded
  // again below. Thread i copies entries i, i + kThreads, … both times, so its own cp.async
  // wait orders the two writes of an entry.
  int g_first, g_count;
  {
    int gb, ge;
    split_range(max_kv, &gb, &ge, &g_first, &g_count);
  }
  for (int i = threadIdx.x; i < g_count; i += kThreads) cp_async4(smem_addr(split_page_ids + i), table + g_first + i, true);
  cp_async_commit();
  const int kv_len = min(max(seq_len_raw, 0), max_kv);
  int s_begin, s_end, first_page, n_split_pages;
  split_range(kv_len, &s_begin, &s_end, &first_page, &n_split_pages);
  static_assert(!kDyn || (kNarrow && !C::kDirect), "dynamic rounds: narrow tile (ring path) only");
  if constexpr (kDyn) {
    // A late CTA joins only while its request has ≥ kJoinRounds rounds left per first-wave CTA
    // (otherwise its own start, ~10 µs to the first data, would outlast the rounds it takes).
    constexpr int kJoinRounds = 4;
    if (threadIdx.x == 0 && late) {
      const int round_tokens = tpw * C::kChunk;
      const int n_r = (s_end - s_begin + round_tokens - 1) / round_tokens;  // dynamic: the whole visible range
      const int taken = dyn_base + static_cast<int>(reinterpret_cast<volatile uint32_t*>(tick_ctr)[0]);
      first_ticket = !rr_fixed && n_r - taken >= kJoinRounds * p.dyn_first_splits
                         ? dyn_base + static_cast<int>(atomicAdd(tick_ctr, static_cast<uint32_t>(kTk)))
                         : INT_MAX / 2;
    }
  }

  // Narrow tile: this lane's B fragments of Qᵀ (k = head dim, n = query row g = lane / 4) in
  // registers, permuted like K: register e = dims run_pos(e, 0..1) of run lane % 4; k-step j
  // uses b0 = e 2j, b1 = e 2j + 1 (the K A fragment pairs the same registers of tokens g, g + 8).
  uint32_t q_reg[kNarrow ? C::kPairs : 1];
  [[maybe_unused]] int ep_t[2] = {0, 0}, ep_hq[2] = {0, 0};  // narrow tile: see pack_q's call
  [[maybe_unused]] auto pack_q = [&]() {
    auto dim = [&](int i) {  // dim i of the run, as the low 16 bits
      const uint4& w4 = q_raw[i / 8];
      const uint32_t w = (i / 2) % 4 == 0 ? w4.x : (i / 2) % 4 == 1 ? w4.y : (i / 2) % 4 == 2 ? w4.z : w4.w;
      return i % 2 ? w >> 16 : w & 0xFFFFu;
    };
#pragma unroll
    for (int e = 0; e < C::kPairs; ++e) q_reg[e] = dim(run_pos<FMT>(e, 0)) | (dim(run_pos<FMT>(e, 1)) << 16);
  };
  // Q fragments in shared memory, permuted like K (see the file comment).
  // k-step j: a0/a1 (rows r, r + 8) pair with B register e = 2j, a2/a3 with e = 2j + 1; half c
  // of register e is dim run_pos(e, c) of the lane's run.
  for (int i = threadIdx.x; !kNarrow && i < hpc * C::kKSteps * 32; i += kThreads) {
    const int hh = i / (C::kKSteps * 32);
    const int j = (i / 32) % C::kKSteps, l = i % 32;
    const int r = l >> 2, qq = l & 3;
    const int run0 = qq * (D / 4);
    uint32_t f[4] = {0, 0, 0, 0};
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int row = row0 + r + 8 * half;
      if (row < rows) {
        const int t = row / G, g = row % G;
        const uint16_t* src = static_cast<const uint16_t*>(p.q) + b * p.q_stride[0] + t * p.q_stride[1] +
                              ((hg * hpc + hh) * G + g) * p.q_stride[2] + run0;
#pragma unroll
        for (int ee = 0; ee < 2; ++ee) {
          const int e = 2 * j + ee;
          f[2 * ee + half] = static_cast<uint32_t>(src[run_pos<FMT>(e, 0)]) |
                             (static_cast<uint32_t>(src[run_pos<FMT>(e, 1)]) << 16);
        }
      }
    }
    q_frag_all[i] = make_uint4(f[0], f[1], f[2], f[3]);
  }
  // The split's page-table entries: the guess above, or (another range) loaded now.
  cp_async_wait<0>();
  if (first_page != g_first || n_split_pages > g_count)
    for (int i = threadIdx.x; i < n_split_pages; i += kThreads) split_page_ids[i] = __ldg(table + first_page + i);
  // Dynamic rounds: the first kTk tickets (see the KV loop), published by the barrier below.
  __shared__ int tickets_s[kDyn ? kTk : 1];
  if constexpr (kDyn) {
    if (threadIdx.x == 0) {
#pragma unroll
      for (int i = 0; i < kTk; ++i) tickets_s[i] = rr_fixed && !late ? split + i * p.dyn_first_splits : first_ticket + i;
    }
  }
  if constexpr (kTma) {
    static_assert(C::kStages <= 4, "the mbarriers take the 32 bytes below the ring");
    if (threadIdx.x == 0) {
#pragma unroll
      for (int i = 0; i < C::kStages; ++i) mbar_init(full_bar + 8 * i, 1);
      mbar_fence_init();
      tma_prefetch_map(&tm.kd);
      tma_prefetch_map(&tm.vd);
      tma_prefetch_map(&tm.ks);
      tma_prefetch_map(&tm.vs);
    }
  }
  __syncthreads();
  DECODE_TRACE(2);

  // The nvfp4 path's K and V carry a factor 2^-kExpShift (decode_dequant.cuh): undone here in
  // the logit scale and, for V, on the normalised output (both exact powers of two).
  constexpr float kUnshift = kExpTrick<FMT> ? static_cast<float>(1ull << kExpShift<T>) : 1.0f;
  const float k_scale = p.k_scale ? __ldg(p.k_scale) : 1.0f;
  const float v_scale = p.v_scale ? __ldg(p.v_scale) : 1.0f;
  const float logit_scale = p.sm_scale * k_scale * kUnshift;

  // Causal / window limits of this lane's two rows: r and r + 8 (wide tile), 2·(lane % 4) and
  // 2·(lane % 4) + 1 (narrow tile: the n index of Sᵀ's accumulators).
  int pos_hi[2], pos_lo[2];
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    // (Paired tile: column n is row n % 4 of the warp's head n / 4.)
    const int row = kPair ? (2 * (lane & 3) + half) & 3 : kNarrow ? row0 + 2 * (lane & 3) + half : row0 + (lane >> 2) + 8 * half;
    if (row < rows) {
      const int pos = kv_len - p.qo_len + row / G;
      pos_hi[half] = pos;
      pos_lo[half] = p.window_left >= 0 ? pos - p.window_left : 0;
    } else {
      // Padding row (zero query): it may see every key (finite logits, never written out), so
      // that it does not stop a chunk from taking the unmasked path below.
      pos_hi[half] = INT_MAX;
      pos_lo[half] = INT_MIN;
    }
  }
  // Keys every row of this lane sees (a chunk inside it, all tokens readable, needs no mask).
  const int vis_lo = max(pos_lo[0], pos_lo[1]), vis_hi = min(pos_hi[0], pos_hi[1]);

  // O accumulators: wide tile e = dims pair e of the lane's run × rows (r, r + 8); narrow tile
  // m-tile mt of Oᵀ (dims 2mt, 2mt + 1 of the lane's V run × rows 2·(lane % 4) + 0/1).
  constexpr int kOTiles = kNarrow ? D / 16 : C::kPairs;
  float o[kOTiles][4];
#pragma unroll
  for (int e = 0; e < kOTiles; ++e) o[e][0] = o[e][1] = o[e][2] = o[e][3] = 0.f;
  float m_run[2] = {-INFINITY, -INFINITY};
  float l_run[2] = {0.f, 0.f};

  const int n_chunks = s_end > s_begin ? (s_end - s_begin + C::kChunk - 1) / C::kChunk : 0;

  const int n_mine = n_chunks > tw ? (n_chunks - tw + tpw - 1) / tpw : 0;
  auto chunk_start_of = [&](int k) { return s_begin + (tw + k * tpw) * C::kChunk; };
  const float cap_v = p.logits_soft_cap;
  const float scale_log2 = logit_scale * kLog2e;
  // Per-lane bases of the lane's runs (direct path: kv head h, dims q·D/4 …).
  const int q4 = lane & 3;
  const uint8_t* k_base = p.k_data + h * p.k_data_strides.head + q4 * (C::kWords * 4);
  const uint8_t* v_base = p.v_data + h * p.v_data_strides.head + q4 * (C::kWords * 4);

  // K of subtile u, dequantized: kf[sl] = the lane's run of token 8·sl + lane/4 (the wide
  // tile's two B fragments, the narrow tile's A fragment). `get_run` as in compute_chunk.
  auto dequant_k_subtile = [&](auto&& get_run, int u, uint32_t (&kf)[2][C::kPairs]) {
#pragma unroll
    for (int sl = 0; sl < 2; ++sl) {
      uint32_t raw[C::kWords], sc;
      get_run(u, sl, 0, raw, &sc);
      dequant_run<T, FMT, D>(raw, sc, kf[sl]);
    }
  };

  // A chunk's raw logits → log2 domain (soft cap, or the plain scale), −inf where
  // `visible(j)` is false, and the running maxima per row half (`half_of(j)`). The soft-cap
  // branch sits outside the element loop so that each variant is one straight block (ILP
  // across the logits); a chunk that every row of the warp sees whole, all tokens readable (the
  // common case away from the split's end, the causal diagonal and the window edge), skips the
  // per-logit mask. Shared by the wide and the narrow tile (their logits differ in layout only).
  auto logits_to_log2 = [&](float* logit, auto count, auto half_of, auto visible, const uint32_t vmask,
                            const int chunk_start, float (&mx)[2]) {
    constexpr int kN = decltype(count)::value;
    if (cap_v > 0.f) {
#pragma unroll
      for (int j = 0; j < kN; ++j) {
        const float x = cap_v * tanhf(logit[j] * logit_scale / cap_v);
        logit[j] = visible(j) ? x * kLog2e : -INFINITY;
        mx[half_of(j)] = fmaxf(mx[half_of(j)], logit[j]);
      }
      return;
    }
    constexpr uint32_t kAll = C::kChunk >= 32 ? 0xFFFFFFFFu : (1u << C::kChunk) - 1u;
    const bool full_lane = chunk_start + C::kChunk <= s_end && chunk_start >= vis_lo &&
                           chunk_start + C::kChunk - 1 <= vis_hi && (vmask & kAll) == kAll;
    if (__all_sync(0xFFFFFFFFu, full_lane)) {
#pragma unroll
      for (int j = 0; j < kN; ++j) {
        logit[j] *= scale_log2;
        mx[half_of(j)] = fmaxf(mx[half_of(j)], logit[j]);
      }
    } else {
#pragma unroll
      for (int j = 0; j < kN; ++j) {
        logit[j] = visible(j) ? logit[j] * scale_log2 : -INFINITY;
        mx[half_of(j)] = fmaxf(mx[half_of(j)], logit[j]);
      }
    }
  };

#if NVFP4KV_DECODE_EXPERIMENT_LOADS_ONLY
  // Experiment build only (bench/NOTES.md decode v8, v12): every staged run of the chunk is read,
  // nothing is computed — the ceiling of the load machinery. The sink keeps the reads alive.
  auto loads_only = [&](auto&& get_run, const uint32_t vmask) {
    uint32_t sink = vmask;
#pragma unroll
    for (int u = 0; u < C::kU; ++u)
#pragma unroll
      for (int sl = 0; sl < 2; ++sl)
#pragma unroll
        for (int kv = 0; kv < 2; ++kv) {
          uint32_t raw[C::kWords], sc = 0;
          get_run(u, sl, kv, raw, &sc);
#pragma unroll
          for (int w = 0; w < C::kWords; ++w) sink ^= raw[w];
          sink ^= sc;
        }
    o[0][0] += __uint_as_float(sink & 0x00000001u);
  };
#endif

  // One chunk: S = Q·Kᵀ, online softmax, O += P·V. `get_run(u, slot, kv, raw, &scale)` returns
  // the lane's raw run; bit τ of `vmask` says whether token τ of the chunk is readable.
  auto compute_chunk = [&](auto&& get_run, const uint32_t vmask, int chunk_start) {
#if NVFP4KV_DECODE_EXPERIMENT_LOADS_ONLY
    loads_only(get_run, vmask ^ static_cast<uint32_t>(chunk_start & 0));
    return;
#endif
    float s[C::kU][2][4];
#pragma unroll
    for (int u = 0; u < C::kU; ++u) {
      uint32_t kf[2][C::kPairs];
      dequant_k_subtile(get_run, u, kf);
      // One accumulator chain per n-tile: with kU = 2 the 2 × kU chains of a chunk already hide
      // the mma latency; a second (even / odd k-step) chain cost 8 FADDs per subtile (v7).
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) s[u][nt][0] = s[u][nt][1] = s[u][nt][2] = s[u][nt][3] = 0.f;
#pragma unroll
      for (int j = 0; j < C::kKSteps; ++j) {
        const uint4 qv = q_frag[j * 32 + lane];
        const uint32_t a[4] = {qv.x, qv.y, qv.z, qv.w};
#pragma unroll
        for (int nt = 0; nt < 2; ++nt) mma16816(s[u][nt], a, kf[nt][2 * j], kf[nt][2 * j + 1], kF16);
      }
    }

    // Logits (log2 domain), masks, running max (logits_to_log2): logit (u, nt, i) is token
    // 8·nt + 2·(lane % 4) + i % 2 of subtile u, row half i / 2 (rows lane/4 and lane/4 + 8).
    float mx[2] = {m_run[0], m_run[1]};
    logits_to_log2(
        &s[0][0][0], std::integral_constant<int, C::kU * 8>{}, [](int j) { return (j & 3) >> 1; },
        [&](int j) {
          const int u = j >> 3, nt = (j >> 2) & 1, i = j & 3;
          const int tt = 16 * u + 8 * nt + 2 * (lane & 3) + (i & 1);  // token of the chunk
          const int tok = chunk_start + tt;
          return ((vmask >> tt) & 1u) && tok < s_end && tok <= pos_hi[i >> 1] && tok >= pos_lo[i >> 1];
        },
        vmask, chunk_start, mx);
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      mx[half] = fmaxf(mx[half], __shfl_xor_sync(0xFFFFFFFFu, mx[half], 1));
      mx[half] = fmaxf(mx[half], __shfl_xor_sync(0xFFFFFFFFu, mx[half], 2));
    }
    float alpha[2];
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const float m_use = mx[half] == -INFINITY ? 0.f : mx[half];
      alpha[half] = fast_exp2(m_run[half] - m_use);  // m_run = −inf → 0 (O and l are 0 then)
      m_run[half] = mx[half];
      l_run[half] *= alpha[half];
#pragma unroll
      for (int u = 0; u < C::kU; ++u)
#pragma unroll
        for (int nt = 0; nt < 2; ++nt)
#pragma unroll
          for (int i = 0; i < 2; ++i) {
            const float pv = fast_exp2(s[u][nt][2 * half + i] - m_use);
            s[u][nt][2 * half + i] = pv;
            l_run[half] += pv;
          }
    }
    // Once the running max settles, alpha is 1 for the whole warp: skip the D/2 multiplies.
    if (__any_sync(0xFFFFFFFFu, alpha[0] != 1.f || alpha[1] != 1.f)) {
#pragma unroll
      for (int e = 0; e < C::kPairs; ++e) {
        o[e][0] *= alpha[0], o[e][1] *= alpha[0];
        o[e][2] *= alpha[1], o[e][3] *= alpha[1];
      }
    }

    // O += P·V.
#pragma unroll
    for (int u = 0; u < C::kU; ++u) {
      const uint32_t a[4] = {pack2<T>(s[u][0][0], s[u][0][1]), pack2<T>(s[u][0][2], s[u][0][3]),
                             pack2<T>(s[u][1][0], s[u][1][1]), pack2<T>(s[u][1][2], s[u][1][3])};
      uint32_t vf[2][C::kPairs];
#pragma unroll
      for (int sl = 0; sl < 2; ++sl) {
        uint32_t raw[C::kWords], sc;
        get_run(u, sl, 1, raw, &sc);
        dequant_run<T, FMT, D>(raw, sc, vf[sl]);
      }
#pragma unroll
      for (int e = 0; e < C::kPairs; ++e)
        mma16816(o[e], a, movmatrix_trans(vf[0][e]), movmatrix_trans(vf[1][e]), kF16);
    }
  };

  // Narrow tile (≤ 8 query rows; nvfp4 and fp8 at hd128). Sᵀ = K·Qᵀ: A = K (m = 16 tokens: g and
  // g + 8 of the lane, exactly the wide tile's two B fragments), B = Qᵀ from registers (n = the
  // 8 rows), so a 16-token subtile takes one mma per k-step instead of two and the logits are 4
  // per lane. Oᵀ = Vᵀ·Pᵀ: A = Vᵀ (m = 16 dims, k = 16 tokens), B = Pᵀ, which is Sᵀ's
  // accumulator tile transposed (two movmatrix per subtile instead of two per V pair). Lane
  // (g, q) holds dims 16g … 16g + 15 (nvfp4: scale block g) of tokens 2q, 2q + 1, 2q + 8,
  // 2q + 9: it pairs two tokens' words with PRMT so that e2m1x8_exp (nvfp4, scaled by the pair
  // (sf_token, sf_token+1)) or one e4m3x2 conversion (fp8) yields (token, token + 1) of one dim.
  // Oᵀ m-tile mt = dims 2mt, 2mt + 1 of the run.
  // (A generic lambda: instantiated only by the narrow kernels that call it.)
  auto compute_chunk_narrow = [&](const auto* stage, const uint32_t vmask, int chunk_start) {
    // Subtile-head it: subtile u = it of the warp's unit, or (paired tile, one subtile) the
    // warp's head it = unit 2·warp + it.
    auto sub_unit = [&](int it) { return kPair ? 2 * warp + it : warp; };
    auto sub_u = [&](int it) { return kPair ? 0 : it; };
#if NVFP4KV_DECODE_EXPERIMENT_LOADS_ONLY
#pragma unroll
    for (int it = 0; it < C::kHeadsPerWarp; ++it)
      loads_only(
          [&](int uu, int sl, int kv, uint32_t* raw, uint32_t* sc) {
            if constexpr (kTma) read_run_tma<C>(stage, sub_unit(it), uu, sl, kv, raw, sc);
            else read_run<C>(stage, sub_unit(it), uu, sl, kv, raw, sc);
          },
          vmask ^ static_cast<uint32_t>(chunk_start));
    return;
#endif
    float s[C::kU][4];
    if constexpr (kPair) {
      // Both heads' K dequantized first, then their products interleaved k-step by k-step (one
      // accumulator chain per head): with one head after the other, ptxas placed the second
      // head's shared loads behind the first head's products.
      uint32_t kf[2][2][C::kPairs];
#pragma unroll
      for (int it = 0; it < 2; ++it)
        dequant_k_subtile(
            [&](int uu, int sl, int kv, uint32_t* raw, uint32_t* sc) {
              if constexpr (kTma) read_run_tma<C>(stage, sub_unit(it), uu, sl, kv, raw, sc);
              else read_run<C>(stage, sub_unit(it), uu, sl, kv, raw, sc);
            },
            0, kf[it]);
      float acc[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
#pragma unroll
      for (int j = 0; j < C::kKSteps; ++j)
#pragma unroll
        for (int it = 0; it < 2; ++it) {
          const uint32_t a[4] = {kf[it][0][2 * j], kf[it][1][2 * j], kf[it][0][2 * j + 1], kf[it][1][2 * j + 1]};
          mma16816(acc[it], a, q_reg[2 * j], q_reg[2 * j + 1], kF16);
        }
      // Q's columns 0-3 are head 2·warp's rows and 4-7 head 2·warp + 1's: each product is right
      // in its own head's columns only. Accumulator columns 2·(lane % 4) + 0/1 are the second
      // head's where lane % 4 ≥ 2.
#pragma unroll
      for (int i = 0; i < 4; ++i) s[0][i] = (lane & 2) ? acc[1][i] : acc[0][i];
    } else {
#pragma unroll
      for (int u = 0; u < C::kU; ++u) {
        uint32_t kf[2][C::kPairs];
        dequant_k_subtile(
            [&](int uu, int sl, int kv, uint32_t* raw, uint32_t* sc) {
              if constexpr (kTma) read_run_tma<C>(stage, warp, uu, sl, kv, raw, sc);
              else read_run<C>(stage, warp, uu, sl, kv, raw, sc);
            },
            u, kf);
        // Two accumulator chains (even / odd k-steps): one chain per subtile would leave only
        // kU dependent mma chains per chunk.
        float acc[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
#pragma unroll
        for (int j = 0; j < C::kKSteps; ++j) {
          const uint32_t a[4] = {kf[0][2 * j], kf[1][2 * j], kf[0][2 * j + 1], kf[1][2 * j + 1]};
          mma16816(acc[j & 1], a, q_reg[2 * j], q_reg[2 * j + 1], kF16);
        }
#pragma unroll
        for (int i = 0; i < 4; ++i) s[u][i] = acc[0][i] + acc[1][i];
      }
    }
    // s[u][i]: token 16u + lane/4 + 8·(i/2) of the chunk, row 2·(lane % 4) + i % 2 (paired
    // tile: column 2·(lane % 4) + i % 2, row (2·(lane % 4) + i % 2) % 4 of head 2·warp + (lane % 4) / 2).
    float mx[2] = {m_run[0], m_run[1]};
    logits_to_log2(
        &s[0][0], std::integral_constant<int, C::kU * 4>{}, [](int j) { return j & 1; },
        [&](int j) {
          const int tt = 16 * (j >> 2) + (lane >> 2) + 8 * ((j >> 1) & 1);
          const int tok = chunk_start + tt;
          return ((vmask >> tt) & 1u) && tok < s_end && tok <= pos_hi[j & 1] && tok >= pos_lo[j & 1];
        },
        vmask, chunk_start, mx);
    // A row's tokens are spread over the 8 lanes of equal lane % 4.
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      mx[c] = fmaxf(mx[c], __shfl_xor_sync(0xFFFFFFFFu, mx[c], 4));
      mx[c] = fmaxf(mx[c], __shfl_xor_sync(0xFFFFFFFFu, mx[c], 8));
      mx[c] = fmaxf(mx[c], __shfl_xor_sync(0xFFFFFFFFu, mx[c], 16));
    }
    float alpha[2], m_use[2];
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      m_use[c] = mx[c] == -INFINITY ? 0.f : mx[c];
      alpha[c] = fast_exp2(m_run[c] - m_use[c]);  // m_run = −inf → 0 (O and l are 0 then)
      m_run[c] = mx[c];
      l_run[c] *= alpha[c];
    }
#pragma unroll
    for (int u = 0; u < C::kU; ++u)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float pv = fast_exp2(s[u][i] - m_use[i & 1]);
        s[u][i] = pv;
        l_run[i & 1] += pv;
      }
    if (__any_sync(0xFFFFFFFFu, alpha[0] != 1.f || alpha[1] != 1.f)) {
#pragma unroll
      for (int mt = 0; mt < kOTiles; ++mt) {
        o[mt][0] *= alpha[0], o[mt][1] *= alpha[1];
        o[mt][2] *= alpha[0], o[mt][3] *= alpha[1];
      }
    }

    // Oᵀ += Vᵀ·Pᵀ.
    const int g = lane >> 2, qq = lane & 3;
    // TMA ring: bit τ = token chunk_start + τ is read (readable and inside the range).
    [[maybe_unused]] uint32_t tok_ok = 0;
    if constexpr (kTma) {
      const int left = s_end - chunk_start;
      tok_ok = vmask & (left >= 32 ? 0xFFFFFFFFu : (1u << left) - 1u);
    }
    const uint8_t* v_rows = stage + C::kUnits * C::kChunk * C::kRow;  // swizzled (narrow_v_offset)
    const uint8_t* v_sc = stage + C::kScaleOffset + C::kUnits * C::kChunk * C::kScaleRow;  // nvfp4 only
    // Lane (g, q)'s V of subtile-head it, dequantized: vr[pr][e] = (token 2q + 8·pr, token
    // 2q + 8·pr + 1) of dim pair e of dims 16g … 16g + 15 (stage rows ra, ra + 1).
    auto v_dequant = [&](int it, uint32_t (&vr)[2][D / 8]) {
#pragma unroll
      for (int pr = 0; pr < 2; ++pr) {
        const int ra = sub_unit(it) * C::kChunk + 16 * sub_u(it) + 8 * pr + 2 * qq;  // stage rows ra, ra + 1
        if constexpr (FMT == kFmtFP8) {
          // Dims 16g … 16g + 15 = piece g of each row; PRMT interleaves the two tokens' bytes so
          // that one e4m3x2 conversion gives (token A, token B) of one dim.
          const uint4 va = *reinterpret_cast<const uint4*>(v_rows + narrow_v_offset<C::kRow>(ra, g));
          const uint4 vb = *reinterpret_cast<const uint4*>(v_rows + narrow_v_offset<C::kRow>(ra + 1, g));
          const uint32_t wa[4] = {va.x, va.y, va.z, va.w}, wb[4] = {vb.x, vb.y, vb.z, vb.w};
#pragma unroll
          for (int w = 0; w < 4; ++w) {
            const uint32_t lo = prmt(wa[w], wb[w], 0x5140u), hi = prmt(wa[w], wb[w], 0x7362u);
            vr[pr][4 * w + 0] = fp8x2_pair<T>(lo);
            vr[pr][4 * w + 1] = fp8x2_pair<T>(lo >> 16);
            vr[pr][4 * w + 2] = fp8x2_pair<T>(hi);
            vr[pr][4 * w + 3] = fp8x2_pair<T>(hi >> 16);
          }
        } else {
          uint2 va, vb;
          uint32_t sab;
          if constexpr (kTma) {
            // TmaStage layout: token r = 8·pr + 2q (and r + 1) of block sub_u(it). Tokens the
            // chunk does not read (past the range, unreadable pages) hold whatever the slot
            // held before, not zeros: their scales are taken as 0, so that P = 0 meets a finite
            // V (a stale scale byte may be an e4m3 NaN).
            const int r = 8 * pr + 2 * qq, unit = sub_unit(it);
            const uint8_t* blk = stage + TS::kV + sub_u(it) * TS::kBlockData + 8 * (g & 1);
            va = *reinterpret_cast<const uint2*>(blk + TS::data_offset(r, unit, g >> 1));
            vb = *reinterpret_cast<const uint2*>(blk + TS::data_offset(r + 1, unit, g >> 1));
            const uint8_t* vs = stage + TS::kVScales + sub_u(it) * TS::kBlockScale + g;
            const int tt = 16 * sub_u(it) + r;  // token of the chunk
            sab = (((tok_ok >> tt) & 1u) ? static_cast<uint32_t>(vs[TS::scale_offset(r, unit)]) : 0u) |
                  (((tok_ok >> (tt + 1)) & 1u) ? static_cast<uint32_t>(vs[TS::scale_offset(r + 1, unit)]) << 8 : 0u);
          } else {
            const int off = narrow_v_offset<C::kRow>(ra, g >> 1) + 8 * (g & 1);
            va = *reinterpret_cast<const uint2*>(v_rows + off);
            vb = *reinterpret_cast<const uint2*>(v_rows + (off ^ 64));
            sab = static_cast<uint32_t>(v_sc[ra * C::kScaleRow + g]) |
                  (static_cast<uint32_t>(v_sc[(ra + 1) * C::kScaleRow + g]) << 8);
          }
          const uint32_t s2 = scale_pair_mixed_exp<T>(sab);
          const uint32_t wa[2] = {va.x, va.y}, wb[2] = {vb.x, vb.y};
#pragma unroll
          for (int w = 0; w < 2; ++w) {
            uint32_t r[4];
            e2m1x8_exp<T>(prmt(wa[w], wb[w], 0x5410u), r);  // dims 8w … 8w + 3 of both tokens
#pragma unroll
            for (int i = 0; i < 4; ++i) vr[pr][8 * w + i] = hmul2<T>(r[i], s2);
            e2m1x8_exp<T>(prmt(wa[w], wb[w], 0x7632u), r);  // dims 8w + 4 … 8w + 7
#pragma unroll
            for (int i = 0; i < 4; ++i) vr[pr][8 * w + 4 + i] = hmul2<T>(r[i], s2);
          }
        }
      }
    };
    if constexpr (kPair) {
      // Pᵀ B fragment (below): column g belongs to head g / 4; each head's product takes only
      // its own columns (the other half of B is zero, so the other head's O columns are left as
      // they are). Both heads' V dequantized first, then the products interleaved (as for K).
      const uint32_t b0 = movmatrix_trans(pack2<T>(s[0][0], s[0][1]));
      const uint32_t b1 = movmatrix_trans(pack2<T>(s[0][2], s[0][3]));
      uint32_t vr[2][2][D / 8];
#pragma unroll
      for (int it = 0; it < 2; ++it) v_dequant(it, vr[it]);
#pragma unroll
      for (int mt = 0; mt < kOTiles; ++mt)
#pragma unroll
        for (int it = 0; it < 2; ++it) {
          const bool mine = (lane >> 4) == it;
          const uint32_t a[4] = {vr[it][0][2 * mt], vr[it][0][2 * mt + 1], vr[it][1][2 * mt], vr[it][1][2 * mt + 1]};
          mma16816(o[mt], a, mine ? b0 : 0u, mine ? b1 : 0u, kF16);
        }
    } else {
#pragma unroll
      for (int u = 0; u < C::kU; ++u) {
        // Pᵀ B fragment: lane (g, q) gets row g, tokens 2q, 2q + 1 (b0) and 2q + 8, 2q + 9 (b1).
        const uint32_t b0 = movmatrix_trans(pack2<T>(s[u][0], s[u][1]));
        const uint32_t b1 = movmatrix_trans(pack2<T>(s[u][2], s[u][3]));
        uint32_t vr[2][D / 8];  // [token pair][dim of the run]: (token 2q + 8·pr, + 1)
        v_dequant(u, vr);
#pragma unroll
        for (int mt = 0; mt < kOTiles; ++mt) {
          const uint32_t a[4] = {vr[0][2 * mt], vr[0][2 * mt + 1], vr[1][2 * mt], vr[1][2 * mt + 1]};
          mma16816(o[mt], a, b0, b1, kF16);
        }
      }
    }
  };

  // Page (from the staged table) and in-page offset of token `tok` of the split; false if the
  // token is past the split or its page id is out of range (then it is masked, never read).
  auto locate_tok = [&](int tok, int* pg, int* off) {
    const uint32_t pi = pdiv.quo(static_cast<uint32_t>(tok));
    const int page = tok < s_end ? split_page_ids[pi - first_page] : -1;
    const bool ok = page >= 0 && page < p.num_pages;
    *pg = ok ? page : 0;
    *off = ok ? tok - static_cast<int>(pi) * p.page_size : 0;
    return ok;
  };
  // Readable-token mask of a chunk (bit τ = token chunk_start + τ), one token per lane.
  auto chunk_mask = [&](int chunk_start) {
    int pg, off;
    const bool ok = lane < C::kChunk && locate_tok(chunk_start + lane, &pg, &off);
    return __ballot_sync(0xFFFFFFFFu, ok);
  };

  if constexpr (C::kDirect) {
    // 16-bit caches: global → registers, one chunk per iteration (8 KB per warp in flight at
    // hd128). Staging them through shared memory would double the shared-memory traffic,
    // which is the limit at these byte rates.
    for (int k = 0; k < n_mine; ++k) {
      const int chunk_start = chunk_start_of(k);
      uint32_t rk[C::kU][2][C::kWords], rv[C::kU][2][C::kWords];
#pragma unroll
      for (int u = 0; u < C::kU; ++u)
#pragma unroll
        for (int sl = 0; sl < 2; ++sl) {
          int pg, off;
          if (locate_tok(chunk_start + 16 * u + 8 * sl + (lane >> 2), &pg, &off)) {
            load_run<C::kWords>(at(k_base, pg, off, p.k_data_strides), rk[u][sl]);
            load_run<C::kWords>(at(v_base, pg, off, p.v_data_strides), rv[u][sl]);
          } else {
#pragma unroll
            for (int w = 0; w < C::kWords; ++w) rk[u][sl][w] = 0, rv[u][sl][w] = 0;
          }
        }
      compute_chunk(
          [&](int u, int sl, int kv, uint32_t* raw, uint32_t* sc) {
#pragma unroll
            for (int w = 0; w < C::kWords; ++w) raw[w] = kv ? rv[u][sl][w] : rk[u][sl][w];
            *sc = 0;
          },
          chunk_mask(chunk_start), chunk_start);
    }
  } else {
    // CTA-wide ring of kStages rounds filled with cp.async (one commit group per round; empty
    // groups keep the count uniform). Round k holds chunk tw + k·tpw of every head of the CTA
    // (unit w = warp w's chunk), i.e. tokens s_begin + k·tpw·kChunk … + kWarps·kChunk/hpc − 1.
    // One barrier per round: it publishes the round's bytes and frees the slot read last round.
    uint8_t* ring = main_area;
    const int n_rounds = n_chunks > 0 ? (n_chunks + tpw - 1) / tpw : 0;
    // Round tickets (dynamic mode): the global round index of this CTA's round k is ticket k,
    // kept in a shared ring of kStages + 1 (slot k mod kStages + 1). Thread 0 draws ticket
    // k + kStages + 1 while round k computes (the atomic's latency hides behind it) and stores it
    // in round k's slot (read by every thread before this round's barrier); at the end of round
    // k every thread reads tickets k + 1 and k + kStages (published before that barrier) into
    // registers, so no shared load sits between a barrier and the next issue. A CTA's tickets
    // increase, so the first one ≥ n_rounds ends its loop. Fixed slices: ticket k = k.
    auto ticket = [&](int k) { return kDyn ? tickets_s[k % kTk] : k; };
    constexpr int kParts = C::kRow / C::kCp;                          // cp.async pieces per data row
    constexpr int kRowStep = kThreads / kParts;                       // rows between a thread's pieces
    constexpr int kDataPer = C::kUnits * C::kChunk / kRowStep;        // pieces per thread and K|V
    static_assert(kDataPer >= 1 && C::kUnits * C::kChunk % kRowStep == 0, "data pieces per thread");
    static_assert(kRowStep % C::kUnits == 0, "a thread's head must not change between its pieces");
    // Thread i copies part i % kParts of rows r = i / kParts + j·kRowStep, j < kDataPer; row r is
    // head r % hpc of round-token r / hpc: consecutive threads copy consecutive bytes of one
    // token's heads (NHD keeps them contiguous in memory). hpc is 1, 2, 4 or 8: shifts, no divisions.
    const int lg_hpc = kPair ? 3 : hpc == 4 ? 2 : (hpc == 2 ? 1 : 0);
    const int d_part = threadIdx.x % kParts;
    const int d_row0 = threadIdx.x / kParts;
    const int d_head = d_row0 & (hpc - 1);
    const int rt0 = d_row0 >> lg_hpc;                 // round-token of piece j = rt0 + j·rt_step
    const int rt_step = kRowStep >> lg_hpc;
    const int round_tokens = tpw * C::kChunk;
    const uint8_t* kd_base = p.k_data + (hg * hpc + d_head) * p.k_data_strides.head + d_part * C::kCp;
    const uint8_t* vd_base = p.v_data + (hg * hpc + d_head) * p.v_data_strides.head + d_part * C::kCp;
    const int32_t kd_page = static_cast<int32_t>(p.k_data_strides.page), kd_token = static_cast<int32_t>(p.k_data_strides.token);
    const int32_t vd_page = static_cast<int32_t>(p.v_data_strides.page), vd_token = static_cast<int32_t>(p.v_data_strides.token);
    // Scale rows (FP4): thread i < kUnits·kChunk copies the whole scale row i (kScaleRow / 4
    // words) of K and of V: head i % hpc of round-token i / hpc (its own page lookup; a scale
    // copy folded into the data loop would diverge on the thread's part).
    constexpr int kSParts = C::kFp4 ? C::kScaleRow / 4 : 0;
    static_assert(!C::kFp4 || C::kUnits * C::kChunk <= kThreads, "one scale row per thread");
    const bool s_copier = C::kFp4 && threadIdx.x < C::kUnits * C::kChunk;
    const int s_head = threadIdx.x & (hpc - 1);
    const int s_rt = threadIdx.x >> lg_hpc;
    const int s_row = (s_head + ((s_rt / C::kChunk) << lg_hpc)) * C::kChunk + s_rt % C::kChunk;
    const uint8_t* ks_base = C::kFp4 ? p.k_scales + (hg * hpc + s_head) * p.k_scale_strides.head : nullptr;
    const uint8_t* vs_base = C::kFp4 ? p.v_scales + (hg * hpc + s_head) * p.v_scale_strides.head : nullptr;
    const int32_t ks_page = static_cast<int32_t>(p.k_scale_strides.page), ks_token = static_cast<int32_t>(p.k_scale_strides.token);
    const int32_t vs_page = static_cast<int32_t>(p.v_scale_strides.page), vs_token = static_cast<int32_t>(p.v_scale_strides.token);
    // Stage row of data piece j: unit = head + hpc · (rt / kChunk), row = unit · kChunk + rt % kChunk.
    int srow[kDataPer];
#pragma unroll
    for (int j = 0; j < kDataPer; ++j) {
      const int rt = rt0 + j * rt_step;
      srow[j] = ((d_head + ((rt / C::kChunk) << lg_hpc)) * C::kChunk) + rt % C::kChunk;
    }
    // Narrow tile: V pieces go to their swizzled place (narrow_v_offset), fixed per piece j.
    int vdo[kNarrow ? kDataPer : 1];
    if constexpr (kNarrow) {
      static_assert(C::kCp == 16, "narrow_v_offset places 16-byte pieces");
#pragma unroll
      for (int j = 0; j < kDataPer; ++j) vdo[j] = C::kUnits * C::kChunk * C::kRow + narrow_v_offset<C::kRow>(srow[j], d_part);
    }
    const uint32_t ring_s = smem_addr(ring);
    const int lin_ratio = p.lin_ratio;
    // Narrow tile with one unit per head (hpc = kUnits: 4 heads per CTA, or the paired tile's 8)
    // on 16-aligned rounds of pages with page_size % 16 == 0 (`blocked` below): a round is
    // kChunk / 16 blocks of 16 tokens, each inside one page, so the page table is read once per
    // block instead of once per piece, and a thread's pieces sit at fixed offsets from its first
    // (piece j: round-token rt0 + kRtStep·j, stage row srow[0] + kRtStep·j; the V swizzle repeats
    // every 8 rows, narrow_v_offset(r + 8) = narrow_v_offset(r) + 8·kRow): immediates instead of
    // kDataPer live registers (decode v18: the paired tile's ptxas recomputed those every round;
    // the 4-head kernel's issue block was ~145 instructions per thread and round).
    constexpr int kRtStep = kRowStep / C::kUnits;
    constexpr int kBlocks = C::kChunk / 16;
    static_assert(!kNarrow || (kRtStep <= 16 && 16 % kRtStep == 0 && C::kChunk % 16 == 0), "blocked issue");
    // issue(k, slot): round k into ring slot `slot` (= k % kStages, tracked by the caller).
    auto issue_as = [&](int k, int slot, auto lin_views, auto blocked_round) {
      constexpr bool kLin = decltype(lin_views)::value;
      constexpr bool kBlocked = decltype(blocked_round)::value;
      const uint32_t stage = ring_s + slot * C::kStageBytes;
      const int tok_round = s_begin + k * round_tokens;
      auto addr = [&](const uint8_t* base, int pg, int off, int32_t page_stride, int32_t token_stride) {
        return kLin ? at_lin(base, pg * lin_ratio + off, token_stride) : at(base, pg, off, page_stride, token_stride);
      };
      [[maybe_unused]] int blk_pg[kBlocks], blk_off[kBlocks];
      [[maybe_unused]] bool blk_ok[kBlocks];
      if constexpr (kBlocked) {
#pragma unroll
        for (int i = 0; i < kBlocks; ++i) blk_ok[i] = locate_tok(tok_round + 16 * i, &blk_pg[i], &blk_off[i]);
      }
      // Page and offset of round-token rt of block `blk` (false: masked, never read).
      auto locate_rt = [&](int rt, int blk, int* pg, int* off) {
        if constexpr (kBlocked) {
          *pg = blk_pg[blk];
          *off = blk_off[blk] + (rt - 16 * blk);
          return blk_ok[blk] && tok_round + rt < s_end;
        } else {
          return locate_tok(tok_round + rt, pg, off);
        }
      };
#pragma unroll
      for (int j = 0; j < kDataPer; ++j) {
        int pg = 0, off = 0;
        const bool ok = locate_rt(rt0 + j * rt_step, kRtStep * j / 16, &pg, &off);
        uint32_t kd, vd;
        if constexpr (kBlocked) {
          const int r = kRtStep * j;  // stage-row offset of piece j (a constant after unrolling)
          kd = stage + srow[0] * C::kRow + d_part * C::kCp + r * C::kRow;
          vd = stage + vdo[(r % 8) / kRtStep] + (r / 8) * 8 * C::kRow;
        } else {
          kd = stage + srow[j] * C::kRow + d_part * C::kCp;
          vd = kNarrow ? stage + vdo[kNarrow ? j : 0] : kd + C::kUnits * C::kChunk * C::kRow;
        }
        const uint8_t* kp = addr(kd_base, pg, off, kd_page, kd_token);
        const uint8_t* vp = addr(vd_base, pg, off, vd_page, vd_token);
        if constexpr (C::kCp == 16) {
          cp_async16(kd, kp, ok);
          cp_async16(vd, vp, ok);
        } else {
          cp_async8(kd, kp, ok);
          cp_async8(vd, vp, ok);
        }
      }
      if constexpr (C::kFp4 && !NVFP4KV_DECODE_EXPERIMENT_NO_SCALE_COPIES) {
        if (s_copier) {
          int pg = 0, off = 0;
          bool ok;
          if constexpr (kBlocked && kBlocks == 2) {
            // The scale row's token is in block s_rt / 16 (a thread constant): select, no lookup.
            const bool hi = s_rt >= 16;
            pg = hi ? blk_pg[1] : blk_pg[0];
            off = (hi ? blk_off[1] : blk_off[0]) + (s_rt & 15);
            ok = (hi ? blk_ok[1] : blk_ok[0]) && tok_round + s_rt < s_end;
          } else {
            static_assert(!kBlocked || kBlocks == 1 || kBlocks == 2, "scale rows: one or two blocks");
            ok = locate_rt(s_rt, 0, &pg, &off);
          }
          const uint32_t ksd = stage + C::kScaleOffset + s_row * C::kScaleRow;
          const uint32_t vsd = ksd + C::kUnits * C::kChunk * C::kScaleRow;
          const uint8_t* ksp = addr(ks_base, pg, off, ks_page, ks_token);
          const uint8_t* vsp = addr(vs_base, pg, off, vs_page, vs_token);
#pragma unroll
          for (int w = 0; w < kSParts; ++w) {
            cp_async4(ksd + 4 * w, ksp + 4 * w, ok);
            cp_async4(vsd + 4 * w, vsp + 4 * w, ok);
          }
        }
      }
    };
    // Uniform across the CTA.
    [[maybe_unused]] const bool blocked = kNarrow && hpc == C::kUnits && p.page_size % 16 == 0 && s_begin % 16 == 0;
    auto issue = [&](int k, int slot) {
      if constexpr (kTma) {
        // One thread arms the slot's mbarrier with the round's bytes and issues a K, V, K-scale
        // and V-scale copy per 16-token block that starts inside the range (the launch checked
        // page_size % 16 == 0 and no window, so a block lies in one page). An unreadable page
        // is read as page 0 and masked (chunk_mask).
        if (threadIdx.x == 0) {
          const int tok_round = s_begin + k * round_tokens;
          const uint32_t bar = full_bar + 8 * slot;
          const uint32_t stage = ring_s + slot * C::kStageBytes;
          const int n_blk = min(TS::kBlocks, (s_end - tok_round + 15) / 16);
          mbar_arrive_expect_tx(bar, static_cast<uint32_t>(n_blk * TS::kBlockBytes));
#pragma unroll
          for (int i = 0; i < TS::kBlocks; ++i) {
            if (i < n_blk) {
              int pg, off;
              locate_tok(tok_round + 16 * i, &pg, &off);
              if constexpr (TS::kBoxPerPair) {
#pragma unroll
                for (int pr = 0; pr < TS::kPairs; ++pr) {
                  const uint32_t d = stage + i * TS::kBlockData + pr * 16 * 128;
                  tma_load_4d(d, &tm.kd, 0, hg * TS::kPairs + pr, off, pg, bar);
                  tma_load_4d(d + TS::kV, &tm.vd, 0, hg * TS::kPairs + pr, off, pg, bar);
                }
              } else {
                tma_load_4d(stage + i * TS::kBlockData, &tm.kd, 0, hg * TS::kPairs, off, pg, bar);
                tma_load_4d(stage + TS::kV + i * TS::kBlockData, &tm.vd, 0, hg * TS::kPairs, off, pg, bar);
              }
              tma_load_3d(stage + TS::kScales + i * TS::kBlockScale, &tm.ks, hg * C::kUnits * C::kScaleRow, off, pg, bar);
              tma_load_3d(stage + TS::kVScales + i * TS::kBlockScale, &tm.vs, hg * C::kUnits * C::kScaleRow, off, pg, bar);
            }
          }
        }
        return;
      }
      if constexpr (kNarrow) {
        if (blocked) {
          if (lin_ratio > 0) issue_as(k, slot, std::true_type{}, std::true_type{});
          else issue_as(k, slot, std::false_type{}, std::true_type{});
          return;
        }
      }
      if (lin_ratio > 0) issue_as(k, slot, std::true_type{}, std::false_type{});
      else issue_as(k, slot, std::false_type{}, std::false_type{});
    };
#pragma unroll
    for (int k = 0; k < C::kStages - 1; ++k) {
      const int tk = ticket(k);
      if (tk < n_rounds) issue(tk, k);
      cp_async_commit();
    }
    if constexpr (kNarrow) {
      pack_q();  // the query loads went out in the prologue
      // Output rows (t, hq) of this lane's rows 2·(lane % 4) + c for the epilogue of one warp per
      // head, computed now, while round 0 is in flight: in the epilogue their integer divisions
      // were part of the last CTA's dependent chain before its stores (v14).
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        const int row = kPair ? (2 * (lane & 3) + c) & 3 : row0 + 2 * (lane & 3) + c;
        ep_t[c] = row / G;
        ep_hq[c] = (kPair ? h + ((lane & 3) >> 1) : hg * hpc + warp) * G + row % G;
      }
    }
    int slot = 0, fill = C::kStages - 1;  // ring slots of round k and of round k + kStages − 1
    int tk = ticket(0), tk_fill = ticket(C::kStages - 1);  // tickets of rounds k, k + kStages − 1
    for (int k = 0;; ++k) {
      if constexpr (!kTma) cp_async_wait<C::kStages - 2>();
      __syncthreads();  // round k visible to every warp (TMA ring: below); slot (k − 1) % kStages free
#ifdef NVFP4KV_DECODE_TRACE
      if (tk >= n_rounds && threadIdx.x == 0 && trace_cta() < kTraceMax) g_trace_rounds[trace_cta()] = k;
#endif
      if (tk >= n_rounds) break;  // uniform: every thread holds the same ticket
#ifdef NVFP4KV_DECODE_TRACE
      if (k == 0) DECODE_TRACE(12);
      if (k == 1) DECODE_TRACE(7);
      if (k == 2) DECODE_TRACE(8);
      if (k == 4) DECODE_TRACE(9);
      if (k == 8) DECODE_TRACE(10);
      if (k == 16) DECODE_TRACE(11);
#endif
      if (tk_fill < n_rounds) issue(tk_fill, fill);
      cp_async_commit();
      int drawn = 0;
      // Ticket k + kStages + 1. Drawn also with fixed round-robin rounds (the counter is not
      // trusted then, and the merge resets it), so that the choice is made after this round's
      // compute, where the atomic's result is read (a select here would wait for it).
      if (kDyn && threadIdx.x == 0) drawn = static_cast<int>(atomicAdd(tick_ctr, 1u));
      const int chunk_start = chunk_start_of(tk);
      if constexpr (kTma) mbar_wait(full_bar + 8 * slot, static_cast<uint32_t>(k / C::kStages) & 1u);
      if (chunk_start < s_end) {
        const uint8_t* stage = ring + slot * C::kStageBytes;
        if constexpr (kNarrow) {
          compute_chunk_narrow(stage, chunk_mask(chunk_start), chunk_start);
        } else {
          compute_chunk(
              [&](int u, int sl, int kv, uint32_t* raw, uint32_t* sc) { read_run<C>(stage, warp, u, sl, kv, raw, sc); },
              chunk_mask(chunk_start), chunk_start);
        }
      }
      if (kDyn) {
        if (threadIdx.x == 0)  // slot of ticket k: read last round
          tickets_s[k % kTk] = rr_fixed ? split + (k + kTk) * p.dyn_first_splits : dyn_base + drawn;
        tk = tickets_s[(k + 1) % kTk];
        tk_fill = tickets_s[(k + C::kStages) % kTk];
      } else {
        tk = k + 1;
        tk_fill = k + C::kStages;
      }
      slot = slot + 1 == C::kStages ? 0 : slot + 1;
      fill = fill + 1 == C::kStages ? 0 : fill + 1;
    }
    cp_async_wait<0>();
  }
  // The KV loop is done: let the merge kernel (or the next kernel) be scheduled as CTAs finish.
  // (Triggering at the start cost batch 1 × 32K 42 → 46.5 µs: the merge's CTAs waited on SMs.)
  DECODE_TRACE(3);
  pdl_trigger();
  // Narrow tile with one warp per head (hpc == kWarps): there is nothing to merge across warps,
  // so each warp normalizes its own rows from registers and stores them (v12: the shared-memory
  // merge, two barriers and the combine pass took 2-4 µs at the end of every CTA, on the critical
  // path of the last one). The same arithmetic as the general path below, so the same bits: with
  // one warp per row its weight is f = 2^(m − m_use) (1, or 0 when the row saw no token) times
  // kUnshift / l, and each output value is 0 + weight · o.
  // Epilogue stores of output row (t, hq): its LSE (log2 units in; natural log when unsplit) and
  // 4 values from `dim` on (× v_scale into the output, or fp32 partials of this split).
  auto store_lse = [&](int t, int hq, float lse2) {
    if (p.num_splits == 1) {
      if (p.lse) p.lse[b * p.lse_stride[0] + t * p.lse_stride[1] + hq * p.lse_stride[2]] = lse2 / kLog2e;
    } else {
      p.partial_lse[(static_cast<int64_t>(b * p.qo_len + t) * p.num_qo_heads + hq) * p.num_splits + split] = lse2;
    }
  };
  auto store4 = [&](int t, int hq, int dim, const float4& acc) {
    if (p.num_splits == 1) {
      // One 8-byte store (out rows and strides are 16-byte aligned, dim % 4 == 0).
      T* dst = static_cast<T*>(p.out) + b * p.out_stride[0] + t * p.out_stride[1] + hq * p.out_stride[2] + dim;
      *reinterpret_cast<uint2*>(dst) =
          make_uint2(pack2<T>(acc.x * v_scale, acc.y * v_scale), pack2<T>(acc.z * v_scale, acc.w * v_scale));
    } else {
      const int64_t prow = (static_cast<int64_t>(b * p.qo_len + t) * p.num_qo_heads + hq) * p.num_splits + split;
      *reinterpret_cast<float4*>(p.partial_out + prow * D + dim) = acc;
    }
  };
  // Narrow tile: a row's l is spread over the 8 lanes with its lane % 4 (g = lane / 4 varies).
  auto sum_l_over_row_lanes = [&](int c) {
    l_run[c] += __shfl_xor_sync(0xFFFFFFFFu, l_run[c], 4);
    l_run[c] += __shfl_xor_sync(0xFFFFFFFFu, l_run[c], 8);
    l_run[c] += __shfl_xor_sync(0xFFFFFFFFu, l_run[c], 16);
  };
  if constexpr (kNarrow) {
    if (kPair || hpc == kWarps) {
      const int g = lane >> 2, qq = lane & 3;
#pragma unroll
      for (int c = 0; c < 2; ++c) sum_l_over_row_lanes(c);
      DECODE_TRACE(4);
      const int tile_rows = min(8, rows - row0);
      // Both rows' weights first (two independent chains), then the stores.
      float wgt[2], lse2[2];
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        const float m = m_run[c];
        const float m_use = m == -INFINITY ? 0.f : m;
        const float f = exp2f(m - m_use);
        const float l = 0.f + l_run[c] * f;
        const float inv = l > 0.f ? kUnshift / l : 0.f;
        wgt[c] = f * inv;
        lse2[c] = l > 0.f ? m + __log2f(l) : -INFINITY;
      }
      DECODE_TRACE(5);
      // The rows leave through the warp's block of the merge area (no warp reads the ring
      // after the loop): lane (g, qq) writes dims 16g … 16g + 15 of its rows 2qq + c (dim 16g +
      // 2mt + j is o[mt][c + 2j]), then each row goes out in one store of the whole warp, lane
      // l dims 4l … 4l + 3, instead of 16-byte pieces 64 bytes apart (decode v19b).
      float* const rows_s = merge_o + warp * 16 * C::kOStride;
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        if ((kPair ? (2 * qq + c) & 3 : 2 * qq + c) >= tile_rows) continue;
        if (g == 0) store_lse(ep_t[c], ep_hq[c], lse2[c]);
#pragma unroll
        for (int q4 = 0; q4 < 4; ++q4) {
          float4 acc;
          acc.x = 0.f + wgt[c] * o[2 * q4][c];
          acc.y = 0.f + wgt[c] * o[2 * q4][c + 2];
          acc.z = 0.f + wgt[c] * o[2 * q4 + 1][c];
          acc.w = 0.f + wgt[c] * o[2 * q4 + 1][c + 2];
          *reinterpret_cast<float4*>(rows_s + (2 * qq + c) * C::kOStride + g * (D / 8) + 4 * q4) = acc;
        }
      }
      __syncwarp();
#pragma unroll
      for (int rs = 0; rs < 8; ++rs) {  // row slot 2qq + c, held by lane qq (g = 0) before
        if ((kPair ? rs & 3 : rs) >= tile_rows) continue;
        const int t = __shfl_sync(0xFFFFFFFFu, rs & 1 ? ep_t[1] : ep_t[0], rs >> 1);
        const int hq = __shfl_sync(0xFFFFFFFFu, rs & 1 ? ep_hq[1] : ep_hq[0], rs >> 1);
        store4(t, hq, 4 * lane, *reinterpret_cast<const float4*>(rows_s + rs * C::kOStride + 4 * lane));
      }
      if (p.done_counters != nullptr) {
        // Merge in the decode kernel (decode_fused_merge): the warp's partial rows are out;
        // count the warp in at its unit's counter (request b, first head h; fused_arrive
        // releases the rows), and the last of the unit's num_splits warps combines them
        // (fused_merge_rows, __ldcg reads after fused_arrive's acquire). It leaves
        // the counter at {0, tag} for the next call and, with dynamic rounds, warp 0's unit
        // resets the CTA's round counter: every CTA of the request and head group has left its
        // KV loop once all of them counted in their warp 0.
        __syncwarp();
        unsigned long long* const done = p.done_counters + 2 * (static_cast<int64_t>(b) * p.num_kv_heads + h);
        int place = 0;
        if (lane == 0) place = fused_arrive(done);
        if (__shfl_sync(0xFFFFFFFFu, place, 0) == p.num_splits - 1) {
          if (lane == 0) {
            constexpr unsigned long long kReset = static_cast<unsigned long long>(kDecodeTicketTag) << 32;
            *done = kReset;
            if (kDyn && warp == 0) *reinterpret_cast<unsigned long long*>(tick_ctr) = kReset;
          }
          const int unit_rows = kPair ? 2 * tile_rows : tile_rows;
          if (unit_rows <= 4) fused_merge_rows<T, D, 4>(p, b, h, tile_rows, unit_rows, v_scale, lane);
          else fused_merge_rows<T, D, 8>(p, b, h, tile_rows, unit_rows, v_scale, lane);
        }
      }
      DECODE_TRACE(6);
      return;
    }
  }
  __syncthreads();  // the merge area overlaps the rings
  DECODE_TRACE(4);

  // Merge the warps: reduce l over the lanes sharing a row, publish (m, l, O) per row, combine.
  if constexpr (kNarrow) {
    const int g = lane >> 2, qq = lane & 3;
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      sum_l_over_row_lanes(c);
      if (g == 0) {
        merge_m[warp * 16 + 2 * qq + c] = m_run[c];
        merge_l[warp * 16 + 2 * qq + c] = l_run[c];
      }
    }
#pragma unroll
    for (int mt = 0; mt < kOTiles; ++mt)
#pragma unroll
      for (int i = 0; i < 4; ++i)
        merge_o[(warp * 16 + 2 * qq + (i & 1)) * C::kOStride + g * (D / 8) + 2 * mt + (i >> 1)] = o[mt][i];
  } else {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      l_run[half] += __shfl_xor_sync(0xFFFFFFFFu, l_run[half], 1);
      l_run[half] += __shfl_xor_sync(0xFFFFFFFFu, l_run[half], 2);
    }
    const int r = lane >> 2, qq = lane & 3;
    if (qq == 0) {
      merge_m[warp * 16 + r] = m_run[0];
      merge_m[warp * 16 + r + 8] = m_run[1];
      merge_l[warp * 16 + r] = l_run[0];
      merge_l[warp * 16 + r + 8] = l_run[1];
    }
#pragma unroll
    for (int e = 0; e < C::kPairs; ++e) {
      if constexpr (kExpTrick<FMT>) {
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const int dim = qq * (D / 4) + run_pos<FMT>(e, c);
          merge_o[(warp * 16 + r) * C::kOStride + dim] = o[e][c];
          merge_o[(warp * 16 + r + 8) * C::kOStride + dim] = o[e][2 + c];
        }
      } else {
        const int dim = qq * (D / 4) + 2 * e;
        *reinterpret_cast<float2*>(merge_o + (warp * 16 + r) * C::kOStride + dim) = make_float2(o[e][0], o[e][1]);
        *reinterpret_cast<float2*>(merge_o + (warp * 16 + r + 8) * C::kOStride + dim) = make_float2(o[e][2], o[e][3]);
      }
    }
  }
  __syncthreads();
  DECODE_TRACE(5);

  // Head hh of the CTA was computed by warps hh, hh + hpc, … (one per chunk residue). First one
  // thread per (head, row) turns the warps' (m, l) into weights 2^(m_w − m) · kUnshift / l and
  // writes the row's LSE; then each thread combines float4 columns of whole rows with
  // independent shared loads (a per-element loop with the weights inline was a chain of
  // dependent shared loads per element: 4-11 µs at the end of every CTA, bench/NOTES.md v10).
  constexpr int kTileRows = kNarrow ? 8 : 16;
  const int tile_rows = min(kTileRows, rows - row0);
  float* const merge_w = merge_l + kWarps * 16;  // [kWarps][16]
  auto out_row = [&](int hh, int r, int* t, int* hq) {
    const int row = row0 + r;
    *t = row / G;
    *hq = (hg * hpc + hh) * G + row % G;
  };
  if (threadIdx.x < hpc * kTileRows) {
    const int hh = threadIdx.x / kTileRows, r = threadIdx.x % kTileRows;
    if (r < tile_rows) {
      float m = -INFINITY;
      for (int w = hh; w < kWarps; w += hpc) m = fmaxf(m, merge_m[w * 16 + r]);
      const float m_use = m == -INFINITY ? 0.f : m;
      float l = 0.f;
      for (int w = hh; w < kWarps; w += hpc) {
        const float f = exp2f(merge_m[w * 16 + r] - m_use);
        merge_w[w * 16 + r] = f;
        l += merge_l[w * 16 + r] * f;
      }
      const float inv = l > 0.f ? kUnshift / l : 0.f;
      for (int w = hh; w < kWarps; w += hpc) merge_w[w * 16 + r] *= inv;
      int t, hq;
      out_row(hh, r, &t, &hq);
      store_lse(t, hq, l > 0.f ? m + __log2f(l) : -INFINITY);
    }
  }
  __syncthreads();
  constexpr int kD4 = D / 4, kRowsPerPass = kThreads / kD4;
  const int d4 = threadIdx.x % kD4;
#pragma unroll 8
  for (int it = 0; it < kWarps * kTileRows / kRowsPerPass; ++it) {
    const int slot = it * kRowsPerPass + threadIdx.x / kD4;  // head slot / kTileRows, row slot % kTileRows
    const int hh = slot / kTileRows, r = slot % kTileRows;
    if (hh >= hpc || r >= tile_rows) continue;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int w = hh; w < kWarps; w += hpc) {
      const float f = merge_w[w * 16 + r];
      const float4 o4 = *reinterpret_cast<const float4*>(merge_o + (w * 16 + r) * C::kOStride + 4 * d4);
      acc.x += f * o4.x, acc.y += f * o4.y, acc.z += f * o4.z, acc.w += f * o4.w;
    }
    int t, hq;
    out_row(hh, r, &t, &hq);
    store4(t, hq, 4 * d4, acc);
  }
  DECODE_TRACE(6);
}

// Combines the splits of one output row: lse = log2 Σ 2^lse_s, out = Σ 2^(lse_s − lse) · O_s.
// Grid (rows, kSlices): CTA (row, slice) writes dims slice·D/kSlices … of the row. Few rows (a
// batch-1 long context: 32 rows × ~100 splits) take kSlices = 4 or 8 so that more CTAs share the
// loads and each thread chains 1/kSlices of the splits (bench/NOTES.md, decode v9: the one-CTA-
// per-row merge took 10.8 µs of a 1 × 32K call at base clock under ncu).
template <typename T, int D, int kSlices>
__global__ void __launch_bounds__(128) merge_kernel(const __grid_constant__ DecodeParams p) {
  // The split weights 2^(lse_s − max) go to shared memory once; thread (g, c) sums float4
  // column c of the splits s ≡ g (mod kGroups), the first kPre of them loaded before the
  // weights are known (their latency overlaps the max / sum reductions), and the kGroups
  // partial sums are added through shared memory.
  constexpr int kCols = D / 4 / kSlices, kGroups = 128 / kCols, kPre = 8;
  static_assert(kCols >= 1 && 128 % kCols == 0, "merge slice");
  __shared__ float w_s[1024];
  __shared__ float red[32];
  __shared__ float4 part[kGroups][kCols];
  const int row = blockIdx.x;  // (b · qo_len + t) · num_qo_heads + hq
  const int slice = blockIdx.y;
  const int hq = row % p.num_qo_heads;
  const int t = (row / p.num_qo_heads) % p.qo_len;
  const int b = row / (p.num_qo_heads * p.qo_len);
  const int n = p.num_splits;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int c = threadIdx.x % kCols, g = threadIdx.x / kCols;
  MERGE_TRACE(0);
  pdl_wait();  // the decode kernel's partial results
  MERGE_TRACE(2);
  pdl_trigger();
  const float v_scale = p.v_scale ? __ldg(p.v_scale) : 1.0f;  // issued now, used at the end
  const float4* o_s = reinterpret_cast<const float4*>(p.partial_out + static_cast<int64_t>(row) * n * D) +
                      slice * kCols + c;
  float4 pre[kPre];
#pragma unroll
  for (int i = 0; i < kPre; ++i) {
    const int s = g + i * kGroups;
    pre[i] = s < n ? __ldcs(o_s + s * (D / 4)) : make_float4(0.f, 0.f, 0.f, 0.f);
  }
  const float* lse_s = p.partial_lse + static_cast<int64_t>(row) * n;
  // Up to 128 splits (nearly every call) each thread holds its split's LSE in a register for
  // both passes below; the loops reloaded it from L2 after the first barrier (v14: a second L2
  // round trip on the path from the decode grid's end to the output).
  const float lse_own = threadIdx.x < n ? lse_s[threadIdx.x] : -INFINITY;
  float m = lse_own;
  for (int s = threadIdx.x + 128; s < n; s += 128) m = fmaxf(m, lse_s[s]);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xFFFFFFFFu, m, o));
  if (lane == 0) red[warp] = m;
  __syncthreads();
  m = fmaxf(fmaxf(red[0], red[1]), fmaxf(red[2], red[3]));
  const float m_use = m == -INFINITY ? 0.f : m;
  float l = 0.f;
  if (threadIdx.x < n) {
    const float w = exp2f(lse_own - m_use);
    w_s[threadIdx.x] = w;
    l += w;
  }
  for (int s = threadIdx.x + 128; s < n; s += 128) {
    const float w = exp2f(lse_s[s] - m_use);
    w_s[s] = w;
    l += w;
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) l += __shfl_xor_sync(0xFFFFFFFFu, l, o);
  __syncthreads();  // red[] reads above are done; w_s complete
  if (lane == 0) red[8 + warp] = l;
  __syncthreads();
  l = red[8] + red[9] + red[10] + red[11];
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
  for (int i = 0; i < kPre; ++i) {
    const int s = g + i * kGroups;
    const float w = s < n ? w_s[s] : 0.f;
    acc.x += w * pre[i].x, acc.y += w * pre[i].y, acc.z += w * pre[i].z, acc.w += w * pre[i].w;
  }
  // Unrolled so that several splits' loads are in flight (the loop is otherwise one L2 latency
  // per split: 8.4 µs for 99 splits at batch 1 × 32K under ncu).
#pragma unroll 8
  for (int s = g + kPre * kGroups; s < n; s += kGroups) {
    const float w = w_s[s];
    const float4 v = __ldcs(o_s + s * (D / 4));
    acc.x += w * v.x, acc.y += w * v.y, acc.z += w * v.z, acc.w += w * v.w;
  }
  part[g][c] = acc;
  __syncthreads();
  T* dst = static_cast<T*>(p.out) + b * p.out_stride[0] + t * p.out_stride[1] + hq * p.out_stride[2] + slice * (D / kSlices);
  for (int d = threadIdx.x; d < D / kSlices; d += 128) {
    float sum = 0.f;
#pragma unroll
    for (int gg = 0; gg < kGroups; ++gg) sum += reinterpret_cast<const float*>(&part[gg][d / 4])[d % 4];
    dst[d] = from_float<T>(l > 0.f ? sum / l * v_scale : 0.f);
  }
  if (threadIdx.x == 0 && slice == 0 && p.lse)
    p.lse[b * p.lse_stride[0] + t * p.lse_stride[1] + hq * p.lse_stride[2]] =
        l > 0.f ? (m + log2f(l)) / kLog2e : -INFINITY;
  // Dynamic rounds: every CTA of the decode grid has drawn its last ticket (this grid waited
  // for it), so reset the request's counters to {0, kDecodeTicketTag} for the next call (the
  // decode kernel's "Round counters"): one counter per (request, head group) (narrow tile: one
  // row tile), by the CTA of the group's first query head, first query, first slice. At the end,
  // where b, t and hq are at hand: placed after pdl_wait it put their integer divisions before
  // the split loads (v13: batch-1 shapes measured +1 to +4.6 % against the session-6 binary
  // with it there, within ±1 % after the move).
  if (p.round_tickets != nullptr && threadIdx.x == 0 && slice == 0 && t == 0) {
    const int group_heads = p.group_size * p.heads_per_cta;
    if (hq % group_heads == 0)
      p.round_tickets[2 * (static_cast<int64_t>(b) * (p.num_kv_heads / p.heads_per_cta) + hq / group_heads)] =
          static_cast<unsigned long long>(kDecodeTicketTag) << 32;
  }
  MERGE_TRACE(1);
}

Status cuda_status(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return Status();
  return Status(StatusCode::kCudaError, std::string(what) + ": " + cudaGetErrorString(e));
}

// Whether `p` runs the narrow tile, and whether this instantiation has one.
template <int D, int FMT>
inline constexpr bool kHasNarrow = (FMT == kFmtNvfp4 || FMT == kFmtFP8) && D == 128;

// L2 fetch size of the TMA ring's data copies (an experiment knob): CUtensorMapL2promotion, 2 = 128 B.
#ifndef NVFP4KV_DECODE_TMA_L2
#define NVFP4KV_DECODE_TMA_L2 2
#endif

// Whether this instantiation has a TMA-ring build (decode v22).
template <int D, int FMT, bool kNarrow, bool kPair>
inline constexpr bool kHasTma = FMT == kFmtNvfp4 && D == 128 && kNarrow;

// The TMA ring's tensor maps for `p` (nvfp4 narrow tile of 4 heads per CTA or paired, dynamic
// rounds), or false where
// the views do not have the form it reads: each head's 64-byte data rows (8-byte scale rows)
// adjacent in a token row (NHD), strides that nest (token row ≤ token stride, page ≤ page
// stride) in multiples of 16 bytes, 16-byte aligned bases, pages of a multiple of 16 tokens and
// no window (every ring round then starts on a 16-token block of one page).
bool decode_tma_maps(const DecodeParams& p, DecodeTmaMaps* m) {
  const int hpc = p.heads_per_cta;  // 4, or 8: the paired tile (one box per head pair)
  if (p.tma == 0 || (hpc != 4 && hpc != 8) || p.window_left >= 0 || p.page_size % 16 != 0 ||
      p.num_kv_heads % hpc != 0)
    return false;
  const int64_t nh = p.num_kv_heads;
  auto fits = [&](const void* base, const KvStrides& s, int64_t row) {
    return reinterpret_cast<uintptr_t>(base) % 16 == 0 && s.head == row && s.token % 16 == 0 &&
           s.token >= nh * row && s.page % 16 == 0 && s.page >= s.token * p.page_size && s.page < (int64_t{1} << 40);
  };
  if (!fits(p.k_data, p.k_data_strides, 64) || !fits(p.v_data, p.v_data_strides, 64) ||
      !fits(p.k_scales, p.k_scale_strides, 8) || !fits(p.v_scales, p.v_scale_strides, 8))
    return false;
  auto data_map = [&](CUtensorMap* map, const void* base, const KvStrides& s) {
    const cuuint64_t dims[4] = {128, static_cast<cuuint64_t>(nh / 2), static_cast<cuuint64_t>(p.page_size),
                                static_cast<cuuint64_t>(p.num_pages)};
    const cuuint64_t strides[3] = {128, static_cast<cuuint64_t>(s.token), static_cast<cuuint64_t>(s.page)};
    const cuuint32_t box[4] = {128, hpc == 8 ? 1u : 2u, 16, 1};
    return encode_byte_map(map, base, 4, dims, strides, box, CU_TENSOR_MAP_SWIZZLE_128B,
                           static_cast<CUtensorMapL2promotion>(NVFP4KV_DECODE_TMA_L2));
  };
  auto scale_map = [&](CUtensorMap* map, const void* base, const KvStrides& s) {
    const cuuint64_t dims[3] = {static_cast<cuuint64_t>(nh * 8), static_cast<cuuint64_t>(p.page_size),
                                static_cast<cuuint64_t>(p.num_pages)};
    const cuuint64_t strides[2] = {static_cast<cuuint64_t>(s.token), static_cast<cuuint64_t>(s.page)};
    const cuuint32_t box[3] = {static_cast<cuuint32_t>(hpc * 8), 16, 1};
    return encode_byte_map(map, base, 3, dims, strides, box, CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_L2_PROMOTION_NONE);
  };
  return data_map(&m->kd, p.k_data, p.k_data_strides) && data_map(&m->vd, p.v_data, p.v_data_strides) &&
         scale_map(&m->ks, p.k_scales, p.k_scale_strides) && scale_map(&m->vs, p.v_scales, p.v_scale_strides);
}

template <typename T, int D, int FMT, bool kNarrow, bool kPair = false>
Status launch_kernel(const DecodeParams& params, Stream stream) {
  using C = Config<T, D, FMT, kNarrow, kPair>;
  // Dynamic rounds (narrow tile) stage the request's whole page table: only where that keeps
  // the kernel's CTAs per SM (228 KB of shared memory, 1 KB reserved per CTA).
  DecodeParams p = params;
  constexpr int kSmemPerSm = 228 * 1024, kCtas = kMinCtas<D, FMT, kNarrow>;
  const int dyn_pages = p.max_pages + 1;
  const bool dyn = kNarrow && p.round_tickets != nullptr && p.num_splits > 1 &&
                   dyn_pages <= kDecodeMaxDynamicPages && kCtas * (C::smem_bytes(dyn_pages) + 1024) <= kSmemPerSm;
  if (!dyn) p.round_tickets = nullptr;
  // The merge in the decode kernel needs the one-warp-per-unit narrow epilogue.
  // (fused_merge_rows indexes the partial rows in 32 bits, in float4 units.)
  if (!(kNarrow && (kPair || p.heads_per_cta == kWarps) && p.num_splits > 1 &&
        p.num_splits <= kDecodeFusedMergeLimit &&
        static_cast<int64_t>(p.batch) * p.qo_len * p.num_qo_heads * p.num_splits * (D / 4) < (int64_t{1} << 31)))
    p.done_counters = nullptr;
  auto kernel = dyn ? decode_kernel<T, D, FMT, kNarrow, kNarrow, kPair> : decode_kernel<T, D, FMT, kNarrow, false, kPair>;
  const int split_pages = dyn ? dyn_pages : static_cast<int>(decode_split_pages(p.max_pages, p.page_size, p.num_splits));
  int smem = C::smem_bytes(split_pages);
  DecodeTmaMaps maps{};
  if constexpr (kHasTma<D, FMT, kNarrow, kPair>) {
    // The TMA ring: 1056 more bytes (the 1024-byte alignment and the mbarriers).
    if (dyn && kCtas * (smem + 1056 + 1024) <= kSmemPerSm && decode_tma_maps(p, &maps)) {
      kernel = decode_kernel<T, D, FMT, kNarrow, true, kPair, true>;
      smem += 1056;
      static const bool verbose = std::getenv("NVFP4KV_DECODE_TMA_VERBOSE") != nullptr;
      if (verbose) std::fprintf(stderr, "decode: TMA ring (batch %d, kv heads %d, page %d, splits %d)\n", p.batch, p.num_kv_heads, p.page_size, p.num_splits);
    }
  }
  // Opt in to more than 48 KB of dynamic shared memory (a host-side attribute, not a stream
  // operation, so it is allowed while a graph is being captured; cheap enough per launch).
  if (smem > 48 * 1024) {
    const cudaError_t attr = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (attr != cudaSuccess) return cuda_status(attr, "cudaFuncSetAttribute(decode_kernel)");
  }
  const int m_tiles = (p.group_size * p.qo_len + 15) / 16;
  if (kNarrow && p.group_size * p.qo_len > 8)
    return Status(StatusCode::kInvalidArgument, "decode: the narrow tile takes at most 8 query rows per kv head");
  if (kPair && p.group_size * p.qo_len > 4)
    return Status(StatusCode::kInvalidArgument, "decode: the paired tile takes at most 4 query rows per kv head");
  const int hpc = C::kDirect ? 1 : p.heads_per_cta;
  if (kPair ? hpc != 2 * kWarps || p.num_kv_heads % hpc != 0
            : hpc < 1 || hpc > kWarps || kWarps % hpc != 0 || p.num_kv_heads % hpc != 0)
    return Status(StatusCode::kInvalidArgument, "decode: heads_per_cta must divide 4 (8: paired tile) and num_kv_heads");
  const dim3 grid = dyn ? dim3((p.num_kv_heads / hpc) * m_tiles, p.batch, p.num_splits)
                       : dim3(p.num_splits, (p.num_kv_heads / hpc) * m_tiles, p.batch);
  // Dynamic rounds need a merge (the merge kernel or the fused one resets the round counters)
  // and one row tile per head group (the counter index).
  if (dyn && (p.num_splits < 2 || m_tiles != 1))
    return Status(StatusCode::kInternal, "decode: dynamic rounds without a merge or with several row tiles");
  if (cudaError_t e = launch_pdl(kernel, grid, dim3(kThreads), smem, reinterpret_cast<cudaStream_t>(stream), p,
                                  make_fastdiv(static_cast<uint32_t>(p.page_size)), split_pages, maps);
      e != cudaSuccess)
    return cuda_status(e, "decode_kernel launch");
  if (p.num_splits > 1 && p.done_counters == nullptr) {
    // Fewer output rows than ~one per SM (batch-1 long contexts): 4 CTAs per row; 8 below 64 rows
    // when 4 would leave a thread more splits than it preloads (kPre = 8 per column group:
    // 8 · 128 / (D / 16) splits; v14: 1 × 16K and 1 × 32K, 32 rows × 189 splits, −1.3 … −4 %;
    // at 1 × 8K, 128 splits, 8 slices only added CTAs: +1.5-2.1 %).
    const int merge_rows = p.batch * p.qo_len * p.num_qo_heads;
    const int preload4 = 8 * 128 / (D / 16);
    const int slices = merge_rows < 128 ? (merge_rows < 64 && p.num_splits > preload4 ? 8 : 4) : 1;
    const cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
    if (cudaError_t e = slices == 8   ? launch_pdl(merge_kernel<T, D, 8>, dim3(merge_rows, 8), dim3(128), 0, st, p)
                        : slices == 4 ? launch_pdl(merge_kernel<T, D, 4>, dim3(merge_rows, 4), dim3(128), 0, st, p)
                                      : launch_pdl(merge_kernel<T, D, 1>, dim3(merge_rows, 1), dim3(128), 0, st, p);
        e != cudaSuccess)
      return cuda_status(e, "merge_kernel launch");
  }
  return Status();
}

template <int D, int FMT>
inline constexpr bool kHasPair = FMT == kFmtNvfp4 && D == 128;

template <typename T, int D, int FMT>
Status launch_typed(const DecodeParams& p, Stream stream) {
  if constexpr (kHasNarrow<D, FMT>) {
    if constexpr (kHasPair<D, FMT>) {
      if (p.narrow && p.heads_per_cta == 2 * kWarps) return launch_kernel<T, D, FMT, true, true>(p, stream);
    }
    if (p.narrow) return launch_kernel<T, D, FMT, true>(p, stream);
  }
  return launch_kernel<T, D, FMT, false>(p, stream);
}

template <typename T, int D, int FMT, bool kNarrow, bool kPair = false>
int64_t resident_query() {
  using C = Config<T, D, FMT, kNarrow, kPair>;
  // Occupancy at a typical page-table staging (256 pages = 1 KB; a split of a long context);
  // the largest (kDecodeMaxSplitPages, 8 KB) would cost the nvfp4 ring a third CTA per SM in
  // the estimate although real splits stage far fewer. The launch sizes its own smem.
  const int smem = C::smem_bytes(256);
  const int smem_max = C::smem_bytes(static_cast<int>(kDecodeMaxSplitPages));
  // The narrow tile's two builds (fixed slices, dynamic rounds) differ in registers: the fewer
  // CTAs of the two (the paired tile's dynamic build took 146 registers, its fixed one 128:
  // asked for the fixed build alone, the split rule planned 4 CTAs per SM where 3 ran, 1.33
  // waves: +13 % at 16 × 8K, +33 % at 16 × 1K).
  int per_sm = INT_MAX;
  auto kernels = {decode_kernel<T, D, FMT, kNarrow, false, kPair>, decode_kernel<T, D, FMT, kNarrow, kNarrow, kPair>,
                  kHasTma<D, FMT, kNarrow, kPair> ? decode_kernel<T, D, FMT, kNarrow, kNarrow, kPair, kHasTma<D, FMT, kNarrow, kPair>>
                                                  : decode_kernel<T, D, FMT, kNarrow, kNarrow, kPair>};
  for (auto kernel : kernels) {
    if (smem_max > 48 * 1024 &&
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_max) != cudaSuccess)
      return 0;
    int n = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, kThreads, smem) != cudaSuccess) return 0;
    per_sm = std::min(per_sm, n);
  }
  return static_cast<int64_t>(per_sm) * current_device_sm_count();
}

// Cached per kernel (the occupancy query costs host time on every decode call otherwise).
template <typename T, int D, int FMT, bool kNarrow, bool kPair = false>
int64_t resident_kernel() {
  static const int64_t resident = resident_query<T, D, FMT, kNarrow, kPair>();
  return resident;
}

template <typename T, int D, int FMT>
int64_t resident_typed(const DecodeParams& p) {
  if constexpr (kHasNarrow<D, FMT>) {
    if constexpr (kHasPair<D, FMT>) {
      if (p.narrow && p.heads_per_cta == 2 * kWarps) return resident_kernel<T, D, FMT, true, true>();
    }
    if (p.narrow) return resident_kernel<T, D, FMT, true>();
  }
  return resident_kernel<T, D, FMT, false>();
}

template <typename T, int D>
int64_t resident_format(const DecodeParams& p) {
  switch (p.format) {
    case kFmtBF16:
      if constexpr (std::is_same_v<T, __nv_bfloat16>) return resident_typed<T, D, kFmtBF16>(p);
      break;
    case kFmtF16:
      if constexpr (std::is_same_v<T, __half>) return resident_typed<T, D, kFmtF16>(p);
      break;
    case kFmtFP8: return resident_typed<T, D, kFmtFP8>(p);
    case kFmtNvfp4: return resident_typed<T, D, kFmtNvfp4>(p);
    case kFmtFp4Block16: return resident_typed<T, D, kFmtFp4Block16>(p);
    default: break;
  }
  return 0;
}

template <typename T>
int64_t resident_dtype(const DecodeParams& p) {
  switch (p.head_dim) {
    case 64: return resident_format<T, 64>(p);
    case 128: return resident_format<T, 128>(p);
    case 256: return resident_format<T, 256>(p);
    default: return 0;
  }
}

template <typename T, int D>
Status launch_format(const DecodeParams& p, Stream stream) {
  switch (p.format) {
    case kFmtBF16:
      if constexpr (std::is_same_v<T, __nv_bfloat16>) return launch_typed<T, D, kFmtBF16>(p, stream);
      break;
    case kFmtF16:
      if constexpr (std::is_same_v<T, __half>) return launch_typed<T, D, kFmtF16>(p, stream);
      break;
    case kFmtFP8: return launch_typed<T, D, kFmtFP8>(p, stream);
    case kFmtNvfp4: return launch_typed<T, D, kFmtNvfp4>(p, stream);
    case kFmtFp4Block16: return launch_typed<T, D, kFmtFp4Block16>(p, stream);
    default: break;
  }
  return Status(StatusCode::kUnsupported, "decode: unsupported cache format / query dtype pair");
}

template <typename T>
Status launch_dtype(const DecodeParams& p, Stream stream) {
  switch (p.head_dim) {
    case 64: return launch_format<T, 64>(p, stream);
    case 128: return launch_format<T, 128>(p, stream);
    case 256: return launch_format<T, 256>(p, stream);
    default: return Status(StatusCode::kUnsupported, "decode: head_dim must be 64, 128 or 256");
  }
}

}  // namespace

int64_t decode_resident_ctas(const DecodeParams& p) {
  return p.q_is_f16 ? resident_dtype<__half>(p) : resident_dtype<__nv_bfloat16>(p);
}

int current_device_sm_count() {
  int dev = 0, sms = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return 0;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) return 0;
  return sms;
}

#ifdef NVFP4KV_DECODE_TRACE
void decode_trace_reset() {
  static unsigned long long zero[kTraceMax][13];
  static unsigned long long zm[kTraceMax][3];
  cudaMemcpyToSymbol(g_trace, zero, sizeof(zero));
  cudaMemcpyToSymbol(g_trace_merge, zm, sizeof(zm));
  static int zr[kTraceMax];
  cudaMemcpyToSymbol(g_trace_rounds, zr, sizeof(zr));
}

void decode_trace_report(const char* label) {
  static unsigned long long t[kTraceMax][13];
  static unsigned long long mg[kTraceMax][3];
  static unsigned int sm[kTraceMax];
  cudaDeviceSynchronize();
  cudaMemcpyFromSymbol(t, g_trace, sizeof(t));
  cudaMemcpyFromSymbol(mg, g_trace_merge, sizeof(mg));
  cudaMemcpyFromSymbol(sm, g_trace_sm, sizeof(sm));
  int n = 0;
  while (n < kTraceMax && t[n][0] != 0) ++n;
  if (n == 0) { std::printf("trace %s: no CTAs recorded\n", label); return; }
  unsigned long long t0 = t[0][1];
  for (int i = 0; i < n; ++i) t0 = std::min(t0, t[i][1]);
  auto pct = [&](std::vector<double> v, double q) { std::sort(v.begin(), v.end()); return v[static_cast<size_t>(q * (v.size() - 1))]; };
  auto row = [&](const char* what, std::vector<double> v) {
    std::printf("trace %s: %-22s min %8.2f p10 %8.2f p50 %8.2f p90 %8.2f max %8.2f us\n", label, what, pct(v, 0), pct(v, .1),
                pct(v, .5), pct(v, .9), pct(v, 1));
  };
  std::vector<double> e0, e1, e2, e3, e4, d_pro, d_loop, d_epi, d_sync, d_smem, d_out;
  for (int i = 0; i < n; ++i) {
    auto r = [&](int k) { return (static_cast<double>(t[i][k]) - static_cast<double>(t0)) * 1e-3; };
    e0.push_back(r(0)), e1.push_back(r(1)), e2.push_back(r(2)), e3.push_back(r(3)), e4.push_back(r(6));
    d_pro.push_back(r(2) - r(1)), d_loop.push_back(r(3) - r(2)), d_epi.push_back(r(6) - r(3));
    d_sync.push_back(r(4) - r(3)), d_smem.push_back(r(5) - r(4)), d_out.push_back(r(6) - r(5));
  }
  std::printf("trace %s: %d CTAs, t=0 at the first pdl_wait return\n", label, n);
  row("entry", e0);
  row("after pdl_wait", e1);
  row("KV loop start", e2);
  row("KV loop end", e3);
  row("exit", e4);
  row("prologue (dur)", d_pro);
  row("KV loop (dur)", d_loop);
  row("epilogue (dur)", d_epi);
  row(" epi: trigger+sync", d_sync);
  row(" epi: warp merge smem", d_smem);
  row(" epi: combine+store", d_out);
  // Ramp: mean time from the KV-loop start to the barrier of rounds 1, 2, 4, 8, 16.
  // Point 12: round 0's data landed (after the first wait + barrier); 7..11: rounds 1, 2, 4, 8, 16.
  std::printf("trace %s: ramp (mean us from loop start to round k):", label);
  const int points[6] = {12, 7, 8, 9, 10, 11};
  const char* names[6] = {"round 0 landed", "k1", "k2", "k4", "k8", "k16"};
  for (int j = 0; j < 6; ++j) {
    double sum = 0;
    int c = 0;
    for (int i = 0; i < n; ++i)
      if (t[i][points[j]] != 0) sum += (static_cast<double>(t[i][points[j]]) - static_cast<double>(t[i][2])) * 1e-3, ++c;
    if (c > 0) std::printf(" %s %.2f (%d CTAs)", names[j], sum / c, c);
  }
  std::printf("\n");
  int nm = 0;
  while (nm < kTraceMax && mg[nm][0] != 0) ++nm;
  if (nm > 0) {
    std::vector<double> m0, m1, m2;
    for (int i = 0; i < nm; ++i)
      m0.push_back((static_cast<double>(mg[i][0]) - t0) * 1e-3), m1.push_back((static_cast<double>(mg[i][1]) - t0) * 1e-3),
          m2.push_back((static_cast<double>(mg[i][2]) - t0) * 1e-3);
    std::printf("trace %s: merge %d CTAs\n", label, nm);
    row("merge entry", m0);
    row("merge after wait", m2);
    row("merge exit", m1);
  }
  // CTAs per SM and the last-ending SM's load.
  std::vector<int> per_sm(1024, 0);
  for (int i = 0; i < n; ++i) per_sm[sm[i] & 1023]++;
  int smax = 0, smin = 1 << 30, used = 0;
  for (int c : per_sm) if (c > 0) { smax = std::max(smax, c); smin = std::min(smin, c); ++used; }
  std::printf("trace %s: %d SMs used, CTAs per SM %d..%d\n", label, used, smin, smax);
  // Per SM: CTAs, mean KV-loop duration and last loop end (first wave: entry before 5 us).
  std::vector<double> dsum(1024, 0.0), lend(1024, 0.0);
  std::vector<int> cnt(1024, 0);
  for (int i = 0; i < n; ++i) {
    const int m = sm[i] & 1023;
    if (e1[i] > 5.0) continue;
    ++cnt[m];
    dsum[m] += d_loop[i];
    lend[m] = std::max(lend[m], e3[i]);
  }
  std::printf("trace %s: per SM (sm:ctas:mean loop us:last loop end us)", label);
  for (int m = 0; m < 1024; ++m)
    if (cnt[m] > 0) std::printf(" %d:%d:%.0f:%.0f", m, cnt[m], dsum[m] / cnt[m], lend[m]);
  std::printf("\n");
  // The end of the KV loops as lost throughput: CTA i computed rounds[i] ring rounds between its
  // loop start and end; taken as a constant rate r_i over that time, the grid's rate is A(t) =
  // Σ r_i over the CTAs in their loops. "Steady" is the median of A over the middle half of the
  // call; the tail loses ∫ (1 − A / steady) dt from the first loop end to the last.
  static int rounds[kTraceMax];
  cudaMemcpyFromSymbol(rounds, g_trace_rounds, sizeof(rounds));
  std::vector<double> rate(n);
  double t_lo = 1e30, t_hi = 0;
  for (int i = 0; i < n; ++i) {
    rate[i] = e3[i] > e2[i] ? rounds[i] / (e3[i] - e2[i]) : 0.0;
    t_lo = std::min(t_lo, e3[i]);
    t_hi = std::max(t_hi, e3[i]);
  }
  auto grid_rate = [&](double x) {
    double a = 0;
    for (int i = 0; i < n; ++i)
      if (e2[i] <= x && x < e3[i]) a += rate[i];
    return a;
  };
  std::vector<double> mid;
  for (double x = t_hi * 0.25; x < t_hi * 0.75; x += t_hi / 200) mid.push_back(grid_rate(x));
  const double steady = mid.empty() ? 0.0 : pct(mid, 0.5);
  double lost = 0;
  const double dx = 0.02;
  for (double x = t_lo; x < t_hi; x += dx) lost += steady > 0 ? (1.0 - std::min(1.0, grid_rate(x) / steady)) * dx : 0.0;
  std::printf("trace %s: grid rate (rounds/us) steady %.1f; tail from %.1f to %.1f us loses %.2f us;", label, steady, t_lo,
              t_hi, lost);
  for (double q : {0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 1.0}) {
    const double x = t_lo + q * (t_hi - t_lo) - (q == 1.0 ? 1e-6 : 0.0);
    std::printf(" A(%.1f) %.0f%%", x, steady > 0 ? 100.0 * grid_rate(x) / steady : 0.0);
  }
  std::printf("\n");
}
#endif

Status launch_decode(const DecodeParams& p, Stream stream) {
  if (p.batch == 0) return Status();
  return p.q_is_f16 ? launch_dtype<__half>(p, stream) : launch_dtype<__nv_bfloat16>(p, stream);
}

// Device time per call, as an engine runs its decode step: CUDA graphs of kCalls × (L2 flush by
// reading 2 × L2, decode) and of kCalls × flush alone, each replayed runs + 1 times (the first
// warms up); median difference / kCalls. Host-side API work is not in the figure.
Status time_decode(const DecodeParams& p, Stream stream, int runs, float* median_us) {
  constexpr int kCalls = 10;
  cudaStream_t user = reinterpret_cast<cudaStream_t>(stream);
  int dev = 0, l2 = 0;
  NVFP4KV_RETURN_IF_ERROR(cuda_status(cudaGetDevice(&dev), "cudaGetDevice"));
  NVFP4KV_RETURN_IF_ERROR(cuda_status(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev), "L2 size"));
  const size_t scratch_bytes = std::max<size_t>(2 * static_cast<size_t>(l2), 64u << 20);
  void* scratch = nullptr;
  NVFP4KV_RETURN_IF_ERROR(cuda_status(cudaMalloc(&scratch, scratch_bytes), "cudaMalloc(L2 scratch)"));
  cudaStream_t st = nullptr;
  Status status = cuda_status(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking), "cudaStreamCreate");
  cudaGraphExec_t exec[2] = {nullptr, nullptr};
  cudaEvent_t e0 = nullptr, e1 = nullptr;
  if (status.ok()) status = cuda_status(cudaMemsetAsync(scratch, 0x5A, scratch_bytes, user), "cudaMemsetAsync");
  if (status.ok()) status = cuda_status(cudaStreamSynchronize(user), "cudaStreamSynchronize");
  if (status.ok()) status = launch_decode(p, reinterpret_cast<Stream>(st));  // warm-up, outside the graphs
  if (status.ok()) status = cuda_status(cudaStreamSynchronize(st), "cudaStreamSynchronize");
  for (int g = 0; g < 2 && status.ok(); ++g) {
    status = cuda_status(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
    for (int i = 0; i < kCalls && status.ok(); ++i) {
      status = flush_l2_by_reading(scratch, scratch_bytes, reinterpret_cast<Stream>(st));
      if (g == 0 && status.ok()) status = launch_decode(p, reinterpret_cast<Stream>(st));
    }
    cudaGraph_t graph = nullptr;
    const Status end = cuda_status(cudaStreamEndCapture(st, &graph), "cudaStreamEndCapture");
    if (status.ok()) status = end;
    if (status.ok()) status = cuda_status(cudaGraphInstantiate(&exec[g], graph, 0), "cudaGraphInstantiate");
    if (graph != nullptr) (void)cudaGraphDestroy(graph);
  }
  std::vector<float> ms[2];
  if (status.ok()) {
    status = cuda_status(cudaEventCreate(&e0), "cudaEventCreate");
    if (status.ok()) status = cuda_status(cudaEventCreate(&e1), "cudaEventCreate");
    for (int r = 0; r < runs + 1 && status.ok(); ++r)
      for (int g = 0; g < 2 && status.ok(); ++g) {
        status = cuda_status(cudaEventRecord(e0, st), "cudaEventRecord");
        if (status.ok()) status = cuda_status(cudaGraphLaunch(exec[g], st), "cudaGraphLaunch");
        if (status.ok()) status = cuda_status(cudaEventRecord(e1, st), "cudaEventRecord");
        if (status.ok()) status = cuda_status(cudaEventSynchronize(e1), "cudaEventSynchronize");
        float t = 0;
        if (status.ok()) status = cuda_status(cudaEventElapsedTime(&t, e0, e1), "cudaEventElapsedTime");
        if (r > 0) ms[g].push_back(t);
      }
  }
  for (cudaGraphExec_t e : exec)
    if (e != nullptr) (void)cudaGraphExecDestroy(e);
  if (e0 != nullptr) (void)cudaEventDestroy(e0);
  if (e1 != nullptr) (void)cudaEventDestroy(e1);
  if (st != nullptr) (void)cudaStreamDestroy(st);
  (void)cudaFree(scratch);
  if (!status.ok()) return status;
  std::sort(ms[0].begin(), ms[0].end());
  std::sort(ms[1].begin(), ms[1].end());
  *median_us = 1000.f * (ms[0][ms[0].size() / 2] - ms[1][ms[1].size() / 2]) / kCalls;
  return Status();
}

Status measure_copy_tbps(std::size_t bytes, double* tbps) {
  void *a = nullptr, *b = nullptr;
  NVFP4KV_RETURN_IF_ERROR(cuda_status(cudaMalloc(&a, bytes), "cudaMalloc"));
  Status st = cuda_status(cudaMalloc(&b, bytes), "cudaMalloc");
  cudaEvent_t e0 = nullptr, e1 = nullptr;
  std::vector<float> ms;
  if (st.ok()) {
    cudaMemset(a, 1, bytes);
    cudaMemset(b, 2, bytes);
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    for (int i = 0; i < 23 && st.ok(); ++i) {
      cudaEventRecord(e0);
      cudaMemcpyAsync(i % 2 ? a : b, i % 2 ? b : a, bytes, cudaMemcpyDeviceToDevice);
      cudaEventRecord(e1);
      st = cuda_status(cudaEventSynchronize(e1), "copy");
      float t = 0;
      cudaEventElapsedTime(&t, e0, e1);
      if (i >= 3) ms.push_back(t);
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
  }
  cudaFree(a);
  cudaFree(b);
  if (!st.ok()) return st;
  std::sort(ms.begin(), ms.end());
  *tbps = 2.0 * static_cast<double>(bytes) / (ms[ms.size() / 2] * 1e-3) / 1e12;
  return Status();
}

}  // namespace nvfp4kv::cuda
