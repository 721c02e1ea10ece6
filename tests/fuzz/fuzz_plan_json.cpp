// Fuzz target plan_json: plan_from_json on raw text and on real plans'
// JSON after structured mutations (fields deleted, retyped, nudged by one,
// arrays cut or grown, text truncated). An accepted plan must pass
// Plan::validate; the CPU executor must reject it or run it without a
// memory error; and when it still covers the tables it came from, it must
// compute their attention exactly.
#include <fmt/format.h>

#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "canopy/cpu.hpp"
#include "canopy/planner.hpp"
#include "tests/fuzz/fuzz_support.hpp"
#include "workloads/problem.hpp"

namespace canopy::fuzz {
namespace {

using nlohmann::json;

json random_value(FuzzReader& r, const json& current) {
  static constexpr const char* kStrings[] = {"x",     "fp16", "nhd",           "mma_q64_kv64_w4_s3",
                                             "merge", "mma",  "canopy-plan/3", ""};
  switch (r.int_in(0, 13)) {
    case 0:
    case 1:
    case 2:  // nudged: the subtle inconsistencies
      if (current.is_number_integer()) return current.get<std::int64_t>() + r.int_in(-2, 2);
      return r.int_in(-2, 2);
    case 3:
      return r.nasty_int32();
    case 4:
      return std::int64_t{1} << 40;
    case 5:
      return std::numeric_limits<std::uint64_t>::max();
    case 6:
      return r.flag() ? 1e300 : -1e300;
    case 7:
      return 0.5;
    case 8:
      return r.pick<const char*>(kStrings);
    case 9:
      return r.flag();
    case 10:
      return nullptr;
    case 11:
      return json::array();
    case 12:
      return json::object();
    default:
      return r.int_in(0, 64);
  }
}

// One mutation somewhere below `node`, chosen by the reader.
void mutate(FuzzReader& r, json& node, int depth) {
  if (node.is_object() && !node.empty() && depth < 4) {
    auto it = node.begin();
    std::advance(it, r.int_in(0, static_cast<int>(node.size()) - 1));
    const int how = r.int_in(0, 9);
    if (how == 0) {
      node.erase(it);
    } else if (how == 1) {
      it.value() = random_value(r, it.value());
    } else {
      mutate(r, it.value(), depth + 1);
    }
    return;
  }
  if (node.is_array() && depth < 4) {
    const int how = r.int_in(0, 9);
    if (node.empty() || how == 0) {
      node.push_back(node.empty() ? random_value(r, json()) : node.back());
      return;
    }
    const auto at = static_cast<std::size_t>(r.int_in(0, static_cast<int>(node.size()) - 1));
    if (how == 1) {
      node.erase(node.begin() + static_cast<std::ptrdiff_t>(at));
    } else if (how == 2) {
      node.erase(node.begin() + static_cast<std::ptrdiff_t>(at), node.end());
    } else {
      mutate(r, node[at], depth + 1);
    }
    return;
  }
  node = random_value(r, node);
}

// Runs `plan` on small random tensors: the executor must throw Error or
// finish. `tables` (when given) is what the plan should compute.
void execute_untrusted(const Plan& plan) {
  const AttentionSpec& spec = plan.spec;
  const std::int64_t rows = std::int64_t{plan.batch_size} * spec.num_qo_heads;
  if (rows > 4096 || plan.num_partial_slots > 65536 || plan.kv_pages.size() > 65536) return;
  // The random tensors themselves: q and the 6 pages of KV (a mutated spec can
  // ask for millions of elements, seconds of filling under ASan for nothing).
  const double kv = 6.0 * spec.page_size * spec.num_kv_heads * spec.head_dim;
  if (rows * spec.head_dim > (1 << 20) || kv > (1 << 20)) return;
  BlockTables fake;  // only num_pages and the batch size matter to make_problem
  fake.num_pages = 6;
  fake.seq_lens.assign(static_cast<std::size_t>(plan.batch_size), 1);
  const workload::HostProblem problem = workload::make_problem(spec, fake, 7);
  std::vector<double> out(static_cast<std::size_t>(problem.out_elems()));
  std::vector<double> lse(static_cast<std::size_t>(problem.lse_elems()));
  (void)rejects([&] { execute_plan_cpu(plan, problem.tensors(), out.data(), lse.data()); });
}

void accepted(const Plan& plan, const BlockTables* tables) {
  try {
    plan.validate();
  } catch (const Error& e) {
    fail(std::string("plan_from_json accepts a plan that fails Plan::validate: ") + e.what());
  }
  if (tables != nullptr && !rejects([&] { check_plan_coverage(plan, *tables); })) {
    // Still a correct plan for its tables: it must compute their attention.
    if (cpu_sized(plan.spec, *tables)) check_on_cpu(plan, *tables, "mutated plan JSON");
    return;
  }
  execute_untrusted(plan);
}

}  // namespace

void fuzz_plan_json(const std::uint8_t* data, std::size_t size) {
  FuzzReader r(data, size);
  if (r.int_in(0, 3) == 0) {
    Plan plan;
    if (rejects([&] { plan = plan_from_json(r.text(1 << 16)); })) return;
    accepted(plan, nullptr);
    return;
  }
  // A real plan of a small batch, then mutations of its JSON.
  const AttentionSpec spec = decode_spec(r);
  bool sane = true;
  const PlannerOptions options = decode_options(r, spec, sane);
  if (!spec_is_valid(spec)) return;
  const BlockTables tables = decode_tables(r, spec.page_size, false);  // small: see below
  if (!plannable_size(spec, tables) || tables.indices.size() > 4096) return;
  Plan original;
  if (rejects([&] { make_plan(spec, tables, options, original); })) return;
  json doc = json::parse(plan_to_json(original, -1));
  const int mutations = r.int_in(0, 6);
  for (int m = 0; m < mutations; ++m) mutate(r, doc, 0);
  std::string text = doc.dump();
  if (r.chance(8))
    text.resize(static_cast<std::size_t>(r.in_range(0, static_cast<std::int64_t>(text.size()))));
  if (r.chance(5) && !text.empty()) {
    text[static_cast<std::size_t>(r.in_range(0, static_cast<std::int64_t>(text.size()) - 1))] ^=
        static_cast<char>(r.byte() | 1);
  }
  Plan plan;
  if (rejects([&] { plan = plan_from_json(text); })) return;
  accepted(plan, &tables);
}

}  // namespace canopy::fuzz
