// GPU correctness: Runtime::plan + run against the float64 reference, for
// every workload of the suite, randomized trees over the spec space, CUDA
// graph capture, caller workspaces and argument checks. Every test here is
// named Gpu* and skips ("no GPU: <reason>") on a machine without a GPU.
//
// Environment:
//   CANOPY_GPU_REF_BUDGET  max requests * qo_heads * path_tokens of a suite
//                          workload before it is scaled (default 3e8: all full size)
//   CANOPY_GPU_KV_BUDGET   max KV elements per cache tensor (default 1.2e9)
//   CANOPY_GPU_REPORT      path of a tab-separated copy of the result table
//   CANOPY_PREWARM_ARCH    without a GPU, GpuPrewarm.CompileKernels compiles
//                          the kernels of all cases for this arch into the cache
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <thread>

#include "canopy/kernel_spec.hpp"
#include "canopy/planner.hpp"
#include "canopy/runtime.hpp"
#include "families/kernel_families.hpp"
#include "runtime/jit/cubin_cache.hpp"
#include "tests/runtime/device/gpu_test_util.hpp"
#include "tests/test_data.hpp"
#include "workloads/workload.hpp"

namespace canopy::test {
namespace {

double env_double(const char* name, double fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return std::strtod(v, nullptr);
}

/// One correctness case: a spec and block tables, with a seed for the values.
struct GpuCase {
  std::string name;
  AttentionSpec spec;
  BlockTables tables;
  std::string scaled = "full";
  std::uint64_t seed = 1;
};

std::string test_name(std::string s) {
  for (char& c : s) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return s;
}

// ---------------------------------------------------------------------------
// Suite workloads, full size unless the float64 reference would be too slow.

struct SuiteCases {
  std::vector<GpuCase> cases;
  std::string error;  ///< load failure, reported by the test
};

const SuiteCases& suite_cases() {
  static const SuiteCases all = [] {
    SuiteCases s;
    try {
      const double work_budget = env_double("CANOPY_GPU_REF_BUDGET", 3e8);
      const double kv_budget = env_double("CANOPY_GPU_KV_BUDGET", 1.2e9);
      std::uint64_t seed = 1000;
      for (const workload::Workload& w : workload::load_suite()) {
        GpuCase c;
        c.name = w.name;
        c.seed = ++seed;
        c.spec = w.spec;
        c.tables = w.tables;
        const int batch = w.tables.batch_size();
        double work = 0;
        for (int r = 0; r < batch; ++r) work += w.tables.seq_lens[std::size_t(r)];
        work *= w.spec.num_qo_heads;
        const double kv =
            double(w.tables.num_pages) * w.spec.page_size * w.spec.num_kv_heads * w.spec.head_dim;
        // Tokens (and so both work and KV size) scale linearly with the factor.
        const double factor = std::min({1.0, work_budget / work, kv_budget / kv});
        if (factor < 1.0 && !w.tree.empty()) {
          const workload::Workload small = workload::scaled_for_cpu(w, work * factor);
          c.tables = small.tables;
          c.scaled = fmt::format("x{:.3f}", factor);
        }
        s.cases.push_back(std::move(c));
      }
    } catch (const std::exception& e) {
      s.error = e.what();
    }
    return s;
  }();
  return all;
}

// ---------------------------------------------------------------------------
// Randomized trees over dtype x layout x head_dim x GQA ratio, with page size,
// soft cap and lse varied between them.

struct RandomCaseSpec {
  DType dtype;
  KvLayout layout;
  int head_dim;
  int group;
  int page_size;
  bool soft_cap;
  bool lse;
};

std::vector<RandomCaseSpec> random_case_specs() {
  std::vector<RandomCaseSpec> out;
  const int page_sizes[] = {1, 16, 64, 256};
  int i = 0;
  for (DType dtype : {DType::kF16, DType::kBF16}) {
    for (KvLayout layout : {KvLayout::kNHD, KvLayout::kHND}) {
      for (int head_dim : {64, 128, 256}) {
        for (int group : {1, 4, 7, 5, 16}) {
          RandomCaseSpec r{
              dtype,           layout, head_dim, group, page_sizes[i % 4], (i / 3) % 2 == 1,
              (i / 2) % 2 == 0};
          out.push_back(r);
          ++i;
        }
      }
    }
  }
  return out;
}

const std::vector<GpuCase>& random_cases() {
  static const std::vector<GpuCase> all = [] {
    std::vector<GpuCase> cases;
    std::uint64_t seed = 7000;
    for (const RandomCaseSpec& r : random_case_specs()) {
      GpuCase c;
      c.seed = ++seed;
      c.spec.num_kv_heads = r.group == 16 ? 1 : 2;
      c.spec.num_qo_heads = r.group * c.spec.num_kv_heads;
      c.spec.head_dim = r.head_dim;
      c.spec.q_dtype = c.spec.kv_dtype = c.spec.o_dtype = r.dtype;
      c.spec.kv_layout = r.layout;
      c.spec.page_size = r.page_size;
      c.spec.logits_soft_cap = r.soft_cap ? 30.0 : 0.0;
      c.spec.with_lse = r.lse;
      RandomTreeOptions o;
      o.page_size = r.page_size;
      o.max_pages_per_node = std::max(3, 64 / r.page_size);
      std::mt19937_64 rng(c.seed);
      c.tables = random_tree_tables(rng, o);
      c.name =
          fmt::format("{}_{}_d{}_g{}_p{}{}{}", to_string(r.dtype), to_string(r.layout), r.head_dim,
                      r.group, r.page_size, r.soft_cap ? "_cap" : "", r.lse ? "_lse" : "");
      cases.push_back(std::move(c));
    }
    return cases;
  }();
  return all;
}

/// A small problem for the API tests: two-level-3 scaled down.
GpuCase small_case(bool with_lse) {
  GpuCase c;
  const workload::Workload w =
      workload::scaled_for_cpu(workload::find_workload("two-level-3"), 4e5);
  c.name = "two-level-3-small";
  c.spec = w.spec;
  c.spec.with_lse = with_lse;
  c.tables = w.tables;
  c.scaled = "small";
  c.seed = 42;
  return c;
}

/// One check of a kernel family: a case planned with one candidate config
/// pinned to one row tile (one warp arrangement).
struct FamilyRun {
  GpuCase c;
  CheckOptions options;
};

/// Every shipped config of every family at every row tile it runs, on cases
/// that give wide (shared prefix), narrow (one GQA group) and direct (a
/// request alone) items, over head dims, dtypes, layouts, odd GQA and pages.
const std::vector<FamilyRun>& family_runs() {
  static const std::vector<FamilyRun> all = [] {
    std::vector<GpuCase> cases = {small_case(true)};
    GpuCase flat;
    flat.name = "flat-8x300";
    flat.spec.with_lse = true;
    flat.spec.o_dtype = DType::kBF16;
    flat.tables = workload::block_tables_from_shape(workload::TreeShape::parse("8|300"), 16);
    flat.scaled = "small";
    flat.seed = 77;
    cases.push_back(flat);
    for (const GpuCase& r : random_cases()) {
      const AttentionSpec& s = r.spec;
      const bool pick =
          (s.head_dim == 64 && s.kv_layout == KvLayout::kHND && s.group_size() == 4) ||
          (s.head_dim == 256 && s.q_dtype == DType::kBF16 && s.group_size() == 7) ||
          (s.head_dim == 128 && s.group_size() == 5 && s.kv_layout == KvLayout::kNHD);
      if (pick) cases.push_back(r);
    }
    std::vector<FamilyRun> runs;
    for (const GpuCase& c : cases) {
      for (const KernelConfig& config : shipped_kernel_configs(c.spec)) {
        const families::FamilyInfo& family = families::family_info(config.family);
        for (int row_tile : family.row_tiles(c.spec.head_dim, config)) {
          // Narrow tiles run both as head packs and one KV head per block.
          const bool packs = family.head_pack(c.spec, config, row_tile) > 1;
          for (bool pack : packs ? std::vector<bool>{true, false} : std::vector<bool>{false}) {
            FamilyRun run{c, {}};
            run.c.name = fmt::format("{}/{}/rows{}{}", c.name, config.to_string(), row_tile,
                                     pack ? "_packs" : "");
            run.options.planner.candidates = {config};
            run.options.planner.row_tiles = {row_tile};
            run.options.planner.head_packs = pack;
            runs.push_back(run);
          }
        }
      }
    }
    return runs;
  }();
  return all;
}

void run_case(const std::string& suite, const GpuCase& c, const CheckOptions& options = {}) {
  const HostProblem problem = make_problem(c.spec, c.tables, c.seed);
  const CheckResult r = check_problem(problem, options);
  ReportRow row;
  row.suite = suite;
  row.name = c.name;
  row.shape = shape_text(c.spec, c.tables.batch_size());
  row.scaled = c.scaled;
  row.items = r.items;
  row.launches = r.launches;
  row.out_error = r.cmp.out_error;
  row.lse_error = r.cmp.lse_error;
  row.non_finite = r.cmp.non_finite;
  row.ref_seconds = r.ref_seconds;
  row.ok = r.cmp.ok();
  add_report_row(row);
  EXPECT_EQ(r.cmp.non_finite, 0) << c.name << ": non-finite elements in out/lse";
  EXPECT_LT(r.cmp.out_error, r.cmp.limit) << c.name << ": out relative L2";
  EXPECT_LT(r.cmp.lse_error, r.cmp.limit) << c.name << ": lse relative L2";
}

// ---------------------------------------------------------------------------
// Prewarm: compile every kernel the cases need, in parallel, into the cubin
// cache (on the GPU machine before the suites; here with CANOPY_PREWARM_ARCH).

TEST(GpuPrewarm, CompileKernels) {
  std::string why;
  const bool gpu = gpu_present(&why);
  const char* arch_env = std::getenv("CANOPY_PREWARM_ARCH");
  if (!gpu && (arch_env == nullptr || *arch_env == '\0')) GTEST_SKIP() << "no GPU: " << why;
  PlannerOptions options;
  Arch arch;
  if (gpu) {
    options.cost_model = shared_runtime().cost_model();
    arch = shared_runtime().arch();
  } else {
    arch = Arch::parse(arch_env);  // "90", "90a", "sm_90a"
    GpuCoefficients c;
    c.arch = arch;
    options.cost_model = CostModel(c);
  }
  std::vector<const GpuCase*> all;
  for (const GpuCase& c : suite_cases().cases) all.push_back(&c);
  for (const GpuCase& c : random_cases()) all.push_back(&c);
  const GpuCase small[] = {small_case(false), small_case(true)};
  for (const GpuCase& c : small) all.push_back(&c);

  std::map<std::string, KernelSpec> specs;
  auto add_plan_kernels = [&](const GpuCase& c, const PlannerOptions& o) {
    const Plan plan = make_plan(c.spec, c.tables, o);
    for (const KernelSpec& k : plan_kernel_specs(plan, arch)) specs.emplace(k.to_string(), k);
  };
  for (const GpuCase* c : all) {
    add_plan_kernels(*c, options);
    for (bool blind : {false, true}) {  // the planner variants test's options too
      PlannerOptions o = options;
      o.prefix_blind = blind;
      o.allow_split = !blind;
      add_plan_kernels(*c, o);
    }
    PlannerOptions fused = options;  // issue 14's path (GpuFused, the variants)
    fused.fuse_merge = true;
    for (int min_split : {16, 32}) {
      fused.min_split_tokens = min_split;
      fused.candidates = hopper_kernel_configs(c->spec);
      add_plan_kernels(*c, fused);
      fused.candidates = default_kernel_configs(c->spec);
      add_plan_kernels(*c, fused);
    }
  }
  for (const FamilyRun& run : family_runs()) {
    PlannerOptions o = run.options.planner;
    o.cost_model = options.cost_model;
    if (!CostModel(o.cost_model).fits(run.c.spec, o.candidates.front())) continue;
    add_plan_kernels(run.c, o);
  }
  std::vector<KernelSpec> list;
  for (auto& [name, k] : specs) list.push_back(k);

  const unsigned threads = std::max(1u, std::min(16u, std::thread::hardware_concurrency()));
  CubinCache cache;  // $CANOPY_CACHE_DIR or the user's cache: where Runtime looks
  const CubinCache::BatchResult r = cache.compile_all(list, threads);
  const CubinCacheStats st = cache.stats();
  std::printf(
      "prewarm: %zu kernels for %s in %.1f s on %u threads (%d compiled, %d from disk) "
      "into '%s'\n",
      list.size(), arch.to_string().c_str(), r.seconds, threads, st.compiles, st.disk_hits,
      cache.dir().c_str());
  EXPECT_EQ(r.failures, 0) << r.first_error;
}

// ---------------------------------------------------------------------------
// Device and driver.

TEST(GpuDriver, DeviceInfo) {
  CANOPY_REQUIRE_GPU();
  const driver::Api& a = driver::api();
  const driver::DeviceContext& d = driver::device_context(0);
  std::printf(
      "device 0: %s, %d SMs, %s, %d bytes opt-in smem/block, %.1f GiB, driver CUDA %d.%d, "
      "%d device(s)\n",
      d.name.c_str(), d.num_sms, d.arch().to_string().c_str(), d.max_smem_optin,
      double(d.total_mem) / (1 << 30), a.driver_version / 1000, a.driver_version % 1000 / 10,
      a.device_count);
  EXPECT_GT(d.num_sms, 0);
  EXPECT_TRUE(d.arch().has_cp_async() && d.arch().has_mma()) << d.arch().to_string();  // sm_80+
  EXPECT_GE(d.max_smem_optin, 48 * 1024);
  Runtime& rt = shared_runtime();
  EXPECT_EQ(rt.arch(), d.arch());
  EXPECT_EQ(rt.device_name(), d.name);
  EXPECT_EQ(rt.cost_model().coefficients().num_sms, d.num_sms);
  EXPECT_EQ(rt.cost_model().coefficients().max_smem_per_block, d.max_smem_optin);
}

TEST(GpuDriver, ErrorsNameTheCallAndTheCode) {
  CANOPY_REQUIRE_GPU();
  const driver::Api& a = driver::api();
  EXPECT_NE(driver::error_text(a, CUDA_ERROR_OUT_OF_MEMORY).find("CUDA_ERROR_OUT_OF_MEMORY"),
            std::string::npos);
  // A petabyte allocation fails cleanly (not sticky) as a driver error.
  EXPECT_EQ(
      expect_error(
          [] {
            driver::DeviceBuffer b(driver::device_context(0).context, std::size_t{1} << 50,
                                   "an impossible buffer");
          },
          ErrorKind::kDriver, {"cuMemAlloc", "an impossible buffer", "CUDA_ERROR_OUT_OF_MEMORY"}),
      "");
  EXPECT_EQ(expect_error([] { Runtime bad(RuntimeOptions{.device = 4096, .cache_dir = ""}); },
                         ErrorKind::kNoDevice, {"device 4096"}),
            "");
}

// ---------------------------------------------------------------------------
// Correctness: the suite and random trees.

class GpuSuite : public ::testing::TestWithParam<int> {};

TEST_P(GpuSuite, MatchesReference) {
  CANOPY_REQUIRE_GPU();
  const SuiteCases& s = suite_cases();
  ASSERT_TRUE(s.error.empty()) << "loading the workload suite failed: " << s.error;
  run_case("suite", s.cases[std::size_t(GetParam())]);
}

int suite_size() {
  const SuiteCases& s = suite_cases();
  return s.error.empty() ? static_cast<int>(s.cases.size()) : 1;
}

INSTANTIATE_TEST_SUITE_P(GpuWorkloads, GpuSuite, ::testing::Range(0, suite_size()),
                         [](const ::testing::TestParamInfo<int>& param_info) {
                           const SuiteCases& s = suite_cases();
                           return s.error.empty()
                                      ? test_name(s.cases[std::size_t(param_info.param)].name)
                                      : std::string("suite_failed_to_load");
                         });

class GpuRandom : public ::testing::TestWithParam<int> {};

TEST_P(GpuRandom, MatchesReference) {
  CANOPY_REQUIRE_GPU();
  const GpuCase& c = random_cases()[std::size_t(GetParam())];
  // Every other case lets the plan own its workspace.
  CheckOptions options;
  options.caller_workspace = GetParam() % 2 == 0;
  run_case("random", c, options);
}

INSTANTIATE_TEST_SUITE_P(GpuTrees, GpuRandom,
                         ::testing::Range(0, static_cast<int>(random_case_specs().size())),
                         [](const ::testing::TestParamInfo<int>& param_info) {
                           return test_name(random_cases()[std::size_t(param_info.param)].name);
                         });

// Splitting off: one work item per node and head (no KV split), absorb off,
// fine splits, and the prefix-blind ablation (each request alone, direct
// output when unsplit).
TEST(GpuRuntime, PlannerVariantsMatchReference) {
  CANOPY_REQUIRE_GPU();
  GpuCase c = small_case(true);
  for (int variant = 0; variant < 7; ++variant) {
    CheckOptions o;
    o.planner.allow_split = variant != 0 && variant != 4;
    o.planner.allow_absorb = variant != 1;
    o.planner.min_split_tokens = variant == 2 || variant >= 5 ? 16 : 256;
    o.planner.prefix_blind = variant == 3 || variant == 4;
    // Issue 14's path: persistent launches with the merge fused in, on the
    // Hopper candidates (wgmma where the GPU has it) and on the mma family.
    if (variant >= 5) {
      o.planner.fuse_merge = true;
      o.planner.candidates =
          variant == 5 ? hopper_kernel_configs(c.spec) : default_kernel_configs(c.spec);
    }
    c.name = fmt::format("two-level-3-small/{}", variant == 0   ? "no-split"
                                                 : variant == 1 ? "no-absorb"
                                                 : variant == 2 ? "split-16"
                                                 : variant == 3 ? "prefix-blind"
                                                 : variant == 4 ? "prefix-blind-direct"
                                                 : variant == 5 ? "fused-hopper"
                                                                : "fused-mma");
    run_case("planner", c, o);
  }
}

// Issue 14's planner on every random tree: the Hopper candidates with the
// merge fused into persistent launches (every dtype, layout, head dim, GQA
// group, page size 1-256, soft cap and lse), against the float64 reference.
class GpuFused : public ::testing::TestWithParam<int> {};

TEST_P(GpuFused, MatchesReference) {
  CANOPY_REQUIRE_GPU();
  GpuCase c = random_cases()[std::size_t(GetParam())];
  c.name += "/fused-hopper";
  CheckOptions o;
  o.planner.fuse_merge = true;
  o.planner.candidates = hopper_kernel_configs(c.spec);
  o.planner.min_split_tokens = 32;  // pieces, so that merges are fused
  run_case("fused", c, o);
}

INSTANTIATE_TEST_SUITE_P(GpuTrees, GpuFused,
                         ::testing::Range(0, static_cast<int>(random_cases().size())),
                         [](const ::testing::TestParamInfo<int>& param_info) {
                           return test_name(random_cases()[std::size_t(param_info.param)].name);
                         });

// Every kernel the families ship, at every warp arrangement (row tile).
class GpuFamilies : public ::testing::TestWithParam<int> {};

TEST_P(GpuFamilies, MatchesReference) {
  CANOPY_REQUIRE_GPU();
  const FamilyRun& run = family_runs()[std::size_t(GetParam())];
  CheckOptions o = run.options;
  o.planner.cost_model = shared_runtime().cost_model();
  if (!o.planner.cost_model.fits(run.c.spec, o.planner.candidates.front())) {
    GTEST_SKIP() << run.c.name << ": needs more shared memory than this device has";
  }
  run_case("family", run.c, o);
}

INSTANTIATE_TEST_SUITE_P(GpuKernels, GpuFamilies,
                         ::testing::Range(0, static_cast<int>(family_runs().size())),
                         [](const ::testing::TestParamInfo<int>& param_info) {
                           return test_name(family_runs()[std::size_t(param_info.param)].c.name);
                         });

// ---------------------------------------------------------------------------
// API behaviour.

struct Prepared {
  HostProblem problem;
  HostResult ref;
  DeviceProblem device;
  PreparedPlan plan;
};

Prepared prepare_small(bool with_lse) {
  const GpuCase c = small_case(with_lse);
  Prepared p;
  p.problem = make_problem(c.spec, c.tables, c.seed);
  p.ref = reference(p.problem, with_lse);
  p.device = upload(p.problem);
  p.plan = shared_runtime().plan(c.spec, c.tables);
  return p;
}

bool same_bits(const HostResult& a, const HostResult& b) {
  return a.out.size() == b.out.size() && a.lse.size() == b.lse.size() &&
         std::memcmp(a.out.data(), b.out.data(), a.out.size() * sizeof(double)) == 0 &&
         std::memcmp(a.lse.data(), b.lse.data(), a.lse.size() * sizeof(double)) == 0;
}

TEST(GpuRuntime, GraphCaptureAndReplay) {
  CANOPY_REQUIRE_GPU();
  Runtime& rt = shared_runtime();
  Prepared p = prepare_small(true);
  const AttentionSpec& spec = p.problem.spec;
  const DeviceTensors t = p.device.tensors(true);
  const driver::Api& a = driver::api();
  driver::ScopedContext scope(driver::device_context(0).context);

  // Eager run on the legacy stream.
  poison_outputs(p.device, spec);
  rt.run(p.plan, t);
  const HostResult eager = download(p.device, p.problem, true);
  EXPECT_TRUE(compare(eager, p.ref, spec).ok());

  CUstream stream = nullptr;
  driver::check(a.stream_create(&stream, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
  poison_outputs(p.device, spec);
  driver::check(a.ctx_synchronize(), "cuCtxSynchronize");
  driver::check(a.stream_begin_capture(stream, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL),
                "cuStreamBeginCapture");
  CUgraph graph = nullptr;
  try {
    rt.run(p.plan, t, stream);
  } catch (...) {
    a.stream_end_capture(stream, &graph);
    if (graph != nullptr) a.graph_destroy(graph);
    a.stream_destroy(stream);
    throw;
  }
  driver::check(a.stream_end_capture(stream, &graph), "cuStreamEndCapture");
  ASSERT_NE(graph, nullptr);
  // Capturing executes nothing: the outputs are still NaN.
  const HostResult captured = download(p.device, p.problem, true);
  EXPECT_EQ(compare(captured, p.ref, spec).non_finite,
            std::int64_t(captured.out.size() + captured.lse.size()));

  CUgraphExec exec = nullptr;
  driver::check(a.graph_instantiate(&exec, graph, 0), "cuGraphInstantiateWithFlags");
  driver::check(a.graph_launch(exec, stream), "cuGraphLaunch");
  driver::check(a.stream_synchronize(stream), "cuStreamSynchronize");
  const HostResult replay1 = download(p.device, p.problem, true);
  poison_outputs(p.device, spec);
  driver::check(a.ctx_synchronize(), "cuCtxSynchronize");
  driver::check(a.graph_launch(exec, stream), "cuGraphLaunch");
  driver::check(a.graph_launch(exec, stream), "cuGraphLaunch");
  driver::check(a.stream_synchronize(stream), "cuStreamSynchronize");
  const HostResult replay2 = download(p.device, p.problem, true);
  a.graph_exec_destroy(exec);
  a.graph_destroy(graph);
  a.stream_destroy(stream);

  const Comparison c1 = compare(replay1, p.ref, spec);
  EXPECT_TRUE(c1.ok()) << "replay 1: out " << c1.out_error << " lse " << c1.lse_error
                       << " non-finite " << c1.non_finite;
  EXPECT_TRUE(same_bits(replay1, eager)) << "graph replay differs from the eager run";
  EXPECT_TRUE(same_bits(replay2, eager)) << "second replay differs from the eager run";
  ReportRow row;
  row.suite = "graph";
  row.name = "two-level-3-small/replay";
  row.shape = shape_text(spec, p.problem.tables.batch_size());
  row.scaled = "small";
  row.items = static_cast<int>(p.plan.plan().items.size());
  row.out_error = c1.out_error;
  row.lse_error = c1.lse_error;
  row.non_finite = c1.non_finite;
  row.ok = c1.ok() && same_bits(replay1, eager) && same_bits(replay2, eager);
  add_report_row(row);
}

TEST(GpuRuntime, RunCompilesAndAllocatesNothing) {
  CANOPY_REQUIRE_GPU();
  Runtime& rt = shared_runtime();
  Prepared p = prepare_small(false);
  driver::Counters& c = driver::counters();
  const driver::Api& a = driver::api();
  driver::ScopedContext scope(driver::device_context(0).context);
  rt.run(p.plan, p.device.tensors(false));  // first launch: lazy driver allocations happen here
  driver::check(a.ctx_synchronize(), "cuCtxSynchronize");
  const std::int64_t requests = c.cubin_requests.load(), modules = c.modules_loaded.load();
  const std::int64_t launches = c.launches.load();
  const CubinCacheStats stats_before = detail::cubin_cache_stats(rt);
  std::size_t free_before = 0, free_after = 0, total = 0;
  driver::check(a.mem_get_info(&free_before, &total), "cuMemGetInfo");
  for (int i = 0; i < 3; ++i) rt.run(p.plan, p.device.tensors(false));
  driver::check(a.mem_get_info(&free_after, &total), "cuMemGetInfo");
  const HostResult r = download(p.device, p.problem, false);
  EXPECT_TRUE(compare(r, p.ref, p.problem.spec).ok());
  EXPECT_EQ(c.cubin_requests.load(), requests) << "run() fetched kernels from the cubin cache";
  EXPECT_EQ(c.modules_loaded.load(), modules) << "run() loaded modules";
  EXPECT_EQ(free_after, free_before) << "device memory changed across run()";
  const CubinCacheStats stats_after = detail::cubin_cache_stats(rt);
  EXPECT_EQ(stats_after.compiles, stats_before.compiles);
  EXPECT_EQ(stats_after.disk_hits, stats_before.disk_hits);
  EXPECT_EQ(stats_after.memory_hits, stats_before.memory_hits);
  EXPECT_EQ(c.launches.load() - launches, 3 * p.plan.plan().device_launches());
  // Planning the same spec again loads nothing new either: modules are per process.
  PreparedPlan again = rt.plan(p.problem.spec, p.problem.tables);
  EXPECT_EQ(c.cubin_requests.load(), requests);
  EXPECT_EQ(c.modules_loaded.load(), modules);
}

TEST(GpuRuntime, CallerWorkspace) {
  CANOPY_REQUIRE_GPU();
  Runtime& rt = shared_runtime();
  Prepared p = prepare_small(true);
  const Plan& plan = p.plan.plan();
  const std::size_t need = static_cast<std::size_t>(plan.workspace_bytes());
  const CUcontext ctx = driver::device_context(0).context;

  driver::DeviceBuffer small(ctx, need - 256, "too small workspace");
  EXPECT_EQ(expect_error([&] { (void)rt.prepare(plan, small.get()); }, ErrorKind::kInvalidArgument,
                         {"workspace", "needs"}),
            "");
  driver::DeviceBuffer big(ctx, need + 1024, "workspace");
  EXPECT_EQ(expect_error([&] { (void)rt.prepare(plan, big.get() + 4); },
                         ErrorKind::kInvalidArgument, {"aligned"}),
            "");
  // A workspace at an offset into a larger allocation, NaN-poisoned.
  poison_f32(big.get(), big.size());
  PreparedPlan mine = rt.prepare(plan, big.get() + 256);
  EXPECT_EQ(mine.workspace_bytes(), plan.workspace_bytes());
  poison_outputs(p.device, p.problem.spec);
  rt.run(mine, p.device.tensors(true));
  const HostResult r = download(p.device, p.problem, true);
  const Comparison cmp = compare(r, p.ref, p.problem.spec);
  EXPECT_TRUE(cmp.ok()) << cmp.out_error << " " << cmp.lse_error << " " << cmp.non_finite;
  // The first 256 bytes were not touched.
  std::vector<float> head(64);
  big.download(head.data(), 256);
  for (float x : head) EXPECT_TRUE(std::isnan(x));
}

TEST(GpuRuntime, RejectsBadArguments) {
  CANOPY_REQUIRE_GPU();
  Runtime& rt = shared_runtime();
  Prepared p = prepare_small(true);
  const DeviceTensors good = p.device.tensors(true);
  driver::Counters& c = driver::counters();
  const std::int64_t launches = c.launches.load();
  auto with = [&](auto edit) {
    DeviceTensors t = good;
    edit(t);
    return t;
  };
  const struct {
    DeviceTensors t;
    std::string needle;
  } bad[] = {
      {with([](DeviceTensors& t) { t.q = 0; }), "tensors.q is null"},
      {with([](DeviceTensors& t) { t.k_cache = 0; }), "tensors.k_cache is null"},
      {with([](DeviceTensors& t) { t.v_cache = 0; }), "tensors.v_cache is null"},
      {with([](DeviceTensors& t) { t.out = 0; }), "tensors.out is null"},
      {with([](DeviceTensors& t) { t.lse = 0; }), "tensors.lse is null"},
  };
  for (const auto& b : bad) {
    EXPECT_EQ(expect_error([&] { rt.run(p.plan, b.t); }, ErrorKind::kInvalidArgument, {b.needle}),
              "");
  }
  std::vector<std::uint16_t> host(1024);
  const DeviceTensors host_q =
      with([&](DeviceTensors& t) { t.q = reinterpret_cast<std::uint64_t>(host.data()); });
  EXPECT_EQ(expect_error([&] { rt.run(p.plan, host_q); }, ErrorKind::kInvalidArgument,
                         {"tensors.q", "not CUDA device memory"}),
            "");
  PreparedPlan empty;
  EXPECT_EQ(expect_error([&] { rt.run(empty, good); }, ErrorKind::kInvalidArgument, {"empty"}), "");
  PreparedPlan moved = std::move(p.plan);
  EXPECT_EQ(expect_error([&] { rt.run(p.plan, good); }, ErrorKind::kInvalidArgument, {"empty"}),
            "");
  // lse given to a plan without lse.
  Prepared q = prepare_small(false);
  EXPECT_EQ(expect_error([&] { rt.run(q.plan, good); }, ErrorKind::kInvalidArgument,
                         {"with_lse = false"}),
            "");
  EXPECT_EQ(c.launches.load(), launches) << "a rejected run launched kernels";
  // The moved-to plan still works.
  poison_outputs(p.device, p.problem.spec);
  rt.run(moved, good);
  EXPECT_TRUE(compare(download(p.device, p.problem, true), p.ref, p.problem.spec).ok());
}

}  // namespace
}  // namespace canopy::test
