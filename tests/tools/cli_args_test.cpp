// The command-line helpers shared by canopy-inspect and canopy-demo.
#include "tools/cli_args.hpp"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace canopy::cli
