// A tiny command-line parser shared by canopy-inspect and canopy-demo
// (header-only: CMake builds each tool from exactly tools/<name>.cpp).
//
// Options are "--name VALUE", "--name=VALUE" or flags "--name"; -h/--help is
// always accepted. Anything wrong with the command line throws UsageError,
// which the tools turn into a message and exit code 2.
#pragma once

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "canopy/batch.hpp"
#include "canopy/cost_model.hpp"
#include "canopy/error.hpp"
#include "canopy/kernel_spec.hpp"
#include "canopy/planner.hpp"
#include "canopy/spec.hpp"
#include "workloads/workload.hpp"

namespace canopy::cli {

/// A bad command line: unknown option, missing or malformed value. Exit code 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// One accepted option. `value_name` empty: a flag without a value.
struct Option {
  std::string name;        ///< with the dashes, e.g. "--head-dim"
  std::string value_name;  ///< e.g. "N"; empty for flags
  std::string help;        ///< one line
};

/// Levenshtein distance, for "did you mean" hints.
inline std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diag = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0u : 1u)});
      diag = up;
    }
  }
  return row[b.size()];
}

/// The candidate closest to `word` when it is close enough to be a likely typo, else "".
inline std::string closest(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  std::size_t best_distance = 0;
  for (const std::string& c : candidates) {
    const std::size_t d = edit_distance(word, c);
    if (best.empty() || d < best_distance) {
      best = c;
      best_distance = d;
    }
  }
  const std::size_t limit = std::max<std::size_t>(2, word.size() / 3);
  return !best.empty() && best_distance <= limit ? best : "";
}

/// Parses a whole decimal integer in [lo, hi]; `what` names the option in errors.
inline std::int64_t parse_int(const std::string& what, const std::string& text, std::int64_t lo,
                              std::int64_t hi) {
  std::int64_t value = 0;
  const char* begin = text.data();
  const char* end = text.data() + text.size();
  if (!text.empty() && *begin == '+') ++begin;
  const auto [ptr, ec] = std::from_chars(begin, end, value);
  if (text.empty() || ec == std::errc::invalid_argument || ptr != end) {
    throw UsageError(what + " expects an integer, got '" + text + "'");
  }
  if (ec == std::errc::result_out_of_range || value < lo || value > hi) {
    throw UsageError(what + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                     "], got " + text);
  }
  return value;
}

/// Parses a finite decimal number in [lo, hi].
inline double parse_double(const std::string& what, const std::string& text, double lo, double hi) {
  std::size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (text.empty() || used != text.size() || !std::isfinite(value)) {
    throw UsageError(what + " expects a number, got '" + text + "'");
  }
  if (value < lo || value > hi) {
    char range[64];
    std::snprintf(range, sizeof range, "[%g, %g]", lo, hi);
    throw UsageError(what + " must be in " + range + ", got " + text);
  }
  return value;
}

/// `text` must be one of `choices` (exact match); returns it.
inline std::string parse_choice(const std::string& what, const std::string& text,
                                const std::vector<std::string>& choices) {
  for (const std::string& c : choices) {
    if (c == text) return c;
  }
  std::string list;
  for (const std::string& c : choices) list += (list.empty() ? "" : ", ") + c;
  throw UsageError(what + " must be one of " + list + ", got '" + text + "'");
}

