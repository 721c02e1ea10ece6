// The tuning database (canopy-tune, docs/tuning.md): the cost model's
// coefficients fitted on one GPU, the measurements they came from, and the
// planner choices measured best per shape class.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "canopy/cost_model.hpp"
#include "canopy/spec.hpp"
#include "canopy/tree.hpp"

namespace canopy {

inline constexpr const char* kTuningDbFormat = "canopy-tuning-db/1";

/// The library's version ("0.1.0"), recorded in and checked against databases.
const char* canopy_version() noexcept;

/// What a database is valid for: every term of the cost model moves with the
/// SM count, the clocks and the memory, so a database prices only a device
/// with the same key.
struct DeviceKey {
  std::string name;  ///< cuDeviceGetName, e.g. "NVIDIA H200"
  int cc_major = 0;
  int cc_minor = 0;
  int num_sms = 0;
  int memory_clock_khz = 0;
  std::int64_t memory_mib = 0;  ///< total device memory (MIG slices differ)
  std::string to_string() const;
  /// "" when equal, else the first field that differs, both values.
  std::string mismatch(const DeviceKey& other) const;
  bool operator==(const DeviceKey&) const = default;
};

/// One timed work-item shape: `rows` query rows (one row tile, one KV head
/// unless `heads` > 1) over `tokens` KV tokens, by kernel `config`, timed as
/// SM-us per item while every SM runs such items (CostModel::item_us's unit).
struct ItemMeasurement {
  std::string config;  ///< KernelConfig::to_string()
  DType dtype = DType::kF16;
  int head_dim = 128;
  int page_size = 16;
  int row_tile = 64;
  int rows = 1;
  int tokens = 0;
  int heads = 1;
  double us = 0;
  bool operator==(const ItemMeasurement&) const = default;
};

/// One timed merge launch: `rows` output rows (merge entries) of `fan_in`
/// partial states each; `us` includes the launch.
struct MergeMeasurement {
  DType dtype = DType::kF16;  ///< output dtype
  int head_dim = 128;
  int fan_in = 2;
  std::int64_t rows = 0;
  double us = 0;
  bool operator==(const MergeMeasurement&) const = default;
};

/// A fitted coefficient: its value, the RMS relative residual of the
/// measurements that determine it, and how many there were (0: not fitted,
/// the value is the prior).
struct CoefficientFit {
  double value = 0;
  double residual = 0;
  int samples = 0;
  bool operator==(const CoefficientFit&) const = default;
};

/// Held-out validation: measurements not used in the fit, predicted.
struct Validation {
  int samples = 0;
  double median_abs_rel_error = 0;
  double spearman = 0;
  bool operator==(const Validation&) const = default;
};

/// A (family, config)'s fit: its three KernelCoefficients.
struct KernelFit {
  CoefficientFit item_overhead_us;
  CoefficientFit flops_per_us;
  CoefficientFit bandwidth_fraction;
  int samples = 0;  ///< used in the fit
  Validation holdout;
  bool operator==(const KernelFit&) const = default;
};

/// A measured winner: the planner options that ran a shape class fastest.
struct ShapeWinner {
  std::string options_json;  ///< canopy-planner-options/1, without coefficients
  double measured_us = 0;
  double default_us = 0;  ///< the default options' time on the same batch
  /// Plan with the built-in coefficients instead of the database's: the
  /// built-in defaults ran this class fastest (canopy-tune's alternative
  /// "builtin-defaults"), so the database must not make it slower.
  bool builtin_coefficients = false;
  std::string alternative;  ///< canopy-tune's name for it ("no-split", ...); "" if unknown
  bool operator==(const ShapeWinner&) const = default;
};

struct TuningDb {
  DeviceKey device;
  std::string canopy_version;  ///< the Canopy that measured (compatibility: same major.minor)
  std::string nvrtc_version;
  std::string driver_version;
  std::string date;                       ///< ISO 8601, UTC
  std::map<std::string, double> clocks;   ///< clocks seen during the run (MHz), by name
  bool synthetic = false;                 ///< made by `canopy-tune --simulate`, not measured
  bool complete = false;                  ///< false: an interrupted run, measurements only
  GpuCoefficients coefficients;           ///< what the planner uses
  std::map<std::string, KernelFit> fits;  ///< by GpuCoefficients::kernels key
  std::map<std::string, Validation> family_validation;  ///< by family name
  CoefficientFit merge_bytes_per_us;
  CoefficientFit launch_overhead_us;
  std::vector<ItemMeasurement> items;
  std::vector<MergeMeasurement> merges;
  std::map<std::string, ShapeWinner> winners;  ///< by shape_class()

  std::string to_json(int indent = 1) const;
  /// Throws Error(kInvalidArgument) "<source>: <problem>" for anything but a
  /// well-formed canopy-tuning-db/1 document with finite, positive
  /// coefficients consistent with its device key. An incomplete run is
  /// accepted here (canopy-tune resumes it); check_tuning_db refuses it.
  static TuningDb from_json(const std::string& text, const std::string& source);
  /// The head dims of its item measurements: where its fitted coefficients
  /// hold (the Runtime plans other head dims with the built-in defaults).
  std::set<int> measured_head_dims() const;
  /// Whether a database that measured `measured` (measured_head_dims())
  /// prices `head_dim` with its own coefficients: a head dim it measured, or
  /// any when it measured none. The one rule of the Runtime and canopy-tune.
  static bool prices_head_dim(const std::set<int>& measured, int head_dim) {
    return measured.empty() || measured.count(head_dim) != 0;
  }
  bool operator==(const TuningDb&) const = default;
};

/// Reads and parses `path`; throws Error naming the file and the problem.
TuningDb load_tuning_db(const std::string& path);
/// Throws Error(kInvalidArgument) "<source>: <problem>" unless `db` is a
/// complete run of a compatible Canopy for `device`.
void check_tuning_db(const TuningDb& db, const DeviceKey& device, const std::string& source);

/// Where the coefficients a Runtime plans with came from.
struct TuningStatus {
  std::string device;                 ///< DeviceKey::to_string()
  bool tuned = false;                 ///< a database is in use
  std::string database;               ///< its path ("" with the built-in defaults)
  std::string message;                ///< one line: what is used and why
  std::vector<std::string> searched;  ///< the search path, in order
  std::vector<std::string> refused;   ///< "path: problem" for each refused database
};

/// The places searched, in order: `explicit_path` (a file or folder), then
/// $CANOPY_TUNING_DB, $XDG_CONFIG_HOME/canopy (or ~/.config/canopy), then the
/// folders of databases installed and shipped with Canopy.
std::vector<std::string> tuning_search_path(const std::string& explicit_path = "");

/// The database for `device`: the first file on the search path whose key
/// matches (*.json files of a folder, in name order; another device's are
/// skipped). A file named explicitly ($CANOPY_TUNING_DB or `explicit_path`)
/// must match, and a matching file must be valid: otherwise it is refused
/// (status.refused) and the search goes on. Never throws for a bad database.
struct TuningSelection {
  std::optional<TuningDb> db;
  TuningStatus status;
};
TuningSelection select_tuning_db(const DeviceKey& device, const std::string& explicit_path = "");

/// The shape class of a batch (docs/tuning.md): the spec's head dim, dtype,
/// GQA group, KV heads and page size, the tree's depth and, per level, log2
/// buckets of the node count, the fan-out and the node length, and the log2
/// bucket of the batch size. e.g. "d128.fp16.g4.h8.p16|b6|L0:n0.f2.t11|L1:n2.f6.t8"
std::string shape_class(const AttentionSpec& spec, const PrefixTree& tree);

}  // namespace canopy
