// The float64 plan executor against the plan-free reference: every suite
// workload (scaled for the CPU) and many random trees, specs and planner
// options. Also the reference's own semantics and the test-data helpers.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "canopy/cpu.hpp"
#include "canopy/planner.hpp"
#include "canopy/tree.hpp"
#include "tests/test_data.hpp"
#include "workloads/workload.hpp"

namespace canopy {
namespace {

using test::HostProblem;
using test::relative_l2;

constexpr double kTol = 1e-12;

const std::vector<workload::Workload>& suite() {
  static const std::vector<workload::Workload> all = workload::load_suite();
  return all;
}

std::vector<std::string> suite_names() {
  std::vector<std::string> names;
  for (const auto& w : suite()) names.push_back(w.name);
  return names;
}

std::string test_name(const ::testing::TestParamInfo<std::string>& info) {
  std::string name = info.param;
  for (char& c : name)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return name;
}

std::string describe(const PlannerOptions& o) {
  std::ostringstream s;
  s << "absorb=" << o.allow_absorb << " split=" << o.allow_split << " waves=" << o.waves
    << " min_split=" << o.min_split_tokens << " sms=" << o.cost_model.coefficients().num_sms;
  return s.str();
}

/// Plans `tables` (or `tree` if given), checks coverage and compares the CPU
/// execution of the plan with the reference.
void expect_plan_matches_reference(const HostProblem& p, const test::HostResult& ref,
                                   const Plan& plan) {
  ASSERT_NO_THROW(plan.validate());
  ASSERT_NO_THROW(check_plan_coverage(plan, p.tables));
  const test::HostResult got = test::run_plan_cpu(plan, p);
  EXPECT_LT(relative_l2(got.out, ref.out), kTol);
  EXPECT_LT(relative_l2(got.lse, ref.lse), kTol);
}

// ---- every suite workload --------------------------------------------------

class SuiteWorkload : public ::testing::TestWithParam<std::string> {};

TEST_P(SuiteWorkload, PlanOnCpuMatchesReference) {
  const workload::Workload* full = nullptr;
  for (const auto& w : suite())
    if (w.name == GetParam()) full = &w;
  ASSERT_NE(full, nullptr);
  const workload::Workload w = workload::scaled_for_cpu(*full, 1e6);
  AttentionSpec spec = w.spec;
  spec.with_lse = true;
  SCOPED_TRACE(w.name + " tree " + w.tree + " " + spec.to_string());
  const Plan plan = make_plan(spec, w.tables);
  const HostProblem p = test::make_problem(spec, w.tables, 1234);
  const test::HostResult ref = test::run_reference(p);
  expect_plan_matches_reference(p, ref, plan);
}

INSTANTIATE_TEST_SUITE_P(All, SuiteWorkload, ::testing::ValuesIn(suite_names()), test_name);

// ---- random trees, specs and planner options -------------------------------

struct HeadConfig {
  int qo, kv;
};

struct RandomCase {
  AttentionSpec spec;
  test::RandomTree tree;
  PlannerOptions options;
};

RandomCase random_case(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto pick = [&](auto const& v) {
    return v[std::uniform_int_distribution<std::size_t>(0, v.size() - 1)(rng)];
  };
  auto coin = [&] { return std::uniform_int_distribution<int>(0, 1)(rng) == 1; };

  RandomCase c;
  const std::vector<HeadConfig> heads = {{32, 32}, {8, 8},  {32, 8}, {28, 4},
                                         {40, 8},  {16, 1}, {8, 1}};
  const HeadConfig h = pick(heads);
  c.spec.num_qo_heads = h.qo;
  c.spec.num_kv_heads = h.kv;
  c.spec.head_dim = pick(std::vector<int>{64, 128, 256});
  c.spec.q_dtype = c.spec.kv_dtype = c.spec.o_dtype = coin() ? DType::kF16 : DType::kBF16;
  c.spec.kv_layout = coin() ? KvLayout::kNHD : KvLayout::kHND;
  c.spec.page_size = pick(std::vector<int>{1, 16, 16, 64});
  c.spec.logits_soft_cap = pick(std::vector<double>{0, 0, 1.5, 30});
  c.spec.sm_scale = coin() ? 0.0 : 0.25;
  c.spec.with_lse = coin();

  test::RandomTreeOptions t;
  t.page_size = c.spec.page_size;
  t.max_roots = pick(std::vector<int>{1, 1, 2, 4});
  t.max_depth = pick(std::vector<int>{1, 3, 6, 20});
  t.max_fanout = pick(std::vector<int>{1, 2, 4, 8});
  t.max_nodes = pick(std::vector<int>{4, 12, 40});
  t.max_pages_per_node = c.spec.page_size == 1 ? 40 : c.spec.page_size == 16 ? 4 : 2;
  if (std::uniform_int_distribution<int>(0, 9)(rng) == 0) {  // a single request
    t.min_roots = t.max_roots = 1;
    t.max_fanout = 1;
    t.inner_request_prob = 0;
    t.duplicate_prob = 0;
  }
  c.tree = test::random_tree(rng, t);

  GpuCoefficients gpu;
  gpu.num_sms = pick(std::vector<int>{2, 16, 132});
  c.options.cost_model = CostModel(gpu);
  c.options.allow_absorb = coin();
  c.options.allow_split = coin();
  c.options.waves = pick(std::vector<int>{1, 2, 4});
  c.options.min_split_tokens = pick(std::vector<int>{1, 8, 32, 256});
  return c;
}

TEST(CpuExecutor, RandomTreesMatchReference) {
  constexpr int kCases = 160;
  for (int i = 0; i < kCases; ++i) {
    const RandomCase c = random_case(1000 + static_cast<std::uint64_t>(i));
    SCOPED_TRACE("case " + std::to_string(i) + ": " + c.spec.to_string() + " " +
                 describe(c.options) + " batch " + std::to_string(c.tree.tables.batch_size()) +
                 " nodes " + std::to_string(c.tree.tree.nodes.size()));
    const HostProblem p =
        test::make_problem(c.spec, c.tree.tables, 77 + static_cast<std::uint64_t>(i));
    const test::HostResult ref = test::run_reference(p);

    // Discovered from the block tables.
    const Plan discovered = make_plan(c.spec, c.tree.tables, c.options);
    expect_plan_matches_reference(p, ref, discovered);

    // The same batch given as an explicit tree.
    const PrefixTree tree = tree_from_explicit(c.tree.tree, c.spec.page_size);
    const Plan explicit_plan = make_plan(c.spec, tree, c.options);
    expect_plan_matches_reference(p, ref, explicit_plan);
    if (HasFailure()) break;  // one bad case is enough to read
  }
}

TEST(CpuExecutor, EveryPlannerPathOnOneTree) {
  // A fixed tree with long shared nodes, planned under every option mix.
  std::mt19937_64 rng(5);
  test::RandomTreeOptions t;
  t.max_roots = 2;
  t.max_depth = 5;
  t.max_fanout = 3;
  t.max_nodes = 20;
  t.max_pages_per_node = 12;
  const test::RandomTree tree = test::random_tree(rng, t);
  AttentionSpec spec;
  spec.with_lse = true;
  const HostProblem p = test::make_problem(spec, tree.tables, 9);
  const test::HostResult ref = test::run_reference(p);
  for (int absorb = 0; absorb < 2; ++absorb)
    for (int split = 0; split < 2; ++split)
      for (int min_split : {1, 16, 256})
        for (int sms : {1, 8, 132}) {
          PlannerOptions o;
          o.allow_absorb = absorb;
          o.allow_split = split;
          o.min_split_tokens = min_split;
          GpuCoefficients gpu;
          gpu.num_sms = sms;
          o.cost_model = CostModel(gpu);
          SCOPED_TRACE(describe(o));
          expect_plan_matches_reference(p, ref, make_plan(spec, tree.tables, o));
        }
}

TEST(CpuExecutor, ExplicitTreeWithRequestsAtInnerNodes) {
  // root {0,1} (32 tokens, request 3) -> {2} (16, request 0) -> {3} (5, requests 1, 4)
  //                                   -> {4,5} (20, request 2)
  ExplicitTree e;
  e.num_pages = 8;
  e.batch_size = 5;
  e.nodes.resize(4);
  e.nodes[0] = {-1, {0, 1}, 32, {3}};
  e.nodes[1] = {0, {2}, 16, {0}};
  e.nodes[2] = {1, {3}, 5, {1, 4}};
  e.nodes[3] = {0, {4, 5}, 20, {2}};
  AttentionSpec spec;
  spec.with_lse = true;
  const BlockTables tables = test::tables_of_explicit(e);
  EXPECT_EQ(tables.seq_lens, (std::vector<std::int32_t>{48, 53, 52, 32, 53}));
  const HostProblem p = test::make_problem(spec, tables, 3);
  const test::HostResult ref = test::run_reference(p);
  for (int split = 0; split < 2; ++split) {
    PlannerOptions o;
    o.allow_split = split;
    o.min_split_tokens = 1;
    expect_plan_matches_reference(p, ref, make_plan(spec, tree_from_explicit(e, 16), o));
    expect_plan_matches_reference(p, ref, make_plan(spec, tables, o));
  }
}

TEST(CpuExecutor, DuplicateBlockTables) {
  // Four requests with the very same table, plus one sharing half of it.
  BlockTables t;
  t.num_pages = 10;
  t.indptr = {0, 3, 6, 9, 12, 14};
  t.indices = {4, 7, 1, 4, 7, 1, 4, 7, 1, 4, 7, 1, 4, 9};
  t.seq_lens = {40, 40, 40, 40, 20};
  AttentionSpec spec;
  spec.num_qo_heads = 28;
  spec.num_kv_heads = 4;
  spec.with_lse = true;
  const HostProblem p = test::make_problem(spec, t, 8);
  const test::HostResult ref = test::run_reference(p);
  // Identical tables and identical q rows would give identical outputs; q differs per request.
  expect_plan_matches_reference(p, ref, make_plan(spec, t));
}

// ---- the reference itself ---------------------------------------------------

TEST(Reference, SingleTokenReturnsItsValue) {
  AttentionSpec spec;
  spec.num_qo_heads = 4;
  spec.num_kv_heads = 2;
  spec.head_dim = 64;
  spec.page_size = 4;
  BlockTables t;
  t.num_pages = 3;
  t.indptr = {0, 1};
  t.indices = {2};
  t.seq_lens = {1};
  const HostProblem p = test::make_problem(spec, t, 1);
  const test::HostResult r = test::run_reference(p);
  for (int h = 0; h < 4; ++h) {
    const double* v = p.v.data() + kv_offset(spec, 2, 0, h / 2);
    const double* k = p.k.data() + kv_offset(spec, 2, 0, h / 2);
    const double* q = p.q.data() + h * 64;
    double s = 0;
    for (int i = 0; i < 64; ++i) s += q[i] * k[i];
    EXPECT_NEAR(r.lse[h], s / 8.0, 1e-12);
    for (int i = 0; i < 64; ++i) EXPECT_EQ(r.out[h * 64 + i], v[i]);
  }
}

TEST(Reference, SoftmaxOfTwoTokensByHand) {
  AttentionSpec spec;
  spec.num_qo_heads = 1;
  spec.num_kv_heads = 1;
  spec.head_dim = 64;
  spec.page_size = 1;
  spec.sm_scale = 0.5;
  spec.logits_soft_cap = 2.0;
  BlockTables t;
  t.num_pages = 2;
  t.indptr = {0, 2};
  t.indices = {1, 0};
  t.seq_lens = {2};
  HostProblem p = test::make_problem(spec, t, 1);
  std::fill(p.q.begin(), p.q.end(), 0.0);
  std::fill(p.k.begin(), p.k.end(), 0.0);
  p.q[0] = 2.0;
  p.k[kv_offset(spec, 1, 0, 0)] = 3.0;   // token 0: s = 2*3*0.5 = 3 -> 2 tanh(1.5)
  p.k[kv_offset(spec, 0, 0, 0)] = -1.0;  // token 1: s = -1 -> 2 tanh(-0.5)
  const double s0 = 2 * std::tanh(1.5), s1 = 2 * std::tanh(-0.5);
  const double w0 = std::exp(s0) / (std::exp(s0) + std::exp(s1));
  const test::HostResult r = test::run_reference(p);
  EXPECT_NEAR(r.lse[0], std::log(std::exp(s0) + std::exp(s1)), 1e-14);
  for (int i = 0; i < 64; ++i) {
    const double want =
        w0 * p.v[kv_offset(spec, 1, 0, 0) + i] + (1 - w0) * p.v[kv_offset(spec, 0, 0, 0) + i];
    EXPECT_NEAR(r.out[i], want, 1e-14);
  }
}

TEST(Reference, LayoutsGiveTheSameResult) {
  std::mt19937_64 rng(11);
  test::RandomTreeOptions o;
  const BlockTables t = test::random_tree_tables(rng, o);
  AttentionSpec nhd;
  nhd.num_qo_heads = 40;
  nhd.num_kv_heads = 8;
  nhd.head_dim = 64;
  AttentionSpec hnd = nhd;
  hnd.kv_layout = KvLayout::kHND;
  const HostProblem a = test::make_problem(nhd, t, 2);
  HostProblem b = a;
  b.spec = hnd;
  for (std::int64_t page = 0; page < t.num_pages; ++page)
    for (int slot = 0; slot < nhd.page_size; ++slot)
      for (int h = 0; h < nhd.num_kv_heads; ++h)
        for (int i = 0; i < nhd.head_dim; ++i) {
          b.k[kv_offset(hnd, page, slot, h) + i] = a.k[kv_offset(nhd, page, slot, h) + i];
          b.v[kv_offset(hnd, page, slot, h) + i] = a.v[kv_offset(nhd, page, slot, h) + i];
        }
  const test::HostResult ra = test::run_reference(a), rb = test::run_reference(b);
  EXPECT_EQ(ra.out, rb.out);
  EXPECT_EQ(ra.lse, rb.lse);
}

TEST(Reference, KvOffsets) {
  AttentionSpec s;
  s.num_kv_heads = 8;
  s.head_dim = 128;
  s.page_size = 16;
  EXPECT_EQ(kv_offset(s, 3, 5, 2), ((3 * 16 + 5) * 8 + 2) * 128);
  s.kv_layout = KvLayout::kHND;
  EXPECT_EQ(kv_offset(s, 3, 5, 2), ((3 * 8 + 2) * 16 + 5) * 128);
}

// ---- test-data helpers -------------------------------------------------------

TEST(TestData, HalfEncodings) {
  EXPECT_EQ(test::to_fp16_bits(1.0), 0x3c00);
  EXPECT_EQ(test::to_fp16_bits(-2.0), 0xc000);
  EXPECT_EQ(test::to_fp16_bits(65504.0), 0x7bff);
  EXPECT_EQ(test::to_fp16_bits(1e6), 0x7c00);
  EXPECT_EQ(test::to_fp16_bits(std::ldexp(1.0, -24)), 0x0001);
  EXPECT_EQ(test::to_fp16_bits(std::ldexp(1.0, -14)), 0x0400);
  EXPECT_EQ(test::to_fp16_bits(1.0 + std::ldexp(1.0, -11)), 0x3c00);      // tie to even
  EXPECT_EQ(test::to_fp16_bits(1.0 + 3 * std::ldexp(1.0, -11)), 0x3c02);  // tie to even
  EXPECT_EQ(test::to_bf16_bits(1.0), 0x3f80);
  EXPECT_EQ(test::to_bf16_bits(-3.0), 0xc040);
  EXPECT_EQ(test::from_bf16_bits(0x3f80), 1.0);
  for (double x : {0.0, 1.0, -0.5, 0.333, 1234.5, -6e-5, 3e-7}) {
    EXPECT_EQ(test::round_to(DType::kF16, test::round_to(DType::kF16, x)),
              test::round_to(DType::kF16, x));
    EXPECT_NEAR(test::round_to(DType::kF16, x), x, std::fabs(x) * 1e-3 + 6e-8);
    EXPECT_NEAR(test::round_to(DType::kBF16, x), x, std::fabs(x) * 4e-3 + 1e-38);
  }
}

TEST(TestData, ProblemValuesAreExactInTheirDtypes) {
  std::mt19937_64 rng(1);
  const BlockTables t = test::random_tree_tables(rng, {});
  for (DType d : {DType::kF16, DType::kBF16}) {
    AttentionSpec spec;
    spec.q_dtype = spec.kv_dtype = d;
    const HostProblem p = test::make_problem(spec, t, 4);
    for (const auto* v : {&p.q, &p.k, &p.v}) {
      const std::vector<double> back = test::decode(test::encode(*v, d).data(), v->size(), d);
      EXPECT_EQ(back, *v);
    }
    EXPECT_EQ(test::make_problem(spec, t, 4).k, p.k);  // deterministic
  }
}

TEST(TestData, RandomTreesAreWellFormed) {
  for (std::uint64_t seed = 0; seed < 50; ++seed) {
    std::mt19937_64 rng(seed);
    test::RandomTreeOptions o;
    o.max_depth = 20;
    o.page_size = seed % 2 ? 16 : 1;
    const test::RandomTree r = test::random_tree(rng, o);
    ASSERT_GE(r.tree.batch_size, 1);
    ASSERT_EQ(r.tables.batch_size(), r.tree.batch_size);
    for (int i = 0; i < r.tables.batch_size(); ++i) {
      const int len = r.tables.seq_lens[static_cast<std::size_t>(i)];
      ASSERT_GE(len, 1);
      ASSERT_LE((len + o.page_size - 1) / o.page_size, r.tables.indptr[i + 1] - r.tables.indptr[i]);
    }
    EXPECT_NO_THROW(discover_prefix_tree(r.tables, o.page_size));
    EXPECT_NO_THROW(tree_from_explicit(r.tree, o.page_size));
  }
}

}  // namespace
}  // namespace canopy
