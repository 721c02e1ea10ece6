// Step-level pricing: how the planner's item costs become a step time. Items
// run on block slots (several per SM), a step costs its busiest slot plus the
// merge of every partial state plus one launch overhead per kernel launch
// (docs/cost-model.md, "Block slots" and "Merging and the step"). CostModel
// prices one item; this prices the step around the items, so the tuning of
// occupancy, merge rate and launch cost touches this file and the
// coefficients alone.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>

#include "canopy/arch.hpp"
#include "canopy/cost_model.hpp"
#include "canopy/kernel_spec.hpp"
#include "canopy/spec.hpp"

namespace canopy::autotune {

class StepPricer {
 public:
  StepPricer() = default;
  /// Steps of `spec` on `gpu` whose partial launches use some of `configs`:
  /// the block slots per SM are the fewest that any of them leaves.
  StepPricer(const AttentionSpec& spec, const GpuCoefficients& gpu,
             std::span<const KernelConfig> configs);
  /// The same with the block slots per SM given (no kernel is asked).
  StepPricer(const AttentionSpec& spec, const GpuCoefficients& gpu, int per_sm);

  /// Thread blocks of `config` resident on one SM of `arch` (shared memory,
  /// registers, threads, the block limit: the kernel registry's occupancy).
  static int blocks_per_sm(const AttentionSpec& spec, const KernelConfig& config, Arch arch);
  /// The most blocks_per_sm over `configs` (the arch's block limit if none):
  /// one slot layout serves every launch of the step, and an item of a kernel
  /// that keeps fewer blocks resident (the wgmma kernels own a whole SM)
  /// costs its SM time times the slots per SM on its slot, the same
  /// throughput as its launch's own grid. (With the v1 kernels, all of a
  /// spec's configs keep the same number of blocks.)
  static int blocks_per_sm(const AttentionSpec& spec, std::span<const KernelConfig> configs,
                           Arch arch);

  int slots_per_sm() const { return per_sm_; }
  /// Block slots of the GPU: SMs times slots per SM.
  int slots() const { return slots_; }
  /// An item's time on one slot, from its time while every SM is busy
  /// (CostModel::item_us): a slot has 1 / slots_per_sm of an SM's bandwidth
  /// and tensor rate.
  double slot_us(double item_us) const { return item_us * slot_scale_; }

  /// Merging `partials` states of one output row, per SM (SM-us).
  double merge_row_us(int partials) const;
  /// The merge of `merged_partials` partial states, spread over every SM.
  double merge_us(std::int64_t merged_partials) const {
    return static_cast<double>(merged_partials) * merge_row1_ / num_sms_;
  }
  /// The absorb rule's merge price: one more partial state for every query
  /// row of `requests` requests, per KV head, in slot-us (the unit of item
  /// costs).
  double added_partials_us(int requests) const {
    return slot_scale_ * requests * num_qo_heads_ * merge_row1_ / num_kv_heads_;
  }
  double launch_us(int launches) const { return launches * launch_overhead_us_; }
  /// A step: its busiest slot's load, the merge of `merged_partials` partial
  /// states and `launches` kernel launches (the merge's included).
  double step_us(double busiest_slot_us, std::int64_t merged_partials, int launches) const {
    return busiest_slot_us + merge_us(merged_partials) + launch_us(launches);
  }
  /// No placement of `work` slot-us on the slots ends before the average
  /// load, nor before its longest item.
  double makespan_lower_bound(double work, double longest_item) const {
    return std::max(work / slots_, longest_item);
  }

 private:
  void init(const AttentionSpec& spec, const GpuCoefficients& gpu, int per_sm);

  int per_sm_ = 1;
  double slot_scale_ = 1;  // per_sm_ as a double: an item on a slot costs this many times more
  int slots_ = 1;
  int num_sms_ = 1;
  int num_qo_heads_ = 1;
  int num_kv_heads_ = 1;
  int head_dim_ = 0;
  int o_bytes_ = 0;
  double merge_bytes_per_us_ = 1;
  double launch_overhead_us_ = 0;
  double merge_row1_ = 0;  // merge_row_us(1): the step and the absorb rule price per partial
};

}  // namespace canopy::autotune