/// The parsed command line of one (sub)command.
class Args {
 public:
  /// Parses `argv` (without the program and subcommand names) against
  /// `options`. Throws UsageError for unknown options, flags given a value,
  /// options missing their value, repeated options and, unless
  /// `max_positional` allows them, bare words.
  static Args parse(const std::vector<std::string>& argv, const std::vector<Option>& options,
                    std::size_t max_positional = 0) {
    Args args;
    std::vector<std::string> names;
    for (const Option& o : options) names.push_back(o.name);
    for (std::size_t i = 0; i < argv.size(); ++i) {
      const std::string& token = argv[i];
      if (token == "-h" || token == "--help") {
        args.help_ = true;
        continue;
      }
      const bool is_option = token.size() > 2 && token[0] == '-' && token[1] == '-';
      if (!is_option) {
        if (token.size() >= 2 && token[0] == '-' && !is_number(token)) {
          throw UsageError("unknown option '" + token + "' (options start with --; see --help)");
        }
        if (args.positional_.size() >= max_positional) {
          throw UsageError("unexpected argument '" + token + "'");
        }
        args.positional_.push_back(token);
        continue;
      }
      std::string name = token;
      std::optional<std::string> inline_value;
      if (const std::size_t eq = token.find('='); eq != std::string::npos) {
        name = token.substr(0, eq);
        inline_value = token.substr(eq + 1);
      }
      const Option* option = nullptr;
      for (const Option& o : options) {
        if (o.name == name) option = &o;
      }
      if (option == nullptr) {
        std::string message = "unknown option '" + name + "'";
        if (const std::string hint = closest(name, names); !hint.empty()) {
          message += "; did you mean " + hint + "?";
        }
        throw UsageError(message + " (see --help)");
      }
      if (args.values_.count(name) != 0) throw UsageError(name + " given more than once");
      if (option->value_name.empty()) {
        if (inline_value) throw UsageError(name + " is a flag and takes no value");
        args.values_[name] = "";
        continue;
      }
      if (inline_value) {
        args.values_[name] = *inline_value;
        continue;
      }
      // The next token is the value, unless it looks like another option.
      if (i + 1 >= argv.size() || (argv[i + 1].rfind("--", 0) == 0 && argv[i + 1].size() > 2)) {
        throw UsageError(name + " expects a value (" + option->value_name + ")");
      }
      args.values_[name] = argv[++i];
    }
    return args;
  }

  bool help() const { return help_; }
  bool has(const std::string& name) const { return values_.count(name) != 0; }
  const std::vector<std::string>& positional() const { return positional_; }

  std::optional<std::string> value(const std::string& name) const {
    const auto it = values_.find(name);
    if (it == values_.end()) return std::nullopt;
    return it->second;
  }
  std::string get(const std::string& name, const std::string& fallback) const {
    return value(name).value_or(fallback);
  }
  std::int64_t get_int(const std::string& name, std::int64_t fallback, std::int64_t lo,
                       std::int64_t hi) const {
    const auto v = value(name);
    return v ? parse_int(name, *v, lo, hi) : fallback;
  }
  double get_double(const std::string& name, double fallback, double lo, double hi) const {
    const auto v = value(name);
    return v ? parse_double(name, *v, lo, hi) : fallback;
  }
  std::string get_choice(const std::string& name, const std::string& fallback,
                         const std::vector<std::string>& choices) const {
    const auto v = value(name);
    return v ? parse_choice(name, *v, choices) : fallback;
  }

  /// Throws UsageError when more than one of `names` was given.
  void at_most_one_of(const std::vector<std::string>& names) const {
    std::vector<std::string> given;
    for (const std::string& n : names) {
      if (has(n)) given.push_back(n);
    }
    if (given.size() > 1) throw UsageError(given[0] + " and " + given[1] + " exclude each other");
  }

 private:
  static bool is_number(const std::string& token) {
    return token.size() >= 2 && token[0] == '-' &&
           ((token[1] >= '0' && token[1] <= '9') || token[1] == '.');
  }

  bool help_ = false;
  std::map<std::string, std::string> values_;
  std::vector<std::string> positional_;
};

/// A tool's main(): runs `command` on the arguments after the program name and
/// turns what it throws into a message on stderr and the exit code: 2 for a
/// bad command line (UsageError), 1 for a canopy::Error (with its kind) or any
/// other exception.
template <class Command>
int run_tool(const char* program, int argc, char** argv, Command&& command) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  try {
    return command(args);
  } catch (const UsageError& e) {
    std::cerr << program << ": error: " << e.what() << "\n";
    return 2;
  } catch (const Error& e) {
    std::cerr << program << ": " << to_string(e.kind()) << ": " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << program << ": error: " << e.what() << "\n";
    return 1;
  }
}

