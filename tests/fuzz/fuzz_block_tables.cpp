// Fuzz target block_tables: padded and CSR block tables (0..4096 requests,
// shared and duplicated prefixes, adversarial ids and lengths) under every
// head configuration and planner switch, through make_plan.
#include <fmt/format.h>

#include "canopy/planner.hpp"
#include "canopy/tree.hpp"
#include "tests/fuzz/fuzz_support.hpp"

namespace canopy::fuzz {

void fuzz_block_tables(const std::uint8_t* data, std::size_t size) {
  FuzzReader r(data, size);
  const AttentionSpec spec = decode_spec(r);
  bool sane = true;
  const PlannerOptions options = decode_options(r, spec, sane);
  const bool spec_ok = spec_is_valid(spec);
  const int gen_page_size = spec_ok ? spec.page_size : 16;

  BlockTables tables;
  const bool padded = r.chance(30);
  if (padded) {
    const PaddedTables p = decode_padded(r, gen_page_size);
    if (rejects([&] {
          tables = BlockTables::from_padded(p.table, p.max_pages, p.seq_lens, p.num_pages,
                                            spec.page_size);
        })) {
      return;
    }
  } else {
    tables = decode_tables(r, gen_page_size);
  }

  const bool tables_ok = spec_ok && tables_are_valid(tables, spec.page_size);
  const std::int64_t rows = std::int64_t{tables.batch_size()} * std::max(spec.num_qo_heads, 0);
  if (!plannable_size(spec, tables) && rows <= kInt32Max) return;  // valid maybe, but too big

  Plan plan;
  try {
    make_plan(spec, tables, options, plan);
  } catch (const Error& e) {
    check_error(e);
    // kNotSupported is a fair answer to a valid input (e.g. no kernel fits
    // the device's shared memory); kInvalidArgument is not.
    if (e.kind() == ErrorKind::kInvalidArgument && sane && tables_ok && tables.batch_size() >= 1 &&
        plannable_size(spec, tables))
      fail(fmt::format("valid tables rejected ({} requests, {}): {}", tables.batch_size(),
                       spec.to_string(), e.what()));
    return;
  }
  if (!tables_ok)
    fail(fmt::format("make_plan accepted tables or a spec that validation rejects ({})",
                     spec.to_string()));
  check_accepted_plan(plan, tables, padded ? "padded tables" : "CSR tables");
}

}  // namespace canopy::fuzz
