// Partial attention on tensor cores (mma.sync m16n8k16, sm_80+): one thread
// block runs one work item, i.e. up to row_tile query rows of one GQA group
// against a run of paged KV tokens, and writes one normalised partial state
// per row (or the output row itself for a direct item). The persistent form
// (S::kPersistent) runs a queue of items per block and the fused merge.
//
// Warps are arranged per item as kRowWarps x kKvWarps (kWarps in all): each
// warp owns 16 query rows and a 1/kKvWarps slice of every KV tile. Wide
// items (many rows sharing a prefix) use all warps along rows: a GEMM-shaped
// block. Narrow items (one request's GQA group, 1-8 rows) use all warps along
// the tokens: every warp streams its own part of the KV, and the warps'
// states are combined once at the end. The row tile of an item picks the
// arrangement (row_tile = 16 * kRowWarps), so one kernel serves both shapes.
// A head pack (narrow items of short KV: tree leaves) runs up to kWarps KV
// heads of one request at once, one per warp, each warp a 16-token slice of
// every stage: one block start-up for several heads, no combine.
//
// Per KV tile, per warp (registers only):
//   S = Q K^T            Q fragments (registers for D <= 128, else ldmatrix),
//                        K through ldmatrix from the swizzled stage;
//   online softmax       m, l per row, in the log2 domain (exp2);
//   O = alpha O + P V    P packed from S's accumulators, V through ldmatrix.trans.
// K and V tiles arrive through a STAGES-deep cp.async gather over the page
// table (16-byte chunks, any page size).
#pragma once

#include "../common/device_common.cuh"
#include "../common/item_queue.cuh"
#include "../common/kernel_abi.cuh"
#include "../common/kernel_layouts.cuh"
#include "../common/paged_kv.cuh"
#include "../common/register_softmax.cuh"
#include "tensor_core.cuh"

