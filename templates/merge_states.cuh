// Merge: one warp per listed output row combines the row's partial states with
// log-sum-exp weights, in the plan's fixed order (deterministic, no atomics):
//   m = max_i lse_i,  w_i = exp(lse_i - m),
//   out = sum_i w_i o_i / sum_i w_i,  lse = m + log(sum_i w_i).
#pragma once

#include "device_common.cuh"
#include "kernel_abi.cuh"

namespace canopy_dev {

/// m = max lse over the row's partials. With a compile-time fan-in the first
/// kMergeFanIn are unrolled; any extra partials fall to the general loop, so a
/// wrong host bound costs speed, never correctness.
template <class S>
__device__ __forceinline__ float max_partial_lse(const float* partial_lse, const int* slots,
                                                 int count) {
  float m = neg_inf();
  int i = 0;
  if constexpr (S::kMergeFanIn > 0) {
#pragma unroll
    for (int k = 0; k < S::kMergeFanIn; ++k) {
      if (k < count) m = fmaxf(m, partial_lse[slots[k]]);
    }
    i = S::kMergeFanIn;
  }
  for (; i < count; ++i) m = fmaxf(m, partial_lse[slots[i]]);
  return m;
}

/// acc += w o_slot and wsum += w for one partial; lane owns d = lane + 32 k.
template <class S>
__device__ __forceinline__ void add_weighted_partial(const canopy_abi::MergeParams& p, int slot,
                                                     float m, float (&acc)[S::kHeadDim / 32],
                                                     float& wsum) {
  const int lane = threadIdx.x % 32;
  const float w = expf(p.partial_lse[slot] - m);  // 0 for an empty partial (lse = -inf)
  const float* o = p.partial_o + static_cast<long long>(slot) * S::kHeadDim;
  wsum += w;
#pragma unroll
  for (int k = 0; k < S::kHeadDim / 32; ++k) acc[k] = fmaf(w, o[lane + 32 * k], acc[k]);
}

/// out[row][d] in the output dtype.
template <class S>
__device__ __forceinline__ void store_output(void* out, long long index, float value) {
  if constexpr (S::kODtype == kDtF32) {
    static_cast<float*>(out)[index] = value;
  } else if constexpr (S::kODtype == kDtBF16) {
    static_cast<unsigned short*>(out)[index] = float_to_bf16(value);
  } else {
    static_cast<unsigned short*>(out)[index] = float_to_f16(value);
  }
}

template <class S>
__device__ __forceinline__ void merge_states(const canopy_abi::MergeParams& p) {
  static_assert(S::kHeadDim % 32 == 0, "a lane owns head_dim / 32 columns");
  static_assert(S::kMergeFanIn >= 0 && S::kMergeFanIn <= 16, "unrolled fan-in is 0..16");
  static_assert(S::kThreads % 32 == 0, "a block is whole warps, one row each");
  constexpr int kPerLane = S::kHeadDim / 32;
  const int lane = threadIdx.x % 32;
  const int entry = blockIdx.x * (S::kThreads / 32) + threadIdx.x / 32;
  if (entry >= p.num_rows) return;

  const int row = p.merge_rows[entry];  // output row = request * num_qo_heads + qo_head
  const int begin = p.merge_indptr[entry];
  const int count = p.merge_indptr[entry + 1] - begin;
  const int* slots = p.merge_indices + begin;
  const float m = max_partial_lse<S>(p.partial_lse, slots, count);

  float acc[kPerLane];
#pragma unroll
  for (int k = 0; k < kPerLane; ++k) acc[k] = 0.f;
  float wsum = 0.f;
  if (m != neg_inf()) {  // all partials empty (or none): the row is 0, lse -inf
    if constexpr (S::kMergeFanIn > 0) {
#pragma unroll
      for (int i = 0; i < S::kMergeFanIn; ++i) {
        if (i < count) add_weighted_partial<S>(p, slots[i], m, acc, wsum);
      }
    }
    for (int i = S::kMergeFanIn; i < count; ++i) add_weighted_partial<S>(p, slots[i], m, acc, wsum);
  }

  const float inv = wsum > 0.f ? 1.f / wsum : 0.f;
  const long long base = static_cast<long long>(row) * S::kHeadDim;
#pragma unroll
  for (int k = 0; k < kPerLane; ++k) store_output<S>(p.out, base + lane + 32 * k, acc[k] * inv);
  if constexpr (S::kWithLse) {
    if (lane == 0) p.lse[row] = wsum > 0.f ? m + logf(wsum) : neg_inf();
  }
}

}  // namespace canopy_dev
