// IncrementalPlanner: plans decode step after decode step, patching the last
// plan when the batch only grew. docs/planner.md, section 5.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "canopy/batch.hpp"
#include "canopy/plan.hpp"
#include "canopy/planner.hpp"
#include "canopy/spec.hpp"

namespace canopy {

struct ReplanOptions {
  /// Plan from scratch at least every this many steps (1: always), so the
  /// schedule never lags the batch for long.
  int full_every = 16;
  /// Plan from scratch once a growing task's tokens exceed its tokens at the
  /// last full plan by this fraction: its split and balance were chosen for
  /// the old length.
  double max_growth = 0.25;
  /// ... or by this many tokens, whichever allows more: a leaf of a few
  /// tokens would otherwise exceed max_growth within a step or two. On the
  /// irregular decode benchmarks 8 halves the full plans at a mean drift of
  /// the patched prediction of <= 0.8% (docs/planner.md, 4.5); 0: no floor.
  int min_growth_tokens = 8;
  /// The caller's promise that its block tables are append-only: a request's
  /// used pages never change while it stays in the batch, except perhaps the
  /// last, partly filled one (a copy-on-write). A patch then compares each
  /// request's first and last used page instead of every used page: a decode
  /// step costs O(requests + new pages), not O(all page ids). Off: every
  /// used page is compared, and any change plans from scratch.
  bool append_only_tables = false;
};

/// How the last plan() call made its plan.
enum class ReplanOutcome {
  kFull,       ///< planned from scratch (make_plan)
  kPatched,    ///< the last plan with grown requests' items, pages and loads updated
  kUnchanged,  ///< the same tables as last time: the same plan
};

/// Holds the last plan and what produced it. In decoding, a step's batch is
/// the last one with one more token per request; then the plan is patched in
/// O(requests + items of the grown requests), keeping the last full plan's
/// decisions (tasks, absorbs, variants, splits, placement). A patch is made
/// only when it is provably a correct plan for the new tables:
///   - the same spec, batch size and page ids: every request's used pages of
///     the last step are unchanged, a grown request only appended pages;
///   - no request shrank;
///   - every grown request ends alone at a leaf of the tree (its tokens
///     belong to one task, read by it alone), and growing cannot merge it
///     with a sibling;
///   - every KV piece of a grown task keeps holding tokens;
///   - within ReplanOptions (steps and growth since the last full plan).
/// Anything else (arrivals, departures, a shared page that grows, a request
/// ending at an inner node that grows) plans from scratch, giving exactly
/// make_plan's plan. A patched plan covers every (request, head, token)
/// exactly once like any plan; its predicted time is recomputed from the
/// cost model, its schedule is that of the last full plan.
class IncrementalPlanner {
 public:
  explicit IncrementalPlanner(const AttentionSpec& spec, PlannerOptions options = {},
                              ReplanOptions replan = {});
  ~IncrementalPlanner();
  IncrementalPlanner(IncrementalPlanner&&) noexcept;
  IncrementalPlanner& operator=(IncrementalPlanner&&) noexcept;

  /// The plan for `tables`; the reference stays valid until the next call.
  /// Throws like make_plan on bad tables (and then plans from scratch next time).
  const Plan& plan(const BlockTables& tables);
  const Plan& last_plan() const;

  ReplanOutcome last_outcome() const;
  /// Why the last call planned from scratch ("" when it did not).
  const std::string& last_reason() const;
  std::int64_t full_plans() const;
  std::int64_t patched_plans() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace canopy
