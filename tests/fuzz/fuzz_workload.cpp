// Fuzz target workload: the workloads/workload.cpp parsers. Batch files
// (parse_batch_json) and tree strings (TreeShape::parse,
// block_tables_from_shape), as raw text and as structured documents with
// wrong types, huge and fractional numbers and missing fields; whatever
// parses is planned and checked.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>

#include "canopy/planner.hpp"
#include "tests/fuzz/fuzz_support.hpp"
#include "workloads/workload.hpp"

namespace canopy::fuzz {
namespace {

using nlohmann::json;

// A value of the wrong kind (or a right one out of range) for a field.
json odd_value(FuzzReader& r) {
  switch (r.int_in(0, 11)) {
    case 0:
      return r.nasty_int32();
    case 1:
      return std::int64_t{1} << 40;
    case 2:
      return -(std::int64_t{1} << 40);
    case 3:
      return std::numeric_limits<std::uint64_t>::max();
    case 4:
      return 1.5;
    case 5:
      return 1e300;
    case 6:
      return -1e300;
    case 7:
      return "16";
    case 8:
      return true;
    case 9:
      return nullptr;
    case 10:
      return json::array({1, 2});
    default:
      return json::object();
  }
}

// A field that is usually `good`, now and then odd or missing.
void put(FuzzReader& r, json& object, const char* key, const json& good) {
  const int how = r.int_in(0, 19);
  if (how == 18) return;  // missing
  object[key] = how == 19 ? odd_value(r) : good;
}

std::string structured_batch(FuzzReader& r) {
  static constexpr const char* kDtypes[] = {"fp16", "bf16", "fp32", "f16", "half", "int8"};
  static constexpr const char* kLayouts[] = {"NHD", "HND", "nhd", "hnd", "NDH"};
  const AttentionSpec spec = decode_spec(r);
  json doc = json::object();
  put(r, doc, "num_qo_heads", spec.num_qo_heads);
  put(r, doc, "num_kv_heads", spec.num_kv_heads);
  put(r, doc, "head_dim", spec.head_dim);
  if (r.flag()) put(r, doc, "dtype", r.pick<const char*>(kDtypes));
  if (r.flag()) put(r, doc, "kv_layout", r.pick<const char*>(kLayouts));
  if (r.flag()) put(r, doc, "page_size", spec.page_size);
  // No runs near 2^31 tokens: 16M page ids as JSON take seconds to write and parse.
  const BlockTables t = decode_tables(r, spec_is_valid(spec) ? spec.page_size : 16, false);
  json requests = json::array();
  for (int q = 0; q < t.batch_size() && q + 1 < static_cast<int>(t.indptr.size()); ++q) {
    json request = json::object();
    json pages = json::array();
    for (std::int32_t i = t.indptr[static_cast<std::size_t>(q)];
         i < t.indptr[static_cast<std::size_t>(q) + 1] && i >= 0 &&
         i < static_cast<std::int32_t>(t.indices.size());
         ++i) {
      pages.push_back(r.chance(2) ? odd_value(r) : json(t.indices[static_cast<std::size_t>(i)]));
    }
    put(r, request, "pages", pages);
    put(r, request, "seq_len", t.seq_lens[static_cast<std::size_t>(q)]);
    requests.push_back(r.chance(2) ? odd_value(r) : request);
  }
  put(r, doc, "requests", requests);
  if (r.flag()) put(r, doc, "num_pages", t.num_pages);
  std::string text = doc.dump();
  if (r.chance(5))
    text.resize(static_cast<std::size_t>(r.in_range(0, static_cast<std::int64_t>(text.size()))));
  return text;
}

std::string structured_tree(FuzzReader& r) {
  const int levels = r.chance(10) ? r.int_in(0, 12) : r.int_in(1, 4);
  std::string nodes, tokens;
  std::int64_t count = 1;
  for (int l = 0; l < levels; ++l) {
    // Clamped both ways: a negative count times 1024 per level overflows too.
    count = std::clamp<std::int64_t>(count * (r.chance(10) ? r.int_in(0, 1024) : r.int_in(1, 4)),
                                     -(std::int64_t{1} << 40), std::int64_t{1} << 40);
    if (r.chance(3)) count = r.nasty_int32();
    nodes += fmt::format("{}{}", l ? "," : "", count);
    const int t = r.chance(10) ? r.nasty_int32() : r.int_in(1, 5000);
    tokens += fmt::format("{}{}", l ? "," : "", t);
  }
  std::string text = nodes + (r.chance(97) ? "|" : "") + tokens;
  if (r.chance(5))
    text.insert(static_cast<std::size_t>(r.in_range(0, static_cast<std::int64_t>(text.size()))),
                r.text(2));
  return text;
}

// Plans a parsed workload and checks it; a valid one must be planned.
void plan_and_check(const AttentionSpec& spec, const BlockTables& tables, const std::string& what) {
  if (!plannable_size(spec, tables)) return;
  const bool valid =
      spec_is_valid(spec) && tables_are_valid(tables, spec.page_size) && tables.batch_size() >= 1;
  Plan plan;
  try {
    make_plan(spec, tables, PlannerOptions{}, plan);
  } catch (const Error& e) {
    check_error(e);
    if (valid && e.kind() == ErrorKind::kInvalidArgument)
      fail(fmt::format("{}: a valid workload is rejected: {}", what, e.what()));
    return;
  }
  if (!valid) fail(what + ": make_plan accepts an invalid workload");
  check_accepted_plan(plan, tables, what);
}

void batch_case(const std::string& text) {
  workload::Workload w;
  if (rejects([&] { w = workload::parse_batch_json(text); })) return;
  plan_and_check(w.spec, w.tables, "batch file");
}

// Table entries the shape implies: every leaf's table holds
// ceil(path tokens / page_size) pages (a partly filled tail page is copied
// into each child, so no leaf shares it).
double shape_entries(const workload::TreeShape& shape, int page_size) {
  const double path_pages = std::ceil(static_cast<double>(shape.path_tokens()) / page_size);
  return path_pages * shape.num_requests();
}

void tree_case(const std::string& text, int page_size) {
  workload::TreeShape shape;
  if (rejects([&] { shape = workload::TreeShape::parse(text); })) return;
  if (workload::TreeShape::parse(shape.to_string()).to_string() != shape.to_string())
    fail("tree string '" + text + "' does not survive to_string and parse");
  if (page_size < 1 || page_size > kMaxPageSize) {
    if (!rejects([&] { workload::block_tables_from_shape(shape, page_size); }))
      fail(fmt::format("block_tables_from_shape accepts page_size {}", page_size));
    return;
  }
  // Too big to build in one fuzz execution unless it breaks an int32 limit
  // (a length or the CSR index), which block_tables_from_shape must report
  // before it allocates.
  const double entries = shape_entries(shape, page_size);
  const bool beyond_int32 =
      static_cast<double>(shape.path_tokens()) > kInt32Max || entries > kInt32Max;
  if (entries > static_cast<double>(kMaxPlannedPages) && !beyond_int32) return;
  BlockTables tables;
  if (rejects([&] { tables = workload::block_tables_from_shape(shape, page_size); })) {
    if (!beyond_int32) fail("block_tables_from_shape rejects tree string '" + text + "'");
    return;
  }
  if (beyond_int32) fail("block_tables_from_shape accepts '" + text + "' beyond int32 limits");
  if (!tables_are_valid(tables, page_size))
    fail("block_tables_from_shape gives invalid tables for '" + text + "'");
  if (tables.batch_size() != shape.num_requests())
    fail(fmt::format("'{}' gives {} requests, expected {}", text, tables.batch_size(),
                     shape.num_requests()));
  AttentionSpec spec;
  spec.page_size = page_size;
  spec.num_qo_heads = 4;
  spec.num_kv_heads = 2;
  spec.head_dim = 64;
  plan_and_check(spec, tables, "tree string '" + text + "'");
}

}  // namespace

void fuzz_workload(const std::uint8_t* data, std::size_t size) {
  FuzzReader r(data, size);
  switch (r.int_in(0, 3)) {
    case 0:
      batch_case(r.text(1 << 16));
      break;
    case 1:
      batch_case(structured_batch(r));
      break;
    case 2: {
      const int page_size = r.chance(5) ? r.nasty_int32() : r.int_in(1, kMaxPageSize);
      tree_case(r.text(256), page_size);
      break;
    }
    default: {
      const int page_size = r.chance(5) ? r.nasty_int32() : r.int_in(1, kMaxPageSize);
      tree_case(structured_tree(r), page_size);
      break;
    }
  }
}

}  // namespace canopy::fuzz
