// The resources of every kernel family as constexpr functions compiled by
// both NVRTC and g++, so host and device can never disagree:
//  - shared-memory layouts of the partial-attention families (the kernels
//    carve their dynamic shared memory with them, the host sizes launches and
//    checks limits with them): byte offsets, every region 16-byte aligned;
//  - register caps per family: the generated kernel's
//    __launch_bounds__(threads, blocks_by_registers(cap, threads)) holds ptxas
//    to them, and the host's occupancy (families::occupancy, the planner's
//    block slots) counts with them, before anything is compiled.
// Plain C++17, no CUDA headers.
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

/// Hopper warpgroup-MMA family (wgmma, sm_90a). Q, K and V are stored as the
/// wgmma operands want them: column blocks of 64 elements (128 bytes) per
/// row, each block [rows][128 B] with the 128-byte swizzle (16-byte chunk c
/// of row r at chunk c ^ (r % 8)), every block 1024-byte aligned. K and V
/// share one layout: K is a K-major B operand of S = Q K^T, V an MN-major B
/// operand of O = P V. Each pipeline stage has a full and an empty mbarrier.
/// The kernel aligns its base to 1024 bytes, so the total includes 1024
/// bytes of slack.
struct WgmmaSmemLayout {
  int q;         ///< [D / 64][tile_q][64] KV dtype
  int k;         ///< [stages][D / 64][tile_kv][64] KV dtype
  int v;         ///< [stages][D / 64][tile_kv][64] KV dtype
  int barriers;  ///< full[stages], empty[stages]: 8-byte mbarriers
  int total;
};

CANOPY_HOST_DEVICE constexpr int align1024(int bytes) { return (bytes + 1023) / 1024 * 1024; }

CANOPY_HOST_DEVICE constexpr WgmmaSmemLayout wgmma_smem_layout(int head_dim, int tile_q,
                                                               int tile_kv, int stages) {
  WgmmaSmemLayout s{};
  s.q = 0;
  s.k = align1024(tile_q * head_dim * 2);
  s.v = s.k + stages * tile_kv * head_dim * 2;
  s.barriers = s.v + stages * tile_kv * head_dim * 2;
  s.total = s.barriers + 16 * stages + 1024;
  return s;
}

// ---- registers ---------------------------------------------------------------

/// Registers per SM on every arch Canopy compiles for (sm_80 .. sm_120;
/// Arch::registers_per_sm()).
CANOPY_HOST_DEVICE constexpr int registers_per_sm() { return 65536; }

/// Thread blocks of `threads` threads one SM holds when each thread has
/// `registers` registers: registers are allocated per warp in units of 256
/// (8 per thread). What __launch_bounds__(threads, N) asks for, inverted:
/// with N = blocks_by_registers(cap, threads), ptxas keeps each thread to at
/// most 65536 / (N * threads) registers (rounded down to 8), which is >= cap,
/// and any count it settles on gives >= N blocks here.
CANOPY_HOST_DEVICE constexpr int blocks_by_registers(int registers, int threads) {
  const int warps = (threads + 31) / 32;
  const int per_warp = (registers + 7) / 8 * 8 * 32;
  return per_warp * warps > 0 ? registers_per_sm() / (per_warp * warps) : 0;
}

/// FMA reference: 128 registers (4 blocks of 4 warps by registers; shared
/// memory allows fewer). ptxas (CUDA 13.0) uses 40: O lives in shared memory.
CANOPY_HOST_DEVICE constexpr int fma_max_registers(int /*head_dim*/) { return 128; }

/// Tensor-core family, by head dim (4 warps: 3 blocks per SM at D = 64, 2 at
/// D = 128 and 256, where shared memory allows 1). O, the Q fragments and the
/// softmax state of a warp's m16 tiles live in registers; ptxas (CUDA 13.0)
/// uses 128-158 / 224-245 / 254-255 (docs/kernels.md, "Resources").
CANOPY_HOST_DEVICE constexpr int mma_max_registers(int head_dim) {
  return head_dim <= 64 ? 168 : 255;
}

/// Merge, by head dim (4 warps: 7 / 5 / 3 blocks per SM). A lane owns
/// head_dim / 32 columns of up to 8 partials in flight; ptxas (CUDA 13.0)
/// uses 32-48 / 40-70 / 54-128 unbounded. Each cap leaves headroom: held to
/// exactly 128 at D = 256, ptxas spills, and at 64 for D = 64 the merge
/// shared with the fused path (merge_output_row) spilled 8 bytes.
CANOPY_HOST_DEVICE constexpr int merge_max_registers(int head_dim) {
  return head_dim <= 64 ? 72 : (head_dim <= 128 ? 96 : 168);
}

/// Hopper warpgroup-MMA family: one producer warpgroup and tile_q / 64
/// consumer warpgroups, one block per SM (shared memory), launched with
/// __launch_bounds__(threads, 1) as setmaxnreg needs. With two consumers the
/// producer gives registers to them (56 and 224: 128 x 56 + 256 x 224 <= 64K);
/// the cap here is what every thread gets at entry.
CANOPY_HOST_DEVICE constexpr int wgmma_max_registers(int threads) {
  return registers_per_sm() / threads / 8 * 8 > 255 ? 255 : registers_per_sm() / threads / 8 * 8;
}

}  // namespace canopy_abi
