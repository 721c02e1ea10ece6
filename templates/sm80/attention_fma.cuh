// Partial attention, FMA reference family: one thread block runs one work
// item, i.e. up to TILE_Q query rows of one GQA group against a run of paged
// KV tokens, and writes one normalised partial state (o / l, m + log l) per
// row for the merge kernel (or the output row itself for a direct item).
//
// Shape of one block (S is the generated constants struct):
//   shared: Q tile [TILE_Q][D] (input dtype), O accumulators [TILE_Q][D] f32,
//           m, l, alpha [TILE_Q] f32, scores [TILE_Q][TILE_KV] f32,
//           K and V tiles [STAGES][TILE_KV][D] (KV dtype), filled by cp.async.
//   per KV tile: scores = Q K^T (threads own (row, token) pairs), online softmax
//   (warps own rows), O = alpha O + P V (threads own (row chunk, column pair)).
// The three steps are plain FMA loops: the simple, readable reference that
// the tensor-core family (attention_mma.cuh) is measured and tested against.
#pragma once

#include "../common/device_common.cuh"
#include "../common/kernel_abi.cuh"
#include "../common/kernel_layouts.cuh"
#include "../common/paged_kv.cuh"

namespace canopy_dev {

/// Pointers into one block's shared memory.
struct PartialTiles {
  unsigned short* q;
  float* o;
  float* m;
  float* l;
  float* alpha;
  float* scores;
  unsigned short* k;
  unsigned short* v;
};

template <class S>
__device__ __forceinline__ PartialTiles carve_shared(unsigned char* smem) {
  constexpr canopy_abi::FmaSmemLayout L =
      canopy_abi::fma_smem_layout(S::kHeadDim, S::kTileQ, S::kTileKV, S::kStages);
  static_assert(L.total == S::kSmemBytes,
                "device shared-memory layout must match the host's (kernel_layouts.cuh)");
  PartialTiles t;
  t.q = reinterpret_cast<unsigned short*>(smem + L.q);
  t.o = reinterpret_cast<float*>(smem + L.o);
  t.m = reinterpret_cast<float*>(smem + L.m);
  t.l = reinterpret_cast<float*>(smem + L.l);
  t.alpha = reinterpret_cast<float*>(smem + L.alpha);
  t.scores = reinterpret_cast<float*>(smem + L.scores);
  t.k = reinterpret_cast<unsigned short*>(smem + L.k);
  t.v = reinterpret_cast<unsigned short*>(smem + L.v);
  return t;
}

/// Q rows of the item -> shared (16-byte loads); rows past row_count are zero.
template <class S>
__device__ __forceinline__ void load_q_tile(const canopy_abi::PartialParams& p,
                                            const canopy_abi::DeviceWorkItem& item,
                                            unsigned short* q_tile) {
  constexpr int kChunks = S::kHeadDim / 8;
  const Chunk16* q = static_cast<const Chunk16*>(p.q);
  Chunk16* dst = reinterpret_cast<Chunk16*>(q_tile);
  for (int u = threadIdx.x; u < S::kTileQ * kChunks; u += S::kThreads) {
    const int r = u / kChunks;
    const int c = u % kChunks;
    Chunk16 chunk = {0u, 0u, 0u, 0u};
    if (r < item.row_count) {
      // q is [batch * num_qo_heads, D].
      const long long row = query_row(p, item, 0, r);
      chunk = q[row * kChunks + c];
    }
    dst[u] = chunk;
  }
}

/// O = 0, m = -inf, l = 0 for every row of the tile.
template <class S>
__device__ __forceinline__ void init_row_state(const PartialTiles& t) {
  for (int u = threadIdx.x; u < S::kTileQ * S::kHeadDim; u += S::kThreads) t.o[u] = 0.f;
  for (int r = threadIdx.x; r < S::kTileQ; r += S::kThreads) {
    t.m[r] = neg_inf();
    t.l[r] = 0.f;
    t.alpha[r] = 0.f;
  }
}

/// Starts the async gather of KV tile `tile` (TILE_KV tokens) through the page
/// table into one stage; tokens past token_end are zero-filled.
template <class S>
__device__ __forceinline__ void load_kv_tile(const canopy_abi::PartialParams& p,
                                             const canopy_abi::DeviceWorkItem& item, int tile,
                                             unsigned short* k_dst, unsigned short* v_dst) {
  constexpr int kChunks = S::kHeadDim / 8;
  const unsigned short* k_src = static_cast<const unsigned short*>(p.k_cache);
  const unsigned short* v_src = static_cast<const unsigned short*>(p.v_cache);
  const int first = item.token_begin + tile * S::kTileKV;
  for (int u = threadIdx.x; u < S::kTileKV * kChunks; u += S::kThreads) {
    const int i = u / kChunks;
    const int c = u % kChunks;
    const int token = first + i;
    const bool valid = token < item.token_end;
    const long long elem = valid ? kv_token_offset<S>(p, item, token, item.kv_head) + c * 8 : 0;
    cp_async_16(k_dst + i * S::kHeadDim + c * 8, k_src + elem, valid);
    cp_async_16(v_dst + i * S::kHeadDim + c * 8, v_src + elem, valid);
  }
}

/// dot(q_row, k_row) over D; each thread starts at a different 16-byte chunk
/// (rotated by its token) so a warp's shared loads hit distinct banks.
template <class S>
__device__ __forceinline__ float dot_q_k(const unsigned short* q_row, const unsigned short* k_row,
                                         int rotation) {
  constexpr int kChunks = S::kHeadDim / 8;
  static_assert((kChunks & (kChunks - 1)) == 0, "head_dim / 8 must be a power of two");
  const Chunk16* q = reinterpret_cast<const Chunk16*>(q_row);
  const Chunk16* k = reinterpret_cast<const Chunk16*>(k_row);
  float acc = 0.f;
#pragma unroll 4
  for (int step = 0; step < kChunks; ++step) {
    const int c = (step + rotation) & (kChunks - 1);
    float qf[8], kf[8];
    unpack8<S::kQDtype>(q[c], qf);
    unpack8<S::kKvDtype>(k[c], kf);
#pragma unroll
    for (int e = 0; e < 8; ++e) acc = fmaf(qf[e], kf[e], acc);
  }
  return acc;
}

/// scores[r][t] = cap * tanh(sm_scale * q_r . k_t / cap) (or without the cap);
/// tokens past the tile's valid count get -inf so they drop out of the softmax.
template <class S>
__device__ __forceinline__ void compute_scores(const canopy_abi::PartialParams& p,
                                               const PartialTiles& t, const unsigned short* k_tile,
                                               int valid_tokens, int row_count) {
  for (int u = threadIdx.x; u < row_count * S::kTileKV; u += S::kThreads) {
    const int r = u / S::kTileKV;
    const int tok = u % S::kTileKV;
    float s = neg_inf();
    if (tok < valid_tokens) {
      s = dot_q_k<S>(t.q + r * S::kHeadDim, k_tile + tok * S::kHeadDim, tok) * p.sm_scale;
      if constexpr (S::kSoftCap) s = p.soft_cap * tanhf(s / p.soft_cap);
    }
    t.scores[r * S::kTileKV + tok] = s;
  }
}

/// Per row (one warp each): m' = max(m, max_t s_t); p_t = exp(s_t - m');
/// alpha = exp(m - m'); l' = alpha l + sum_t p_t. Scores are replaced by p_t.
template <class S>
__device__ __forceinline__ void online_softmax_update(const PartialTiles& t, int row_count) {
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  for (int r = warp; r < row_count; r += S::kWarps) {
    float* row = t.scores + r * S::kTileKV;
    float tile_max = neg_inf();
    for (int tok = lane; tok < S::kTileKV; tok += 32) tile_max = fmaxf(tile_max, row[tok]);
    tile_max = warp_max(tile_max);
    const float m_old = t.m[r];
    const float m_new = fmaxf(m_old, tile_max);  // finite: every tile has a valid token
    float sum = 0.f;
    for (int tok = lane; tok < S::kTileKV; tok += 32) {
      const float prob = expf(row[tok] - m_new);
      row[tok] = prob;
      sum += prob;
    }
    sum = warp_sum(sum);
    __syncwarp();  // every lane has read m[r] before lane 0 overwrites it
    if (lane == 0) {
      const float alpha = expf(m_old - m_new);  // 0 on the first tile (m_old = -inf)
      t.alpha[r] = alpha;
      t.l[r] = t.l[r] * alpha + sum;
      t.m[r] = m_new;
    }
  }
}

/// O[r][d] = alpha_r O[r][d] + sum_t p[r][t] V[t][d]. A thread owns a column
/// pair for a chunk of rows, so each V load feeds kRowChunk rows.
template <class S>
__device__ __forceinline__ void accumulate_pv(const PartialTiles& t, const unsigned short* v_tile,
                                              int valid_tokens, int row_count) {
  constexpr int kPairs = S::kHeadDim / 2;
  constexpr int kRowChunk = 8;
  static_assert(S::kTileQ % kRowChunk == 0, "tile_q must be a multiple of 8");
  const int chunks = (row_count + kRowChunk - 1) / kRowChunk;
  for (int u = threadIdx.x; u < chunks * kPairs; u += S::kThreads) {
    const int pair = u % kPairs;
    const int r0 = (u / kPairs) * kRowChunk;
    float acc0[kRowChunk], acc1[kRowChunk];
#pragma unroll
    for (int i = 0; i < kRowChunk; ++i) acc0[i] = acc1[i] = 0.f;
#pragma unroll 2
    for (int tok = 0; tok < valid_tokens; ++tok) {
      const unsigned w = *reinterpret_cast<const unsigned*>(v_tile + tok * S::kHeadDim + 2 * pair);
      const float v0 = to_float<S::kKvDtype>(static_cast<unsigned short>(w & 0xffffu));
      const float v1 = to_float<S::kKvDtype>(static_cast<unsigned short>(w >> 16));
#pragma unroll
      for (int i = 0; i < kRowChunk; ++i) {
        const float prob = t.scores[(r0 + i) * S::kTileKV + tok];
        acc0[i] = fmaf(prob, v0, acc0[i]);
        acc1[i] = fmaf(prob, v1, acc1[i]);
      }
    }
#pragma unroll
    for (int i = 0; i < kRowChunk; ++i) {
      const int r = r0 + i;
      if (r < row_count) {
        float* o = t.o + r * S::kHeadDim + 2 * pair;
        const float alpha = t.alpha[r];
        o[0] = fmaf(o[0], alpha, acc0[i]);
        o[1] = fmaf(o[1], alpha, acc1[i]);
      }
    }
  }
}

/// Each row's O / l and m + log(l) to its destination (a float32 partial
/// slot, or the output row of a direct item); an empty row (l = 0) writes
/// zeros and lse = -inf, which the merge gives weight 0.
template <class S>
__device__ __forceinline__ void write_partial_states(const canopy_abi::PartialParams& p,
                                                     const canopy_abi::DeviceWorkItem& item,
                                                     const PartialTiles& t) {
  for (int u = threadIdx.x; u < item.row_count * S::kHeadDim; u += S::kThreads) {
    const int r = u / S::kHeadDim;
    const float l = t.l[r];
    const float value[1] = {l > 0.f ? t.o[u] / l : 0.f};
    store_row_values<S>(p, row_destination(p, item, 0, r), u % S::kHeadDim, value);
  }
  for (int r = threadIdx.x; r < item.row_count; r += S::kThreads) {
    const float l = t.l[r];
    store_row_lse(p, row_destination(p, item, 0, r), l > 0.f ? t.m[r] + logf(l) : neg_inf());
  }
}

/// The kernel body: Q load, then a STAGES-deep cp.async pipeline over KV tiles.
template <class S>
__device__ __forceinline__ void partial_attention_fma(const canopy_abi::PartialParams& p) {
  static_assert(S::kHeadDim == 64 || S::kHeadDim == 128 || S::kHeadDim == 256,
                "head_dim must be 64, 128 or 256");
  static_assert(S::kThreads == S::kWarps * 32, "a block is kWarps whole warps");
  static_assert(S::kStages >= 1 && S::kStages <= 4, "the KV pipeline holds 1 to 4 stages");
  static_assert(S::kTileKV % 32 == 0, "tile_kv must be a multiple of the warp size");
  static_assert(
      S::kMaxRegisters == canopy_abi::fma_max_registers(S::kHeadDim) &&
          S::kMinBlocksPerSm == canopy_abi::blocks_by_registers(S::kMaxRegisters, S::kThreads),
      "__launch_bounds__ must hold the host's register cap (kernel_layouts.cuh)");
  extern __shared__ __align__(16) unsigned char canopy_smem[];
  const PartialTiles t = carve_shared<S>(canopy_smem);
  constexpr int kTileElems = S::kTileKV * S::kHeadDim;

  const canopy_abi::DeviceWorkItem item = p.items[p.item_begin + blockIdx.x];
  load_q_tile<S>(p, item, t.q);
  init_row_state<S>(t);
  __syncthreads();

  const int num_tokens = item.token_end - item.token_begin;
  const int num_tiles = num_tokens > 0 ? (num_tokens + S::kTileKV - 1) / S::kTileKV : 0;
  // Prologue: STAGES - 1 tiles in flight before the first compute step.
#pragma unroll
  for (int s = 0; s < S::kStages - 1; ++s) {
    if (s < num_tiles) load_kv_tile<S>(p, item, s, t.k + s * kTileElems, t.v + s * kTileElems);
    cp_async_commit();
  }
  for (int j = 0; j < num_tiles; ++j) {
    const int ahead = j + S::kStages - 1;  // its stage was freed at the end of step j - 1
    if (ahead < num_tiles) {
      const int stage = ahead % S::kStages;
      load_kv_tile<S>(p, item, ahead, t.k + stage * kTileElems, t.v + stage * kTileElems);
    }
    cp_async_commit();
    cp_async_wait<S::kStages - 1>();
    __syncthreads();
    const int stage = j % S::kStages;
    const int valid = min(S::kTileKV, num_tokens - j * S::kTileKV);
    compute_scores<S>(p, t, t.k + stage * kTileElems, valid, item.row_count);
    __syncthreads();
    online_softmax_update<S>(t, item.row_count);
    __syncthreads();
    accumulate_pv<S>(t, t.v + stage * kTileElems, valid, item.row_count);
    __syncthreads();
  }
  write_partial_states<S>(p, item, t);
}

}  // namespace canopy_dev