namespace canopy_dev {

/// threadIdx.x. The persistent kernel reads it where it is used, through asm
/// volatile: it runs many items per block, and values derived from a plain
/// threadIdx.x are hoisted out of the item loop and kept live across it,
/// which the register caps cannot afford (the wide kernel at D = 64 spilled
/// them). The plain kernel runs one item, where that hoisting is what it
/// wants (perf-notes v2.3: the volatile form costs it up to 20% more
/// instructions).
template <class S>
__device__ __forceinline__ int thread_index() {
  if constexpr (S::kPersistent) {
    int t;
    asm volatile("mov.u32 %0, %%tid.x;\n" : "=r"(t));
    return t;
  } else {
    return static_cast<int>(threadIdx.x);
  }
}

/// Compile-time facts of the specialization.
template <class S>
struct MmaTraits {
  static constexpr int kD = S::kHeadDim;
  static constexpr int kChunks = kD / 8;    // 16-byte chunks per row
  static constexpr int kKSteps = kD / 16;   // k16 steps of Q K^T
  static constexpr int kDimTiles = kD / 8;  // n8 tiles of O
  static constexpr bool kQInRegisters = kD <= 128;
  // Head packs (several short narrow items per block) pay off where items are
  // small; at D = 256 the extra code path would cost registers (spills).
  static constexpr bool kHeadPacks = kD <= 128;
  static constexpr canopy_abi::MmaSmemLayout kSmem =
      canopy_abi::mma_smem_layout(kD, S::kTileQ, S::kTileKV, S::kWarps, S::kStages);
  static constexpr int kTileElems = S::kTileKV * kD;
  static constexpr int kCombineStride = canopy_abi::mma_combine_row_floats(kD);
  static constexpr bool kCombineFits =
      canopy_abi::mma_combine_fits(kD, S::kTileKV, S::kWarps, S::kStages);
};

/// One arrangement of the block's warps for an item: kRowWarps x kKvWarps
/// warps, each owning kMTiles x 16 query rows (two m16 tiles reuse every K
/// and V fragment twice: the wide, tensor-bound arrangement).
template <class S, int kRowWarpsT, int kMTilesT = 1>
struct WarpRole {
  static constexpr int kRowWarps = kRowWarpsT;
  static constexpr int kMTiles = kMTilesT;
  static constexpr int kRowsPerWarp = 16 * kMTiles;
  static constexpr int kRowTile = kRowWarps * kRowsPerWarp;
  static constexpr int kKvWarps = S::kWarps / kRowWarps;
  static constexpr int kWarpTokens = S::kTileKV / kKvWarps;  // tokens per warp per tile
  static constexpr int kTokenTiles = kWarpTokens / 8;        // n8 tiles of S
  static constexpr int kTokenSteps = kWarpTokens / 16;       // k16 steps of P V
  // Q fragments stay in registers for one m16 tile at D <= 128.
  static constexpr bool kQInRegisters = MmaTraits<S>::kQInRegisters && kMTiles == 1;
  static constexpr bool kValid =
      S::kWarps % kRowWarps == 0 && kRowTile <= S::kTileQ && kWarpTokens >= 16 &&
      S::kTileKV % (16 * kKvWarps) == 0 &&
      (kMTiles == 1 || (kMTiles == 2 && kKvWarps == 1 && S::kHeadDim <= 128));
};

/// KV heads of an item: 1, or n for a head pack.
__device__ __forceinline__ int item_heads(const canopy_abi::DeviceWorkItem& item) {
  const int n = (item.flags & canopy_abi::kItemHeadMask) >> canopy_abi::kItemHeadShift;
  return n > 1 ? n : 1;
}

/// The item's Q rows -> shared (converted to the KV dtype, swizzled); rows
/// past row_count are zero. In a head pack, shared rows 16h .. 16h + 15 are
/// head h's rows.
template <class S, bool kHeadPack>
__device__ __forceinline__ void stage_q(const canopy_abi::PartialParams& p,
                                        const canopy_abi::DeviceWorkItem& item, int rows,
                                        unsigned short* q_s) {
  constexpr int kChunks = MmaTraits<S>::kChunks;
  const Chunk16* q = static_cast<const Chunk16*>(p.q);
  const int heads = kHeadPack ? item_heads(item) : 1;
  for (int u = thread_index<S>(); u < rows * kChunks; u += S::kThreads) {
    const int r = u / kChunks;
    const int c = u % kChunks;
    const int head = kHeadPack ? r / 16 : 0;
    const int k = kHeadPack ? r % 16 : r;
    Chunk16 chunk = {0u, 0u, 0u, 0u};
    if (head < heads && k < item.row_count) {
      // q is [batch * num_qo_heads, D].
      const long long row = query_row(p, item, head, k);
      chunk = convert_chunk<S::kQDtype, S::kKvDtype>(q[row * kChunks + c]);
    }
    *reinterpret_cast<Chunk16*>(q_s + swizzled_offset<kChunks>(r, c)) = chunk;
  }
}

/// Starts the async gather of one stage: TILE_KV tokens from segment token
/// `first`, or for a head pack kSlice tokens from `first` of each of its KV
/// heads (stage rows kSlice * h .. are head h's). A thread owns one 16-byte
/// column chunk of every kRowsPerPass-th row: it looks up all its page ids
/// first (independent loads), then issues the copies. Rows past token_end
/// (or past the pack's heads) are zero-filled (finite padding).
template <class S, bool kHeadPack>
__device__ __forceinline__ void load_kv_tile(const canopy_abi::PartialParams& p,
                                             const canopy_abi::DeviceWorkItem& item, int first,
                                             unsigned short* k_s, unsigned short* v_s) {
  constexpr int kSlice = S::kTileKV / S::kWarps;  // a head pack's tokens per head per stage
  constexpr int kChunks = MmaTraits<S>::kChunks;
  constexpr int kRowsPerPass = S::kThreads / kChunks;
  constexpr int kPasses = S::kTileKV / kRowsPerPass;
  static_assert(S::kThreads % kChunks == 0 && S::kTileKV % kRowsPerPass == 0,
                "a tile is a whole number of passes of the block over 16-byte chunks");
  const unsigned short* k_src = static_cast<const unsigned short*>(p.k_cache);
  const unsigned short* v_src = static_cast<const unsigned short*>(p.v_cache);
  const int chunk = thread_index<S>() % kChunks;
  const int row0 = thread_index<S>() / kChunks;
  const int heads = kHeadPack ? item_heads(item) : 1;
  long long offset[kPasses];
#pragma unroll
  for (int i = 0; i < kPasses; ++i) {
    const int row = row0 + i * kRowsPerPass;
    const int head = kHeadPack ? row / kSlice : 0;
    const int token = first + (kHeadPack ? row % kSlice : row);
    offset[i] = token < item.token_end && head < heads
                    ? kv_token_offset<S>(p, item, token, item.kv_head + head) + chunk * 8
                    : -1;
  }
#pragma unroll
  for (int i = 0; i < kPasses; ++i) {
    const int dst = swizzled_offset<kChunks>(row0 + i * kRowsPerPass, chunk);
    const bool valid = offset[i] >= 0;
    const long long src = valid ? offset[i] : 0;
    cp_async_16(k_s + dst, k_src + src, valid);
    cp_async_16(v_s + dst, v_src + src, valid);
  }
}

/// Per-lane byte offsets of ldmatrix rows inside a swizzled tile, computed
/// once per item. For k-step j (16 columns = chunks 2j, 2j + 1) a lane reads
/// row r of its 8x8 matrix at chunk (2j + b) ^ (r % 8); the rows a lane
/// addresses are r = lane % 8 modulo 8, so only j % 4 changes the XOR and
/// j / 4 adds 128 bytes: offsets[j % 4] + 128 * (j / 4), with the tile base
/// and the row block (multiples of 16 rows) added as constants.
struct FragmentOffsets {
  unsigned q[4];  ///< Q (A operand): matrices (rows 0-7|8-15) x (k 0-7|8-15)
  unsigned k[4];  ///< K (B of Q K^T): (tokens 0-7|8-15) x (dims 0-7|8-15), tokens major
  unsigned v[4];  ///< V (B of P V, transposed): (tokens 0-7|8-15) x (dims), dims major
};

template <class S>
__device__ __forceinline__ FragmentOffsets fragment_offsets() {
  constexpr unsigned kRowBytes = S::kHeadDim * 2;
  const unsigned lane = thread_index<S>() % 32;
  const unsigned x = lane & 7;   // the row modulo 8: the XOR of the swizzle
  const unsigned m = lane >> 3;  // which 8x8 matrix this lane addresses
  FragmentOffsets f;
#pragma unroll
  for (unsigned j = 0; j < 4; ++j) {
    f.q[j] = (x + 8 * (m & 1)) * kRowBytes + (((2 * j) | (m >> 1)) ^ x) * 16;
    f.k[j] = (x + 8 * (m >> 1)) * kRowBytes + (((2 * j) | (m & 1)) ^ x) * 16;
    f.v[j] = (x + 8 * (m & 1)) * kRowBytes + (((2 * j) | (m >> 1)) ^ x) * 16;
  }
  return f;
}

/// Byte offset of k-step (or dim pair) j within a row block, given offsets[4].
__device__ __forceinline__ unsigned step_offset(const unsigned (&offsets)[4], int j) {
  return offsets[j & 3] + 128u * static_cast<unsigned>(j >> 2);
}

/// A fragments of the warp's 16 Q rows for k-step kk (head dims 16kk..16kk+15).
template <class S>
__device__ __forceinline__ void load_q_fragment(unsigned (&a)[4], unsigned q_tile, int q_row0,
                                                const FragmentOffsets& f, int kk) {
  ldmatrix_x4(a, q_tile + q_row0 * (S::kHeadDim * 2) + step_offset(f.q, kk));
}

/// s[m][16 x kWarpTokens] = Q K^T for the warp's m16 tiles over its tokens
/// [tok0, tok0 + kWarpTokens) of the stage at shared address k_tile (raw
/// scores: no scale yet). Each K fragment feeds every m16 tile.
template <class S, class R>
__device__ __forceinline__ void compute_scores(float (&s)[R::kMTiles][R::kTokenTiles][4],
                                               const unsigned (&q_frag)[MmaTraits<S>::kKSteps][4],
                                               unsigned q_tile, int q_row0, unsigned k_tile,
                                               int tok0, const FragmentOffsets& f) {
  using T = MmaTraits<S>;
  constexpr unsigned kRowBytes = S::kHeadDim * 2;
  const unsigned k_rows = k_tile + tok0 * kRowBytes;
#pragma unroll
  for (int kk = 0; kk < T::kKSteps; ++kk) {
    unsigned a[R::kMTiles][4];
#pragma unroll
    for (int mt = 0; mt < R::kMTiles; ++mt) {
      if constexpr (R::kQInRegisters) {
        a[mt][0] = q_frag[kk][0];
        a[mt][1] = q_frag[kk][1];
        a[mt][2] = q_frag[kk][2];
        a[mt][3] = q_frag[kk][3];
      } else {
        load_q_fragment<S>(a[mt], q_tile, q_row0 + 16 * mt, f, kk);
      }
    }
    const unsigned k_step = k_rows + step_offset(f.k, kk);
#pragma unroll
    for (int np = 0; np < R::kTokenTiles / 2; ++np) {
      // Matrices: (tokens 0-7, dims 0-7), (0-7, 8-15), (8-15, 0-7), (8-15, 8-15)
      // = b0b1, b2b3 of token tile 2np, then of 2np + 1.
      unsigned b[4];
      ldmatrix_x4(b, k_step + np * 16 * kRowBytes);
#pragma unroll
      for (int mt = 0; mt < R::kMTiles; ++mt) {
        if (kk == 0) {
          mma_16x8x16_first<S::kKvDtype>(s[mt][2 * np], a[mt], b[0], b[1]);
          mma_16x8x16_first<S::kKvDtype>(s[mt][2 * np + 1], a[mt], b[2], b[3]);
        } else {
          mma_16x8x16<S::kKvDtype>(s[mt][2 * np], a[mt], b[0], b[1]);
          mma_16x8x16<S::kKvDtype>(s[mt][2 * np + 1], a[mt], b[2], b[3]);
        }
      }
    }
  }
}

/// O[m][16 x D] += P[m][16 x kWarpTokens] V over the warp's tokens of the
/// stage at shared address v_tile; each V fragment feeds every m16 tile.
template <class S, class R>
__device__ __forceinline__ void accumulate_pv(float (&o)[R::kMTiles][MmaTraits<S>::kDimTiles][4],
                                              const float (&s)[R::kMTiles][R::kTokenTiles][4],
                                              unsigned v_tile, int tok0, const FragmentOffsets& f) {
  using T = MmaTraits<S>;
  constexpr unsigned kRowBytes = S::kHeadDim * 2;
  const unsigned v_rows = v_tile + tok0 * kRowBytes;
#pragma unroll
  for (int ks = 0; ks < R::kTokenSteps; ++ks) {
    // S accumulators of token tiles 2ks, 2ks + 1 are P's A fragment.
    unsigned a[R::kMTiles][4];
#pragma unroll
    for (int mt = 0; mt < R::kMTiles; ++mt) {
      a[mt][0] = pack2<S::kKvDtype>(s[mt][2 * ks][0], s[mt][2 * ks][1]);
      a[mt][1] = pack2<S::kKvDtype>(s[mt][2 * ks][2], s[mt][2 * ks][3]);
      a[mt][2] = pack2<S::kKvDtype>(s[mt][2 * ks + 1][0], s[mt][2 * ks + 1][1]);
      a[mt][3] = pack2<S::kKvDtype>(s[mt][2 * ks + 1][2], s[mt][2 * ks + 1][3]);
    }
#pragma unroll
    for (int dp = 0; dp < T::kD / 16; ++dp) {
      // Transposed matrices: (tokens 0-7, dims 0-7), (8-15, 0-7), (0-7, 8-15),
      // (8-15, 8-15) = b0b1, b2b3 of dim tile 2dp, then of 2dp + 1.
      unsigned b[4];
      ldmatrix_x4_trans(b, v_rows + ks * 16 * kRowBytes + step_offset(f.v, dp));
#pragma unroll
      for (int mt = 0; mt < R::kMTiles; ++mt) {
        mma_16x8x16<S::kKvDtype>(o[mt][2 * dp], a[mt], b[0], b[1]);
        mma_16x8x16<S::kKvDtype>(o[mt][2 * dp + 1], a[mt], b[2], b[3]);
      }
    }
  }
}

/// Token-split items: the warps of one row group combine their states in
/// shared memory (reusing the K/V stages), weighted by 2^(m_w - max m).
template <class S, class R>
__device__ __forceinline__ void combine_and_write_rows(const canopy_abi::PartialParams& p,
                                                       const canopy_abi::DeviceWorkItem& item,
                                                       unsigned char* smem,
                                                       const float (&o)[MmaTraits<S>::kDimTiles][4],
                                                       const float (&m)[2], const float (&l)[2]) {
  using T = MmaTraits<S>;
  constexpr int kStride = T::kCombineStride;
  float* combine_o = reinterpret_cast<float*>(smem + T::kSmem.combine_o);
  float* combine_ml = reinterpret_cast<float*>(smem + T::kSmem.combine_ml);
  const int warp = thread_index<S>() / 32;
  const int lane = thread_index<S>() % 32;
  cp_async_wait<0>();
  __syncthreads();  // every warp is done with the K/V stages the area aliases
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int row = lane / 4 + 8 * i;
    float* dst = combine_o + (warp * 16 + row) * kStride + 2 * (lane % 4);
#pragma unroll
    for (int nd = 0; nd < T::kDimTiles; ++nd) {
      *reinterpret_cast<Float2*>(dst + 8 * nd) = Float2{o[nd][2 * i], o[nd][2 * i + 1]};
    }
    if (lane % 4 == 0) {
      combine_ml[(warp * 16 + row) * 2] = m[i];
      combine_ml[(warp * 16 + row) * 2 + 1] = l[i];
    }
  }
  __syncthreads();
  // Row r of the item is row r % 16 of row warp r / 16, whose kKvWarps warps
  // are warps (r / 16) * kKvWarps + w.
  constexpr int kQuads = T::kD / 4;
  for (int u = thread_index<S>(); u < R::kRowWarps * 16 * kQuads; u += S::kThreads) {
    const int r = u / kQuads;
    const int col = 4 * (u % kQuads);
    if (r >= item.row_count) continue;
    const int first = (r / 16) * R::kKvWarps * 16 + r % 16;  // combine row of warp w: first + 16 w
    float m_max = neg_inf();
#pragma unroll
    for (int w = 0; w < R::kKvWarps; ++w) m_max = fmaxf(m_max, combine_ml[(first + 16 * w) * 2]);
    const float m_use = m_max == neg_inf() ? 0.f : m_max;
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    float l_sum = 0.f;
#pragma unroll
    for (int w = 0; w < R::kKvWarps; ++w) {
      const int row = first + 16 * w;
      const float weight = fast_exp2(combine_ml[row * 2] - m_use);
      l_sum += weight * combine_ml[row * 2 + 1];
      const Float4 v = *reinterpret_cast<const Float4*>(combine_o + row * kStride + col);
      acc[0] += weight * v.x;
      acc[1] += weight * v.y;
      acc[2] += weight * v.z;
      acc[3] += weight * v.w;
    }
    const float inv = l_sum > 0.f ? 1.f / l_sum : 0.f;
    const float out[4] = {acc[0] * inv, acc[1] * inv, acc[2] * inv, acc[3] * inv};
    const RowDestination dst = row_destination(p, item, 0, r);
    store_row_values<S>(p, dst, col, out);
    if (col == 0) store_row_lse(p, dst, row_lse(m_max, l_sum));
  }
}

