// TuningDb <-> JSON ("canopy-tuning-db/1") and its validation: a database
// is read from disk and edited by hand, so every value is checked and every
// problem names the file and the field (docs/tuning.md, "Robustness").
#include <fmt/format.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "canopy/error.hpp"
#include "canopy/kernel_spec.hpp"
#include "canopy/plan.hpp"
#include "canopy/planner.hpp"
#include "canopy/tuning.hpp"

namespace canopy {

using nlohmann::json;

const char* canopy_version() noexcept { return CANOPY_VERSION; }

std::string DeviceKey::to_string() const {
  return fmt::format("{} (sm_{}{}, {} SMs, memory {} MHz, {} MiB)", name, cc_major, cc_minor,
                     num_sms, memory_clock_khz / 1000, memory_mib);
}

std::string DeviceKey::mismatch(const DeviceKey& o) const {
  if (name != o.name) return fmt::format("device '{}', not '{}'", name, o.name);
  if (cc_major != o.cc_major || cc_minor != o.cc_minor) {
    return fmt::format("compute capability {}.{}, not {}.{}", cc_major, cc_minor, o.cc_major,
                       o.cc_minor);
  }
  if (num_sms != o.num_sms) return fmt::format("{} SMs, not {}", num_sms, o.num_sms);
  if (memory_clock_khz != o.memory_clock_khz) {
    return fmt::format("memory clock {} kHz, not {}", memory_clock_khz, o.memory_clock_khz);
  }
  if (memory_mib != o.memory_mib) return fmt::format("{} MiB, not {}", memory_mib, o.memory_mib);
  return "";
}

namespace {

json fit_json(const CoefficientFit& f) {
  return {{"value", f.value}, {"residual", f.residual}, {"samples", f.samples}};
}

json validation_json(const Validation& v) {
  return {{"samples", v.samples},
          {"median_abs_rel_error", v.median_abs_rel_error},
          {"spearman", v.spearman}};
}

// Reads fields of one JSON object, naming "<source>: <path>.<key>" in errors.
class Reader {
 public:
  Reader(const json& j, std::string source, std::string path)
      : j_(j), source_(std::move(source)), path_(std::move(path)) {
    if (!j_.is_object()) fail("", "must be an object");
  }
  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    const std::string where = path_.empty() ? key : key.empty() ? path_ : path_ + "." + key;
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("{}: {}{}", source_, where.empty() ? "" : where + ": ", what));
  }
  const json& at(const std::string& key) const {
    const auto it = j_.find(key);
    if (it == j_.end()) fail(key, "missing");
    return *it;
  }
  bool has(const std::string& key) const { return j_.contains(key); }
  Reader object(const std::string& key) const {
    return Reader(at(key), source_, path_.empty() ? key : path_ + "." + key);
  }
  std::string str(const std::string& key) const {
    if (!at(key).is_string()) fail(key, "must be a string");
    return at(key).get<std::string>();
  }
  bool flag(const std::string& key) const {
    if (!at(key).is_boolean()) fail(key, "must be true or false");
    return at(key).get<bool>();
  }
  // A finite number; `positive`: > 0, else >= 0.
  double number(const std::string& key, bool positive = false) const {
    const json& v = at(key);
    if (!v.is_number()) fail(key, fmt::format("must be a number, got {}", v.dump()));
    const double d = v.get<double>();
    if (!std::isfinite(d) || d < 0 || (positive && d == 0)) {
      fail(key, fmt::format("must be a finite number {} 0, got {}", positive ? ">" : ">=", d));
    }
    return d;
  }
  std::int64_t integer(const std::string& key, std::int64_t lo, std::int64_t hi) const {
    const json& v = at(key);
    if (!v.is_number_integer()) fail(key, fmt::format("must be an integer, got {}", v.dump()));
    const auto i = v.get<std::int64_t>();
    if (i < lo || i > hi) fail(key, fmt::format("must be in [{}, {}], got {}", lo, hi, i));
    return i;
  }
  const json& raw() const { return j_; }
  const std::string& source() const { return source_; }
  std::string path(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }

 private:
  const json& j_;
  std::string source_;
  std::string path_;
};

CoefficientFit read_fit(const Reader& r) {
  return {r.number("value"), r.number("residual"),
          static_cast<int>(r.integer("samples", 0, 1 << 30))};
}

