// Tensor-core building blocks for sm_80+: ldmatrix from swizzled shared
// memory, mma.sync m16n8k16 with float32 accumulators, and float -> 16-bit
// packing. Fragment layouts (PTX ISA, "Matrix fragments for mma.m16n8k16"),
// with g = lane / 4 and t = lane % 4:
//   A 16x16 (row): a0a1 = (g, 2t..2t+1), a2a3 = (g+8, 2t..), a4a5 = (g, 2t+8..),
//                  a6a7 = (g+8, 2t+8..), two 16-bit values per 32-bit register;
//   B 16x8 (col):  b0b1 = (k 2t..2t+1, n g), b2b3 = (k 2t+8.., n g);
//   C 16x8 f32:    c0c1 = (g, 2t..2t+1), c2c3 = (g+8, 2t..2t+1).
// A C fragment of S = Q K^T is therefore already the A fragment of P for
// P V once packed: no shuffles between the two products.
#pragma once

#include "../common/device_common.cuh"

namespace canopy_dev {

/// Element offset of 16-byte chunk `chunk` of row `row` in a tile whose rows
/// hold kChunks chunks. Chunks are XOR-swizzled by row % 8, so the eight rows
/// an ldmatrix reads at one logical chunk land in eight different bank groups.
template <int kChunks>
__device__ __forceinline__ int swizzled_offset(int row, int chunk) {
  static_assert(kChunks >= 8 && (kChunks & (kChunks - 1)) == 0,
                "rows of 8, 16 or 32 chunks (head_dim 64, 128, 256)");
  return row * (kChunks * 8) + ((chunk ^ (row & 7)) * 8);
}

/// Four 8x8 16-bit matrices; lane l gives the row address of matrix l / 8,
/// row l % 8, and receives from matrix i (row l / 4, columns 2(l % 4)..+1).
__device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], const void* smem_row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(smem_row)));
}

/// The same from a 32-bit shared-window address (no generic-to-shared
/// conversion per load; constant offsets fold into the instruction).
__device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], unsigned smem_addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr));
}

__device__ __forceinline__ void ldmatrix_x4_trans(unsigned (&r)[4], unsigned smem_addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr));
}

/// The same, transposed: lane l receives (rows 2(l % 4)..+1, column l / 4).
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned (&r)[4], const void* smem_row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(smem_row)));
}

/// c += A(16x16) B(16x8) in float32; DT selects fp16 or bf16 operands.
template <int DT>
__device__ __forceinline__ void mma_16x8x16(float (&c)[4], const unsigned (&a)[4], unsigned b0,
                                            unsigned b1) {
  static_assert(DT == kDtF16 || DT == kDtBF16, "tensor-core operands are fp16 or bf16");
  if constexpr (DT == kDtF16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

/// c = A(16x16) B(16x8) in float32 (no accumulator to clear first).
template <int DT>
__device__ __forceinline__ void mma_16x8x16_first(float (&c)[4], const unsigned (&a)[4],
                                                  unsigned b0, unsigned b1) {
  static_assert(DT == kDtF16 || DT == kDtBF16, "tensor-core operands are fp16 or bf16");
  const float zero = 0.f;
  if constexpr (DT == kDtF16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%10, %10, %10, %10};\n"
        : "=f"(c[0]), "=f"(c[1]), "=f"(c[2]), "=f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "f"(zero));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%10, %10, %10, %10};\n"
        : "=f"(c[0]), "=f"(c[1]), "=f"(c[2]), "=f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "f"(zero));
  }
}

}  // namespace canopy_dev
