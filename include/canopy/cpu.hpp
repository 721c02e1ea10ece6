// Host-side float64 attention: a plan-free reference and the plan executor
// (implemented in cpu/).
#pragma once

#include <cstdint>

#include "canopy/batch.hpp"
#include "canopy/plan.hpp"
#include "canopy/spec.hpp"

namespace canopy {

/// Host copies of the tensors in float64, same shapes and layouts as on the
/// GPU (see AttentionSpec): q [batch, H_qo, D]; k, v paged per spec.kv_layout
/// with `num_pages` pages; out [batch, H_qo, D]; lse [batch, H_qo] (may be null).
struct HostTensors {
  const double* q = nullptr;
  const double* k = nullptr;
  const double* v = nullptr;
  std::int64_t num_pages = 0;
};

/// Softmax attention per request and head, gathering each request's KV by
/// walking its block table. Knows nothing about trees or plans.
void reference_attention(const AttentionSpec& spec, const BlockTables& tables,
                         const HostTensors& in, double* out, double* lse);

/// Runs `plan` exactly as the GPU does: each work item's partial output and
/// log-sum-exp, then the merges in the plan's order.
///
/// Both functions spread their work over hardware_concurrency threads, or
/// over $CANOPY_CPU_THREADS (1 to 1024; read once) when set; results are
/// bit-identical for any count.
void execute_plan_cpu(const Plan& plan, const HostTensors& in, double* out, double* lse);

/// Index of element (page, slot, kv_head, 0) in a paged KV tensor.
std::int64_t kv_offset(const AttentionSpec& spec, std::int64_t page, int slot, int kv_head);

}  // namespace canopy
