// Partial attention on Hopper tensor cores (wgmma, sm_90a): one thread block
// runs work items of up to 64 x kConsumers query rows (one GQA group's rows
// of a task: many requests under a shared prefix) against paged KV tokens,
// and writes one normalised partial state per row (or the output row of a
// direct item), like the mma family.
//
// Warp-specialized (FlashAttention-3's shape): warpgroup 0 is the producer,
// gathering K and V tiles through the page table with cp.async into a ring
// of kStages shared-memory stages (each with a full and an empty mbarrier);
// warpgroups 1.. are consumers, 64 query rows each:
//   S = Q K^T            wgmma, Q and K from shared memory (K-major), f32 in registers
//   online softmax       m, l per row in the log2 domain (register_softmax.cuh)
//   O += P V             wgmma, P from registers (S's accumulators packed), V
//                        from shared memory (MN-major), O in registers
// The producer runs ahead across items, so the next item's K/V is in flight
// while the consumers write the last one's rows.
#pragma once

#include "../common/device_common.cuh"
#include "../common/item_queue.cuh"
#include "../common/kernel_abi.cuh"
#include "../common/kernel_layouts.cuh"
#include "../common/paged_kv.cuh"
#include "../common/register_softmax.cuh"
#include "hopper_sync.cuh"
#include "wgmma_ops.cuh"

