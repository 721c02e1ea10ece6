#include "workloads/workload.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "canopy/error.hpp"
#include "core/json_number.hpp"

namespace canopy::workload {
namespace {

std::vector<int> parse_int_list(const std::string& text, const std::string& whole) {
  std::vector<int> values;
  std::stringstream stream(text);
  std::string item;
  while (std::getline(stream, item, ',')) {
    std::size_t used = 0;
    long value = 0;
    try {
      value = std::stol(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    CANOPY_CHECK(used == item.size() && !item.empty() && value > 0 && value < (1L << 30),
                 ErrorKind::kInvalidArgument, "tree string '{}': '{}' is not a positive integer",
                 whole, item);
    values.push_back(static_cast<int>(value));
  }
  return values;
}

std::string read_file(const std::string& path) {
  std::ifstream file(path);
  CANOPY_CHECK(file.good(), ErrorKind::kIo, "cannot open '{}'", path);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

AttentionSpec spec_for_model(const nlohmann::json& model, DType dtype, int page_size) {
  AttentionSpec spec;
  spec.num_qo_heads = model.at("num_qo_heads").get<int>();
  spec.num_kv_heads = model.at("num_kv_heads").get<int>();
  spec.head_dim = model.at("head_dim").get<int>();
  spec.q_dtype = spec.kv_dtype = spec.o_dtype = dtype;
  spec.page_size = page_size;
  return spec;
}

const nlohmann::json& suite_json(const std::string& path) {
  // Parsed once per path: tests and tools ask for it repeatedly.
  static std::string cached_path;
  static nlohmann::json cached;
  if (cached_path != path) {
    cached = nlohmann::json::parse(read_file(path));
    cached_path = path;
  }
  return cached;
}

Workload workload_from_entry(const nlohmann::json& suite, const nlohmann::json& entry) {
  const auto& defaults = suite.at("defaults");
  Workload w;
  w.name = entry.at("name").get<std::string>();
  w.tree = entry.at("tree").get<std::string>();
  w.model = entry.value("model", defaults.at("model").get<std::string>());
  const DType dtype =
      dtype_from_string(entry.value("dtype", defaults.at("dtype").get<std::string>()));
  const int page_size = entry.value("page_size", defaults.at("page_size").get<int>());
  CANOPY_CHECK(suite.at("models").contains(w.model), ErrorKind::kInvalidArgument,
               "workload '{}': unknown model '{}'", w.name, w.model);
  w.spec = spec_for_model(suite.at("models").at(w.model), dtype, page_size);
  w.tables = block_tables_from_shape(TreeShape::parse(w.tree), page_size);
  return w;
}

}  // namespace

TreeShape TreeShape::parse(const std::string& text) {
  const auto bar = text.find('|');
  CANOPY_CHECK(bar != std::string::npos, ErrorKind::kInvalidArgument,
               "tree string '{}' must look like 'n0,n1|t0,t1'", text);
  TreeShape shape;
  shape.nodes_per_level = parse_int_list(text.substr(0, bar), text);
  shape.tokens_per_level = parse_int_list(text.substr(bar + 1), text);
  CANOPY_CHECK(!shape.nodes_per_level.empty() &&
                   shape.nodes_per_level.size() == shape.tokens_per_level.size(),
               ErrorKind::kInvalidArgument, "tree string '{}': {} node counts but {} token counts",
               text, shape.nodes_per_level.size(), shape.tokens_per_level.size());
  for (std::size_t i = 1; i < shape.nodes_per_level.size(); ++i) {
    CANOPY_CHECK(shape.nodes_per_level[i] % shape.nodes_per_level[i - 1] == 0,
                 ErrorKind::kInvalidArgument,
                 "tree string '{}': level {} has {} nodes, not a multiple of level {}'s {}", text,
                 i, shape.nodes_per_level[i], i - 1, shape.nodes_per_level[i - 1]);
  }
  return shape;
}

std::string TreeShape::to_string() const {
  return fmt::format("{}|{}", fmt::join(nodes_per_level, ","), fmt::join(tokens_per_level, ","));
}

std::int64_t TreeShape::path_tokens() const {
  std::int64_t total = 0;
  for (int t : tokens_per_level) total += t;
  return total;
}

TreeShape TreeShape::scaled(double factor) const {
  TreeShape out = *this;
  for (int& t : out.tokens_per_level) {
    t = std::max(1, static_cast<int>(std::lround(t * factor)));
  }
  return out;
}

BlockTables decode_step(const BlockTables& tables, int page_size, const std::vector<int>& grow) {
  check_page_size(page_size);
  const int batch = tables.batch_size();
  CANOPY_CHECK(grow.empty() || static_cast<int>(grow.size()) == batch, ErrorKind::kInvalidArgument,
               "decode_step: grow has {} entries for {} requests", grow.size(), batch);
  BlockTables next;
  next.num_pages = tables.num_pages;
  next.indptr.push_back(0);
  for (int r = 0; r < batch; ++r) {
    const int add = grow.empty() ? 1 : grow[r];
    CANOPY_CHECK(add >= 0, ErrorKind::kInvalidArgument, "decode_step: request {} grows by {}", r,
                 add);
    const std::int32_t len = tables.seq_lens[r];
    const std::int32_t used = (len + page_size - 1) / page_size;
    const std::int32_t needed = (len + add + page_size - 1) / page_size;
    const auto first = tables.indices.begin() + tables.indptr[r];
    next.indices.insert(next.indices.end(), first, first + used);
    for (std::int32_t p = used; p < needed; ++p) {
      next.indices.push_back(static_cast<std::int32_t>(next.num_pages++));
    }
    next.indptr.push_back(static_cast<std::int32_t>(next.indices.size()));
    next.seq_lens.push_back(len + add);
  }
  return next;
}

BlockTables block_tables_from_shape(const TreeShape& shape, int page_size) {
  check_page_size(page_size);
  // Lengths and the CSR index are int32: check the sizes before building.
  // Every leaf's table holds ceil(path / page_size) pages.
  constexpr std::int64_t kInt32Max = std::numeric_limits<std::int32_t>::max();
  const std::int64_t path = shape.path_tokens();
  CANOPY_CHECK(path <= kInt32Max, ErrorKind::kInvalidArgument,
               "tree '{}': paths of {} tokens, more than the 2^31 - 1 a sequence may hold",
               shape.to_string(), path);
  const std::int64_t entries = (path + page_size - 1) / page_size * shape.num_requests();
  CANOPY_CHECK(entries <= kInt32Max, ErrorKind::kInvalidArgument,
               "tree '{}': {} requests x {} pages of {} tokens = {} page-table entries, more "
               "than the 2^31 - 1 block tables index",
               shape.to_string(), shape.num_requests(), (path + page_size - 1) / page_size,
               page_size, entries);
  // Per node of the current level: its shared full pages and the tokens of
  // its partly filled tail, which each child copies into a fresh page.
  struct LevelNode {
    std::vector<std::int32_t> full_pages;
    int tail_tokens = 0;
  };
  std::int32_t next_page = 0;
  std::vector<LevelNode> level(1);  // a virtual super-root with no KV
  int parents = 1;
  for (std::size_t l = 0; l < shape.nodes_per_level.size(); ++l) {
    const int count = shape.nodes_per_level[l];
    const int per_parent = count / parents;
    std::vector<LevelNode> next(count);
    for (int i = 0; i < count; ++i) {
      const LevelNode& parent = level[i / per_parent];
      LevelNode& node = next[i];
      node.full_pages = parent.full_pages;
      const int tokens = parent.tail_tokens + shape.tokens_per_level[l];
      for (int p = 0; p < tokens / page_size; ++p) node.full_pages.push_back(next_page++);
      node.tail_tokens = tokens % page_size;
    }
    level = std::move(next);
    parents = count;
  }
  BlockTables tables;
  tables.indptr.push_back(0);
  for (const LevelNode& leaf : level) {
    tables.indices.insert(tables.indices.end(), leaf.full_pages.begin(), leaf.full_pages.end());
    if (leaf.tail_tokens > 0) tables.indices.push_back(next_page++);
    tables.indptr.push_back(static_cast<std::int32_t>(tables.indices.size()));
    tables.seq_lens.push_back(
        static_cast<std::int32_t>(leaf.full_pages.size() * page_size + leaf.tail_tokens));
  }
  tables.num_pages = next_page;
  return tables;
}

std::string default_suite_path() {
  if (const char* env = std::getenv("CANOPY_SUITE")) return env;
  return CANOPY_SUITE_PATH;
}

std::vector<Workload> load_suite(const std::string& path) {
  const auto& suite = suite_json(path);
  CANOPY_CHECK(suite.value("format", "") == "canopy-workloads/1", ErrorKind::kInvalidArgument,
               "'{}' is not a canopy-workloads/1 file", path);
  std::vector<Workload> out;
  for (const auto& entry : suite.at("workloads")) out.push_back(workload_from_entry(suite, entry));
  return out;
}

Workload find_workload(const std::string& name, const std::string& path) {
  const auto& suite = suite_json(path);
  std::vector<std::string> names;
  for (const auto& entry : suite.at("workloads")) {
    if (entry.at("name") == name) return workload_from_entry(suite, entry);
    names.push_back(entry.at("name").get<std::string>());
  }
  throw Error(ErrorKind::kInvalidArgument,
              fmt::format("no workload '{}' in {}; known: {}", name, path, fmt::join(names, ", ")));
}

Workload workload_from_tree(const std::string& tree, const std::string& model, DType dtype,
                            int page_size) {
  const auto& suite = suite_json(default_suite_path());
  CANOPY_CHECK(suite.at("models").contains(model), ErrorKind::kInvalidArgument,
               "unknown model '{}'", model);
  Workload w;
  w.name = tree;
  w.tree = tree;
  w.model = model;
  w.spec = spec_for_model(suite.at("models").at(model), dtype, page_size);
  w.tables = block_tables_from_shape(TreeShape::parse(tree), page_size);
  return w;
}

Workload parse_batch_json(const std::string& text, const std::string& name) {
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("batch '{}' is not valid JSON: {}", name, e.what()));
  }
  Workload w;
  w.name = name;
  try {
    w.spec.num_qo_heads = json_int<int>(json.at("num_qo_heads"), "num_qo_heads");
    w.spec.num_kv_heads = json_int<int>(json.at("num_kv_heads"), "num_kv_heads");
    w.spec.head_dim = json_int<int>(json.at("head_dim"), "head_dim");
    const DType dtype = dtype_from_string(json.value("dtype", std::string("fp16")));
    w.spec.q_dtype = w.spec.kv_dtype = w.spec.o_dtype = dtype;
    w.spec.page_size =
        json.contains("page_size") ? json_int<int>(json.at("page_size"), "page_size") : 16;
    w.spec.kv_layout = kv_layout_from_string(json.value("kv_layout", std::string("NHD")));
    std::int64_t max_page = -1;
    w.tables.indptr.push_back(0);
    for (const auto& request : json.at("requests")) {
      for (const auto& page : request.at("pages")) {
        w.tables.indices.push_back(json_int<std::int32_t>(page, "a page id"));
        max_page = std::max<std::int64_t>(max_page, w.tables.indices.back());
      }
      w.tables.indptr.push_back(static_cast<std::int32_t>(w.tables.indices.size()));
      w.tables.seq_lens.push_back(json_int<std::int32_t>(request.at("seq_len"), "seq_len"));
    }
    w.tables.num_pages = json.contains("num_pages")
                             ? json_int<std::int64_t>(json.at("num_pages"), "num_pages")
                             : max_page + 1;
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("batch '{}': missing or mistyped field: {}", name, e.what()));
  } catch (const Error& e) {  // a number out of range, an unknown dtype: name the batch
    throw Error(e.kind(), fmt::format("batch '{}': {}", name, e.what()));
  }
  return w;
}

Workload load_batch_file(const std::string& path) {
  return parse_batch_json(read_file(path), path);
}

Workload scaled_for_cpu(const Workload& w, double budget) {
  if (w.tree.empty()) return w;
  const TreeShape shape = TreeShape::parse(w.tree);
  const double work = static_cast<double>(shape.num_requests()) * w.spec.num_qo_heads *
                      static_cast<double>(shape.path_tokens());
  if (work <= budget) return w;
  Workload out = w;
  const TreeShape small = shape.scaled(budget / work);
  out.tree = small.to_string();
  out.tables = block_tables_from_shape(small, w.spec.page_size);
  return out;
}

}  // namespace canopy::workload
