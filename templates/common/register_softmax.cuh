// The online softmax on tensor-core accumulators held in registers, shared by
// the mma.sync and wgmma families: both hold a warp's 16 rows of S = Q K^T
// and of O as n8 tiles, thread (g = lane / 4, t = lane % 4) owning rows g and
// g + 8, columns 8i + 2t and 8i + 2t + 1 of n8 tile i (e = 0, 1: row g; e = 2,
// 3: row g + 8). m is kept in raw score units and exponents are taken in the
// log2 domain: scale = sm_scale * log2 e (after a soft cap, which applies
// sm_scale itself, just log2 e).
#pragma once

#include "device_common.cuh"
#include "paged_kv.cuh"

namespace canopy_dev {

/// 2^x, approximate (one MUFU op); 2^-inf = +0.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

/// The soft cap (kSoftCap) and, on a partial tile, -inf for columns at or
/// past `valid`. Full tiles without a cap skip the pass.
template <bool kSoftCap, int kTiles>
__device__ __forceinline__ void cap_and_mask_tile(float (&s)[kTiles][4], float sm_scale,
                                                  float soft_cap, int valid) {
  const int t = threadIdx.x % 4;
  if constexpr (kSoftCap) {
#pragma unroll
    for (int nt = 0; nt < kTiles; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) s[nt][e] = soft_cap * tanhf(s[nt][e] * sm_scale / soft_cap);
    }
  }
  if (valid < 8 * kTiles) {
#pragma unroll
    for (int nt = 0; nt < kTiles; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        if (8 * nt + 2 * t + (e & 1) >= valid) s[nt][e] = neg_inf();
      }
    }
  }
}

/// One tile of the online softmax for the thread's rows g and g + 8:
/// m' = max(m, max s), p = 2^(s scale - m' scale) (written over s),
/// l' = 2^((m - m') scale) l + sum p (this thread's columns; the quad's sums
/// are added by finish_row_states), and O scaled by 2^((m - m') scale) when
/// any row of the warp moved its max.
template <int kTiles, int kDimTiles>
__device__ __forceinline__ void softmax_update_tile(float (&s)[kTiles][4], float (&m)[2],
                                                    float (&l)[2], float (&o)[kDimTiles][4],
                                                    float scale) {
  float alpha[2];
  bool moved = false;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    float tile_max = neg_inf();
#pragma unroll
    for (int nt = 0; nt < kTiles; ++nt) {
      tile_max = fmaxf(tile_max, fmaxf(s[nt][2 * i], s[nt][2 * i + 1]));
    }
    // The four threads of a quad hold one row's columns.
    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
    const float m_new = fmaxf(m[i], tile_max);
    // A row with no valid token yet keeps m = -inf; subtract 0 then, not -inf.
    const float m_scaled = m_new == neg_inf() ? 0.f : m_new * scale;
    alpha[i] = fast_exp2(m[i] * scale - m_scaled);  // 0 from -inf, 1 if unchanged
    moved |= alpha[i] != 1.f;
    m[i] = m_new;
    float sum = 0.f;
#pragma unroll
    for (int nt = 0; nt < kTiles; ++nt) {
      s[nt][2 * i] = fast_exp2(fmaf(s[nt][2 * i], scale, -m_scaled));
      s[nt][2 * i + 1] = fast_exp2(fmaf(s[nt][2 * i + 1], scale, -m_scaled));
      sum += s[nt][2 * i] + s[nt][2 * i + 1];
    }
    l[i] = l[i] * alpha[i] + sum;
  }
  // Once the running max settles (most tiles), the rescale is skipped.
  if (__any_sync(0xffffffffu, moved)) {
#pragma unroll
    for (int nd = 0; nd < kDimTiles; ++nd) {
      o[nd][0] *= alpha[0];
      o[nd][1] *= alpha[0];
      o[nd][2] *= alpha[1];
      o[nd][3] *= alpha[1];
    }
  }
}

/// Probabilities as the A fragments of P V: k-step j (16 tokens) is packed
/// from n8 tiles 2j and 2j + 1 (an accumulator fragment is already an A
/// fragment once packed to 16 bits: no shuffles).
template <int DT, int kSteps>
__device__ __forceinline__ void pack_probabilities(const float (&s)[2 * kSteps][4],
                                                   unsigned (&a)[kSteps][4]) {
#pragma unroll
  for (int j = 0; j < kSteps; ++j) {
    a[j][0] = pack2<DT>(s[2 * j][0], s[2 * j][1]);
    a[j][1] = pack2<DT>(s[2 * j][2], s[2 * j][3]);
    a[j][2] = pack2<DT>(s[2 * j + 1][0], s[2 * j + 1][1]);
    a[j][3] = pack2<DT>(s[2 * j + 1][2], s[2 * j + 1][3]);
  }
}

/// After the last tile: m in the log2 domain (m * scale; -inf stays -inf)
/// and l summed over the quad (each thread summed only its own columns).
__device__ __forceinline__ void finish_row_states(float (&m)[2], float (&l)[2], float scale) {
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    m[i] *= scale;
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
  }
}

/// Natural-log lse of a row from its log2-domain max and sum.
__device__ __forceinline__ float row_lse(float m, float l) {
  constexpr float kLn2 = 0.6931471805599453f;
  return l > 0.f ? m * kLn2 + logf(l) : neg_inf();
}

/// A warp's 16 rows (rows row0 .. row0 + 15 of KV head kv_head + head of the
/// item, those below `rows` exist) written straight from registers: o / l
/// and the lse, to the partial slots or, for a direct item, the output.
template <class S, int kDimTiles>
__device__ __forceinline__ void write_rows_from_registers(
    const canopy_abi::PartialParams& p, const canopy_abi::DeviceWorkItem& item, int head, int row0,
    int rows, const float (&o)[kDimTiles][4], const float (&m)[2], const float (&l)[2]) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int k = lane / 4 + 8 * i;
    if (row0 + k >= rows) continue;
    const RowDestination dst = row_destination(p, item, head, row0 + k);
    const float inv = l[i] > 0.f ? 1.f / l[i] : 0.f;
#pragma unroll
    for (int nd = 0; nd < kDimTiles; ++nd) {
      const float v[2] = {o[nd][2 * i] * inv, o[nd][2 * i + 1] * inv};
      store_row_values<S>(p, dst, 8 * nd + 2 * (lane % 4), v);
    }
    if (lane % 4 == 0) store_row_lse(p, dst, row_lse(m[i], l[i]));
  }
}

}  // namespace canopy_dev