/// The item under one warp arrangement: pipeline, per-tile math, epilogue.
/// kHeadPack: a head pack under the 1 x kWarps arrangement (warp h = head h).
template <class S, class R, bool kHeadPack>
__device__ __forceinline__ void attend(const canopy_abi::PartialParams& p,
                                       const canopy_abi::DeviceWorkItem& item,
                                       unsigned char* smem) {
  using T = MmaTraits<S>;
  static_assert(!kHeadPack || R::kRowWarps == 1, "a head pack gives each warp one head");
  unsigned short* q_s = reinterpret_cast<unsigned short*>(smem + T::kSmem.q);
  unsigned short* k_s = reinterpret_cast<unsigned short*>(smem + T::kSmem.k);
  unsigned short* v_s = reinterpret_cast<unsigned short*>(smem + T::kSmem.v);
  // The same regions as shared-window addresses, for ldmatrix.
  const unsigned q_tile = shared_address(q_s);
  const unsigned k_tiles = shared_address(k_s);
  const unsigned v_tiles = shared_address(v_s);
  constexpr unsigned kStageBytes = T::kTileElems * 2;
  const FragmentOffsets f = fragment_offsets<S>();
  const int warp = thread_index<S>() / 32;
  const int q_row0 = kHeadPack ? 16 * warp : (warp / R::kKvWarps) * R::kRowsPerWarp;
  const int slice0 = (warp % R::kKvWarps) * R::kWarpTokens;  // its tokens of each stage
  // Tokens of the segment each stage advances by: a head pack's stage holds
  // one slice of tokens for each head.
  constexpr int kStep = kHeadPack ? R::kWarpTokens : S::kTileKV;
  // Exponents in the log2 domain: scores times sm_scale * log2 e (after a
  // soft cap, which applies sm_scale itself, just log2 e).
  constexpr float kLog2e = 1.4426950408889634f;
  const float scale = S::kSoftCap ? kLog2e : p.sm_scale * kLog2e;

  const int num_tokens = item.token_end - item.token_begin;
  const int num_tiles = num_tokens > 0 ? (num_tokens + kStep - 1) / kStep : 0;
  const bool warp_has_head = !kHeadPack || warp < item_heads(item);
  // Prologue: STAGES - 1 tiles in flight, then Q (its loads overlap them).
#pragma unroll
  for (int s = 0; s < S::kStages - 1; ++s) {
    if (s < num_tiles) {
      load_kv_tile<S, kHeadPack>(p, item, item.token_begin + s * kStep, k_s + s * T::kTileElems,
                                 v_s + s * T::kTileElems);
    }
    cp_async_commit();
  }
  stage_q<S, kHeadPack>(p, item, kHeadPack ? S::kTileQ : R::kRowTile, q_s);
  __syncthreads();

  unsigned q_frag[T::kKSteps][4];
  if constexpr (R::kQInRegisters) {
#pragma unroll
    for (int kk = 0; kk < T::kKSteps; ++kk) {
      load_q_fragment<S>(q_frag[kk], q_tile, q_row0, f, kk);
    }
  }
  float o[R::kMTiles][T::kDimTiles][4];
  float m[R::kMTiles][2];  // raw score units until the epilogue
  float l[R::kMTiles][2];
#pragma unroll
  for (int mt = 0; mt < R::kMTiles; ++mt) {
#pragma unroll
    for (int nd = 0; nd < T::kDimTiles; ++nd) {
      o[mt][nd][0] = o[mt][nd][1] = o[mt][nd][2] = o[mt][nd][3] = 0.f;
    }
    m[mt][0] = m[mt][1] = neg_inf();
    l[mt][0] = l[mt][1] = 0.f;
  }

  for (int j = 0; j < num_tiles; ++j) {
    cp_async_wait<S::kStages - 2>();  // tile j has landed (this thread's copies)
    __syncthreads();                  // ... and every thread's; tile j - 1's stage is free
    const int ahead = j + S::kStages - 1;
    if (ahead < num_tiles) {
      const int stage = ahead % S::kStages;
      load_kv_tile<S, kHeadPack>(p, item, item.token_begin + ahead * kStep,
                                 k_s + stage * T::kTileElems, v_s + stage * T::kTileElems);
    }
    cp_async_commit();
    const unsigned stage_offset = (j % S::kStages) * kStageBytes;
    const int left = num_tokens - j * kStep;
    const int valid = kHeadPack ? (warp_has_head ? min(R::kWarpTokens, left) : 0)
                                : min(S::kTileKV, left) - slice0;
    if (valid > 0) {  // warp-uniform: a slice past the last token has nothing to do
      float s[R::kMTiles][R::kTokenTiles][4];
      compute_scores<S, R>(s, q_frag, q_tile, q_row0, k_tiles + stage_offset, slice0, f);
#pragma unroll
      for (int mt = 0; mt < R::kMTiles; ++mt) {
        cap_and_mask_tile<S::kSoftCap, R::kTokenTiles>(s[mt], p.sm_scale, p.soft_cap, valid);
        softmax_update_tile<R::kTokenTiles, T::kDimTiles>(s[mt], m[mt], l[mt], o[mt], scale);
      }
      accumulate_pv<S, R>(o, s, v_tiles + stage_offset, slice0, f);
    }
  }

#pragma unroll
  for (int mt = 0; mt < R::kMTiles; ++mt) finish_row_states(m[mt], l[mt], scale);
  if constexpr (kHeadPack) {
    // Warp h holds the rows of KV head kv_head + h.
    if (warp_has_head)
      write_rows_from_registers<S, T::kDimTiles>(p, item, warp, 0, item.row_count, o[0], m[0],
                                                 l[0]);
  } else if constexpr (R::kKvWarps == 1) {
#pragma unroll
    for (int mt = 0; mt < R::kMTiles; ++mt) {
      write_rows_from_registers<S, T::kDimTiles>(p, item, 0, q_row0 + 16 * mt, item.row_count,
                                                 o[mt], m[mt], l[mt]);
    }
  } else {
    static_assert(R::kMTiles == 1, "token-split arrangements own one m16 tile per warp");
    combine_and_write_rows<S, R>(p, item, smem, o[0], m[0], l[0]);
  }
}

