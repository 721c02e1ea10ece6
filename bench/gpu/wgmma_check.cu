// A standalone check of the Hopper kernel template (templates/sm90a), built
// with nvcc outside the library: the kernel on hand-made work items and
// queues against a float64 reference, and its throughput on a tensor-bound
// shape. docs/perf-notes.md (v2) quotes its first run.
//   nvcc -std=c++17 -O2 -gencode=arch=compute_90a,code=sm_90a -o wgmma_check
//   bench/gpu/wgmma_check.cu
//   ./wgmma_check          # correctness (PASS/FAIL per configuration)
//   ./wgmma_check perf     # TFLOP/s on 128-row items over 8192 tokens
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "../../templates/common/kernel_layouts.cuh"
#include "../../templates/sm90a/attention_wgmma.cuh"

#define CK(x)                                                             \
  do {                                                                    \
    cudaError_t e = (x);                                                  \
    if (e != cudaSuccess) {                                               \
      printf("CUDA %s at %d: %s\n", #x, __LINE__, cudaGetErrorString(e)); \
      exit(1);                                                            \
    }                                                                     \
  } while (0)

template <int HD, int TQ, int TKV, int ST, int DT, bool HND, bool CAP>
struct Spec {
  static constexpr int kHeadDim = HD;
  static constexpr int kTileQ = TQ;
  static constexpr int kTileKV = TKV;
  static constexpr int kWarps = (TQ / 64 + 1) * 4;
  static constexpr int kStages = ST;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kQDtype = DT;
  static constexpr int kKvDtype = DT;
  static constexpr int kODtype = 2;
  static constexpr bool kKvLayoutHnd = HND;
  static constexpr bool kSoftCap = CAP;
  static constexpr bool kWithLse = false;
  static constexpr int kMergeFanIn = 0;
  static constexpr int kSmemBytes = canopy_abi::wgmma_smem_layout(HD, TQ, TKV, ST).total;
  static constexpr int kMaxRegisters = canopy_abi::wgmma_max_registers(kThreads);
  static constexpr int kMinBlocksPerSm = 1;
};

template <class S>
__global__ void __launch_bounds__(S::kThreads, 1) kern(canopy_abi::PartialParams p) {
  canopy_dev::partial_attention_wgmma<S>(p);
}

static float h2f(unsigned short b, int dt) {
  if (dt == 1) {
    unsigned u = unsigned(b) << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
  }
  __half h;
  memcpy(&h, &b, 2);
  return __half2float(h);
}
static unsigned short f2h(float f, int dt) {
  if (dt == 1) {
    __nv_bfloat16 h = __float2bfloat16(f);
    unsigned short b;
    memcpy(&b, &h, 2);
    return b;
  }
  __half h = __float2half(f);
  unsigned short b;
  memcpy(&b, &h, 2);
  return b;
}

template <class S>
int run(const char* name, int page_size, int heads_kv, int group, float cap) {
  const int D = S::kHeadDim, DT = S::kKvDtype;
  const int H_qo = heads_kv * group;
  std::mt19937 rng(1234 + D + S::kTileQ * 7 + page_size);
  std::normal_distribution<float> nd(0.f, 1.f);
  // Requests 0..R-1 each with its own row: batch R.
  const int R = 40;
  const int tokens_total = 1500;
  const int pages = (tokens_total + page_size - 1) / page_size + 3;
  // A shuffled page table for the shared segment.
  std::vector<int> page_ids(pages);
  for (int i = 0; i < pages; ++i) page_ids[i] = i;
  std::shuffle(page_ids.begin(), page_ids.end(), rng);
  const size_t kv_elems = size_t(pages) * page_size * heads_kv * D;
  std::vector<unsigned short> k(kv_elems), v(kv_elems), q(size_t(R) * H_qo * D);
  for (auto& x : k) x = f2h(nd(rng), DT);
  for (auto& x : v) x = f2h(nd(rng), DT);
  for (auto& x : q) x = f2h(nd(rng), DT);
  // Items: rows = requests * group under kv head h (task rows: request-major).
  struct It {
    int req_begin, reqs, tok_begin, tok_end, kv_head, row_off, row_count;
  };
  std::vector<It> its;
  const int rows_full = S::kTileQ;
  const int reqs_full = rows_full / group;
  its.push_back({0, reqs_full, 0, 1500, 0, 0, reqs_full * group});
  its.push_back({0, reqs_full, 0, 1500, heads_kv - 1, 0, reqs_full * group});
  its.push_back({3, 5, 7, 250, 0, 0, 5 * group});                      // few rows, unaligned tokens
  its.push_back({1, reqs_full, 1499, 1500, 0, 0, reqs_full * group});  // one token
  its.push_back({2, reqs_full, 64, 64 + S::kTileKV, heads_kv - 1, 0, reqs_full * group});
  its.push_back({0, 1, 100, 900, 0, 0, group});  // one request
  std::vector<canopy_abi::DeviceWorkItem> items;
  std::vector<int> task_rows;
  int slot = 0;
  for (auto& t : its) {
    canopy_abi::DeviceWorkItem w{};
    w.kv_page_offset = 0;
    w.token_begin = t.tok_begin;
    w.token_end = t.tok_end;
    w.kv_head = t.kv_head;
    w.row_begin = slot;
    w.row_count = t.row_count;
    w.row_tile = S::kTileQ;
    w.flags = 0;
    w.task_row_begin = (int)task_rows.size();
    for (int j = 0; j < t.reqs; ++j)
      for (int g = 0; g < group; ++g) task_rows.push_back((t.req_begin + j) * H_qo + g);
    slot += t.row_count;
    items.push_back(w);
  }
  // Two blocks: queue {0, 2, 4} and {1, 3, 5}.
  std::vector<int> queue = {0, 2, 4, 1, 3, 5}, indptr = {0, 3, 6};
  unsigned short *dk, *dv, *dq;
  float *po, *pl;
  canopy_abi::DeviceWorkItem* di;
  int *dtr, *dpages, *dq2, *dind;
  CK(cudaMalloc(&dk, kv_elems * 2));
  CK(cudaMalloc(&dv, kv_elems * 2));
  CK(cudaMalloc(&dq, q.size() * 2));
  CK(cudaMalloc(&po, size_t(slot) * D * 4));
  CK(cudaMalloc(&pl, size_t(slot) * 4));
  CK(cudaMalloc(&di, items.size() * sizeof(items[0])));
  CK(cudaMalloc(&dtr, task_rows.size() * 4));
  CK(cudaMalloc(&dpages, pages * 4));
  CK(cudaMalloc(&dq2, queue.size() * 4));
  CK(cudaMalloc(&dind, indptr.size() * 4));
  CK(cudaMemcpy(dk, k.data(), kv_elems * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dv, v.data(), kv_elems * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dq, q.data(), q.size() * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(di, items.data(), items.size() * sizeof(items[0]), cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dtr, task_rows.data(), task_rows.size() * 4, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dpages, page_ids.data(), pages * 4, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dq2, queue.data(), queue.size() * 4, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dind, indptr.data(), indptr.size() * 4, cudaMemcpyHostToDevice));
  CK(cudaMemset(po, 0xff, size_t(slot) * D * 4));
  CK(cudaMemset(pl, 0xff, size_t(slot) * 4));
  canopy_abi::PartialParams p{};
  p.q = dq;
  p.k_cache = dk;
  p.v_cache = dv;
  p.partial_o = po;
  p.partial_lse = pl;
  p.items = di;
  p.task_rows = dtr;
  p.kv_pages = dpages;
  p.num_qo_heads = H_qo;
  p.num_kv_heads = heads_kv;
  p.group = group;
  p.page_size = page_size;
  p.page_shift = -1;
  if ((page_size & (page_size - 1)) == 0) {
    p.page_shift = 0;
    while ((1 << p.page_shift) < page_size) ++p.page_shift;
  }
  p.out_dtype = 2;
  p.sm_scale = 1.f / sqrtf(float(D));
  p.soft_cap = cap;
  p.queue = dq2;
  p.queue_indptr = dind;
  const int smem = S::kSmemBytes;
  CK(cudaFuncSetAttribute(kern<S>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  kern<S><<<2, S::kThreads, smem>>>(p);
  CK(cudaGetLastError());
  CK(cudaDeviceSynchronize());
  std::vector<float> ho(size_t(slot) * D), hl(slot);
  CK(cudaMemcpy(ho.data(), po, ho.size() * 4, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(hl.data(), pl, hl.size() * 4, cudaMemcpyDeviceToHost));
  // Reference.
  double worst = 0, worst_lse = 0;
  auto kv_at = [&](const std::vector<unsigned short>& c, int token, int h, int d) {
    const int page = page_ids[token / page_size], s = token % page_size;
    size_t idx = S::kKvLayoutHnd ? ((size_t(page) * heads_kv + h) * page_size + s) * D + d
                                 : ((size_t(page) * page_size + s) * heads_kv + h) * D + d;
    return (double)h2f(c[idx], DT);
  };
  for (size_t ii = 0; ii < items.size(); ++ii) {
    const auto& w = items[ii];
    double num = 0, den = 0;
    for (int r = 0; r < w.row_count; ++r) {
      const int qrow = task_rows[w.task_row_begin + r] + w.kv_head * group;
      std::vector<double> sc(w.token_end - w.token_begin);
      double mx = -1e300;
      for (int t = w.token_begin; t < w.token_end; ++t) {
        double s = 0;
        for (int d = 0; d < D; ++d)
          s += (double)h2f(q[size_t(qrow) * D + d], DT) * kv_at(k, t, w.kv_head, d);
        s *= p.sm_scale;
        if (S::kSoftCap) s = cap * tanh(s / cap);
        sc[t - w.token_begin] = s;
        mx = std::max(mx, s);
      }
      double l = 0;
      for (auto& s : sc) {
        s = exp(s - mx);
        l += s;
      }
      for (int d = 0; d < D; ++d) {
        double o = 0;
        for (int t = w.token_begin; t < w.token_end; ++t)
          o += sc[t - w.token_begin] * kv_at(v, t, w.kv_head, d);
        o /= l;
        const double got = ho[size_t(w.row_begin + r) * D + d];
        num += (got - o) * (got - o);
        den += o * o;
        if (std::isnan(got)) num += 1e30;
      }
      worst_lse = std::max(worst_lse, fabs(hl[w.row_begin + r] - (mx + log(l))));
    }
    worst = std::max(worst, sqrt(num / den));
  }
  const bool ok = worst < (DT == 1 ? 2e-2 : 4e-3) && worst_lse < 2e-2;
  printf("%-34s rel_l2 %.2e  lse_err %.2e  %s\n", name, worst, worst_lse, ok ? "PASS" : "FAIL");
  cudaFree(dk);
  cudaFree(dv);
  cudaFree(dq);
  cudaFree(po);
  cudaFree(pl);
  cudaFree(di);
  cudaFree(dtr);
  cudaFree(dpages);
  cudaFree(dq2);
  cudaFree(dind);
  return ok ? 0 : 1;
}

// Throughput on a compute-bound shape: items of kTileQ rows x `tokens` tokens,
// `per_block` items per block on a persistent grid of 132 blocks.
template <class S>
void perf(const char* name, int tokens, int per_block) {
  const int D = S::kHeadDim, group = 4, heads_kv = 8, H_qo = 32, page_size = 16;
  const int pages = 1 << 16;  // 1M tokens per head: 2 GiB of K and V at D = 128
  const size_t kv_elems = size_t(pages) * page_size * heads_kv * D;
  const int blocks = 132, n_items = blocks * per_block;
  const int R = S::kTileQ / group;
  unsigned short *dk, *dv, *dq;
  float *po, *pl;
  canopy_abi::DeviceWorkItem* di;
  int *dtr, *dpages, *dq2, *dind;
  CK(cudaMalloc(&dk, kv_elems * 2));
  CK(cudaMalloc(&dv, kv_elems * 2));
  CK(cudaMalloc(&dq, size_t(R) * H_qo * D * 2));
  CK(cudaMemset(dk, 0x3c, kv_elems * 2));
  CK(cudaMemset(dv, 0x3c, kv_elems * 2));
  CK(cudaMemset(dq, 0x3c, size_t(R) * H_qo * D * 2));
  std::vector<canopy_abi::DeviceWorkItem> items;
  std::vector<int> task_rows, page_ids(pages), queue, indptr{0};
  for (int i = 0; i < pages; ++i) page_ids[i] = (i * 7919) % pages;
  for (int j = 0; j < R; ++j)
    for (int g = 0; g < group; ++g) task_rows.push_back(j * H_qo + g);
  const int pages_per_item = tokens / page_size;
  for (int i = 0; i < n_items; ++i) {
    canopy_abi::DeviceWorkItem w{};
    w.kv_page_offset = (i * pages_per_item) % (pages - pages_per_item);
    w.token_begin = 0;
    w.token_end = tokens;
    w.kv_head = i % heads_kv;
    w.row_begin = i * S::kTileQ;
    w.row_count = S::kTileQ;
    w.row_tile = S::kTileQ;
    w.task_row_begin = 0;
    items.push_back(w);
  }
  for (int b = 0; b < blocks; ++b) {
    for (int k = 0; k < per_block; ++k) queue.push_back(b + k * blocks);
    indptr.push_back((int)queue.size());
  }
  CK(cudaMalloc(&po, size_t(n_items) * S::kTileQ * D * 4));
  CK(cudaMalloc(&pl, size_t(n_items) * S::kTileQ * 4));
  CK(cudaMalloc(&di, items.size() * sizeof(items[0])));
  CK(cudaMalloc(&dtr, task_rows.size() * 4));
  CK(cudaMalloc(&dpages, pages * 4));
  CK(cudaMalloc(&dq2, queue.size() * 4));
  CK(cudaMalloc(&dind, indptr.size() * 4));
  CK(cudaMemcpy(di, items.data(), items.size() * sizeof(items[0]), cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dtr, task_rows.data(), task_rows.size() * 4, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dpages, page_ids.data(), pages * 4, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dq2, queue.data(), queue.size() * 4, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dind, indptr.data(), indptr.size() * 4, cudaMemcpyHostToDevice));
  canopy_abi::PartialParams p{};
  p.q = dq;
  p.k_cache = dk;
  p.v_cache = dv;
  p.partial_o = po;
  p.partial_lse = pl;
  p.items = di;
  p.task_rows = dtr;
  p.kv_pages = dpages;
  p.num_qo_heads = H_qo;
  p.num_kv_heads = heads_kv;
  p.group = group;
  p.page_size = page_size;
  p.page_shift = 4;
  p.out_dtype = 2;
  p.sm_scale = 0.088f;
  p.queue = dq2;
  p.queue_indptr = dind;
  CK(cudaFuncSetAttribute(kern<S>, cudaFuncAttributeMaxDynamicSharedMemorySize, S::kSmemBytes));
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  for (int i = 0; i < 3; ++i) kern<S><<<blocks, S::kThreads, S::kSmemBytes>>>(p);
  std::vector<float> ms;
  for (int i = 0; i < 15; ++i) {
    cudaEventRecord(a);
    kern<S><<<blocks, S::kThreads, S::kSmemBytes>>>(p);
    cudaEventRecord(b);
    CK(cudaEventSynchronize(b));
    float t;
    cudaEventElapsedTime(&t, a, b);
    ms.push_back(t);
  }
  CK(cudaGetLastError());
  std::sort(ms.begin(), ms.end());
  const double flops = 4.0 * n_items * S::kTileQ * double(tokens) * D;
  const double bytes = 2.0 * n_items * double(tokens) * D * 2;
  printf("%-28s %8.1f us  %6.1f TFLOP/s  %5.2f TB/s (unique per item)\n", name,
         ms[ms.size() / 2] * 1e3, flops / (ms[ms.size() / 2] * 1e-3) / 1e12,
         bytes / (ms[ms.size() / 2] * 1e-3) / 1e12);
  cudaFree(dk);
  cudaFree(dv);
  cudaFree(dq);
  cudaFree(po);
  cudaFree(pl);
  cudaFree(di);
  cudaFree(dtr);
  cudaFree(dpages);
  cudaFree(dq2);
  cudaFree(dind);
}

int main(int argc, char** argv) {
  if (argc > 1) {
    perf<Spec<128, 128, 128, 2, 0, false, false>>("perf d128 q128 kv128 s2", 8192, 2);
    perf<Spec<128, 128, 64, 3, 0, false, false>>("perf d128 q128 kv64 s3", 8192, 2);
    perf<Spec<128, 128, 64, 4, 0, false, false>>("perf d128 q128 kv64 s4", 8192, 2);
    perf<Spec<128, 64, 128, 2, 0, false, false>>("perf d128 q64 kv128 s2", 8192, 4);
    perf<Spec<64, 128, 128, 2, 0, false, false>>("perf d64 q128 kv128 s2", 8192, 2);
    perf<Spec<256, 64, 64, 2, 0, false, false>>("perf d256 q64 kv64 s2", 8192, 2);
    perf<Spec<128, 128, 128, 2, 0, false, false>>("bw d128 q128 kv128 s2 t64k", 65536, 1);
    return 0;
  }
  int fails = 0;
  fails +=
      run<Spec<128, 128, 128, 2, 0, false, false>>("d128 q128 kv128 s2 f16 nhd p16", 16, 2, 8, 0);
  fails +=
      run<Spec<128, 64, 128, 3, 0, false, false>>("d128 q64 kv128 s3 f16 nhd p16", 16, 2, 8, 0);
  fails +=
      run<Spec<64, 128, 128, 2, 1, false, false>>("d64 q128 kv128 s2 bf16 nhd p16", 16, 4, 4, 0);
  fails += run<Spec<256, 64, 64, 2, 0, true, false>>("d256 q64 kv64 s2 f16 hnd p1", 1, 2, 4, 0);
  fails +=
      run<Spec<128, 128, 64, 4, 1, true, true>>("d128 q128 kv64 s4 bf16 hnd p7 cap", 7, 2, 5, 30.f);
  fails +=
      run<Spec<64, 64, 64, 2, 0, false, false>>("d64 q64 kv64 s2 f16 nhd p256 g7", 256, 1, 7, 0);
  printf("%d failures\n", fails);
  return fails;
}