namespace canopy_dev {

/// Compile-time facts of the specialization.
template <class S>
struct WgmmaTraits {
  static constexpr int kD = S::kHeadDim;
  static constexpr int kConsumers = S::kTileQ / 64;  // consumer warpgroups, 64 rows each
  static constexpr int kConsumerThreads = 128 * kConsumers;
  static constexpr int kChunks = kD / 8;                  // 16-byte chunks per row
  static constexpr int kKSteps = kD / 16;                 // k16 steps of Q K^T
  static constexpr int kTokenTiles = S::kTileKV / 8;      // n8 tiles of S
  static constexpr int kPvSteps = S::kTileKV / 16;        // k16 steps of P V
  static constexpr int kDimTiles = kD / 8;                // n8 tiles of O
  static constexpr int kQBlockBytes = S::kTileQ * 128;    // one 64-column block of Q
  static constexpr int kKvBlockBytes = S::kTileKV * 128;  // one 64-column block of a K or V tile
  static constexpr int kTileBytes = S::kTileKV * kD * 2;
  static constexpr canopy_abi::WgmmaSmemLayout kSmem =
      canopy_abi::wgmma_smem_layout(kD, S::kTileQ, S::kTileKV, S::kStages);
  // After reallocation (two consumers): 128 x 56 + 256 x 224 <= 64K registers.
  static constexpr int kProducerRegisters = 56;
  static constexpr int kConsumerRegisters = 224;
  // Named barriers: 1 all consumers, 2 + w consumer warpgroup w alone.
  static constexpr int kConsumersBarrier = 1;
};

/// Byte offset of 16-byte chunk `chunk` of row `row` in a 128-byte-swizzled
/// tile of `block_bytes` per 64-column block.
__device__ __forceinline__ unsigned swizzled_chunk(int row, int chunk, unsigned block_bytes) {
  return static_cast<unsigned>(chunk >> 3) * block_bytes + static_cast<unsigned>(row) * 128u +
         (static_cast<unsigned>((chunk & 7) ^ (row & 7)) << 4);
}

/// Producer: one tile of K and V from segment token `first` into the stage
/// at shared byte offsets k_stage / v_stage. Thread `tid` (0..127) owns
/// 16-byte chunk tid % kChunks of every (128 / kChunks)-th row; it looks up
/// four rows' pages, then issues their copies (few live registers: the
/// producer runs on 56). Tokens past token_end are zero-filled.
template <class S>
__device__ __forceinline__ void produce_tile(const canopy_abi::PartialParams& p,
                                             const canopy_abi::DeviceWorkItem& item, int first,
                                             unsigned char* k_stage, unsigned char* v_stage,
                                             int tid) {
  using T = WgmmaTraits<S>;
  constexpr int kRowsPerPass = 128 / T::kChunks;
  constexpr int kPasses = S::kTileKV / kRowsPerPass;
  constexpr int kGroup = kPasses < 4 ? kPasses : 4;
  static_assert(kPasses % kGroup == 0, "passes come in groups of four");
  const unsigned short* k_src = static_cast<const unsigned short*>(p.k_cache);
  const unsigned short* v_src = static_cast<const unsigned short*>(p.v_cache);
  const int chunk = tid % T::kChunks;
  const int row0 = tid / T::kChunks;
#pragma unroll
  for (int g = 0; g < kPasses; g += kGroup) {
    long long offset[kGroup];
#pragma unroll
    for (int i = 0; i < kGroup; ++i) {
      const int token = first + row0 + (g + i) * kRowsPerPass;
      offset[i] = token < item.token_end
                      ? kv_token_offset<S>(p, item, token, item.kv_head) + chunk * 8
                      : -1;
    }
#pragma unroll
    for (int i = 0; i < kGroup; ++i) {
      const unsigned dst = swizzled_chunk(row0 + (g + i) * kRowsPerPass, chunk, T::kKvBlockBytes);
      const bool valid = offset[i] >= 0;
      const long long src = valid ? offset[i] : 0;
      cp_async_16(k_stage + dst, k_src + src, valid);
      cp_async_16(v_stage + dst, v_src + src, valid);
    }
  }
}

/// Consumer warpgroup: its 64 Q rows (item rows row_base ..) -> shared,
/// converted to the KV dtype, 128-byte swizzled; rows past row_count zero.
template <class S>
__device__ __forceinline__ void stage_q_rows(const canopy_abi::PartialParams& p,
                                             const canopy_abi::DeviceWorkItem& item, int row_base,
                                             unsigned char* q_s, int tid) {
  using T = WgmmaTraits<S>;
  const Chunk16* q = static_cast<const Chunk16*>(p.q);
  for (int u = tid; u < 64 * T::kChunks; u += 128) {
    const int r = row_base + u / T::kChunks;
    const int c = u % T::kChunks;
    Chunk16 chunk = {0u, 0u, 0u, 0u};
    if (r < item.row_count) {
      chunk = convert_chunk<S::kQDtype, S::kKvDtype>(q[query_row(p, item, 0, r) * T::kChunks + c]);
    }
    *reinterpret_cast<Chunk16*>(q_s + swizzled_chunk(r, c, T::kQBlockBytes)) = chunk;
  }
}

/// S[64 x kTileKV] = Q K^T for the warpgroup's rows: kKSteps wgmma over the
/// head dim. Within a 128-byte block, k-step kk starts 32 bytes further (the
/// hardware applies the swizzle to the address); blocks are block_bytes apart.
template <class S>
__device__ __forceinline__ void scores_wgmma(float (&s)[WgmmaTraits<S>::kTokenTiles][4],
                                             unsigned q_rows, unsigned k_tile) {
  using T = WgmmaTraits<S>;
  // Computed per tile, not hoisted: kept live across the loop, the kKSteps
  // descriptors would cost as many registers (spills at D = 256).
  q_rows = opaque(q_rows);
#pragma unroll
  for (int kk = 0; kk < T::kKSteps; ++kk) {
    const unsigned step = static_cast<unsigned>(kk % 4) * 32u;
    // K-major operands: the leading byte offset is unused (encoded as 1).
    wgmma_qk<S::kKvDtype, S::kTileKV>(
        s, wgmma_descriptor_low(q_rows + (kk / 4) * T::kQBlockBytes + step, 16),
        wgmma_descriptor_low(k_tile + (kk / 4) * T::kKvBlockBytes + step, 16), kk > 0);
  }
}

/// O[64 x D] += P V: P's k-step j (tokens 16j .. 16j + 15) is packed from S's
/// n8 tiles 2j and 2j + 1 (the same fragment layout as mma.sync); V rows
/// 16j .. are two 8-row swizzle atoms (1024 bytes each) into the tile, its
/// 64-column blocks kKvBlockBytes apart (the leading byte offset).
template <class S>
__device__ __forceinline__ void accumulate_pv_wgmma(
    float (&o)[WgmmaTraits<S>::kDimTiles][4], const unsigned (&pf)[WgmmaTraits<S>::kPvSteps][4],
    unsigned v_tile) {
  using T = WgmmaTraits<S>;
#pragma unroll
  for (int j = 0; j < T::kPvSteps; ++j) {
    wgmma_pv<S::kKvDtype, T::kD>(o, pf[j],
                                 wgmma_descriptor_low(v_tile + j * 2048u, T::kKvBlockBytes), 1);
  }
}

/// Producer warpgroup: every item's tiles, in queue order, into the ring.
template <class S>
__device__ __forceinline__ void produce_items(const canopy_abi::PartialParams& p,
                                              const canopy_abi::FusedParams& f, ItemRange range,
                                              unsigned char* smem, unsigned barriers, int tid) {
  using T = WgmmaTraits<S>;
  int stage = 0;
  unsigned phase = 0;
  for (int i = range.begin; i < range.end; ++i) {
    const canopy_abi::DeviceWorkItem item = p.items[queue_item<S>(f, i)];
    for (int first = item.token_begin; first < item.token_end; first += S::kTileKV) {
      mbarrier_wait(barriers + 8 * (S::kStages + stage), phase ^ 1);  // the consumers freed it
      produce_tile<S>(p, item, first, smem + T::kSmem.k + stage * T::kTileBytes,
                      smem + T::kSmem.v + stage * T::kTileBytes, tid);
      mbarrier_arrive_on_cp_async(barriers + 8 * stage);
      if (++stage == S::kStages) {
        stage = 0;
        phase ^= 1;
      }
    }
  }
  cp_async_wait<0>();  // nothing in flight when the warps leave
}

/// Consumer warpgroup w: one item's rows 64w .. 64w + 63 (none when the item
/// has fewer rows: it still releases every stage it is handed).
template <class S>
__device__ __forceinline__ void consume_item(const canopy_abi::PartialParams& p, int index,
                                             unsigned char* smem, unsigned smem_base,
                                             unsigned barriers, int w, int tid, int& stage,
                                             unsigned& phase) {
  using T = WgmmaTraits<S>;
  const int row_base = 64 * w;
  // Only the loop bounds stay in registers across the KV loop; the epilogue
  // reads the item again (at D = 256, O alone takes 128 registers).
  const int token_begin = p.items[index].token_begin;
  const int token_end = p.items[index].token_end;
  const bool active = row_base < p.items[index].row_count;  // warpgroup-uniform
  if (active) stage_q_rows<S>(p, p.items[index], row_base, smem + T::kSmem.q, tid);
  fence_proxy_async_shared();  // Q written by ordinary stores, read by wgmma
  named_barrier_sync(2 + w, 128);
  const unsigned q_rows = smem_base + T::kSmem.q + row_base * 128u;

  constexpr float kLog2e = 1.4426950408889634f;
  const float scale = S::kSoftCap ? kLog2e : p.sm_scale * kLog2e;
  float o[T::kDimTiles][4];
  float m[2] = {neg_inf(), neg_inf()};
  float l[2] = {0.f, 0.f};
#pragma unroll
  for (int nd = 0; nd < T::kDimTiles; ++nd) o[nd][0] = o[nd][1] = o[nd][2] = o[nd][3] = 0.f;

  for (int first = token_begin; first < token_end; first += S::kTileKV) {
    mbarrier_wait(barriers + 8 * stage, phase);  // the tile has landed
    if (active) {
      fence_proxy_async_shared();  // cp.async (generic proxy) data, wgmma (async proxy) reads
      const unsigned k_tile = smem_base + T::kSmem.k + stage * T::kTileBytes;
      const unsigned v_tile = smem_base + T::kSmem.v + stage * T::kTileBytes;
      float s[T::kTokenTiles][4];
      wgmma_fence();
      scores_wgmma<S>(s, q_rows, k_tile);
      wgmma_commit();
      wgmma_wait<0>();
      cap_and_mask_tile<S::kSoftCap, T::kTokenTiles>(s, p.sm_scale, p.soft_cap, token_end - first);
      softmax_update_tile<T::kTokenTiles, T::kDimTiles>(s, m, l, o, scale);
      unsigned pf[T::kPvSteps][4];
      pack_probabilities<S::kKvDtype, T::kPvSteps>(s, pf);
      wgmma_fence();
      accumulate_pv_wgmma<S>(o, pf, v_tile);
      wgmma_commit();
      wgmma_wait<0>();
    }
    mbarrier_arrive(barriers + 8 * (S::kStages + stage));  // the stage is free again
    if (++stage == S::kStages) {
      stage = 0;
      phase ^= 1;
    }
  }
  if (active) {
    finish_row_states(m, l, scale);
    const canopy_abi::DeviceWorkItem item = p.items[index];
    const int warp_row = row_base + 16 * ((tid / 32) % 4);
    write_rows_from_registers<S, T::kDimTiles>(p, item, 0, warp_row, item.row_count, o, m, l);
  }
}

template <class S>
__device__ __forceinline__ void partial_attention_wgmma(const canopy_abi::PartialParams& p,
                                                        const canopy_abi::FusedParams& f) {
  using T = WgmmaTraits<S>;
  static_assert(S::kHeadDim == 64 || S::kHeadDim == 128 || S::kHeadDim == 256,
                "head_dim must be 64, 128 or 256");
  static_assert(S::kTileQ == 64 || S::kTileQ == 128, "one or two consumer warpgroups");
  static_assert(S::kTileKV == 64 || S::kTileKV == 128, "wgmma n64 or n128 score tiles");
  static_assert(S::kThreads == 128 + T::kConsumerThreads, "a producer and the consumers");
  static_assert(S::kStages >= 2 && S::kStages <= 4, "the KV ring holds 2 to 4 stages");
  static_assert(T::kSmem.total == S::kSmemBytes,
                "device shared-memory layout must match the host's (kernel_layouts.cuh)");
  static_assert(
      S::kMaxRegisters == canopy_abi::wgmma_max_registers(S::kThreads) && S::kMinBlocksPerSm == 1,
      "__launch_bounds__(threads, 1): setmaxnreg needs the entry cap (kernel_layouts.cuh)");
  static_assert(T::kConsumers == 1 ||
                    128 * T::kProducerRegisters + T::kConsumerThreads * T::kConsumerRegisters <=
                        canopy_abi::registers_per_sm(),
                "the reallocated registers fit the SM");
  static_assert(S::kQDtype != kDtF32 && S::kKvDtype != kDtF32, "q and KV are fp16 or bf16");
  extern __shared__ __align__(1024) unsigned char canopy_smem[];
  // Swizzle atoms must start at 1024-byte boundaries of the shared window.
  const unsigned raw = shared_address(canopy_smem);
  const unsigned smem_base = (raw + 1023u) & ~1023u;
  unsigned char* smem = canopy_smem + (smem_base - raw);
  const unsigned barriers = smem_base + T::kSmem.barriers;
  const int warpgroup = threadIdx.x / 128;
  const int tid = threadIdx.x % 128;
  if (threadIdx.x == 0) {
    for (int s = 0; s < S::kStages; ++s) {
      mbarrier_init(barriers + 8 * s, 128);  // full: producer threads
      mbarrier_init(barriers + 8 * (S::kStages + s), T::kConsumerThreads);  // empty: consumers
    }
  }
  __syncthreads();
  const ItemRange range = block_items<S>(p, f);
  if (warpgroup == 0) {
    if constexpr (T::kConsumers > 1) warpgroup_registers_shrink<T::kProducerRegisters>();
    produce_items<S>(p, f, range, smem, barriers, tid);
  } else {
    if constexpr (T::kConsumers > 1) warpgroup_registers_grow<T::kConsumerRegisters>();
    int stage = 0;
    unsigned phase = 0;
    for (int i = range.begin; i < range.end; ++i) {
      const int index = queue_item<S>(f, i);
      consume_item<S>(p, index, smem, smem_base, barriers, warpgroup - 1, tid, stage, phase);
      count_finished_rows<S>(p, f, index, threadIdx.x - 128, T::kConsumerThreads,
                             T::kConsumersBarrier);
    }
    // Every consumer is past its last wgmma: the Q region is free.
    merge_completed_groups<S>(p, f, range, threadIdx.x - 128, T::kConsumerThreads,
                              T::kConsumersBarrier, reinterpret_cast<int*>(smem + T::kSmem.q));
  }
}

}  // namespace canopy_dev