/// Runs the item under the arrangement its row tile asks for: 16 rows per
/// warp over 1, 2, .. kWarps row warps, then two m16 tiles per warp with
/// every warp along rows.
template <class S, int kRowWarps>
__device__ __forceinline__ bool dispatch_row_tile(const canopy_abi::PartialParams& p,
                                                  const canopy_abi::DeviceWorkItem& item,
                                                  unsigned char* smem) {
  if constexpr (kRowWarps > S::kWarps) {
    using R2 = WarpRole<S, S::kWarps, 2>;
    if constexpr (R2::kValid) {
      if (item.row_tile == R2::kRowTile) {
        attend<S, R2, false>(p, item, smem);
        return true;
      }
    }
    return false;
  } else {
    using R = WarpRole<S, kRowWarps>;
    if constexpr (R::kValid) {
      if (item.row_tile == 16 * kRowWarps) {
        if constexpr (kRowWarps == 1 && MmaTraits<S>::kHeadPacks) {
          if (item_heads(item) > 1) {
            attend<S, R, true>(p, item, smem);
            return true;
          }
        }
        attend<S, R, false>(p, item, smem);
        return true;
      }
    }
    return dispatch_row_tile<S, kRowWarps * 2>(p, item, smem);
  }
}

template <class S>
__device__ __forceinline__ void partial_attention_mma(const canopy_abi::PartialParams& p,
                                                      const canopy_abi::FusedParams& f) {
  using T = MmaTraits<S>;
  static_assert(S::kHeadDim == 64 || S::kHeadDim == 128 || S::kHeadDim == 256,
                "head_dim must be 64, 128 or 256");
  static_assert(S::kThreads == S::kWarps * 32, "a block is kWarps whole warps");
  static_assert(S::kStages >= 2 && S::kStages <= 4, "the KV pipeline holds 2 to 4 stages");
  static_assert(S::kTileQ == 16 * S::kWarps || S::kTileQ == 32 * S::kWarps,
                "Q holds 16 or 32 rows per warp (the widest arrangement)");
  static_assert(T::kSmem.total == S::kSmemBytes,
                "device shared-memory layout must match the host's (kernel_layouts.cuh)");
  static_assert(T::kCombineFits, "the warp-combine area must fit in the K/V stages it reuses");
  static_assert(
      S::kMaxRegisters == canopy_abi::mma_max_registers(S::kHeadDim) &&
          S::kMinBlocksPerSm == canopy_abi::blocks_by_registers(S::kMaxRegisters, S::kThreads),
      "__launch_bounds__ must hold the host's register cap (kernel_layouts.cuh)");
  static_assert(S::kQDtype != kDtF32 && S::kKvDtype != kDtF32, "q and KV are fp16 or bf16");
  extern __shared__ __align__(128) unsigned char canopy_smem[];
  if constexpr (!S::kPersistent) {
    // One item per block, held in registers: its fields stay live through
    // the KV loop instead of being reloaded from global memory per tile.
    const canopy_abi::DeviceWorkItem item = p.items[p.item_begin + blockIdx.x];
    // The host validates row tiles against the kernel; an unknown one is a
    // bug that must not pass silently as unwritten rows.
    if (!dispatch_row_tile<S, 1>(p, item, canopy_smem)) __trap();
  } else {
    const ItemRange range = block_items<S>(p, f);
    // Only the position stays live across an item (the register caps are
    // tight): the end and the item's index are read again after it, and the
    // item is read by reference.
    for (int i = range.begin; i < block_items<S>(p, f).end; ++i) {
      if (!dispatch_row_tile<S, 1>(p, p.items[queue_item<S>(f, i)], canopy_smem)) __trap();
      // Every warp is done with this item's stages before the next item's
      // tiles land in them.
      __syncthreads();
      count_finished_rows<S>(p, f, queue_item<S>(f, i), thread_index<S>(), S::kThreads, 0);
    }
    // The stages are free: they hold the merge's scratch.
    merge_completed_groups<S>(p, f, range, thread_index<S>(), S::kThreads, 0,
                              reinterpret_cast<int*>(canopy_smem + T::kSmem.k));
  }
}

}  // namespace canopy_dev
