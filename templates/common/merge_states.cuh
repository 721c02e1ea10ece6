// Merge: one warp per output row combines the row's partial states with
// log-sum-exp weights, in the plan's fixed order (deterministic, no atomics):
//   m = max_i lse_i,  w_i = exp(lse_i - m),
//   out = sum_i w_i o_i / sum_i w_i,  lse = m + log(sum_i w_i).
// The work is latency-bound (a few partials of 256-1024 bytes per row), so
// the lanes fetch up to 32 partials' slots and lse at once, and each lane
// owns D / 32 consecutive columns (one or two 16-byte loads per partial).
// merge_output_row is the whole row's merge, which the merge kernel runs per
// listed row; merge_group_rows is its form for the partial kernels' fused
// merge (item_queue.cuh), several rows of a group at once.
#pragma once

#include "device_common.cuh"
#include "kernel_abi.cuh"
#include "kernel_layouts.cuh"
#include "paged_kv.cuh"

namespace canopy_dev {

/// Lane l's D / 32 consecutive columns of a float32 row, in 8- or 16-byte
/// loads; kBypassL1 reads through L2 only (ld.global.cg), for data other
/// blocks of the same launch wrote.
template <int kPerLane, bool kBypassL1>
__device__ __forceinline__ void load_columns(const float* row, int lane, float (&v)[kPerLane]) {
  static_assert(kPerLane == 2 || kPerLane == 4 || kPerLane == 8, "head_dim 64, 128 or 256");
  if constexpr (kPerLane == 2) {
    const float* at = row + 2 * lane;
    if constexpr (kBypassL1) {
      asm volatile("ld.global.cg.v2.f32 {%0, %1}, [%2];\n" : "=f"(v[0]), "=f"(v[1]) : "l"(at));
    } else {
      const Float2 x = *reinterpret_cast<const Float2*>(at);
      v[0] = x.x;
      v[1] = x.y;
    }
  } else {
#pragma unroll
    for (int c = 0; c < kPerLane / 4; ++c) {
      const float* at = row + 4 * (lane * (kPerLane / 4) + c);
      if constexpr (kBypassL1) {
        asm volatile("ld.global.cg.v4.f32 {%0, %1, %2, %3}, [%4];\n"
                     : "=f"(v[4 * c]), "=f"(v[4 * c + 1]), "=f"(v[4 * c + 2]), "=f"(v[4 * c + 3])
                     : "l"(at));
      } else {
        const Float4 x = *reinterpret_cast<const Float4*>(at);
        v[4 * c] = x.x;
        v[4 * c + 1] = x.y;
        v[4 * c + 2] = x.z;
        v[4 * c + 3] = x.w;
      }
    }
  }
}

__device__ __forceinline__ float load_lse(const float* at, bool bypass_l1) {
  if (!bypass_l1) return *at;
  float v;
  asm volatile("ld.global.cg.f32 %0, [%1];\n" : "=f"(v) : "l"(at));
  return v;
}

/// out[index] = value in dtype kOut when it is a DTypeCode, else in the run-time `dtype`.
template <int kOut>
__device__ __forceinline__ void store_output(void* out, long long index, int dtype, float value) {
  if constexpr (kOut == kDtF32) {
    static_cast<float*>(out)[index] = value;
  } else if constexpr (kOut == kDtBF16) {
    static_cast<unsigned short*>(out)[index] = float_to_bf16(value);
  } else if constexpr (kOut == kDtF16) {
    static_cast<unsigned short*>(out)[index] = float_to_f16(value);
  } else {
    store_as(out, index, dtype, value);
  }
}

/// Output row `out_row` (request * num_qo_heads + q) of dtype code `out_dtype`
/// and, when `lse` is set, lse[out_row], from `count` partial states: part i
/// holds q's state at slot parts[i].slot + head_offset * parts[i].head_stride
/// + in_group (head_offset = q / group, in_group = q % group). kRound:
/// partials whose loads a lane issues before their FMAs (the fan-in bucket
/// when below 8). kOut: the output dtype code (a DTypeCode, or -1 to take
/// `out_dtype` at run time). Called by a whole warp.
template <int kHeadDim, int kRound, int kOut>
__device__ __forceinline__ void merge_output_row(const float* partial_o, const float* partial_lse,
                                                 const canopy_abi::DeviceMergePart* parts,
                                                 int count, int head_offset, int in_group,
                                                 long long out_row, void* out, int out_dtype,
                                                 float* lse) {
  constexpr int kPerLane = kHeadDim / 32;
  const int lane = threadIdx.x % 32;
  float acc[kPerLane];
#pragma unroll
  for (int k = 0; k < kPerLane; ++k) acc[k] = 0.f;
  float wsum = 0.f;
  float m = neg_inf();
  // 32 partials at a time: lane i holds partial i's slot, lse and weight.
  for (int base = 0; base < count; base += 32) {
    const int mine = base + lane;
    int slot = 0;
    if (mine < count) {
      const canopy_abi::DeviceMergePart part = parts[mine];
      slot = part.slot + head_offset * part.head_stride + in_group;
    }
    const float part_lse = mine < count ? load_lse(partial_lse + slot, false) : neg_inf();
    const float m_new = fmaxf(m, warp_max(part_lse));
    if (m_new == neg_inf()) continue;  // all empty so far: nothing to weigh
    // Rescale what earlier rounds summed (their max may have been lower).
    const float rescale = m == neg_inf() ? 0.f : expf(m - m_new);
    m = m_new;
    wsum *= rescale;
#pragma unroll
    for (int k = 0; k < kPerLane; ++k) acc[k] *= rescale;
    const float w = expf(part_lse - m);  // 0 for an empty partial (lse = -inf) or a spare lane
    wsum += warp_sum(w);
    const int n = min(32, count - base);
    for (int i0 = 0; i0 < n; i0 += kRound) {
      float v[kRound][kPerLane];
#pragma unroll
      for (int r = 0; r < kRound; ++r) {
        const int s = __shfl_sync(0xffffffffu, slot, (i0 + r) & 31);
        if (i0 + r < n) {
          load_columns<kPerLane, false>(partial_o + static_cast<long long>(s) * kHeadDim, lane,
                                        v[r]);
        }
      }
#pragma unroll
      for (int r = 0; r < kRound; ++r) {
        const float wr = __shfl_sync(0xffffffffu, w, (i0 + r) & 31);
        if (i0 + r < n) {
#pragma unroll
          for (int k = 0; k < kPerLane; ++k) acc[k] = fmaf(wr, v[r][k], acc[k]);
        }
      }
    }
  }
  const float inv = wsum > 0.f ? 1.f / wsum : 0.f;  // all partials empty (or none): 0, lse -inf
  const long long first = out_row * kHeadDim + lane * kPerLane;
#pragma unroll
  for (int k = 0; k < kPerLane; ++k) store_output<kOut>(out, first + k, out_dtype, acc[k] * inv);
  if (lse != nullptr && lane == 0) lse[out_row] = wsum > 0.f ? m + logf(wsum) : neg_inf();
}

/// The fused merge's form of merge_output_row (item_queue.cuh): rows
/// in_group0 .. in_group0 + kRows - 1 of one (merged request, KV head) group
/// (those below `group`), by one warp. The rows share their partial list and
/// their slots are consecutive, so their loads go out together: a partial
/// kernel's block has 4-8 warps to merge with, not the merge kernel's
/// thousands, and one row at a time left it waiting on L2 latency (v2, H100:
/// ft-1-256's fused launch 73 us against 41 + 8 for v1's two). Each row's
/// arithmetic is merge_output_row's, in the same order: the same bits.
template <int kHeadDim, int kRows>
__device__ __forceinline__ void merge_group_rows(const float* partial_o, const float* partial_lse,
                                                 const canopy_abi::DeviceMergePart* parts,
                                                 int count, int head_offset, int in_group0,
                                                 int group, long long out_row0, void* out,
                                                 int out_dtype, float* lse) {
  constexpr int kPerLane = kHeadDim / 32;
  constexpr int kRound = 2;  // partials whose loads go out before their FMAs
  const int lane = threadIdx.x % 32;
  const int rows = min(kRows, group - in_group0);
  float acc[kRows][kPerLane];
  float wsum[kRows];
  float m[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    wsum[r] = 0.f;
    m[r] = neg_inf();
#pragma unroll
    for (int k = 0; k < kPerLane; ++k) acc[r][k] = 0.f;
  }
  for (int base = 0; base < count; base += 32) {
    const int mine = base + lane;
    int slot0 = 0;
    if (mine < count) {
      const canopy_abi::DeviceMergePart part = parts[mine];
      slot0 = part.slot + head_offset * part.head_stride + in_group0;
    }
    float part_lse[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      part_lse[r] = mine < count && r < rows ? load_lse(partial_lse + slot0 + r, true) : neg_inf();
    }
    float w[kRows];
    bool live[kRows];  // a row whose partials so far are all empty skips the round
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const float m_new = fmaxf(m[r], warp_max(part_lse[r]));
      live[r] = m_new != neg_inf();
      w[r] = 0.f;
      if (!live[r]) continue;
      const float rescale = m[r] == neg_inf() ? 0.f : expf(m[r] - m_new);
      m[r] = m_new;
      wsum[r] *= rescale;
#pragma unroll
      for (int k = 0; k < kPerLane; ++k) acc[r][k] *= rescale;
      w[r] = expf(part_lse[r] - m[r]);
      wsum[r] += warp_sum(w[r]);
    }
    const int n = min(32, count - base);
    for (int i0 = 0; i0 < n; i0 += kRound) {
      float v[kRound][kRows][kPerLane];
#pragma unroll
      for (int j = 0; j < kRound; ++j) {
        const int s = __shfl_sync(0xffffffffu, slot0, (i0 + j) & 31);
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          if (i0 + j < n && r < rows && live[r]) {
            load_columns<kPerLane, true>(partial_o + static_cast<long long>(s + r) * kHeadDim, lane,
                                         v[j][r]);
          }
        }
      }
#pragma unroll
      for (int j = 0; j < kRound; ++j) {
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          const float wr = __shfl_sync(0xffffffffu, w[r], (i0 + j) & 31);
          if (i0 + j < n && r < rows && live[r]) {
#pragma unroll
            for (int k = 0; k < kPerLane; ++k) acc[r][k] = fmaf(wr, v[j][r][k], acc[r][k]);
          }
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    if (r >= rows) break;
    const float inv = wsum[r] > 0.f ? 1.f / wsum[r] : 0.f;
    const long long first = (out_row0 + r) * kHeadDim + lane * kPerLane;
#pragma unroll
    for (int k = 0; k < kPerLane; ++k) store_output<-1>(out, first + k, out_dtype, acc[r][k] * inv);
    if (lse != nullptr && lane == 0) {
      lse[out_row0 + r] = wsum[r] > 0.f ? m[r] + logf(wsum[r]) : neg_inf();
    }
  }
}

template <class S>
__device__ __forceinline__ void merge_states(const canopy_abi::MergeParams& p) {
  static_assert(S::kHeadDim % 64 == 0, "a lane owns head_dim / 32 columns, at least two");
  static_assert(S::kMergeFanIn >= 0 && S::kMergeFanIn <= 16, "unrolled fan-in is 0..16");
  static_assert(S::kThreads % 32 == 0, "a block is whole warps, one row each");
  static_assert(
      S::kMaxRegisters == canopy_abi::merge_max_registers(S::kHeadDim) &&
          S::kMinBlocksPerSm == canopy_abi::blocks_by_registers(S::kMaxRegisters, S::kThreads),
      "__launch_bounds__ must hold the host's register cap (kernel_layouts.cuh)");
  // Partials accumulated per round: the row's fan-in bucket, at most 8 (a
  // round issues that many independent loads per lane before the FMAs).
  constexpr int kRound = S::kMergeFanIn > 0 && S::kMergeFanIn < 8 ? S::kMergeFanIn : 8;
  const int entry = blockIdx.x * (S::kThreads / 32) + threadIdx.x / 32;
  if (entry >= p.num_rows) return;
  // Entry = (merged request, qo head q); each part holds q's slot at an offset.
  const int merged = entry / p.num_qo_heads;
  const int q = entry - merged * p.num_qo_heads;
  const int begin = p.merge_indptr[merged];
  const int head_offset = q / p.group;  // times each part's head stride
  merge_output_row<S::kHeadDim, kRound, S::kODtype>(
      p.partial_o, p.partial_lse, p.merge_parts + begin, p.merge_indptr[merged + 1] - begin,
      head_offset, q - head_offset * p.group,
      static_cast<long long>(p.merge_requests[merged]) * p.num_qo_heads + q, p.out, S::kODtype,
      S::kWithLse ? p.lse : nullptr);
}

}  // namespace canopy_dev