Validation read_validation(const Reader& r) {
  Validation v;
  v.samples = static_cast<int>(r.integer("samples", 0, 1 << 30));
  v.median_abs_rel_error = r.number("median_abs_rel_error");
  const json& s = r.at("spearman");
  if (!s.is_number() || !std::isfinite(s.get<double>()) || std::abs(s.get<double>()) > 1) {
    r.fail("spearman", "must be a number in [-1, 1]");
  }
  v.spearman = s.get<double>();
  return v;
}

DType read_dtype(const Reader& r, const std::string& key) {
  const std::string s = r.str(key);
  if (s != "fp16" && s != "bf16") r.fail(key, fmt::format("must be fp16 or bf16, got '{}'", s));
  return dtype_from_string(s);
}

// The format line: this schema, a newer one (refused with advice), or none.
void check_format(const json& j, const std::string& source) {
  if (!j.is_object() || !j.contains("format") || !j["format"].is_string()) {
    throw Error(
        ErrorKind::kInvalidArgument,
        fmt::format("{}: not a tuning database (no \"format\": \"{}\")", source, kTuningDbFormat));
  }
  const std::string format = j["format"].get<std::string>();
  if (format == kTuningDbFormat) return;
  const std::string prefix = "canopy-tuning-db/";
  if (format.rfind(prefix, 0) == 0) {
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("{}: schema {} is not the one this Canopy reads ({}); a newer "
                            "Canopy wrote it: update Canopy or rerun canopy-tune",
                            source, format, kTuningDbFormat));
  }
  throw Error(ErrorKind::kInvalidArgument,
              fmt::format("{}: format '{}' is not {}", source, format, kTuningDbFormat));
}

// The coefficients: the canopy-coefficients/1 checks, and what a measured
// database must add (every rate and overhead finite and > 0, the device's SMs
// and arch).
GpuCoefficients read_coefficients(const Reader& top, const DeviceKey& device) {
  const Reader r = top.object("coefficients");
  // Integers first: from_json converts a number to int, and a huge float's
  // conversion is undefined.
  r.integer("num_sms", 1, 1 << 16);
  r.integer("max_smem_per_block", 1, 1 << 30);
  GpuCoefficients c;
  try {
    c = GpuCoefficients::from_json(r.raw().dump());
  } catch (const std::exception& e) {
    r.fail("", e.what());
  }
  for (const char* key : {"hbm_bytes_per_us", "l2_bytes_per_us", "tensor_flops_per_us",
                          "launch_overhead_us", "merge_bytes_per_us"}) {
    r.number(key, true);
  }
  const Reader kernels = r.object("kernels");
  for (const auto& [key, value] : kernels.raw().items()) {
    const Reader k = kernels.object(key);
    for (const char* field : {"item_overhead_us", "flops_per_us", "bandwidth_fraction"}) {
      k.number(field, true);
    }
  }
  if (c.num_sms != device.num_sms) {
    r.fail("num_sms", fmt::format("{} differs from the device's {}", c.num_sms, device.num_sms));
  }
  if (c.arch.major != device.cc_major || c.arch.minor != device.cc_minor) {
    r.fail("arch", fmt::format("{} differs from the device's compute capability {}.{}",
                               c.arch.to_string(), device.cc_major, device.cc_minor));
  }
  return c;
}

}  // namespace

