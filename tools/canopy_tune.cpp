// canopy-tune: measure this GPU's kernels and fit the cost model's
// coefficients into a tuning database (docs/tuning.md).
//
//   canopy-tune [--out FILE] [--only 128,bf16,mma] [--budget SECONDS]   measure, fit, write
//   canopy-tune --dry-run                                              the grid and its time
//   canopy-tune --fit-only FILE                                        refit recorded timings
//   canopy-tune --workloads suite                                      record measured winners
//
// Exit codes: 0 success, 1 Canopy (or system) error, 2 bad command line.
#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "autotune/tuning_fit.hpp"
#include "autotune/tuning_grid.hpp"
#include "canopy/cost_model.hpp"
#include "canopy/error.hpp"
#include "canopy/planner.hpp"
#include "canopy/runtime.hpp"
#include "canopy/tree.hpp"
#include "canopy/tuning.hpp"
#include "cli_args.hpp"
#include "runtime/device/driver.hpp"
#include "runtime/jit/nvrtc_compiler.hpp"
#include "tune_measure.hpp"
#include "tune_winners.hpp"
#include "workloads/workload.hpp"

namespace {

using canopy::cli::Args;
using canopy::cli::Option;
using canopy::cli::UsageError;
namespace at = canopy::autotune;
using Clock = std::chrono::steady_clock;

std::vector<Option> options() {
  return {
      {"--out", "FILE", "database to write (default: $XDG_CONFIG_HOME/canopy/<gpu>.json)"},
      {"--db", "FILE", "database to continue from (default: --out when it exists)"},
      {"--only", "LIST", "head dims, dtypes, families to measure, e.g. 128,bf16,mma"},
      {"--budget", "SECONDS", "stop measuring after this long and fit what was measured"},
      {"--dry-run", "", "list the measurement grid and its estimated time; measure nothing"},
      {"--list", "", "with --dry-run: every point, not a summary per kernel"},
      {"--fit-only", "FILE", "refit the measurements recorded in FILE (no GPU)"},
      {"--workloads", "FILE",
       "after the fit, time the planner's alternatives on these batches (a suite file; "
       "'suite': the repo's) and record the winner per shape class"},
      {"--report", "FILE",
       "--workloads: write every batch's times (each alternative, and the built-in "
       "defaults without a database) as JSON"},
      {"--min-gain", "X",
       "--workloads: how much faster than the defaults a winner must be "
       "(default 0.03)"},
      {"--simulate", "", "synthetic timings from the default coefficients (tests; no GPU)"},
      {"--noise", "X", "--simulate: relative noise (default 0.03)"},
      {"--seed", "N", "--simulate: random seed (default 1)"},
      {"--page-sizes", "LIST", "page sizes to measure (default 16)"},
      {"--iters", "N", "timed runs per point, the median is kept (default 10)"},
      {"--warmup", "N", "untimed runs per point (default 3)"},
      {"--device", "N", "CUDA device ordinal (default 0)"},
      {"--arch", "SM", "--dry-run/--simulate without a GPU: the target (default 90)"},
      {"--sms", "N", "--dry-run/--simulate without a GPU: SMs (default 132)"},
      {"--cache-dir", "DIR", "cubin cache directory (default: as the runtime)"},
  };
}

std::string help() {
  return "usage: canopy-tune [options]\n"
         "\n"
         "Times every kernel family and config Canopy generates for the requested head\n"
         "dims and dtypes over a grid of work-item shapes, and the merge, on this GPU;\n"
         "fits the cost model's coefficients and writes a tuning database that the\n"
         "Runtime then loads on this GPU (docs/tuning.md). Measurements are saved as\n"
         "they are taken: an interrupted run continues where it stopped.\n"
         "\noptions:\n" +
         canopy::cli::format_options(options()) +
         "\nexamples:\n"
         "  canopy-tune --dry-run\n"
         "  canopy-tune --out autotune/databases/h200.json\n"
         "  canopy-tune --only 64,128,256,fp16,bf16 --budget 1800\n"
         "  canopy-tune --fit-only ~/.config/canopy/nvidia-h200.json\n"
         "  canopy-tune --workloads suite   (after the grid: measured winners per shape class)\n";
}

// --only: numbers are head dims, fp16/bf16 dtypes, the rest family names.
void apply_only(const std::string& text, at::GridOptions& g) {
  std::vector<int> dims;
  std::vector<canopy::DType> dtypes;
  std::vector<std::string> families;
  for (const std::string& item : canopy::cli::list_items(text)) {
    if (!item.empty() && item[0] >= '0' && item[0] <= '9') {
      dims.push_back(static_cast<int>(canopy::cli::parse_int("--only", item, 1, 4096)));
    } else if (item == "fp16" || item == "bf16") {
      dtypes.push_back(canopy::dtype_from_string(item));
    } else {
      try {
        if (!canopy::families::is_partial_family(canopy::kernel_family_from_string(item))) {
          throw UsageError("--only: '" + item + "' is not a partial-attention family");
        }
      } catch (const canopy::Error&) {
        throw UsageError("--only: '" + item + "' is not a head dim, dtype or family");
      }
      families.push_back(item);
    }
  }
  if (!dims.empty()) g.head_dims = dims;
  if (!dtypes.empty()) g.dtypes = dtypes;
  g.families = families;
}

std::vector<int> int_list(const std::string& what, const std::string& text, int lo, int hi) {
  std::vector<int> out;
  for (const std::string& s : canopy::cli::list_items(text)) {
    out.push_back(static_cast<int>(canopy::cli::parse_int(what, s, lo, hi)));
  }
  if (out.empty()) throw UsageError(what + " needs at least one value");
  return out;
}

std::string slug(const std::string& name) {
  std::string s;
  for (char c : name) {
    const bool alnum = std::isalnum(static_cast<unsigned char>(c)) != 0;
    if (alnum) s += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (!alnum && !s.empty() && s.back() != '-') s += '-';
  }
  while (!s.empty() && s.back() == '-') s.pop_back();
  return s.empty() ? "gpu" : s;
}

std::string default_out(const canopy::DeviceKey& key) {
  std::vector<std::string> path = canopy::tuning_search_path();
  const char* xdg = std::getenv("XDG_CONFIG_HOME");
  const char* home = std::getenv("HOME");
  const std::string dir = xdg != nullptr && *xdg != '\0' ? std::string(xdg) + "/canopy"
                          : home != nullptr              ? std::string(home) + "/.config/canopy"
                                                         : ".";
  return dir + "/" + slug(key.name) + ".json";
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

// Written to a temporary file and renamed: an interrupted run never leaves a
// half-written database.
void save(const canopy::TuningDb& db, const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  if (target.has_parent_path()) fs::create_directories(target.parent_path());
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary);
    out << db.to_json() << "\n";
    if (!out) throw canopy::Error(canopy::ErrorKind::kIo, fmt::format("cannot write '{}'", tmp));
  }
  fs::rename(tmp, target);
}