/// "  --name VALUE   help" lines, aligned.
inline std::string format_options(const std::vector<Option>& options) {
  std::size_t width = 0;
  for (const Option& o : options) {
    width = std::max(width, o.name.size() + (o.value_name.empty() ? 0 : o.value_name.size() + 1));
  }
  std::string out;
  for (const Option& o : options) {
    std::string left = o.name + (o.value_name.empty() ? "" : " " + o.value_name);
    left.resize(width, ' ');
    out += "  " + left + "  " + o.help + "\n";
  }
  return out;
}

// ---------------------------------------------------------------------------
// Choosing a workload: shared by `canopy-inspect plan` and `canopy-demo`.

/// --workload / --tree / --batch and the overrides that go with them.
inline std::vector<Option> workload_options() {
  return {
      {"--workload", "NAME", "a workload of the suite (canopy-inspect workloads lists them)"},
      {"--tree", "STR", "a tree string 'n0,n1,...|t0,t1,...', e.g. '1,4,64|2048,1024,256'"},
      {"--batch", "FILE", "a batch file (JSON block tables, see docs/tools.md)"},
      {"--model", "NAME", "model for --tree/--workload (suite models, default llama3-8b)"},
      {"--dtype", "T", "fp16 or bf16 (q, KV and output)"},
      {"--layout", "L", "KV layout: NHD or HND"},
      {"--page-size", "N",
       "tokens per page for --tree/--workload, 1.." + std::to_string(kMaxPageSize)},
  };
}

/// Planner switches shared by the tools (PlannerOptions fields).
inline std::vector<Option> planner_options() {
  return {
      {"--no-absorb", "", "never let children absorb a parent's KV"},
      {"--no-split", "", "never split long KV ranges"},
      {"--prefix-blind", "", "plan each request alone (the ablation of prefix-aware planning)"},
      {"--fuse-merge", "",
       "persistent launches with the merge fused in (issue 14; opt-in for now)"},
      {"--configs", "LIST", "candidate kernels, e.g. mma_q64_kv64_w4_s3,mma_q128_kv64_w8_s3"},
      {"--row-tiles", "LIST", "row tiles items may use, e.g. 16,64"},
      {"--no-head-packs", "", "one KV head per block for narrow items"},
      {"--min-split-tokens", "N", "never split a KV range into pieces shorter than N tokens"},
      {"--coefficients", "FILE", "cost-model coefficients (canopy-coefficients/1 JSON)"},
      {"--options", "JSON",
       "planner options as one JSON object (canopy-planner-options/1); the switches above win"},
  };
}

/// The comma-separated items of `text` (empty items dropped).
inline std::vector<std::string> list_items(const std::string& text) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    const std::size_t comma = std::min(text.find(',', pos), text.size());
    if (comma > pos) out.push_back(text.substr(pos, comma - pos));
    pos = comma + 1;
  }
  return out;
}

