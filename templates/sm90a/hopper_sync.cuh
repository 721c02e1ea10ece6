// Hopper (sm_90) synchronization and warpgroup primitives, as inline PTX (no
// CUDA headers under NVRTC): mbarriers in shared memory, named barriers, the
// async-proxy fence, warpgroup MMA fences and register reallocation.
#pragma once

#include "../common/device_common.cuh"

namespace canopy_dev {

/// mbarrier at shared address `bar`, expecting `count` arrivals per phase.
__device__ __forceinline__ void mbarrier_init(unsigned bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}

__device__ __forceinline__ void mbarrier_arrive(unsigned bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}

/// Arrives on `bar` once every cp.async this thread issued so far has landed
/// (the arrival is counted in the barrier's expected count: .noinc).
__device__ __forceinline__ void mbarrier_arrive_on_cp_async(unsigned bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}

/// Blocks until the phase of `bar` with parity `parity` has completed. A
/// fresh barrier is in phase 0, so waiting for parity 1 returns at once.
__device__ __forceinline__ void mbarrier_wait(unsigned bar, unsigned parity) {
  unsigned done = 0;
  do {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
}

/// Barrier `id` (1..15; 0 is __syncthreads) among `threads` threads (whole warps).
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

/// Orders this thread's generic-proxy shared-memory accesses before later
/// async-proxy ones (wgmma operands written by ordinary stores or cp.async).
__device__ __forceinline__ void fence_proxy_async_shared() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}

__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}

/// Waits until at most N committed wgmma groups are still in flight.
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}

/// Register reallocation for warp-specialized warpgroups (the kernel must be
/// launched with a register cap: __launch_bounds__(threads, 1)).
template <int kRegs>
__device__ __forceinline__ void warpgroup_registers_grow() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}
template <int kRegs>
__device__ __forceinline__ void warpgroup_registers_shrink() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}

/// `x`, which the compiler may not assume loop-invariant (keeps it from
/// hoisting values derived from x out of a loop and holding them in registers).
__device__ __forceinline__ unsigned opaque(unsigned x) {
  asm volatile("mov.b32 %0, %0;\n" : "+r"(x));
  return x;
}

}  // namespace canopy_dev
