// The command-line helpers shared by canopy-inspect and canopy-demo.
#include "tools/cli_args.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace canopy::cli {
namespace {

const std::vector<Option> kOptions = {
    {"--head-dim", "N", "head dim"},
    {"--dtype", "T", "dtype"},
    {"--lse", "", "flag"},
};

/// The UsageError message of parsing `argv`, or "" when it parses.
std::string usage_error(const std::vector<std::string>& argv, std::size_t positional = 0) {
  try {
    Args::parse(argv, kOptions, positional);
  } catch (const UsageError& e) {
    return e.what();
  }
  return "";
}

TEST(CliArgs, ParsesValuesFlagsAndEqualsForm) {
  const Args a = Args::parse({"--head-dim", "64", "--lse", "--dtype=bf16"}, kOptions);
  EXPECT_FALSE(a.help());
  EXPECT_TRUE(a.has("--lse"));
  EXPECT_EQ(a.get_int("--head-dim", 128, 1, 4096), 64);
  EXPECT_EQ(a.get("--dtype", "fp16"), "bf16");
  EXPECT_EQ(a.get("--missing", "x"), "x");
  EXPECT_EQ(a.get_int("--missing", 7, 1, 10), 7);
  EXPECT_TRUE(Args::parse({"-h"}, kOptions).help());
  EXPECT_TRUE(Args::parse({"--dtype", "fp16", "--help"}, kOptions).help());
}

TEST(CliArgs, RejectsBadCommandLines) {
  EXPECT_NE(usage_error({"--head-dmi", "64"}).find("did you mean --head-dim?"), std::string::npos);
  EXPECT_NE(usage_error({"--zzzzzzzz"}).find("unknown option '--zzzzzzzz'"), std::string::npos);
  EXPECT_NE(usage_error({"--head-dim"}).find("expects a value"), std::string::npos);
  EXPECT_NE(usage_error({"--head-dim", "--lse"}).find("expects a value"), std::string::npos);
  EXPECT_NE(usage_error({"--lse=1"}).find("takes no value"), std::string::npos);
  EXPECT_NE(usage_error({"--lse", "--lse"}).find("more than once"), std::string::npos);
  EXPECT_NE(usage_error({"stray"}).find("unexpected argument 'stray'"), std::string::npos);
  EXPECT_NE(usage_error({"-x"}).find("unknown option '-x'"), std::string::npos);
  EXPECT_EQ(usage_error({"stray"}, 1), "");
  // Negative numbers are values, not options.
  const Args a = Args::parse({"--head-dim", "-5"}, kOptions);
  EXPECT_THROW(a.get_int("--head-dim", 0, 1, 10), UsageError);
}

TEST(CliArgs, NumbersAndChoices) {
  EXPECT_EQ(parse_int("--n", "42", 0, 100), 42);
  EXPECT_EQ(parse_int("--n", "+3", 0, 100), 3);
  EXPECT_THROW(parse_int("--n", "", 0, 100), UsageError);
  EXPECT_THROW(parse_int("--n", "4x", 0, 100), UsageError);
  EXPECT_THROW(parse_int("--n", "1e3", 0, 100), UsageError);
  EXPECT_THROW(parse_int("--n", "101", 0, 100), UsageError);
  EXPECT_THROW(parse_int("--n", "99999999999999999999999", 0, 100), UsageError);
  EXPECT_DOUBLE_EQ(parse_double("--x", "2.5", 0, 10), 2.5);
  EXPECT_THROW(parse_double("--x", "nan", 0, 10), UsageError);
  EXPECT_THROW(parse_double("--x", "2.5q", 0, 10), UsageError);
  EXPECT_THROW(parse_double("--x", "-1", 0, 10), UsageError);
  EXPECT_EQ(parse_choice("--emit", "ptx", {"source", "ptx"}), "ptx");
  EXPECT_THROW(parse_choice("--emit", "sass2", {"source", "ptx"}), UsageError);
  EXPECT_EQ(parse_dtype_option("--dtype", "bf16"), DType::kBF16);
  EXPECT_THROW(parse_dtype_option("--dtype", "fp8"), UsageError);
  EXPECT_EQ(parse_layout_option("--layout", "hnd"), KvLayout::kHND);
  EXPECT_THROW(parse_layout_option("--layout", "NDH"), UsageError);
  EXPECT_EQ(closest("plna", {"kernel", "plan", "workloads"}), "plan");
  EXPECT_EQ(closest("xyzzy", {"kernel", "plan", "workloads"}), "");
}

TEST(CliArgs, FormatsAlignedHelp) {
  const std::string help = format_options(kOptions);
  EXPECT_NE(help.find("  --head-dim N  head dim\n"), std::string::npos);
  EXPECT_NE(help.find("  --lse         flag\n"), std::string::npos);
}

TEST(CliWorkload, SelectsSuiteTreeAndOverrides) {
  const std::vector<Option> options = workload_options();
  const workload::Workload fallback = select_workload(Args::parse({}, options), "ft-1-2-64");
  EXPECT_EQ(fallback.name, "ft-1-2-64");
  EXPECT_EQ(fallback.tables.batch_size(), 64);

  const workload::Workload w =
      select_workload(Args::parse({"--workload", "ft-1-2-64", "--dtype", "bf16", "--layout", "HND",
                                   "--page-size", "8", "--model", "small-d64"},
                                  options),
                      "");
  EXPECT_EQ(w.name, "ft-1-2-64");
  EXPECT_EQ(w.spec.kv_dtype, DType::kBF16);
  EXPECT_EQ(w.spec.kv_layout, KvLayout::kHND);
  EXPECT_EQ(w.spec.page_size, 8);
  EXPECT_EQ(w.spec.head_dim, 64);

  const workload::Workload t = select_workload(Args::parse({"--tree", "1,4|32,16"}, options), "");
  EXPECT_EQ(t.tables.batch_size(), 4);
  EXPECT_EQ(t.spec.num_qo_heads, 32);  // llama3-8b by default
}

TEST(CliWorkload, BadSelectionsAreUsageErrors) {
  const std::vector<Option> options = workload_options();
  auto fails = [&](const std::vector<std::string>& argv) {
    try {
      select_workload(Args::parse(argv, options), "");
    } catch (const UsageError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(fails({}).find("give one of"), std::string::npos);
  EXPECT_NE(fails({"--workload", "nope"}).find("no workload 'nope'"), std::string::npos);
  EXPECT_NE(fails({"--tree", "1,4"}).find("--tree"), std::string::npos);
  EXPECT_NE(fails({"--tree", "2,3|8,8"}).find("not a multiple"), std::string::npos);
  EXPECT_NE(fails({"--tree", "1000000,1000000000|100000,100000"}).find("too large"),
            std::string::npos);
  EXPECT_NE(fails({"--tree", "1,4|32,16", "--model", "gpt-9"}).find("gpt-9"), std::string::npos);
  EXPECT_NE(fails({"--tree", "1,4|32,16", "--workload", "ft-1-2-64"}).find("exclude each other"),
            std::string::npos);
  EXPECT_NE(fails({"--batch", "x.json", "--page-size", "8"}).find("--page-size"),
            std::string::npos);
  EXPECT_NE(fails({"--tree", "1,4|32,16", "--page-size", "0"}).find("--page-size"),
            std::string::npos);
}

TEST(CliWorkload, UniqueKvPagesCountsUsedPagesOnce) {
  BlockTables t;
  // Request 0 uses pages 1, 2 (20 tokens, page size 16); request 1 uses 1, 3 and
  // lists an unused trailing page 9.
  t.indptr = {0, 2, 5};
  t.indices = {1, 2, 1, 3, 9};
  t.seq_lens = {20, 32};
  t.num_pages = 10;
  EXPECT_EQ(unique_kv_pages(t, 16), 3);
  AttentionSpec spec;  // 8 KV heads, head dim 128, fp16, page size 16
  EXPECT_DOUBLE_EQ(unique_kv_bytes(spec, 3), 3.0 * 16 * 8 * 128 * 2 * 2);
}

TEST(CliPlanner, SwitchesGoThroughTheLibrarysJsonForm) {
  const std::vector<Option> options = planner_options();
  EXPECT_TRUE(parse_planner_options(Args::parse({}, options)) == PlannerOptions{});
  EXPECT_EQ(planner_options_json(Args::parse({}, options)), nlohmann::json::object());
  const Args args = Args::parse(
      {"--no-absorb", "--no-split", "--prefix-blind", "--no-head-packs", "--min-split-tokens",
       "128", "--configs", "mma_q64_kv64_w4_s3,mma_q128_kv32_w4_s3", "--row-tiles", "16,64"},
      options);
  const nlohmann::json j = planner_options_json(args);
  EXPECT_EQ(j, nlohmann::json::parse(R"({"allow_absorb": false, "allow_split": false,
      "prefix_blind": true, "head_packs": false, "min_split_tokens": 128,
      "candidates": ["mma_q64_kv64_w4_s3", "mma_q128_kv32_w4_s3"], "row_tiles": [16, 64]})"));
  const PlannerOptions o = parse_planner_options(args);
  EXPECT_TRUE(o == planner_options_from_json(j.dump()));
  EXPECT_FALSE(o.allow_absorb || o.allow_split || o.head_packs);
  EXPECT_TRUE(o.prefix_blind);
  EXPECT_EQ(o.min_split_tokens, 128);
  EXPECT_EQ(o.row_tiles, (std::vector<int>{16, 64}));
  ASSERT_EQ(o.candidates.size(), 2u);
  EXPECT_EQ(o.candidates[1].to_string(), "mma_q128_kv32_w4_s3");

  // --options gives the whole object; switches override its keys.
  const PlannerOptions both = parse_planner_options(Args::parse(
      {"--options", R"({"waves": 2, "allow_split": true, "min_split_tokens": 64})", "--no-split"},
      options));
  EXPECT_EQ(both.waves, 2);
  EXPECT_EQ(both.min_split_tokens, 64);
  EXPECT_FALSE(both.allow_split);

  // --coefficients embeds the file's canopy-coefficients/1 object.
  GpuCoefficients c;
  c.name = "cli-test";
  c.num_sms = 66;
  const std::string path =
      (std::filesystem::temp_directory_path() / "canopy_cli_coefficients_test.json").string();
  std::ofstream(path) << c.to_json();
  const PlannerOptions tuned =
      parse_planner_options(Args::parse({"--coefficients", path}, options));
  EXPECT_EQ(tuned.cost_model.coefficients(), c);
  std::ofstream(path) << "{\"format\": \"canopy-coefficients/1\"}";
  try {
    parse_planner_options(Args::parse({"--coefficients", path}, options));
    ADD_FAILURE() << "a bad coefficients file parsed";
  } catch (const Error& e) {  // exit 1, as a bad batch file
    EXPECT_NE(std::string(e.what()).find("--coefficients '" + path + "': 'coefficients'"),
              std::string::npos)
        << e.what();
  }
  std::ofstream(path) << "{not json";
  EXPECT_THROW(parse_planner_options(Args::parse({"--coefficients", path}, options)), Error);
  std::remove(path.c_str());
}

TEST(CliPlanner, BadSwitchValuesAreUsageErrorsNamingTheSwitch) {
  const std::vector<Option> options = planner_options();
  auto fails = [&](const std::vector<std::string>& argv) {
    try {
      parse_planner_options(Args::parse(argv, options));
    } catch (const UsageError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_EQ(fails({"--min-split-tokens", "0"}),
            "--min-split-tokens: 'min_split_tokens' must be an integer in [1, 1048576], got 0");
  EXPECT_EQ(fails({"--min-split-tokens", "x"}), "--min-split-tokens expects an integer, got 'x'");
  EXPECT_EQ(fails({"--row-tiles", "16,0"}),
            "--row-tiles: row_tiles[1] must be an integer in [1, 4096], got 0");
  EXPECT_EQ(fails({"--row-tiles", "16,a"}), "--row-tiles expects an integer, got 'a'");
  EXPECT_NE(fails({"--configs", "mma_q64_kv64_w4_s3,mma_q64"})
                .find("--configs: candidates[1]: kernel config 'mma_q64' is not of the form"),
            std::string::npos);
  EXPECT_NE(fails({"--options", "{\"wave\": 2}"}).find("--options: unknown key 'wave'"),
            std::string::npos);
  EXPECT_NE(fails({"--options", "[]"}).find("--options: expected a JSON object"),
            std::string::npos);
  EXPECT_EQ(fails({"--coefficients", "/nonexistent/c.json"}),
            "--coefficients: cannot read '/nonexistent/c.json'");
}

}  // namespace
}  // namespace canopy::cli
