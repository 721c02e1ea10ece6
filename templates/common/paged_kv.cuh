// Paged KV addressing and the partial-state epilogue shared by every
// partial-attention family: where segment token t of an item lives, and where
// a finished row goes (a float32 partial slot, or the output itself for a
// kItemDirectOutput item).
#pragma once

#include "device_common.cuh"
#include "kernel_abi.cuh"

namespace canopy_dev {

/// Element index of (page, slot, kv_head, 0) in a paged K or V tensor, 64-bit.
template <class S>
__device__ __forceinline__ long long kv_element_offset(const canopy_abi::PartialParams& p, int page,
                                                       int slot, int kv_head) {
  const long long pg = page;
  if constexpr (S::kKvLayoutHnd) {
    // HND: [pages, kv_heads, page_size, D]
    return ((pg * p.num_kv_heads + kv_head) * p.page_size + slot) * S::kHeadDim;
  } else {
    // NHD: [pages, page_size, kv_heads, D]
    return ((pg * p.page_size + slot) * p.num_kv_heads + kv_head) * S::kHeadDim;
  }
}

/// Element index of segment token `token` of `item` for KV head `kv_head`
/// (page through the table).
template <class S>
__device__ __forceinline__ long long kv_token_offset(const canopy_abi::PartialParams& p,
                                                     const canopy_abi::DeviceWorkItem& item,
                                                     int token, int kv_head) {
  int page_index, slot;
  if (p.page_shift >= 0) {  // the common case: a power-of-two page, no division
    page_index = token >> p.page_shift;
    slot = token & (p.page_size - 1);
  } else {
    page_index = token / p.page_size;
    slot = token - page_index * p.page_size;
  }
  const int page = p.kv_pages[item.kv_page_offset + page_index];
  return kv_element_offset<S>(p, page, slot, kv_head);
}

/// Stores one float as element `index` of a tensor of dtype code `dtype`.
__device__ __forceinline__ void store_as(void* base, long long index, int dtype, float value) {
  if (dtype == kDtF32) {
    static_cast<float*>(base)[index] = value;
  } else if (dtype == kDtBF16) {
    static_cast<unsigned short*>(base)[index] = float_to_bf16(value);
  } else {
    static_cast<unsigned short*>(base)[index] = float_to_f16(value);
  }
}

/// Output row (request * num_qo_heads + qo_head) of row i of the item's KV head
/// kv_head + head: its task's row under KV head 0, shifted by whole groups
/// (canopy::WorkItem).
__device__ __forceinline__ long long query_row(const canopy_abi::PartialParams& p,
                                               const canopy_abi::DeviceWorkItem& item, int head,
                                               int i) {
  return p.task_rows[item.task_row_begin + i] + (item.kv_head + head) * p.group;
}

/// Where row r of KV head kv_head + head of an item writes columns [col, col +
/// n): a partial slot, or for a direct item its output row.
struct RowDestination {
  bool direct;
  long long row;  // partial slot, or output row (request * num_qo_heads + qo_head)
};

__device__ __forceinline__ RowDestination row_destination(const canopy_abi::PartialParams& p,
                                                          const canopy_abi::DeviceWorkItem& item,
                                                          int head, int r) {
  const bool direct = (item.flags & canopy_abi::kItemDirectOutput) != 0;
  // A head pack's KV head h owns slots row_begin + h * row_count ..
  return {direct, direct ? query_row(p, item, head, r)
                         : static_cast<long long>(item.row_begin + head * item.row_count + r)};
}

/// Writes normalised values o[0..n) of a row at column `col`.
template <class S, int N>
__device__ __forceinline__ void store_row_values(const canopy_abi::PartialParams& p,
                                                 const RowDestination& dst, int col,
                                                 const float (&o)[N]) {
  const long long base = dst.row * S::kHeadDim + col;
  if (!dst.direct) {
    float* out = p.partial_o + base;
    if constexpr (N == 4) {
      *reinterpret_cast<Float4*>(out) = Float4{o[0], o[1], o[2], o[3]};
    } else if constexpr (N == 2) {
      *reinterpret_cast<Float2*>(out) = Float2{o[0], o[1]};
    } else {
#pragma unroll
      for (int i = 0; i < N; ++i) out[i] = o[i];
    }
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) store_as(p.out, base + i, p.out_dtype, o[i]);
  }
}

/// The row's log-sum-exp (natural log): into its partial slot, or for a
/// direct item into lse when the caller asked for it.
__device__ __forceinline__ void store_row_lse(const canopy_abi::PartialParams& p,
                                              const RowDestination& dst, float lse) {
  if (!dst.direct) {
    p.partial_lse[dst.row] = lse;
  } else if (p.lse != nullptr) {
    p.lse[dst.row] = lse;
  }
}

}  // namespace canopy_dev