std::string TuningDb::to_json(int indent) const {
  json j;
  j["format"] = kTuningDbFormat;
  j["device"] = {{"name", device.name},
                 {"cc_major", device.cc_major},
                 {"cc_minor", device.cc_minor},
                 {"num_sms", device.num_sms},
                 {"memory_clock_khz", device.memory_clock_khz},
                 {"memory_mib", device.memory_mib}};
  j["canopy_version"] = canopy_version;
  j["nvrtc_version"] = nvrtc_version;
  j["driver_version"] = driver_version;
  j["date"] = date;
  j["clocks_mhz"] = clocks;
  j["synthetic"] = synthetic;
  j["complete"] = complete;
  j["coefficients"] = json::parse(coefficients.to_json(-1));
  j["fits"] = json::object();
  for (const auto& [key, f] : fits) {
    j["fits"][key] = {{"item_overhead_us", fit_json(f.item_overhead_us)},
                      {"flops_per_us", fit_json(f.flops_per_us)},
                      {"bandwidth_fraction", fit_json(f.bandwidth_fraction)},
                      {"samples", f.samples},
                      {"holdout", validation_json(f.holdout)}};
  }
  j["family_validation"] = json::object();
  for (const auto& [family, v] : family_validation)
    j["family_validation"][family] = validation_json(v);
  j["merge_bytes_per_us"] = fit_json(merge_bytes_per_us);
  j["launch_overhead_us"] = fit_json(launch_overhead_us);
  j["items"] = json::array();
  for (const ItemMeasurement& m : items) {
    j["items"].push_back({{"config", m.config},
                          {"dtype", to_string(m.dtype)},
                          {"head_dim", m.head_dim},
                          {"page_size", m.page_size},
                          {"row_tile", m.row_tile},
                          {"rows", m.rows},
                          {"tokens", m.tokens},
                          {"heads", m.heads},
                          {"us", m.us}});
  }
  j["merges"] = json::array();
  for (const MergeMeasurement& m : merges) {
    j["merges"].push_back({{"dtype", to_string(m.dtype)},
                           {"head_dim", m.head_dim},
                           {"fan_in", m.fan_in},
                           {"rows", m.rows},
                           {"us", m.us}});
  }
  j["winners"] = json::object();
  for (const auto& [key, w] : winners) {
    json& out = j["winners"][key];
    out = {{"options", json::parse(w.options_json)},
           {"measured_us", w.measured_us},
           {"default_us", w.default_us}};
    // Written only when set, so databases made before these fields stay
    // byte-identical when rewritten.
    if (w.builtin_coefficients) out["builtin_coefficients"] = true;
    if (!w.alternative.empty()) out["alternative"] = w.alternative;
  }
  return j.dump(indent);
}

std::set<int> TuningDb::measured_head_dims() const {
  std::set<int> dims;
  for (const ItemMeasurement& m : items) dims.insert(m.head_dim);
  return dims;
}

