// Plan: workspace layout, text and JSON forms (consistency: plan_checks.cpp).
#include "canopy/plan.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>

#include "canopy/error.hpp"
#include "core/json_number.hpp"
#include "families/kernel_families.hpp"

namespace canopy {
namespace {

constexpr std::int64_t kAlign = 256;
std::int64_t align_up(std::int64_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

}  // namespace

PlanLayout Plan::layout() const {
  PlanLayout l;
  std::int64_t at = 0;
  auto section = [&](std::int64_t bytes) {
    const std::int64_t offset = at;
    at = align_up(at + std::max<std::int64_t>(bytes, 1));
    return offset;
  };
  l.items = section(static_cast<std::int64_t>(items.size()) * 36);  // canopy_abi::DeviceWorkItem
  l.task_rows = section(static_cast<std::int64_t>(task_rows.size()) * 4);
  l.kv_pages = section(static_cast<std::int64_t>(kv_pages.size()) * 4);
  l.merge_requests = section(static_cast<std::int64_t>(merge_requests.size()) * 4);
  l.merge_indptr = section(static_cast<std::int64_t>(merge_indptr.size()) * 4);
  l.merge_parts = section(static_cast<std::int64_t>(merge_parts.size()) * 8);  // DeviceMergePart
  l.metadata_bytes = at;
  l.partial_o = 0;
  l.partial_lse = align_up(num_partial_slots * spec.head_dim * 4);
  l.merge_counters = l.partial_lse + align_up(num_partial_slots * 4);
  const std::int64_t counters =
      fused_merge ? static_cast<std::int64_t>(merge_requests.size()) * spec.num_kv_heads : 0;
  l.workspace_bytes = l.merge_counters + align_up(counters * 4);
  return l;
}

int Plan::device_launches() const {
  int n = 0;
  for (const LaunchStep& g : launches) {
    n += g.end > g.begin && !(fused_merge && g.family == KernelFamily::kMergeStates);
  }
  return n;
}

std::string plan_to_text(const Plan& plan) {
  std::string out = fmt::format(
      "plan: {} requests, {}, tree depth {}\n"
      "  {} work items, {} launches ({} on the device), {} partial states, {} merged rows, max "
      "merge fan-in {}\n"
      "  workspace {:.2f} MiB, predicted {:.2f} us on {} SMs\n",
      plan.batch_size, plan.spec.to_string(), plan.tree_depth, plan.items.size(),
      plan.launches.size(), plan.device_launches(), plan.num_partial_slots, plan.merge_entries(),
      plan.max_merge_fan_in, plan.workspace_bytes() / 1048576.0, plan.predicted_us, plan.num_sms);
  out += "  launches:\n";
  for (const LaunchStep& g : plan.launches) {
    if (g.family == KernelFamily::kMergeStates) {
      out += fmt::format("    {:<22} {:>6} rows, {} partial states{}\n", "merge", g.end - g.begin,
                         plan.merge_parts.size() * plan.spec.num_qo_heads,
                         plan.fused_merge ? " (fused into the partial launches)" : "");
      continue;
    }
    std::map<int, int> per_node;
    double us = 0;
    std::int64_t tokens = 0;
    for (int i = g.begin; i < g.end; ++i) {
      us += plan.items[i].predicted_us;
      tokens += plan.items[i].token_end - plan.items[i].token_begin;
      ++per_node[plan.items[i].node];
    }
    out += fmt::format(
        "    {:<22} {:>6} items over {:>5} nodes, {:>9} KV tokens, {:>10.1f} SM-us\n",
        plan.configs[g.config].to_string(), g.end - g.begin, per_node.size(), tokens, us);
  }
  if (!plan.sm_load_us.empty()) {
    float lo = plan.sm_load_us[0], hi = lo;
    double sum = 0;
    for (float v : plan.sm_load_us) {
      lo = std::min(lo, v);
      hi = std::max(hi, v);
      sum += v;
    }
    out += fmt::format(
        "  predicted load per block slot: min {:.1f} us, mean {:.1f} us, max {:.1f} us\n", lo,
        sum / plan.sm_load_us.size(), hi);
  }
  constexpr std::size_t kShown = 24;
  out +=
      fmt::format("  first {} work items (node, kv head, tokens, rows/row tile, config, SM, us):\n",
                  std::min(kShown, plan.items.size()));
  for (std::size_t i = 0; i < plan.items.size() && i < kShown; ++i) {
    const WorkItem& it = plan.items[i];
    out += fmt::format(
        "    #{:<5} node {:<5} head {:<5} tokens [{}, {}) at path {:<6} rows {:>3}/{:<3} "
        "{}{} sm {:<3} {:.2f}\n",
        i, it.node,
        it.kv_heads > 1 ? fmt::format("{}-{}", it.kv_head, it.kv_head + it.kv_heads - 1)
                        : std::to_string(it.kv_head),
        it.token_begin, it.token_end, it.path_token_offset, it.row_count, it.row_tile,
        plan.configs[it.config].to_string(), it.direct ? " direct" : "", it.sm, it.predicted_us);
  }
  return out;
}

std::string plan_to_json(const Plan& plan, int indent) {
  using nlohmann::json;
  json j;
  const AttentionSpec& s = plan.spec;
  j["format"] = "canopy-plan/3";
  j["spec"] = {{"num_qo_heads", s.num_qo_heads},
               {"num_kv_heads", s.num_kv_heads},
               {"head_dim", s.head_dim},
               {"q_dtype", to_string(s.q_dtype)},
               {"kv_dtype", to_string(s.kv_dtype)},
               {"o_dtype", to_string(s.o_dtype)},
               {"kv_layout", to_string(s.kv_layout)},
               {"page_size", s.page_size},
               {"sm_scale", s.sm_scale},
               {"logits_soft_cap", s.logits_soft_cap},
               {"with_lse", s.with_lse}};
  j["batch_size"] = plan.batch_size;
  j["tree_depth"] = plan.tree_depth;
  j["num_sms"] = plan.num_sms;
  j["predicted_us"] = plan.predicted_us;
  j["configs"] = json::array();
  for (const KernelConfig& c : plan.configs) j["configs"].push_back(c.to_string());
  j["items"] = json::array();
  for (const WorkItem& it : plan.items) {
    j["items"].push_back({it.node, it.config, it.row_tile, it.kv_head, it.kv_heads,
                          it.kv_page_offset, it.token_begin, it.token_end, it.path_token_offset,
                          it.row_begin, it.row_count, it.direct ? 1 : 0, it.predicted_us, it.sm,
                          it.task_row_begin});
  }
  j["item_fields"] = {
      "node",         "config",    "row_tile",          "kv_head",   "kv_heads",  "kv_page_offset",
      "token_begin",  "token_end", "path_token_offset", "row_begin", "row_count", "direct",
      "predicted_us", "sm",        "task_row_begin"};
  j["fused_merge"] = plan.fused_merge;
  j["launches"] = json::array();
  for (const LaunchStep& g : plan.launches) {
    j["launches"].push_back({{"family", to_string(g.family)},
                             {"config", g.config},
                             {"begin", g.begin},
                             {"end", g.end}});
  }
  j["task_rows"] = plan.task_rows;
  j["kv_pages"] = plan.kv_pages;
  j["merge_requests"] = plan.merge_requests;
  j["merge_indptr"] = plan.merge_indptr;
  j["merge_parts"] = json::array();  // [slot, head_stride] pairs
  for (const MergePart& m : plan.merge_parts) j["merge_parts"].push_back({m.slot, m.head_stride});
  j["max_merge_fan_in"] = plan.max_merge_fan_in;
  j["num_partial_slots"] = plan.num_partial_slots;
  j["sm_load_us"] = plan.sm_load_us;
  return j.dump(indent);
}

namespace {

std::vector<std::int32_t> int32_array(const nlohmann::json& doc, const char* field) {
  const nlohmann::json& a = doc.at(field);
  check(a.is_array(), ErrorKind::kInvalidArgument,
        fmt::format("plan JSON: {} is not an array", field));
  std::vector<std::int32_t> out;
  out.reserve(a.size());
  for (const nlohmann::json& v : a) out.push_back(json_int<std::int32_t>(v, field));
  return out;
}

}  // namespace

Plan plan_from_json(const std::string& text) {
  using nlohmann::json;
  Plan plan;
  try {
    const json j = json::parse(text);
    check(j.value("format", "") == "canopy-plan/3", ErrorKind::kInvalidArgument,
          "not a canopy-plan/3 document");
    const json& s = j.at("spec");
    AttentionSpec& spec = plan.spec;
    spec.num_qo_heads = json_int<int>(s.at("num_qo_heads"), "spec.num_qo_heads");
    spec.num_kv_heads = json_int<int>(s.at("num_kv_heads"), "spec.num_kv_heads");
    spec.head_dim = json_int<int>(s.at("head_dim"), "spec.head_dim");
    spec.q_dtype = dtype_from_string(s.at("q_dtype"));
    spec.kv_dtype = dtype_from_string(s.at("kv_dtype"));
    spec.o_dtype = dtype_from_string(s.at("o_dtype"));
    spec.kv_layout = kv_layout_from_string(s.at("kv_layout"));
    spec.page_size = json_int<int>(s.at("page_size"), "spec.page_size");
    spec.sm_scale = s.at("sm_scale");
    spec.logits_soft_cap = s.at("logits_soft_cap");
    spec.with_lse = s.at("with_lse");
    plan.batch_size = json_int<int>(j.at("batch_size"), "batch_size");
    plan.tree_depth = json_int<int>(j.at("tree_depth"), "tree_depth");
    plan.num_sms = json_int<int>(j.at("num_sms"), "num_sms");
    plan.predicted_us = j.at("predicted_us");
    for (const json& c : j.at("configs")) {
      plan.configs.push_back(KernelConfig::parse(c.get<std::string>()));
    }
    for (const json& a : j.at("items")) {
      WorkItem it;
      it.node = json_int<decltype(it.node)>(a.at(0), "item.node");
      it.config = json_int<decltype(it.config)>(a.at(1), "item.config");
      it.row_tile = json_int<decltype(it.row_tile)>(a.at(2), "item.row_tile");
      it.kv_head = json_int<decltype(it.kv_head)>(a.at(3), "item.kv_head");
      it.kv_heads = json_int<decltype(it.kv_heads)>(a.at(4), "item.kv_heads");
      it.kv_page_offset = json_int<decltype(it.kv_page_offset)>(a.at(5), "item.kv_page_offset");
      it.token_begin = json_int<decltype(it.token_begin)>(a.at(6), "item.token_begin");
      it.token_end = json_int<decltype(it.token_end)>(a.at(7), "item.token_end");
      it.path_token_offset =
          json_int<decltype(it.path_token_offset)>(a.at(8), "item.path_token_offset");
      it.row_begin = json_int<decltype(it.row_begin)>(a.at(9), "item.row_begin");
      it.row_count = json_int<decltype(it.row_count)>(a.at(10), "item.row_count");
      it.direct = json_int<int>(a.at(11), "item.direct") != 0;
      it.predicted_us = a.at(12);
      it.sm = json_int<std::int32_t>(a.at(13), "item.sm");
      it.task_row_begin = json_int<std::int32_t>(a.at(14), "item.task_row_begin");
      plan.items.push_back(it);
    }
    // Plans written before fused merges ran one block per item and a merge launch.
    if (const auto it = j.find("fused_merge"); it != j.end()) {
      check(it->is_boolean(), ErrorKind::kInvalidArgument,
            "plan JSON: fused_merge is not a boolean");
      plan.fused_merge = it->get<bool>();
    }
    for (const json& g : j.at("launches")) {
      plan.launches.push_back({kernel_family_from_string(g.at("family").get<std::string>()),
                               json_int<int>(g.at("config"), "launch.config"),
                               json_int<int>(g.at("begin"), "launch.begin"),
                               json_int<int>(g.at("end"), "launch.end")});
    }
    plan.task_rows = int32_array(j, "task_rows");
    plan.kv_pages = int32_array(j, "kv_pages");
    plan.merge_requests = int32_array(j, "merge_requests");
    plan.merge_indptr = int32_array(j, "merge_indptr");
    const json& parts = j.at("merge_parts");
    check(parts.is_array(), ErrorKind::kInvalidArgument, "plan JSON: merge_parts is not an array");
    for (const json& m : parts) {
      check(m.is_array() && m.size() == 2, ErrorKind::kInvalidArgument,
            "plan JSON: a merge part is not a [slot, head_stride] pair");
      plan.merge_parts.push_back({json_int<std::int32_t>(m[0], "merge_parts.slot"),
                                  json_int<std::int32_t>(m[1], "merge_parts.head_stride")});
    }
    plan.max_merge_fan_in = json_int<int>(j.at("max_merge_fan_in"), "max_merge_fan_in");
    plan.num_partial_slots = json_int<std::int64_t>(j.at("num_partial_slots"), "num_partial_slots");
    plan.sm_load_us = j.at("sm_load_us").get<std::vector<float>>();
  } catch (const json::exception& e) {
    throw Error(ErrorKind::kInvalidArgument, fmt::format("plan JSON: {}", e.what()));
  } catch (const Error& e) {  // a field out of range, an unknown name: say where
    throw Error(e.kind(), fmt::format("plan JSON: {}", e.what()));
  }
  plan.validate();
  return plan;
}

}  // namespace canopy
