// Shared-memory layouts of the partial-attention kernel families, as
// constexpr functions compiled by both NVRTC (the kernels carve their dynamic
// shared memory with them) and g++ (the host sizes launches and checks limits
// with them): one definition, so the two can never disagree. Byte offsets,
// every region 16-byte aligned. Plain C++17, no CUDA headers.
#pragma once

// Callable from host and device code: NVRTC (JIT mode) rejects functions
// without an execution space; g++ does not know the keywords.
#if defined(__CUDACC__)
#define CANOPY_HOST_DEVICE __host__ __device__
#else
#define CANOPY_HOST_DEVICE
#endif

namespace canopy_abi {

/// FMA reference family: Q tile, float32 O accumulators, row state, scores
/// and a STAGES-deep K/V pipeline, all of TILE_Q rows / TILE_KV tokens.
struct FmaSmemLayout {
  int q;       ///< [tile_q][D] 16-bit
  int o;       ///< [tile_q][D] f32
  int m;       ///< [tile_q] f32 running max
  int l;       ///< [tile_q] f32 running sum
  int alpha;   ///< [tile_q] f32 rescale of the current step
  int scores;  ///< [tile_q][tile_kv] f32
  int k;       ///< [stages][tile_kv][D] 16-bit
  int v;       ///< [stages][tile_kv][D] 16-bit
  int total;
};

CANOPY_HOST_DEVICE constexpr int align16(int bytes) { return (bytes + 15) / 16 * 16; }

CANOPY_HOST_DEVICE constexpr FmaSmemLayout fma_smem_layout(int head_dim, int tile_q, int tile_kv,
                                                           int stages) {
  FmaSmemLayout s{};
  s.q = 0;
  s.o = align16(s.q + tile_q * head_dim * 2);
  s.m = align16(s.o + tile_q * head_dim * 4);
  s.l = s.m + tile_q * 4;
  s.alpha = s.l + tile_q * 4;
  s.scores = align16(s.alpha + tile_q * 4);
  s.k = align16(s.scores + tile_q * tile_kv * 4);
  s.v = s.k + stages * tile_kv * head_dim * 2;
  s.total = s.v + stages * tile_kv * head_dim * 2;
  return s;
}

/// Tensor-core (mma.sync) family. Q of up to tile_q rows and a STAGES-deep
/// K/V pipeline, rows of 16-byte chunks XOR-swizzled (no padding). After the
/// main loop, the K/V stages are reused to combine the partial states of warps
/// that split one tile's tokens: per warp 16 rows of float32 O with a row
/// stride of D + 4 floats (conflict-free float2 stores), plus (m, l) per row
/// in a region of their own.
struct MmaSmemLayout {
  int q;           ///< [tile_q][D] KV dtype, swizzled
  int k;           ///< [stages][tile_kv][D] KV dtype, swizzled
  int v;           ///< [stages][tile_kv][D] KV dtype, swizzled
  int combine_o;   ///< [warps][16][D + 4] f32, aliases k/v after the main loop
  int combine_ml;  ///< [warps][16][2] f32
  int total;
};

CANOPY_HOST_DEVICE constexpr int mma_combine_row_floats(int head_dim) { return head_dim + 4; }

CANOPY_HOST_DEVICE constexpr MmaSmemLayout mma_smem_layout(int head_dim, int tile_q, int tile_kv,
                                                           int warps, int stages) {
  MmaSmemLayout s{};
  s.q = 0;
  s.k = align16(tile_q * head_dim * 2);
  s.v = s.k + stages * tile_kv * head_dim * 2;
  s.combine_o = s.k;
  s.combine_ml = align16(s.v + stages * tile_kv * head_dim * 2);
  s.total = s.combine_ml + warps * 16 * 2 * 4;
  return s;
}

/// Whether the combine area fits in the K/V stages it aliases.
CANOPY_HOST_DEVICE constexpr bool mma_combine_fits(int head_dim, int tile_kv, int warps,
                                                   int stages) {
  return warps * 16 * mma_combine_row_floats(head_dim) * 4 <= 2 * stages * tile_kv * head_dim * 2;
}

}  // namespace canopy_abi
