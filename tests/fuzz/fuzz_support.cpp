#include "tests/fuzz/fuzz_support.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "canopy/cpu.hpp"
#include "workloads/problem.hpp"

namespace canopy::fuzz {

void fail(const std::string& message) { throw FuzzFailure(message); }

std::span<const Target> all_targets() {
  static const Target kTargets[] = {{"block_tables", fuzz_block_tables},
                                    {"explicit_tree", fuzz_explicit_tree},
                                    {"workload", fuzz_workload},
                                    {"plan_json", fuzz_plan_json},
                                    {"tuning_db", fuzz_tuning_db}};
  return kTargets;
}

void check_error(const Error& e) {
  const std::string what = e.what();
  if (what.empty())
    fail(fmt::format("canopy::Error of kind {} has no message", to_string(e.kind())));
  if (e.kind() != ErrorKind::kInvalidArgument && e.kind() != ErrorKind::kNotSupported)
    fail(fmt::format("bad input raised an Error of kind {}: {}", to_string(e.kind()), what));
}

// ---- decoding ---------------------------------------------------------------

AttentionSpec decode_spec(FuzzReader& r) {
  static constexpr int kKvHeads[] = {1, 2, 4, 8, 3, 16};
  static constexpr int kGroups[] = {1, 2, 4, 8, 5, 7, 16, 3};
  static constexpr int kHeadDims[] = {128, 64, 256};
  static constexpr DType kHalf[] = {DType::kF16, DType::kBF16};
  static constexpr DType kAny[] = {DType::kF16, DType::kBF16, DType::kF32};
  static constexpr int kPageSizes[] = {16, 1, 2, 3, 4, 8, 32, 64, 128, 256, 5, 7, 255};
  static constexpr double kScales[] = {0.0,
                                       0.125,
                                       1.0,
                                       1e-3,
                                       30.0,
                                       -1.0,
                                       1e300,
                                       std::numeric_limits<double>::quiet_NaN(),
                                       std::numeric_limits<double>::infinity()};
  AttentionSpec s;
  if (r.chance(3)) {
    s.num_kv_heads = r.nasty_int32();
    s.num_qo_heads =
        r.chance(50)
            ? r.nasty_int32()
            : static_cast<int>(std::clamp<std::int64_t>(
                  std::int64_t{s.num_kv_heads} * r.int_in(1, 3), -kInt32Max - 1, kInt32Max));
  } else {
    s.num_kv_heads = r.flag() ? r.pick<int>(kKvHeads) : r.int_in(1, 64);
    s.num_qo_heads = s.num_kv_heads * (r.flag() ? r.pick<int>(kGroups) : r.int_in(1, 64));
    if (r.chance(2)) s.num_qo_heads += 1;  // not a multiple
  }
  s.head_dim = r.chance(3) ? r.nasty_int32() : r.pick<int>(kHeadDims);
  const bool any_dtype = r.chance(5);
  s.q_dtype = any_dtype ? r.pick<DType>(kAny) : r.pick<DType>(kHalf);
  s.kv_dtype = any_dtype ? r.pick<DType>(kAny) : r.pick<DType>(kHalf);
  s.o_dtype = r.pick<DType>(kAny);
  s.kv_layout = r.flag() ? KvLayout::kHND : KvLayout::kNHD;
  s.page_size = r.chance(3) ? r.nasty_int32()
                            : (r.flag() ? r.pick<int>(kPageSizes) : r.int_in(1, kMaxPageSize));
  s.sm_scale = r.chance(10) ? r.pick<double>(kScales) : 0.0;
  s.logits_soft_cap = r.chance(20) ? r.pick<double>(kScales) : 0.0;
  s.with_lse = r.flag();
  return s;
}

PlannerOptions decode_options(FuzzReader& r, const AttentionSpec& spec, bool& sane) {
  static constexpr int kWaves[] = {8, 1, 2, 4, 0, -1, 64};
  static constexpr int kMinSplit[] = {256, 1, 16, 64, 0, -5, 1 << 30};
  static constexpr int kSms[] = {132, 1, 2, 8, 78, 108, 1000};
  static constexpr Arch kArches[] = {kSm90, kSm80, kSm86, kSm89};
  static constexpr int kRowTiles[] = {16, 32, 64, 128, 48, 0, -16};
  PlannerOptions o;
  sane = true;
  const std::uint8_t switches = r.byte();
  o.allow_absorb = (switches & 1) == 0;
  o.allow_split = (switches & 2) == 0;
  o.head_packs = (switches & 4) == 0;
  o.prefix_blind = (switches & 0x38) == 0x38;  // rare: the ablation
  if (r.chance(30)) {
    o.waves = r.pick<int>(kWaves);
    o.min_split_tokens = r.pick<int>(kMinSplit);
  }
  if (r.chance(40)) {
    GpuCoefficients c;
    c.num_sms = r.pick<int>(kSms);
    c.arch = r.pick<Arch>(kArches);
    c.max_smem_per_block = c.arch.max_smem_per_block();
    o.cost_model = CostModel(c);
  }
  if (r.chance(25)) {
    // A subset of every shipped config, sometimes plus a hand-made (maybe bad) one.
    std::vector<KernelConfig> shipped;
    if (spec_is_valid(spec)) shipped = shipped_kernel_configs(spec);
    for (const KernelConfig& c : shipped) {
      if (r.flag()) o.candidates.push_back(c);
    }
    if (o.candidates.empty() || r.chance(20)) {
      static constexpr int kTileQ[] = {16, 64, 128, 32, 0, 48};
      static constexpr int kTileKv[] = {64, 32, 16, 128, 0, 24};
      static constexpr int kWarps[] = {4, 1, 2, 8, 3};
      static constexpr int kStages[] = {3, 2, 4, 1, 5};
      o.candidates.push_back({r.flag() ? KernelFamily::kMmaAttention : KernelFamily::kFmaAttention,
                              r.pick<int>(kTileQ), r.pick<int>(kTileKv), r.pick<int>(kWarps),
                              r.pick<int>(kStages)});
    }
    sane = false;  // a candidate may be malformed or need too much shared memory
  }
  if (r.chance(15)) {
    const int n = r.int_in(1, 3);
    for (int i = 0; i < n; ++i) o.row_tiles.push_back(r.pick<int>(kRowTiles));
    sane = false;  // may exclude every tile the kernels run
  }
  return o;
}

int decode_batch_size(FuzzReader& r) { return r.chance(92) ? r.int_in(0, 16) : r.int_in(0, 4096); }

namespace {

// The requests of one batch, before they become CSR or a padded table.
struct Requests {
  std::vector<std::vector<std::int32_t>> pages;  // each request's table (used pages and more)
  std::vector<std::int32_t> seq_lens;
  std::int64_t num_pages = 0;
};

// A consistent length for n pages: the last page holds 1..page_size tokens.
std::int64_t fitting_length(FuzzReader& r, std::int64_t n, int page_size) {
  if (n == 0) return 1;
  return (n - 1) * page_size + r.int_in(1, page_size);
}

Requests decode_requests(FuzzReader& r, int page_size, bool allow_huge) {
  Requests q;
  const int batch = decode_batch_size(r);
  std::int32_t next_page = 0;                   // fresh page ids, dense from 0
  std::int64_t budget = std::int64_t{1} << 16;  // table entries of ordinary requests
  bool huge_used = false;
  std::int64_t max_id = -1;
  for (int i = 0; i < batch; ++i) {
    std::vector<std::int32_t> pages;
    std::int64_t len = 0;
    const int kind = r.int_in(0, 9);
    auto fresh = [&](int n) {
      for (int k = 0; k < n && budget > 0; ++k, --budget) pages.push_back(next_page++);
    };
    auto small_count = [&] { return r.chance(85) ? r.int_in(0, 6) : r.int_in(0, 300); };
    if (kind <= 1 || i == 0) {  // fresh pages
      fresh(small_count());
      len = fitting_length(r, static_cast<std::int64_t>(pages.size()), page_size);
    } else if (kind <= 5) {  // a prefix of an earlier request, then fresh pages (5: all of it)
      const auto& other = q.pages[static_cast<std::size_t>(r.int_in(0, i - 1))];
      const int shared =
          kind == 5 ? static_cast<int>(other.size()) : r.int_in(0, static_cast<int>(other.size()));
      pages.assign(other.begin(), other.begin() + shared);
      if (kind != 5) fresh(small_count());
      len = fitting_length(r, static_cast<std::int64_t>(pages.size()), page_size);
    } else if (kind == 6) {  // an exact duplicate, length included
      const int j = r.int_in(0, i - 1);
      pages = q.pages[static_cast<std::size_t>(j)];
      len = q.seq_lens[static_cast<std::size_t>(j)];
    } else if (kind == 7) {  // a small pool: repeated ids, within and across requests
      const int n = small_count();
      for (int k = 0; k < n && budget > 0; ++k, --budget) pages.push_back(r.int_in(0, 7));
      len = fitting_length(r, n, page_size);
    } else if (kind == 8) {  // adversarial page ids
      const int n = r.int_in(1, 4);
      for (int k = 0; k < n; ++k) pages.push_back(r.chance(50) ? r.nasty_int32() : next_page++);
      len = fitting_length(r, n, page_size);
    } else if (allow_huge && !huge_used && page_size >= 128 && r.chance(2)) {
      // A run of pages holding close to 2^31 tokens (rare: ~0.3 s under ASan, it set
      // the pace of a whole fuzz run at chance 10).
      huge_used = true;
      len = kInt32Max - r.int_in(0, 2 * page_size);
      const std::int64_t n = (len + page_size - 1) / page_size;
      const std::int32_t first = r.flag() ? 0 : next_page;
      const bool same = r.flag();  // one page over and over, or consecutive ids
      pages.resize(static_cast<std::size_t>(n));
      for (std::int64_t k = 0; k < n; ++k)
        pages[static_cast<std::size_t>(k)] = same ? first : static_cast<std::int32_t>(first + k);
      if (!same) next_page = static_cast<std::int32_t>(first + n);
    } else {
      fresh(1);
      len = 1;
    }
    // Lengths: mostly what the pages hold; sometimes one past, zero, negative or huge.
    const int len_kind = r.int_in(0, 15);
    if (len_kind == 12) len = static_cast<std::int64_t>(pages.size()) * page_size + 1;
    if (len_kind == 13) len = r.nasty_int32();
    if (len_kind == 14) len = 0;
    if (len_kind == 15)
      len = r.in_range(-3, static_cast<std::int64_t>(pages.size()) * page_size + 3);
    if (r.chance(8)) {  // unused trailing entries may hold anything
      const int extra = r.int_in(1, 3);
      for (int k = 0; k < extra; ++k) pages.push_back(r.nasty_int32());
    }
    for (std::int32_t p : pages) max_id = std::max<std::int64_t>(max_id, p);
    q.pages.push_back(std::move(pages));
    q.seq_lens.push_back(static_cast<std::int32_t>(
        std::clamp<std::int64_t>(len, std::numeric_limits<std::int32_t>::min(), kInt32Max)));
  }
  q.num_pages = std::max<std::int64_t>(max_id, next_page - 1) + 1 + r.int_in(0, 3);
  if (r.chance(6)) q.num_pages = r.chance(50) ? r.nasty_int32() : q.num_pages - r.int_in(1, 4);
  return q;
}

}  // namespace

BlockTables decode_tables(FuzzReader& r, int page_size, bool allow_huge) {
  const Requests q = decode_requests(r, page_size, allow_huge);
  BlockTables t;
  t.num_pages = q.num_pages;
  t.seq_lens = q.seq_lens;
  t.indptr.push_back(0);
  for (const auto& pages : q.pages) {
    t.indices.insert(t.indices.end(), pages.begin(), pages.end());
    t.indptr.push_back(static_cast<std::int32_t>(t.indices.size()));
  }
  if (r.chance(6)) {  // a broken CSR index
    const int what = r.int_in(0, 7);
    const int at = r.int_in(0, static_cast<int>(t.indptr.size()) - 1);
    switch (what) {
      case 0:
        t.indptr[static_cast<std::size_t>(at)] = r.nasty_int32();
        break;
      case 1:
        t.indptr[static_cast<std::size_t>(at)] += r.int_in(-3, 3);
        break;
      case 2:
        t.indptr.pop_back();
        break;
      case 3:
        t.indptr.push_back(t.indptr.back());
        break;
      case 4:
        if (!t.seq_lens.empty()) t.seq_lens.pop_back();
        break;
      case 5:
        if (!t.indices.empty()) t.indices.resize(t.indices.size() - 1);
        break;
      case 6:
        t.indptr.clear();
        t.seq_lens.clear();
        break;
      default:  // a request whose table claims more pages than exist, and uses them
        if (at > 0 && static_cast<std::size_t>(at) <= t.seq_lens.size()) {
          auto& end = t.indptr[static_cast<std::size_t>(at)];
          end += r.int_in(1, 64);
          const std::int64_t held = end - t.indptr[static_cast<std::size_t>(at) - 1];
          t.seq_lens[static_cast<std::size_t>(at) - 1] =
              static_cast<std::int32_t>(std::clamp<std::int64_t>(held * page_size, 1, kInt32Max));
        }
        break;
    }
  }
  return t;
}

PaddedTables decode_padded(FuzzReader& r, int page_size) {
  const Requests q = decode_requests(r, page_size, true);
  PaddedTables p;
  p.seq_lens = q.seq_lens;
  p.num_pages = q.num_pages;
  std::size_t widest = 1;
  for (const auto& pages : q.pages) widest = std::max(widest, pages.size());
  if (widest > (std::size_t{1} << 16)) return p;  // a huge run: too big to pad per request
  p.max_pages = static_cast<int>(widest) + r.int_in(0, 2);
  const std::int32_t pad = r.flag() ? -1 : r.nasty_int32();
  for (const auto& pages : q.pages) {
    p.table.insert(p.table.end(), pages.begin(), pages.end());
    p.table.insert(p.table.end(), static_cast<std::size_t>(p.max_pages) - pages.size(), pad);
  }
  if (r.chance(5)) p.max_pages = r.chance(50) ? r.nasty_int32() : p.max_pages - 1;
  if (r.chance(3) && !p.table.empty()) p.table.pop_back();
  return p;
}

// ---- predicates -------------------------------------------------------------

bool spec_is_valid(const AttentionSpec& spec) {
  try {
    spec.validate();
    return true;
  } catch (const Error&) {
    return false;
  }
}

bool tables_are_valid(const BlockTables& tables, int page_size) {
  try {
    tables.validate(page_size);
    return true;
  } catch (const Error&) {
    return false;
  }
}

bool plannable_size(const AttentionSpec& spec, const BlockTables& tables) {
  const std::int64_t rows = std::int64_t{tables.batch_size()} * std::max(spec.num_qo_heads, 0);
  const auto entries = static_cast<std::int64_t>(tables.indices.size());
  return rows <= kMaxPlannedRows && entries <= kMaxPlannedPages &&
         entries * std::max(spec.num_kv_heads, 1) <= kMaxCheckedPages;
}

bool cpu_sized(const AttentionSpec& spec, const BlockTables& tables) {
  if (tables.num_pages < 0 || tables.batch_size() > 64) return false;
  const double kv =
      static_cast<double>(tables.num_pages) * spec.page_size * spec.num_kv_heads * spec.head_dim;
  double tokens = 0;
  for (std::int32_t len : tables.seq_lens) tokens += len;
  return kv <= kMaxExecutedKv && tokens * spec.num_qo_heads * spec.head_dim <= kMaxExecutedWork;
}

// ---- checks -----------------------------------------------------------------

void check_on_cpu(const Plan& plan, const BlockTables& tables, const std::string& what) {
  const AttentionSpec& spec = plan.spec;
  // Seeded by the shape, so a replay computes the same numbers.
  const std::uint64_t seed = static_cast<std::uint64_t>(tables.indices.size()) * 1000003u +
                             static_cast<std::uint64_t>(tables.batch_size());
  const workload::HostProblem problem = workload::make_problem(spec, tables, seed);
  const auto n = static_cast<std::size_t>(problem.out_elems());
  const auto rows = static_cast<std::size_t>(problem.lse_elems());
  std::vector<double> ref(n), got(n), ref_lse(rows), got_lse(rows);
  reference_attention(spec, tables, problem.tensors(), ref.data(), ref_lse.data());
  execute_plan_cpu(plan, problem.tensors(), got.data(), got_lse.data());
  const double out_err = workload::relative_l2(got, ref);
  const double lse_err = workload::relative_l2(got_lse, ref_lse);
  if (!(out_err < 1e-9) || !(lse_err < 1e-9))
    fail(
        fmt::format("{}: CPU executor differs from the reference: out rel-L2 {:.3e}, lse rel-L2 "
                    "{:.3e} ({})",
                    what, out_err, lse_err, spec.to_string()));
}

void check_accepted_plan(const Plan& plan, const BlockTables& tables, const std::string& what) {
  try {
    plan.validate();
  } catch (const Error& e) {
    fail(fmt::format("{}: an accepted plan fails Plan::validate: {}", what, e.what()));
  }
  try {
    check_plan_coverage(plan, tables);
  } catch (const Error& e) {
    fail(fmt::format("{}: an accepted plan fails check_plan_coverage: {}", what, e.what()));
  }
  if (plan.items.size() <= 256 && plan.num_partial_slots <= 4096 && plan.kv_pages.size() <= 4096) {
    const std::string json = plan_to_json(plan, -1);
    std::string again;
    try {
      again = plan_to_json(plan_from_json(json), -1);
    } catch (const Error& e) {
      fail(fmt::format("{}: plan_from_json rejects plan_to_json's output: {}", what, e.what()));
    }
    if (again != json) fail(fmt::format("{}: the plan changes in a JSON round trip", what));
  }
  if (cpu_sized(plan.spec, tables)) {
    try {
      check_on_cpu(plan, tables, what);
    } catch (const Error& e) {
      fail(fmt::format("{}: the CPU executor rejects an accepted plan: {}", what, e.what()));
    }
  }
}

}  // namespace canopy::fuzz
