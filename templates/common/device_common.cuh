// Device helpers shared by the generated kernels: element conversions, async
// copies and warp reductions. Self-contained CUDA C++17: no CUDA headers, so
// NVRTC needs no include paths; 16-bit elements are stored as unsigned short.
#pragma once

#include "kernel_abi.cuh"

namespace canopy_dev {

/// Element type codes (kernel_abi.cuh, shared with the host).
using canopy_abi::DTypeCode;
using canopy_abi::kDtBF16;
using canopy_abi::kDtF16;
using canopy_abi::kDtF32;

/// Sixteen bytes: eight 16-bit elements, moved with one vector load/store.
struct alignas(16) Chunk16 {
  unsigned x, y, z, w;
};

/// Float vectors for 8- and 16-byte accesses (no CUDA headers: own types).
struct alignas(8) Float2 {
  float x, y;
};
struct alignas(16) Float4 {
  float x, y, z, w;
};

/// fp16 bits -> float (exact).
__device__ __forceinline__ float f16_to_float(unsigned short bits) {
  float f;
  asm("{ .reg .b16 h; mov.b16 h, %1; cvt.f32.f16 %0, h; }" : "=f"(f) : "h"(bits));
  return f;
}

/// float -> fp16 bits, round to nearest even.
__device__ __forceinline__ unsigned short float_to_f16(float f) {
  unsigned short bits;
  asm("{ .reg .b16 h; cvt.rn.f16.f32 h, %1; mov.b16 %0, h; }" : "=h"(bits) : "f"(f));
  return bits;
}

/// bf16 bits -> float: bf16 is the top half of an IEEE float (exact).
__device__ __forceinline__ float bf16_to_float(unsigned short bits) {
  return __uint_as_float(static_cast<unsigned>(bits) << 16);
}

/// float -> bf16 bits, round to nearest even (sm_80+ instruction).
__device__ __forceinline__ unsigned short float_to_bf16(float f) {
  unsigned short bits;
  asm("{ .reg .b16 h; cvt.rn.bf16.f32 h, %1; mov.b16 %0, h; }" : "=h"(bits) : "f"(f));
  return bits;
}

/// A 16-bit element of dtype DT as float.
template <int DT>
__device__ __forceinline__ float to_float(unsigned short bits) {
  static_assert(DT == kDtF16 || DT == kDtBF16, "16-bit storage is fp16 or bf16");
  if constexpr (DT == kDtF16) {
    return f16_to_float(bits);
  } else {
    return bf16_to_float(bits);
  }
}

/// Eight packed 16-bit elements (one 16-byte chunk) as floats.
template <int DT>
__device__ __forceinline__ void unpack8(const Chunk16& chunk, float (&out)[8]) {
  const unsigned words[4] = {chunk.x, chunk.y, chunk.z, chunk.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    out[2 * i] = to_float<DT>(static_cast<unsigned short>(words[i] & 0xffffu));
    out[2 * i + 1] = to_float<DT>(static_cast<unsigned short>(words[i] >> 16));
  }
}

/// (lo, hi) -> one register of two 16-bit values, lo in the low half (the
/// element with the smaller k index), round to nearest even.
template <int DT>
__device__ __forceinline__ unsigned pack2(float lo, float hi) {
  static_assert(DT == kDtF16 || DT == kDtBF16, "tensor-core operands are fp16 or bf16");
  unsigned r;
  if constexpr (DT == kDtF16) {
    asm("cvt.rn.f16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
  } else {
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
  }
  return r;
}

/// Eight 16-bit values re-encoded from dtype FROM to dtype TO (through float).
template <int FROM, int TO>
__device__ __forceinline__ Chunk16 convert_chunk(const Chunk16& in) {
  if constexpr (FROM == TO) {
    return in;
  } else {
    float f[8];
    unpack8<FROM>(in, f);
    return Chunk16{pack2<TO>(f[0], f[1]), pack2<TO>(f[2], f[3]), pack2<TO>(f[4], f[5]),
                   pack2<TO>(f[6], f[7])};
  }
}

/// Generic pointer -> 32-bit shared-window address, for cp.async.
__device__ __forceinline__ unsigned shared_address(const void* ptr) {
  unsigned addr;
  asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(addr) : "l"(ptr));
  return addr;
}

/// Asynchronous 16-byte copy global -> shared; `valid` false writes zeros
/// instead (src-size 0), so padding tokens hold finite values.
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_address(smem)),
               "l"(gmem), "r"(src_bytes)
               : "memory");
}

__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}

/// Waits until at most N committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  return v;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    v += __shfl_xor_sync(0xffffffffu, v, offset);
  }
  return v;
}

/// -infinity without <cmath>.
__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

}  // namespace canopy_dev