std::string duration(double seconds) {
  const auto s = static_cast<long long>(seconds + 0.5);
  if (s >= 3600) return fmt::format("{}h{:02}m", s / 3600, s % 3600 / 60);
  if (s >= 60) return fmt::format("{}m{:02}s", s / 60, s % 60);
  return fmt::format("{}s", s);
}

// One line on a terminal, redrawn; every tenth of the way otherwise.
class Progress {
 public:
  explicit Progress(std::size_t total) : total_(total), tty_(::isatty(2) != 0) {}
  void update(std::size_t done, double elapsed, double left) {
    const int bar = total_ > 0 ? static_cast<int>(30 * done / total_) : 30;
    const std::string line =
        fmt::format("[{}{}] {}/{} points, {} elapsed, ~{} left", std::string(bar, '#'),
                    std::string(30 - bar, '.'), done, total_, duration(elapsed), duration(left));
    if (tty_) {
      std::cerr << "\r" << line << std::flush;
    } else if (done * 10 / std::max<std::size_t>(total_, 1) != last_tenth_ || done == total_) {
      last_tenth_ = done * 10 / std::max<std::size_t>(total_, 1);
      std::cerr << line << "\n";
    }
  }
  void finish() {
    if (tty_) std::cerr << "\n";
  }

 private:
  std::size_t total_;
  bool tty_;
  std::size_t last_tenth_ = 0;
};

