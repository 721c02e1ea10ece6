// Plan-free float64 reference attention: per request and head, gather the KV
// through the block table, softmax, weighted sum. Multithreaded over requests.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "canopy/cpu.hpp"
#include "canopy/error.hpp"
#include "cpu/parallel.hpp"

namespace canopy {

namespace {

using cpu::dot;
using cpu::parallel_for;

}  // namespace

std::int64_t kv_offset(const AttentionSpec& spec, std::int64_t page, int slot, int kv_head) {
  const std::int64_t ps = spec.page_size, hk = spec.num_kv_heads, d = spec.head_dim;
  if (spec.kv_layout == KvLayout::kNHD) return ((page * ps + slot) * hk + kv_head) * d;
  return ((page * hk + kv_head) * ps + slot) * d;
}

void reference_attention(const AttentionSpec& spec, const BlockTables& tables,
                         const HostTensors& in, double* out, double* lse) {
  spec.validate();
  if (!(in.q != nullptr && in.k != nullptr && in.v != nullptr && out != nullptr))
    throw Error(ErrorKind::kInvalidArgument, "reference_attention: null q, k, v or out");
  // Page ids must be valid both for the tables' declared cache and the tensors given.
  tables.validate(spec.page_size, std::min(in.num_pages, tables.num_pages));

  const int hq = spec.num_qo_heads, hk = spec.num_kv_heads, d = spec.head_dim;
  const int group = spec.group_size();
  const int ps = spec.page_size;
  const double scale = spec.effective_sm_scale();
  const double cap = spec.logits_soft_cap;

  parallel_for(tables.batch_size(), [&](std::int64_t r64) {
    const int r = static_cast<int>(r64);
    const int len = tables.seq_lens[static_cast<std::size_t>(r)];
    const std::int32_t* pages = tables.indices.data() + tables.indptr[r];
    std::vector<double> scores(static_cast<std::size_t>(group) * len);
    std::vector<double> acc(static_cast<std::size_t>(group) * d);
    for (int kvh = 0; kvh < hk; ++kvh) {
      const double* q = in.q + (static_cast<std::int64_t>(r) * hq + kvh * group) * d;
      for (int t = 0; t < len; ++t) {
        const double* k = in.k + kv_offset(spec, pages[t / ps], t % ps, kvh);
        for (int g = 0; g < group; ++g) {
          double s = dot(q + static_cast<std::int64_t>(g) * d, k, d) * scale;
          if (cap > 0) s = cap * std::tanh(s / cap);
          scores[static_cast<std::size_t>(g) * len + t] = s;
        }
      }
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int g = 0; g < group; ++g) {
        double* sg = scores.data() + static_cast<std::size_t>(g) * len;
        const double m = *std::max_element(sg, sg + len);
        double l = 0;
        for (int t = 0; t < len; ++t) {
          sg[t] = std::exp(sg[t] - m);
          l += sg[t];
        }
        const double inv = 1.0 / l;
        for (int t = 0; t < len; ++t) sg[t] *= inv;
        if (lse != nullptr)
          lse[static_cast<std::int64_t>(r) * hq + kvh * group + g] = m + std::log(l);
      }
      for (int t = 0; t < len; ++t) {
        const double* v = in.v + kv_offset(spec, pages[t / ps], t % ps, kvh);
        for (int g = 0; g < group; ++g) {
          const double p = scores[static_cast<std::size_t>(g) * len + t];
          double* a = acc.data() + static_cast<std::size_t>(g) * d;
          for (int i = 0; i < d; ++i) a[i] += p * v[i];
        }
      }
      double* o = out + (static_cast<std::int64_t>(r) * hq + kvh * group) * d;
      std::copy(acc.begin(), acc.end(), o);
    }
  });
}

}  // namespace canopy