TuningDb TuningDb::from_json(const std::string& text, const std::string& source) {
  if (text.find_first_not_of(" \t\r\n") == std::string::npos) {
    throw Error(ErrorKind::kInvalidArgument, fmt::format("{}: empty file", source));
  }
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("{}: not valid JSON (truncated or corrupt?): {}", source, e.what()));
  }
  check_format(j, source);
  const Reader top(j, source, "");
  TuningDb db;
  const Reader d = top.object("device");
  db.device.name = d.str("name");
  db.device.cc_major = static_cast<int>(d.integer("cc_major", 1, 100));
  db.device.cc_minor = static_cast<int>(d.integer("cc_minor", 0, 99));
  db.device.num_sms = static_cast<int>(d.integer("num_sms", 1, 1 << 16));
  db.device.memory_clock_khz = static_cast<int>(d.integer("memory_clock_khz", 0, 1 << 30));
  db.device.memory_mib = d.integer("memory_mib", 0, std::int64_t{1} << 40);
  db.canopy_version = top.str("canopy_version");
  db.nvrtc_version = top.str("nvrtc_version");
  db.driver_version = top.str("driver_version");
  db.date = top.str("date");
  const Reader clocks = top.object("clocks_mhz");
  for (const auto& [name, value] : clocks.raw().items()) db.clocks[name] = clocks.number(name);
  db.synthetic = top.flag("synthetic");
  db.complete = top.flag("complete");
  db.coefficients = read_coefficients(top, db.device);

  const Reader fits = top.object("fits");
  for (const auto& [key, value] : fits.raw().items()) {
    const Reader f = fits.object(key);
    if (!db.coefficients.kernels.contains(key)) {
      f.fail("", "fits a kernel the coefficients do not list");
    }
    KernelFit k;
    k.item_overhead_us = read_fit(f.object("item_overhead_us"));
    k.flops_per_us = read_fit(f.object("flops_per_us"));
    k.bandwidth_fraction = read_fit(f.object("bandwidth_fraction"));
    k.samples = static_cast<int>(f.integer("samples", 0, 1 << 30));
    k.holdout = read_validation(f.object("holdout"));
    db.fits[key] = k;
  }
  const Reader families = top.object("family_validation");
  for (const auto& [family, value] : families.raw().items()) {
    db.family_validation[family] = read_validation(families.object(family));
  }
  db.merge_bytes_per_us = read_fit(top.object("merge_bytes_per_us"));
  db.launch_overhead_us = read_fit(top.object("launch_overhead_us"));

  auto array = [&](const char* key) -> const json& {
    const json& a = top.at(key);
    if (!a.is_array()) top.fail(key, "must be an array");
    return a;
  };
  const json& items = array("items");
  for (std::size_t i = 0; i < items.size(); ++i) {
    const Reader m(items[i], source, fmt::format("items[{}]", i));
    ItemMeasurement x;
    x.config = m.str("config");
    try {
      KernelConfig::parse(x.config);
    } catch (const Error& e) {
      m.fail("config", e.what());
    }
    x.dtype = read_dtype(m, "dtype");
    x.head_dim = static_cast<int>(m.integer("head_dim", 1, 4096));
    x.page_size = static_cast<int>(m.integer("page_size", 1, kMaxPageSize));
    x.row_tile = static_cast<int>(m.integer("row_tile", 1, kMaxItemRows));
    x.rows = static_cast<int>(m.integer("rows", 1, kMaxItemRows));
    x.tokens = static_cast<int>(m.integer("tokens", 1, 1 << 28));
    x.heads = static_cast<int>(m.integer("heads", 1, 255));
    x.us = m.number("us", true);
    db.items.push_back(x);
  }
  const json& merges = array("merges");
  for (std::size_t i = 0; i < merges.size(); ++i) {
    const Reader m(merges[i], source, fmt::format("merges[{}]", i));
    MergeMeasurement x;
    x.dtype = read_dtype(m, "dtype");
    x.head_dim = static_cast<int>(m.integer("head_dim", 1, 4096));
    x.fan_in = static_cast<int>(m.integer("fan_in", 1, 1 << 16));
    x.rows = m.integer("rows", 1, std::int64_t{1} << 40);
    x.us = m.number("us", true);
    db.merges.push_back(x);
  }
  const Reader winners = top.object("winners");
  for (const auto& [key, value] : winners.raw().items()) {
    const Reader w = winners.object(key);
    ShapeWinner x;
    const json& options = w.at("options");
    // "coefficients": null (the defaults, as planner_options_to_json writes
    // them) is fine: the database's own coefficients price the plan.
    if (!options.is_object() ||
        (options.contains("coefficients") && !options.at("coefficients").is_null())) {
      w.fail("options", "must be a planner-options object without coefficients");
    }
    x.options_json = options.dump();
    try {
      planner_options_from_json(x.options_json);
    } catch (const Error& e) {
      w.fail("options", e.what());
    }
    x.measured_us = w.number("measured_us", true);
    x.default_us = w.number("default_us", true);
    // Optional (older databases lack them): the built-in coefficients plan
    // this class; the alternative's name, for the tools.
    if (w.has("builtin_coefficients")) x.builtin_coefficients = w.flag("builtin_coefficients");
    if (w.has("alternative")) x.alternative = w.str("alternative");
    db.winners[key] = x;
  }
  return db;
}

TuningDb load_tuning_db(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorKind::kIo, fmt::format("{}: cannot read the file", path));
  std::stringstream text;
  text << in.rdbuf();
  if (in.bad()) throw Error(ErrorKind::kIo, fmt::format("{}: read error", path));
  return TuningDb::from_json(text.str(), path);
}

namespace {
// "0.1.0" -> "0.1": coefficients describe the kernels, which change between
// minor versions; a patch release keeps them.
std::string major_minor(const std::string& version) {
  const std::size_t first = version.find('.');
  if (first == std::string::npos) return version;
  return version.substr(0, version.find('.', first + 1));
}
}  // namespace

void check_tuning_db(const TuningDb& db, const DeviceKey& device, const std::string& source) {
  auto refuse = [&](const std::string& why) {
    throw Error(ErrorKind::kInvalidArgument, fmt::format("{}: {}", source, why));
  };
  if (const std::string m = db.device.mismatch(device); !m.empty()) {
    refuse(fmt::format("made for another GPU: {}", m));
  }
  if (!db.complete) {
    refuse(
        fmt::format("an unfinished canopy-tune run ({} measurements, no fit); rerun "
                    "canopy-tune to continue it, or canopy-tune --fit-only",
                    db.items.size()));
  }
  if (db.synthetic) refuse("synthetic timings (canopy-tune --simulate), not measured on a GPU");
  if (major_minor(db.canopy_version) != major_minor(CANOPY_VERSION)) {
    refuse(
        fmt::format("made by Canopy {}, incompatible with {} (the kernels changed): rerun "
                    "canopy-tune",
                    db.canopy_version, CANOPY_VERSION));
  }
}

}  // namespace canopy
