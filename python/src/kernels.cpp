// canopy.kernel_source: the generated CUDA source (or NVRTC's PTX, or a
// compile summary) of one kernel, built exactly as the runtime builds it.
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <optional>
#include <string>
#include <vector>

#include "bindings.hpp"
#include "canopy/arch.hpp"
#include "canopy/error.hpp"
#include "canopy/kernel_spec.hpp"
#include "canopy/planner.hpp"
#include "families/kernel_families.hpp"
#include "runtime/jit/cubin_cache.hpp"
#include "runtime/jit/kernel_inspect.hpp"
#include "runtimes.hpp"

namespace nb = nanobind;

namespace canopy::python {
namespace {

std::string kernel_source(const AttentionSpec& spec, const std::optional<std::string>& config,
                          const std::string& arch, bool merge, int fan_in, bool persistent,
                          const std::string& emit) {
  const KernelArtifact what = kernel_artifact_from_string(emit);
  const Arch target = Arch::parse(arch);
  spec.validate();
  KernelSpec k;
  if (merge) {
    CANOPY_CHECK(!config, ErrorKind::kInvalidArgument,
                 "config ('{}') applies to partial-attention kernels; the merge kernel has none",
                 *config);
    CANOPY_CHECK(fan_in >= 0, ErrorKind::kInvalidArgument, "fan_in ({}) must be >= 0", fan_in);
    CANOPY_CHECK(!persistent, ErrorKind::kInvalidArgument,
                 "persistent applies to partial-attention kernels; the merge kernel has no "
                 "persistent form");
    k = merge_kernel_spec(spec, fan_in, target);
  } else {
    CANOPY_CHECK(fan_in == 0, ErrorKind::kInvalidArgument,
                 "fan_in ({}) applies to the merge kernel only (merge=True)", fan_in);
    k = partial_kernel_spec(spec, config ? KernelConfig::parse(*config) : KernelConfig{}, target,
                            persistent);
  }
  nb::gil_scoped_release release;  // NVRTC may take seconds for ptx/summary
  return inspect_kernel(k, what);
}

std::vector<std::string> config_names(const std::vector<KernelConfig>& configs) {
  std::vector<std::string> names;
  for (const KernelConfig& c : configs) names.push_back(c.to_string());
  return names;
}

/// Every kernel plans of `specs` may launch on `arch`: the partial kernels of
/// `configs` (default: each spec's default configs; all_configs: every
/// shipped config the arch runs) and the merges of every fan-in bucket,
/// compiled into the disk cache the runtime reads; with fused_merge also the
/// persistent forms of those that have one (plans with fuse_merge launch them).
nb::dict prewarm(const std::vector<AttentionSpec>& specs, const std::optional<std::string>& arch,
                 int device, const std::optional<std::vector<std::string>>& configs,
                 bool all_configs, bool fused_merge, const std::optional<std::string>& cache_dir,
                 unsigned threads) {
  CANOPY_CHECK(!(configs && all_configs), ErrorKind::kInvalidArgument,
               "give configs or all_configs=True, not both");
  const Arch target = arch ? Arch::parse(*arch) : runtime_for(device).arch();
  std::vector<KernelSpec> kernels;
  for (const AttentionSpec& spec : specs) {
    spec.validate();
    std::vector<KernelConfig> tiles;
    if (configs) {
      for (const std::string& c : *configs) tiles.push_back(KernelConfig::parse(c));
    } else if (all_configs) {
      // Each checked for the target it compiles for (sm_90a for wgmma on an
      // sm_90 device): the database's winners may pick any of them.
      tiles = runnable_kernel_configs(spec, shipped_kernel_configs(spec), target);
    } else {
      tiles = default_kernel_configs(spec);
    }
    for (const KernelConfig& tile : tiles) {
      kernels.push_back(partial_kernel_spec(spec, tile, target));
      if (fused_merge && families::family_info(tile.family).fused_merge)
        kernels.push_back(partial_kernel_spec(spec, tile, target, /*persistent=*/true));
    }
    for (int fan_in = 1; fan_in <= 2 * kMaxUnrolledFanIn; fan_in *= 2) {  // 32: the general loop
      kernels.push_back(merge_kernel_spec(spec, fan_in, target));
    }
  }
  CubinCache cache(cache_dir.value_or(""));
  CubinCache::BatchResult result;
  {
    nb::gil_scoped_release release;
    result = cache.compile_all(kernels, threads);
  }
  const CubinCacheStats stats = cache.stats();
  nb::dict d;
  d["kernels"] = kernels.size();
  d["compiled"] = stats.compiles;
  d["disk_hits"] = stats.disk_hits;
  d["failures"] = result.failures;
  d["first_error"] = result.first_error;
  d["seconds"] = result.seconds;
  d["cache_dir"] = cache.dir();
  return d;
}

}  // namespace

void bind_kernels(nb::module_& m) {
  m.def("kernel_source", &kernel_source, nb::arg("spec"), nb::kw_only(),
        nb::arg("config").none() = nb::none(), nb::arg("arch") = "sm_90", nb::arg("merge") = false,
        nb::arg("fan_in") = 0, nb::arg("persistent") = false, nb::arg("emit") = "source",
        R"(One generated kernel of `spec`, as the runtime generates it (no GPU needed).

Args:
  spec: the layer (AttentionSpec).
  config: partial-attention kernel config, e.g. "mma_q64_kv64_w4_s3" (the
    default) or "mma_q128_kv32_w4_s3"; Plan.configs lists a plan's.
  arch: GPU target: "sm_80", "86", "90", "sm_90a", ...
  merge: the merge-states kernel instead (config must be None).
  fan_in: merge kernels: partials per row (rounded up to 1/2/4/8/16), 0 = general loop.
  persistent: the queue-walking form with the fused merge (mma and wgmma
    configs), which plans with PlannerOptions.fuse_merge launch.
  emit: "source" (CUDA C++), "ptx" (NVRTC's PTX) or "summary" (compile facts).

Returns the text. Raises InvalidArgumentError / NotSupportedError for bad
fields, CompileError when NVRTC rejects the source.)");
  m.def("prewarm", &prewarm, nb::arg("specs"), nb::kw_only(), nb::arg("arch").none() = nb::none(),
        nb::arg("device") = 0, nb::arg("configs").none() = nb::none(),
        nb::arg("all_configs") = false, nb::arg("fused_merge") = false,
        nb::arg("cache_dir").none() = nb::none(), nb::arg("threads") = 0,
        R"(Compiles, in parallel, every kernel plans of `specs` may launch, into the
disk cache plans read ($CANOPY_CACHE_DIR, else ~/.cache/canopy): call it at
start-up so the first canopy.plan() of each spec loads instead of compiling.

Args:
  specs: AttentionSpecs.
  arch: GPU target ("sm_90", "90a", ...); None: the arch of CUDA `device`.
  configs: partial-kernel configs (None: each spec's default_kernel_configs).
  all_configs: every shipped config the arch runs instead (a tuning
    database's recorded winners may pick any of them).
  fused_merge: also the persistent forms of those configs that have one, for
    plans made with PlannerOptions.fuse_merge.
  cache_dir: cache directory (None: the default the runtime uses).
  threads: compile threads (0: every core).

Returns {"kernels", "compiled", "disk_hits", "failures", "first_error",
"seconds", "cache_dir"}; failures are counted, not raised.)");
  m.def(
      "default_kernel_configs",
      [](const AttentionSpec& spec) { return config_names(default_kernel_configs(spec)); },
      nb::arg("spec"), "The kernel configs the planner chooses among by default.");
  m.def(
      "shipped_kernel_configs",
      [](const AttentionSpec& spec) { return config_names(shipped_kernel_configs(spec)); },
      nb::arg("spec"), "Every shipped partial-attention config (any may be a candidate).");
}

}  // namespace canopy::python
