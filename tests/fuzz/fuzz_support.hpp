// What every fuzz target shares: decoding specs, planner options and block
// tables from a FuzzReader, and the checks an accepted input must pass.
//
// The contract each target enforces (docs/reliability.md): an input either
// raises a clear canopy::Error (kInvalidArgument or kNotSupported, with a
// message) or yields a plan that passes Plan::validate and
// check_plan_coverage against the tables it was made for; small accepted
// plans also run on the CPU executor and match the float64 reference to a
// relative L2 error below 1e-9. Anything else (another exception, a valid
// input rejected, a wrong plan) is a FuzzFailure; memory and undefined
// behaviour errors are the sanitizers' to catch.
#pragma once

#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>

#include "canopy/batch.hpp"
#include "canopy/error.hpp"
#include "canopy/plan.hpp"
#include "canopy/planner.hpp"
#include "canopy/spec.hpp"
#include "tests/fuzz/fuzz_reader.hpp"

namespace canopy::fuzz {

/// A broken contract, as opposed to a canopy::Error on bad input.
class FuzzFailure : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};
[[noreturn]] void fail(const std::string& message);

/// One fuzz target: decodes the bytes and checks the contract; throws
/// FuzzFailure (or crashes under a sanitizer) when it is broken.
struct Target {
  const char* name;  ///< also the corpus folder: tests/fuzz/corpus/<name>
  void (*run)(const std::uint8_t* data, std::size_t size);
};
std::span<const Target> all_targets();

void fuzz_block_tables(const std::uint8_t* data, std::size_t size);
void fuzz_explicit_tree(const std::uint8_t* data, std::size_t size);
void fuzz_workload(const std::uint8_t* data, std::size_t size);
void fuzz_plan_json(const std::uint8_t* data, std::size_t size);
void fuzz_tuning_db(const std::uint8_t* data, std::size_t size);

/// Resource limits of one fuzz execution: inputs larger than these are valid
/// but too slow to plan thousands of times a second, so they are skipped
/// unless they already break an int32 limit (then they must be rejected).
inline constexpr std::int64_t kMaxPlannedRows = std::int64_t{1} << 16;   // batch * qo heads
inline constexpr std::int64_t kMaxPlannedPages = std::int64_t{1} << 24;  // table entries
inline constexpr std::int64_t kMaxCheckedPages = std::int64_t{1} << 25;  // entries * kv heads
inline constexpr std::int64_t kMaxExecutedKv = std::int64_t{1} << 17;    // CPU check: KV values
inline constexpr std::int64_t kMaxExecutedWork = std::int64_t{1} << 20;  // CPU check: MACs
inline constexpr std::int64_t kInt32Max = 2147483647;

/// A spec: mostly valid (GQA ratios, head dims 64/128/256, fp16/bf16 q and
/// KV, any o dtype, both layouts, page sizes 1..256, soft cap, lse), now and
/// then adversarial (zero, negative or huge heads, bad head dims, NaN scales).
AttentionSpec decode_spec(FuzzReader& r);
/// Planner options: switches, waves, split lengths, SM counts and arches,
/// candidate kernels and row tiles. `sane` says whether a valid spec and
/// batch must be planned (default candidates and row tiles).
PlannerOptions decode_options(FuzzReader& r, const AttentionSpec& spec, bool& sane);

/// Block tables of `batch` requests sharing prefixes as in serving (prefixes
/// of earlier requests, duplicates, small page pools), with adversarial
/// requests (huge or negative page ids and lengths, a run of pages holding
/// close to 2^31 tokens, unless `allow_huge` is false: callers that copy the
/// tables into text would spend seconds on it) and, now and then, a broken
/// CSR index.
BlockTables decode_tables(FuzzReader& r, int page_size, bool allow_huge = true);
/// The same requests as a padded table for BlockTables::from_padded.
struct PaddedTables {
  std::vector<std::int32_t> table;
  int max_pages = 0;
  std::vector<std::int32_t> seq_lens;
  std::int64_t num_pages = 0;
};
PaddedTables decode_padded(FuzzReader& r, int page_size);
/// A batch size: mostly 0..16, sometimes up to 4096.
int decode_batch_size(FuzzReader& r);

/// Whether `fn` throws canopy::Error (true) or returns (false); fails on any
/// other exception or an Error without a message or of an unexpected kind.
template <class Fn>
bool rejects(Fn&& fn);
void check_error(const Error& e);

bool spec_is_valid(const AttentionSpec& spec);
bool tables_are_valid(const BlockTables& tables, int page_size);
/// Rows and table entries within the limits above (entries times kv heads:
/// check_plan_coverage compares each page once per kv head's items).
bool plannable_size(const AttentionSpec& spec, const BlockTables& tables);

/// The contract for a plan the library accepted for `tables`: validate,
/// coverage, the JSON round trip and, when small, the CPU executor against
/// the float64 reference. `what` names the case in failure messages.
void check_accepted_plan(const Plan& plan, const BlockTables& tables, const std::string& what);
/// Runs `plan` and the reference on random inputs and compares (rel-L2 < 1e-9).
/// Only when the problem is small (kMaxExecutedKv / kMaxExecutedWork).
void check_on_cpu(const Plan& plan, const BlockTables& tables, const std::string& what);
bool cpu_sized(const AttentionSpec& spec, const BlockTables& tables);

template <class Fn>
bool rejects(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    check_error(e);
    return true;
  }
  return false;
}

}  // namespace canopy::fuzz