/// The planner_options() switches in `args` as the library's planner-options
/// JSON object (canopy::planner_options_from_json's keys): --options first,
/// then each switch given sets its key. Each switch's value is checked on its
/// own by the library's parser, so an error names the switch: a bad value is a
/// UsageError, except a coefficients file that is not a valid
/// canopy-coefficients/1 document, which is a canopy::Error (exit 1, as a bad
/// batch file).
inline nlohmann::json planner_options_json(const Args& args) {
  const std::string prefix = "planner options: ";
  auto without_prefix = [&](const std::string& message) {
    return message.rfind(prefix, 0) == 0 ? message.substr(prefix.size()) : message;
  };
  nlohmann::json options = nlohmann::json::object();
  if (const auto text = args.value("--options")) {
    try {
      planner_options_from_json(*text);
      options = nlohmann::json::parse(*text);
    } catch (const Error& e) {
      throw UsageError("--options: " + without_prefix(e.what()));
    }
  }
  // `key` = `value` for `flag`, checked alone by the library's parser.
  auto set = [&](const std::string& flag, const char* key, nlohmann::json value) {
    const nlohmann::json one = {{key, value}};
    try {
      planner_options_from_json(one.dump());
    } catch (const Error& e) {
      throw UsageError(flag + ": " + without_prefix(e.what()));
    }
    options[key] = std::move(value);
  };
  if (args.has("--no-absorb")) set("--no-absorb", "allow_absorb", false);
  if (args.has("--no-split")) set("--no-split", "allow_split", false);
  if (args.has("--prefix-blind")) set("--prefix-blind", "prefix_blind", true);
  if (args.has("--fuse-merge")) set("--fuse-merge", "fuse_merge", true);
  if (args.has("--no-head-packs")) set("--no-head-packs", "head_packs", false);
  if (const auto n = args.value("--min-split-tokens")) {
    set("--min-split-tokens", "min_split_tokens",
        parse_int("--min-split-tokens", *n, INT64_MIN, INT64_MAX));
  }
  if (const auto list = args.value("--configs")) {
    set("--configs", "candidates", list_items(*list));
  }
  if (const auto list = args.value("--row-tiles")) {
    nlohmann::json tiles = nlohmann::json::array();
    for (const std::string& t : list_items(*list)) {
      tiles.push_back(parse_int("--row-tiles", t, INT64_MIN, INT64_MAX));
    }
    set("--row-tiles", "row_tiles", std::move(tiles));
  }
  if (const auto path = args.value("--coefficients")) {
    std::ifstream in(*path);
    if (!in) throw UsageError(fmt::format("--coefficients: cannot read '{}'", *path));
    std::stringstream text;
    text << in.rdbuf();
    nlohmann::json coefficients;
    try {
      coefficients = nlohmann::json::parse(text.str());
      planner_options_from_json(nlohmann::json{{"coefficients", coefficients}}.dump());
    } catch (const nlohmann::json::exception& e) {
      throw Error(ErrorKind::kInvalidArgument,
                  fmt::format("--coefficients '{}': not valid JSON ({})", *path, e.what()));
    } catch (const Error& e) {
      throw Error(e.kind(),
                  fmt::format("--coefficients '{}': {}", *path, without_prefix(e.what())));
    }
    options["coefficients"] = std::move(coefficients);
  }
  return options;
}

/// The PlannerOptions the switches describe (planner_options_json through
/// canopy::planner_options_from_json: the library's one parser).
inline PlannerOptions parse_planner_options(const Args& args) {
  return planner_options_from_json(planner_options_json(args).dump());
}

/// Requests * path pages of a tree string, the size of the block tables it
/// builds (checked before building, so a huge string fails cleanly).
inline double tree_table_entries(const workload::TreeShape& shape, int page_size) {
  double path_pages = 0;
  for (int t : shape.tokens_per_level) path_pages += std::ceil(double(t) / page_size) + 1;
  return double(shape.num_requests()) * path_pages;
}

/// Upper bound on block-table entries a tree workload may have (~1.6 GB of tables).
inline constexpr double kMaxTableEntries = 4e8;

/// The tree shape of `text`, or UsageError naming `what` when it does not parse
/// or would be too large to build.
inline workload::TreeShape parse_tree_option(const std::string& what, const std::string& text,
                                             int page_size) {
  workload::TreeShape shape;
  try {
    shape = workload::TreeShape::parse(text);
  } catch (const Error& e) {
    throw UsageError(what + ": " + e.what());
  }
  const double entries = tree_table_entries(shape, page_size);
  if (entries > kMaxTableEntries) {
    throw UsageError(what + " '" + text + "' is too large: its block tables would hold ~" +
                     std::to_string(static_cast<long long>(entries)) + " page ids (limit " +
                     std::to_string(static_cast<long long>(kMaxTableEntries)) + ")");
  }
  return shape;
}

/// The dtype named by --dtype (fp16|bf16), as canopy::DType.
inline DType parse_dtype_option(const std::string& what, const std::string& text) {
  return dtype_from_string(parse_choice(what, text, {"fp16", "bf16"}));
}

/// NHD or HND (any case).
inline KvLayout parse_layout_option(const std::string& what, const std::string& text) {
  std::string upper = text;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (upper != "NHD" && upper != "HND") {
    throw UsageError(what + " must be NHD or HND, got '" + text + "'");
  }
  return kv_layout_from_string(upper);
}