void fit(canopy::TuningDb& db) {
  canopy::GpuCoefficients base = db.coefficients;
  base.kernels = canopy::default_kernel_coefficients();  // refit from the priors
  const at::FitResult fit = at::fit_coefficients(base, db.items, db.merges);
  db.coefficients = fit.coefficients;
  db.fits = fit.fits;
  db.family_validation = fit.family_validation;
  db.merge_bytes_per_us = fit.merge_bytes_per_us;
  db.launch_overhead_us = fit.launch_overhead_us;
  db.complete = true;
  std::cout << at::fit_summary(fit);
}

int write(const canopy::TuningDb& db, const std::string& out) {
  save(db, out);
  std::cout << fmt::format("\nwrote {} ({} item and {} merge measurements){}\n", out,
                           db.items.size(), db.merges.size(),
                           db.synthetic ? " -- SYNTHETIC timings, not a measurement" : "");
  return 0;
}

int fit_and_write(canopy::TuningDb& db, const std::string& out) {
  fit(db);
  return write(db, out);
}

// --workloads: every batch of `path` planned with each of the planner's
// alternatives (with the fitted coefficients) and timed, on the GPU or
// (--simulate) as the plan's prediction with noise; the winner per shape
// class goes into db.winners (replacing that class's earlier winner).
//
// Alternatives are priced as the Runtime would price them: with the fitted
// coefficients on the head dims the database measured, else with `builtin`
// (the device's built-in coefficients), which also price the
// "builtin-defaults" alternative. The decision report (--report FILE: per
// batch, every alternative's time, the built-in defaults' and each class's
// winner; docs/tuning.md) is written at the end.
void record_winners(canopy::TuningDb& db, const std::string& path,
                    canopy::tune::GpuMeasurer* measurer, double noise, std::uint64_t seed,
                    double min_gain, const canopy::GpuCoefficients& builtin,
                    const std::optional<std::string>& report_path) {
  const std::vector<canopy::workload::Workload> workloads =
      path == "suite" ? canopy::workload::load_suite() : canopy::workload::load_suite(path);
  const canopy::CostModel tuned(db.coefficients);
  const canopy::CostModel untuned(builtin);
  const std::set<int> tuned_head_dims = db.measured_head_dims();
  canopy::tune::WinnerBook book;
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> gauss(0.0, 1.0);
  std::cerr << fmt::format("canopy-tune: timing the planner's alternatives on {} batches of {}\n",
                           workloads.size(), path);
  // Opened first: an unwritable report fails before the GPU time is spent.
  std::ofstream report_file;
  if (report_path) {
    report_file.open(*report_path);
    if (!report_file) {
      throw canopy::Error(canopy::ErrorKind::kInvalidArgument,
                          fmt::format("cannot write the decision report {}", *report_path));
    }
  }
  auto time_plan = [&](const canopy::workload::Workload& w, const canopy::PlannerOptions& o) {
    if (measurer != nullptr) return measurer->step_us(w.spec, w.tables, o);
    return canopy::make_plan(w.spec, w.tables, o).predicted_us * (1 + noise * gauss(rng));
  };
  nlohmann::json report_batches = nlohmann::json::array();
  for (const canopy::workload::Workload& w : workloads) {
    const std::string cls =
        canopy::shape_class(w.spec, canopy::discover_prefix_tree(w.tables, w.spec.page_size));
    std::string line = fmt::format("  {:<22} {}", w.name, cls);
    nlohmann::json times = nlohmann::json::object();
    // The coefficients the Runtime would plan `w` with ("defaults").
    canopy::PlannerOptions defaults;
    defaults.cost_model =
        canopy::TuningDb::prices_head_dim(tuned_head_dims, w.spec.head_dim) ? tuned : untuned;
    for (const canopy::tune::Alternative& alternative :
         canopy::tune::planner_alternatives(w.spec, db.coefficients.arch)) {
      canopy::PlannerOptions o = alternative.options;
      o.cost_model = alternative.builtin_coefficients ? untuned : defaults.cost_model;
      double us = 0;
      try {
        // The built-in defaults' plan often does the defaults' very work:
        // then it gets their time, not a second sample that noise could
        // make a winner.
        if (alternative.builtin_coefficients && times.contains("defaults") &&
            canopy::tune::same_work(canopy::make_plan(w.spec, w.tables, o),
                                    canopy::make_plan(w.spec, w.tables, defaults))) {
          us = times["defaults"].get<double>();
        } else {
          us = time_plan(w, o);
        }
      } catch (const canopy::Error& e) {
        if (e.kind() == canopy::ErrorKind::kNoDevice) throw;
        line += fmt::format("  {}: skipped ({})", alternative.name, e.what());
        continue;  // an alternative that cannot plan or run this batch is not a candidate
      }
      book.add(cls, alternative, us);
      times[alternative.name] = us;
      line += fmt::format("  {} {:.1f}", alternative.name, us);
    }
    nlohmann::json batch = {{"workload", w.name}, {"shape_class", cls}, {"alternatives", times}};
    batch["builtin_defaults_us"] =
        times.contains("builtin-defaults") ? times["builtin-defaults"] : nlohmann::json();
    report_batches.push_back(std::move(batch));
    std::cerr << line << "\n";
  }
  const std::map<std::string, canopy::ShapeWinner> winners = book.winners(min_gain);
  for (const auto& [cls, winner] : winners) db.winners[cls] = winner;
  if (report_path) {
    nlohmann::json report = {
        {"format", "canopy-tune-decisions/1"}, {"device", db.device.name},
        {"synthetic", measurer == nullptr},    {"min_gain", min_gain},
        {"batches", report_batches},           {"winners", nlohmann::json::object()}};
    for (const auto& [cls, winner] : winners) {
      report["winners"][cls] = {{"alternative", winner.alternative},
                                {"default_us", winner.default_us},
                                {"measured_us", winner.measured_us}};
    }
    report_file << report.dump(1) << "\n";
    if (!report_file.flush()) {
      throw canopy::Error(canopy::ErrorKind::kInvalidArgument,
                          fmt::format("cannot write the decision report {}", *report_path));
    }
  }
  std::cout << fmt::format("\nwinners ({} shape classes, min gain {:.0f}%){}:\n{}", winners.size(),
                           100 * min_gain, measurer == nullptr ? " -- SYNTHETIC timings" : "",
                           book.summary(winners));
}

int run(const std::vector<std::string>& argv) {
  const Args args = Args::parse(argv, options());
  if (args.help()) {
    std::cout << help();
    return 0;
  }
  args.at_most_one_of({"--fit-only", "--dry-run"});
  args.at_most_one_of({"--fit-only", "--simulate"});
  args.at_most_one_of({"--fit-only", "--workloads"});
  if (const auto path = args.value("--fit-only")) {
    canopy::TuningDb db = canopy::load_tuning_db(*path);
    return fit_and_write(db, args.get("--out", *path));
  }
  at::GridOptions grid_options;
  if (const auto only = args.value("--only")) apply_only(*only, grid_options);
  if (const auto pages = args.value("--page-sizes")) {
    grid_options.page_sizes = int_list("--page-sizes", *pages, 1, canopy::kMaxPageSize);
  }
  grid_options.iters = static_cast<int>(args.get_int("--iters", 10, 1, 100000));
  grid_options.warmup = static_cast<int>(args.get_int("--warmup", 3, 0, 100000));
  const double budget = args.get_double("--budget", 1e12, 1, 1e12);
  const int ordinal = static_cast<int>(args.get_int("--device", 0, 0, 1024));

  // The device: the GPU, or (--simulate, --dry-run without one) a stand-in.
  std::string why;
  const bool simulate = args.has("--simulate");
  const bool gpu = !simulate && canopy::gpu_available(&why);
  if (!gpu && !simulate && !args.has("--dry-run")) {
    throw canopy::Error(canopy::ErrorKind::kNoDevice,
                        fmt::format("canopy-tune measures on a GPU and found none ({}); "
                                    "--dry-run and --fit-only FILE work without one",
                                    why));
  }
  std::unique_ptr<canopy::Runtime> rt;
  canopy::TuningDb db;
  canopy::GpuCoefficients base;
  if (gpu) {
    canopy::RuntimeOptions ro;
    ro.device = ordinal;
    ro.cache_dir = args.get("--cache-dir", "");
    ro.tuning_db = "off";  // measure against the defaults, never an older database
    rt = std::make_unique<canopy::Runtime>(ro);
    db.device = rt->device_key();
    base = rt->cost_model().coefficients();
    const canopy::driver::Api& a = canopy::driver::api();
    db.driver_version = fmt::format("{}.{}", a.driver_version / 1000, a.driver_version % 1000 / 10);
    const canopy::driver::DeviceContext& dev = canopy::driver::device_context(ordinal);
    db.clocks["memory_peak"] = dev.memory_clock_khz / 1000.0;
    int sm_khz = 0;
    if (a.device_get_attribute(&sm_khz, CU_DEVICE_ATTRIBUTE_CLOCK_RATE, dev.device) ==
        CUDA_SUCCESS) {
      db.clocks["sm_peak"] = sm_khz / 1000.0;
    }
  } else {
    try {
      base.arch = canopy::Arch::parse(args.get("--arch", "90"));
    } catch (const canopy::Error& e) {
      throw UsageError(std::string("--arch: ") + e.what());
    }
    base.num_sms = static_cast<int>(args.get_int("--sms", 132, 1, 4096));
    base.max_smem_per_block = base.arch.max_smem_per_block();
    base.name = simulate ? "synthetic (canopy-tune --simulate)" : "no GPU (canopy-tune --dry-run)";
    db.device = {base.name, base.arch.major, base.arch.minor, base.num_sms, 0, 0};
    db.driver_version = "none";
    db.synthetic = simulate;
  }
  db.canopy_version = canopy::canopy_version();
  db.nvrtc_version = canopy::nvrtc_version();
  db.coefficients = base;

  const at::Grid grid = at::measurement_grid(grid_options, base);
  const std::string out = args.get("--out", default_out(db.device));
  // Resume: the measurements already recorded for this device.
  const std::string resume = args.get("--db", out);
  std::set<std::string> done;
  if (std::filesystem::exists(resume)) {
    canopy::TuningDb previous = canopy::load_tuning_db(resume);
    if (const std::string m = previous.device.mismatch(db.device); !m.empty()) {
      throw canopy::Error(canopy::ErrorKind::kInvalidArgument,
                          fmt::format("{} holds another GPU's measurements ({}); give another "
                                      "--out",
                                      resume, m));
    }
    db.items = previous.items;
    db.merges = previous.merges;
    db.winners = previous.winners;
    for (const auto& m : db.items) done.insert(at::measurement_key(m));
    for (const auto& m : db.merges) done.insert(at::measurement_key(m));
  }
  std::vector<const at::ItemPoint*> items;
  std::vector<const at::MergePoint*> merges;
  for (const at::ItemPoint& p : grid.items) {
    if (!done.contains(p.key())) items.push_back(&p);
  }
  for (const at::MergePoint& p : grid.merges) {
    if (!done.contains(p.key())) merges.push_back(&p);
  }
  at::Grid todo;
  for (const auto* p : items) todo.items.push_back(*p);
  for (const auto* p : merges) todo.merges.push_back(*p);
  const double estimate = at::estimate_seconds(todo, grid_options, base);

  if (args.has("--dry-run")) {
    std::cout << fmt::format("device       {}\n", db.device.to_string());
    std::map<std::string, std::pair<int, double>> per_kernel;
    for (const at::ItemPoint& p : todo.items) {
      const std::string k = fmt::format("{} d{} {} p{}", p.config.to_string(), p.spec.head_dim,
                                        canopy::to_string(p.spec.kv_dtype), p.spec.page_size);
      per_kernel[k].first += 1;
      per_kernel[k].second += at::estimate_seconds(p, grid_options, base);
      if (args.has("--list")) std::cout << "  " << p.key() << "\n";
    }
    for (const at::MergePoint& p : todo.merges) {
      if (args.has("--list")) std::cout << "  " << p.key() << "\n";
    }
    for (const auto& [k, v] : per_kernel) {
      std::cout << fmt::format("  {:<44} {:>4} points  ~{}\n", k, v.first, duration(v.second));
    }
    std::cout << fmt::format(
        "  {:<44} {:>4} points\n"
        "rows {} (and {} in several tiles, mma and wgmma) x tokens {}; merges: fan-in {} x rows "
        "{}\n"
        "{} of {} points to measure ({} already in {}), estimated {} (kernel compiles "
        "included){}\n",
        "merge (fan-in x rows)", todo.merges.size(), fmt::join(grid_options.rows, ","),
        fmt::join(grid_options.shared_rows, ","), fmt::join(grid_options.tokens, ","),
        fmt::join(grid_options.fan_ins, ","), fmt::join(grid_options.merge_rows, ","),
        todo.items.size() + todo.merges.size(), grid.items.size() + grid.merges.size(), done.size(),
        resume, duration(estimate),
        gpu ? ""
            : fmt::format("\n(no GPU: {}; the grid is for {}, {} SMs)", why, base.arch.to_string(),
                          base.num_sms));
    return 0;
  }

  // Measure, saving after every point.
  std::unique_ptr<canopy::tune::GpuMeasurer> measurer;
  if (gpu) {
    measurer = std::make_unique<canopy::tune::GpuMeasurer>(*rt, ordinal, grid_options,
                                                           args.get("--cache-dir", ""));
  }
  const double noise = args.get_double("--noise", 0.03, 0, 1);
  std::uint64_t seed = static_cast<std::uint64_t>(args.get_int("--seed", 1, 0, 1LL << 62));
  std::cerr << fmt::format("canopy-tune: {} points to measure on {}, estimated {}; saving to {}\n",
                           todo.items.size() + todo.merges.size(), db.device.name,
                           duration(estimate), out);
  const auto start = Clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(Clock::now() - start).count(); };
  Progress progress(todo.items.size() + todo.merges.size());
  double left = estimate;
  std::size_t count = 0, skipped = 0;
  bool out_of_time = false;
  auto step = [&](double point_estimate, auto&& measure) {
    if (elapsed() + point_estimate > budget) {
      out_of_time = true;
      return;
    }
    measure();
    ++count;
    left = std::max(0.0, left - point_estimate);
    save(db, out);
    progress.update(count, elapsed(), left);
  };
  for (const at::ItemPoint* p : items) {
    step(at::estimate_seconds(*p, grid_options, base), [&] {
      if (!measurer) {
        std::vector<canopy::ItemMeasurement> m;
        std::vector<canopy::MergeMeasurement> none;
        at::simulate({{*p}, {}}, base, noise, seed++, m, none);
        db.items.push_back(m.front());
        return;
      }
      try {
        db.items.push_back(p->measurement(measurer->item_us(*p)));
      } catch (const canopy::Error& e) {
        if (e.kind() == canopy::ErrorKind::kNoDevice) throw;
        ++skipped;  // one point that cannot run (memory, a plan that is not the point) is not fatal
        std::cerr << fmt::format("\nskipped {}: {}\n", p->key(), e.what());
      }
    });
    if (out_of_time) break;
  }
  for (const at::MergePoint* p : merges) {
    if (out_of_time) break;
    step(0.05, [&] {
      if (!measurer) {
        std::vector<canopy::ItemMeasurement> none;
        std::vector<canopy::MergeMeasurement> m;
        at::simulate({{}, {*p}}, base, noise, seed++, none, m);
        db.merges.push_back(m.front());
        return;
      }
      db.merges.push_back(p->measurement(measurer->merge_us(*p)));
    });
  }
  progress.finish();
  if (out_of_time) {
    std::cerr << fmt::format(
        "canopy-tune: --budget reached after {}; fitting what was measured "
        "(rerun to measure the rest)\n",
        duration(elapsed()));
  }
  if (skipped > 0) std::cerr << fmt::format("canopy-tune: {} points skipped\n", skipped);
  db.date = utc_now();
  fit(db);
  if (const auto workloads = args.value("--workloads")) {
    record_winners(db, *workloads, measurer.get(), noise, seed,
                   args.get_double("--min-gain", 0.03, 0, 1), base, args.value("--report"));
  }
  return write(db, out);
}

}  // namespace

int main(int argc, char** argv) { return canopy::cli::run_tool("canopy-tune", argc, argv, run); }