/// The workload the options describe; `fallback` (a suite name) when none of
/// --workload/--tree/--batch is given, or UsageError when one is required
/// (`fallback` empty). Bad names and values throw UsageError; an unreadable
/// or malformed batch file throws canopy::Error.
inline workload::Workload select_workload(const Args& args, const std::string& fallback) {
  args.at_most_one_of({"--workload", "--tree", "--batch"});
  const auto dtype = args.value("--dtype");
  const auto layout = args.value("--layout");
  const auto model = args.value("--model");
  const auto page_size = args.value("--page-size");
  // (A bool and a value, not std::optional: GCC 12 -O3 warns maybe-uninitialized on it.)
  const bool has_dtype = dtype.has_value();
  const DType chosen_dtype = has_dtype ? parse_dtype_option("--dtype", *dtype) : DType::kF16;
  const int page = static_cast<int>(args.get_int("--page-size", 16, 1, kMaxPageSize));

  workload::Workload w;
  if (const auto batch = args.value("--batch")) {
    if (model) throw UsageError("--model does not apply to --batch (the file gives the heads)");
    if (page_size) {
      throw UsageError("--page-size does not apply to --batch (the file's page ids fix it)");
    }
    w = workload::load_batch_file(*batch);
    if (has_dtype) w.spec.q_dtype = w.spec.kv_dtype = w.spec.o_dtype = chosen_dtype;
  } else {
    std::string tree;
    std::string name;
    std::string model_name = model.value_or("llama3-8b");
    DType base_dtype = DType::kF16;
    int base_page = 16;
    if (const auto t = args.value("--tree")) {
      tree = *t;
      name = tree;
    } else {
      name = args.get("--workload", fallback);
      if (name.empty()) throw UsageError("give one of --workload NAME, --tree STR or --batch FILE");
      workload::Workload suite;
      try {
        suite = workload::find_workload(name);
      } catch (const Error& e) {
        throw UsageError(std::string("--workload: ") + e.what());
      }
      if (!model && !has_dtype && !page_size) {
        if (layout) suite.spec.kv_layout = parse_layout_option("--layout", *layout);
        return suite;
      }
      tree = suite.tree;
      if (!model) model_name = suite.model;
      base_dtype = suite.spec.q_dtype;
      base_page = suite.spec.page_size;
    }
    const int p = page_size ? page : base_page;
    parse_tree_option(args.has("--tree") ? "--tree" : "--workload", tree, p);
    try {
      w = workload::workload_from_tree(tree, model_name, has_dtype ? chosen_dtype : base_dtype, p);
    } catch (const Error& e) {
      throw UsageError(std::string(model ? "--model: " : "") + e.what());
    }
    w.name = name;
  }
  if (layout) w.spec.kv_layout = parse_layout_option("--layout", *layout);
  return w;
}

/// Distinct pages the requests actually use (the first ceil(seq_len /
/// page_size) of each table): the KV a prefix-aware kernel must read once.
/// `tables` must be valid (discover_prefix_tree or planning checked them).
inline std::int64_t unique_kv_pages(const BlockTables& tables, int page_size) {
  std::vector<std::int32_t> pages;
  for (int r = 0; r < tables.batch_size(); ++r) {
    const std::int64_t used = (std::int64_t{tables.seq_lens[r]} + page_size - 1) / page_size;
    const std::int64_t begin = tables.indptr[r];
    const std::int64_t end = std::min<std::int64_t>(tables.indptr[r + 1], begin + used);
    for (std::int64_t i = begin; i < end; ++i) pages.push_back(tables.indices[i]);
  }
  std::sort(pages.begin(), pages.end());
  return std::unique(pages.begin(), pages.end()) - pages.begin();
}

/// Bytes of K and V in the used pages, each read once.
inline double unique_kv_bytes(const AttentionSpec& spec, std::int64_t unique_pages) {
  return double(unique_pages) * spec.page_size * spec.num_kv_heads * spec.head_dim * 2.0 *
         dtype_bytes(spec.kv_dtype);
}

}  // namespace canopy::cli
