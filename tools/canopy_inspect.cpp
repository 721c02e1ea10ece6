// canopy-inspect: look inside Canopy without a GPU.
//
//   canopy-inspect kernel    [options]   generated source, PTX, SASS, resources of one kernel
//   canopy-inspect plan      [options]   discovered prefix tree and the plan for a batch
//   canopy-inspect workloads             the workload suite
//   canopy-inspect tuning    [options]   the tuning database a plan would use
//
// Exit codes: 0 success, 1 Canopy (or system) error, 2 bad command line.
#include <fmt/format.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "canopy/cost_model.hpp"
#include "canopy/error.hpp"
#include "canopy/kernel_spec.hpp"
#include "canopy/plan.hpp"
#include "canopy/planner.hpp"
#include "canopy/runtime.hpp"
#include "canopy/tree.hpp"
#include "canopy/tuning.hpp"
#include "cli_args.hpp"
#include "families/kernel_families.hpp"
#include "families/occupancy.hpp"
#include "generator/kernel_source.hpp"
#include "runtime/jit/cubin_cache.hpp"
#include "runtime/jit/cubin_resources.hpp"
#include "runtime/jit/kernel_inspect.hpp"
#include "runtime/jit/nvrtc_compiler.hpp"
#include "workloads/workload.hpp"

namespace {

using canopy::cli::Args;
using canopy::cli::Option;
using canopy::cli::UsageError;

constexpr const char* kProgram = "canopy-inspect";

std::string top_help() {
  return "usage: canopy-inspect COMMAND [options]\n"
         "\n"
         "Look inside Canopy without a GPU.\n"
         "\n"
         "commands:\n"
         "  kernel     one generated kernel: source, PTX, SASS or resources (registers,\n"
         "             shared memory, spills)\n"
         "  plan       the prefix tree discovered from a batch and the plan made for it\n"
         "  workloads  the workload suite (names for --workload)\n"
         "  tuning     the tuning database for this GPU (or --db FILE): search, coefficients, fit\n"
         "\n"
         "`canopy-inspect COMMAND --help` describes each command's options.\n"
         "Exit codes: 0 success, 1 error reported by Canopy, 2 bad command line.\n";
}

/// Writes `text` to --out FILE when given, else to stdout.
void emit_text(const Args& args, const std::string& text) {
  if (const auto path = args.value("--out")) {
    std::ofstream file(*path, std::ios::binary);
    file.write(text.data(), static_cast<std::streamsize>(text.size()));
    file.close();
    if (!file) throw canopy::Error(canopy::ErrorKind::kIo, fmt::format("cannot write '{}'", *path));
    std::cerr << fmt::format("wrote {} bytes to {}\n", text.size(), *path);
    return;
  }
  std::cout << text;
  if (!text.empty() && text.back() != '\n') std::cout << '\n';
}

// ---------------------------------------------------------------------------
// External programs (cuobjdump, nvdisasm, ptxas): found on PATH, under
// $CUDA_HOME/bin or /usr/local/cuda/bin; run without a shell.

std::string find_program(const std::string& name) {
  std::vector<std::string> dirs;
  if (const char* path = std::getenv("PATH")) {
    std::string all = path;
    std::size_t start = 0;
    while (start <= all.size()) {
      const std::size_t colon = all.find(':', start);
      const std::string dir =
          all.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
      if (!dir.empty()) dirs.push_back(dir);
      if (colon == std::string::npos) break;
      start = colon + 1;
    }
  }
  if (const char* home = std::getenv("CUDA_HOME")) dirs.push_back(std::string(home) + "/bin");
  dirs.push_back("/usr/local/cuda/bin");
  for (const std::string& dir : dirs) {
    const std::string candidate = dir + "/" + name;
    std::error_code ec;
    if (std::filesystem::is_regular_file(candidate, ec) && ::access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
  }
  return "";
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

struct CommandResult {
  int status = -1;     ///< exit status, -1 when it could not be run
  std::string output;  ///< stdout and stderr together
};

CommandResult run_command(const std::vector<std::string>& argv) {
  std::string line;
  for (const std::string& a : argv) line += shell_quote(a) + " ";
  line += "2>&1";
  CommandResult result;
  FILE* pipe = ::popen(line.c_str(), "r");
  if (pipe == nullptr) return result;
  char buffer[65536];
  std::size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) result.output.append(buffer, n);
  const int status = ::pclose(pipe);
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

/// A file in the temp directory removed on scope exit.
class TempFile {
 public:
  TempFile(const std::string& stem, const std::string& suffix, const void* data, std::size_t size) {
    path_ = (std::filesystem::temp_directory_path() /
             fmt::format("canopy-inspect-{}-{}{}", ::getpid(), stem, suffix))
                .string();
    std::ofstream file(path_, std::ios::binary);
    file.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
    file.close();
    if (!file) throw canopy::Error(canopy::ErrorKind::kIo, fmt::format("cannot write '{}'", path_));
  }
  ~TempFile() {
    std::error_code ec;
    std::filesystem::remove(path_, ec);
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// ---------------------------------------------------------------------------
// Occupancy

/// A rough estimate from the arch's per-SM limits: the per-block shared memory
/// is dynamic + max(static, what the system reserves per block), registers are
/// allocated per warp in units of 256.
/// The compiled kernel's occupancy (its real registers and static shared
/// memory) beside the registry's prediction, both by families::occupancy.
std::string occupancy_text(const canopy::KernelSpec& spec, int registers, int threads,
                           std::int64_t dynamic_smem, std::int64_t static_smem) {
  const canopy::Arch arch = spec.arch;
  if (!arch.is_known() || registers <= 0 || threads <= 0) {
    return "n/a (no limits table for this arch)";
  }
  const canopy::families::Occupancy o =
      canopy::families::occupancy(arch, threads, registers, dynamic_smem, static_smem);
  const canopy::families::Occupancy planned = canopy::families::occupancy(spec, arch);
  return fmt::format(
      "~{} blocks/SM = {} warps (limited by {}; registers allow {}, shared memory {})\n"
      "             the registry plans {} blocks/SM (registers capped at {} by "
      "__launch_bounds__({}, {}))",
      o.blocks, o.warps(), o.limiter, o.by_registers, o.by_smem, planned.blocks,
      canopy::families::kernel_max_registers(spec), threads,
      canopy::families::min_blocks_per_sm(spec));
}

// ---------------------------------------------------------------------------
// canopy-inspect kernel

std::vector<Option> kernel_options() {
  return {
      {"--head-dim", "N", "64, 128 or 256 (default 128)"},
      {"--dtype", "T", "fp16 or bf16: q, KV and output (default fp16)"},
      {"--kv-dtype", "T", "KV dtype when it differs from --dtype"},
      {"--o-dtype", "T", "output dtype of a merge kernel (default: --dtype)"},
      {"--layout", "L", "KV layout NHD or HND (default NHD)"},
      {"--family", "F", "partial-attention family: mma, wgmma or fma (default mma)"},
      {"--persistent", "", "the queue-walking form with the fused merge (mma, wgmma)"},
      {"--tile-q", "N", "query rows per block, at most (default 64)"},
      {"--tile-kv", "N", "KV tokens per pipeline step (default 64)"},
      {"--warps", "N", "warps per block (default 4)"},
      {"--stages", "N", "KV pipeline depth (default 3)"},
      {"--soft-cap", "", "logits soft cap compiled in"},
      {"--lse", "", "merge kernel also writes the log-sum-exp"},
      {"--merge", "", "the merge-states kernel instead of partial attention"},
      {"--fan-in", "N", "merge: partials per row, 0 = general loop (rounded up to 1/2/4/8/16)"},
      {"--arch", "SM", "GPU target, e.g. 80, 86, 89, 90, 90a or sm_90a (default 90)"},
      {"--emit", "WHAT", "source | ptx | sass | resources | summary | cubin (default source)"},
      {"--out", "FILE", "write to FILE instead of stdout (required for cubin)"},
      {"--cache-dir", "DIR", "cubin cache directory, 'off' for none (default: as the runtime)"},
  };
}

std::string kernel_help() {
  return "usage: canopy-inspect kernel [options]\n"
         "\n"
         "Generates one kernel exactly as the runtime would (partial_kernel_spec /\n"
         "merge_kernel_spec) and shows it. Needs NVRTC for ptx/sass/resources/summary,\n"
         "cuobjdump or nvdisasm for sass; never a GPU.\n"
         "\n"
         "options:\n" +
         canopy::cli::format_options(kernel_options()) +
         "\nexamples:\n"
         "  canopy-inspect kernel --head-dim 128 --dtype fp16 --emit resources\n"
         "  canopy-inspect kernel --head-dim 64 --dtype bf16 --layout HND --tile-q 32 --emit ptx\n"
         "  canopy-inspect kernel --merge --fan-in 3 --lse --emit source\n";
}

/// --arch: "90", "90a", "sm_90a" (default sm_90).
canopy::Arch arch_from_args(const Args& args) {
  const auto text = args.value("--arch");
  if (!text) return canopy::kSm90;
  try {
    return canopy::Arch::parse(*text);
  } catch (const canopy::Error& e) {
    throw UsageError(std::string("--arch: ") + e.what());
  }
}

canopy::KernelSpec kernel_spec_from_args(const Args& args) {
  canopy::AttentionSpec a;
  a.head_dim = static_cast<int>(args.get_int("--head-dim", 128, 1, 4096));
  const canopy::DType dtype =
      canopy::cli::parse_dtype_option("--dtype", args.get("--dtype", "fp16"));
  a.q_dtype = a.kv_dtype = a.o_dtype = dtype;
  if (const auto kv = args.value("--kv-dtype")) {
    a.kv_dtype = canopy::cli::parse_dtype_option("--kv-dtype", *kv);
  }
  if (const auto o = args.value("--o-dtype")) {
    a.o_dtype = canopy::cli::parse_dtype_option("--o-dtype", *o);
  }
  a.kv_layout = canopy::cli::parse_layout_option("--layout", args.get("--layout", "NHD"));
  a.logits_soft_cap = args.has("--soft-cap") ? 30.0 : 0.0;  // the value is a run-time parameter
  a.with_lse = args.has("--lse");
  const canopy::Arch arch = arch_from_args(args);

  canopy::KernelConfig tile;  // the general tensor-core kernel unless told otherwise
  if (const auto f = args.value("--family")) {
    try {
      tile.family = canopy::kernel_family_from_string(*f);
    } catch (const canopy::Error& e) {
      throw UsageError(fmt::format("--family: {}", e.what()));
    }
    if (tile.family == canopy::KernelFamily::kMergeStates) {
      throw UsageError("--family: use --merge for the merge kernel");
    }
  }
  tile.tile_q = static_cast<int>(args.get_int("--tile-q", tile.tile_q, 1, 4096));
  tile.tile_kv = static_cast<int>(args.get_int("--tile-kv", tile.tile_kv, 1, 4096));
  tile.warps = static_cast<int>(args.get_int("--warps", tile.warps, 1, 64));
  tile.stages = static_cast<int>(args.get_int("--stages", tile.stages, 1, 64));

  if (args.has("--merge")) {
    if (args.has("--persistent")) throw UsageError("--persistent applies to partial kernels only");
    for (const char* o : {"--family", "--tile-q", "--tile-kv", "--warps", "--stages", "--layout",
                          "--soft-cap", "--kv-dtype"}) {
      if (args.has(o)) {
        std::cerr << fmt::format("note: {} does not change the merge kernel; ignored\n", o);
      }
    }
    return canopy::merge_kernel_spec(a, static_cast<int>(args.get_int("--fan-in", 0, 0, 1 << 20)),
                                     arch);
  }
  if (args.has("--fan-in")) throw UsageError("--fan-in applies to --merge kernels only");
  if (args.has("--o-dtype")) {
    std::cerr << "note: partial kernels always write float32 partial states; --o-dtype ignored\n";
  }
  if (args.has("--lse")) {
    std::cerr << "note: partial kernels never write an lse (the merge does); --lse ignored\n";
  }
  return canopy::partial_kernel_spec(a, tile, arch, args.has("--persistent"));
}

std::string sass_text(const canopy::CompiledKernel& k) {
  const std::string cuobjdump = find_program("cuobjdump");
  const std::string nvdisasm = find_program("nvdisasm");
  if (cuobjdump.empty() && nvdisasm.empty()) {
    throw canopy::Error(
        canopy::ErrorKind::kNotSupported,
        "SASS needs cuobjdump or nvdisasm (CUDA toolkit), and neither was found on PATH, in "
        "$CUDA_HOME/bin or in /usr/local/cuda/bin. Write the cubin with `--emit cubin --out "
        "k.cubin` and run `cuobjdump -sass k.cubin` where the toolkit is installed.");
  }
  const TempFile file(k.spec.to_string(), ".cubin", k.cubin.data(), k.cubin.size());
  const std::vector<std::string> argv =
      !cuobjdump.empty() ? std::vector<std::string>{cuobjdump, "-sass", file.path()}
                         : std::vector<std::string>{nvdisasm, "-c", "-g", file.path()};
  const CommandResult r = run_command(argv);
  if (r.status != 0) {
    throw canopy::Error(canopy::ErrorKind::kIo,
                        fmt::format("{} failed (status {}):\n{}", argv[0], r.status, r.output));
  }
  return fmt::format("// SASS of {} by {}\n{}", k.name, argv[0], r.output);
}

/// "N bytes stack frame, N bytes spill stores, N bytes spill loads" and more
/// from `ptxas -v` on the NVRTC PTX of the same spec; "" when ptxas is absent.
std::string ptxas_verbose(const canopy::KernelSpec& spec, std::string* tool) {
  const std::string ptxas = find_program("ptxas");
  *tool = ptxas;
  if (ptxas.empty()) return "";
  const std::string source = canopy::generator::generate_kernel_source(spec);
  const canopy::NvrtcResult ptx = canopy::nvrtc_compile(
      source, spec.kernel_name(), spec.to_string(), spec.arch, canopy::NvrtcOutput::kPtx);
  const TempFile file(spec.to_string(), ".ptx", ptx.binary.data(), ptx.binary.size());
  const std::string out = file.path() + ".cubin";
  const CommandResult r =
      run_command({ptxas, "-v", "-arch=" + spec.arch.to_string(), file.path(), "-o", out});
  std::error_code ec;
  std::filesystem::remove(out, ec);
  if (r.status != 0) return "ptxas failed:\n" + r.output;
  std::string lines;
  std::size_t start = 0;
  while (start < r.output.size()) {
    std::size_t end = r.output.find('\n', start);
    if (end == std::string::npos) end = r.output.size();
    std::string line = r.output.substr(start, end - start);
    if (const std::size_t p = line.find("ptxas info    : "); p != std::string::npos) {
      line = line.substr(p + 16);
    }
    if (line.find("Compiling entry") == std::string::npos && !line.empty()) {
      lines += "              " + line + "\n";
    }
    start = end + 1;
  }
  return lines;
}

std::string resources_text(const canopy::CompiledKernel& k, const std::string& cache_dir) {
  const canopy::KernelSpec& spec = k.spec;
  const std::vector<canopy::KernelResources> all = canopy::cubin_resources(k.cubin);
  const canopy::KernelResources* r = nullptr;
  for (const canopy::KernelResources& x : all) {
    if (x.name == k.name) r = &x;
  }
  if (r == nullptr) {
    throw canopy::Error(canopy::ErrorKind::kInvalidArgument,
                        fmt::format("the cubin has no function {}", k.name));
  }
  const int smem_limit = spec.arch.max_smem_per_block();
  std::string out;
  out += fmt::format("kernel       {}\n", k.name);
  out += fmt::format("spec         {}\n", spec.to_string());
  out += fmt::format("cubin        {} bytes for {}, {}\n", k.cubin.size(), spec.arch.to_string(),
                     k.from_disk ? fmt::format("read from the cache ({})", cache_dir)
                                 : fmt::format("compiled by NVRTC {} in {:.0f} ms",
                                               canopy::nvrtc_version(), k.compile_ms));
  out += fmt::format("nvrtc        {}\n", k.options);
  out += fmt::format("threads      {} per block ({} warps)\n", k.threads, (k.threads + 31) / 32);
  out += fmt::format("registers    {} per thread, {} per block\n", r->registers,
                     std::int64_t{r->registers} * k.threads);
  out += fmt::format(
      "shared mem   {} bytes dynamic (set at launch) + {} in the cubin's .nv.shared "
      "section = {} per block; {} allows {} ({})\n",
      k.smem_bytes, r->static_smem, k.smem_bytes + r->static_smem, spec.arch.to_string(),
      smem_limit,
      k.smem_bytes + static_cast<std::int64_t>(r->static_smem) <= smem_limit ? "fits" : "TOO BIG");
  if (r->frame_bytes >= 0) {
    std::string stack;
    if (r->min_stack >= 0) stack += fmt::format(", min stack {}", r->min_stack);
    if (r->max_stack >= 0) stack += fmt::format(", max stack {}", r->max_stack);
    out += fmt::format("local mem    {} bytes stack frame per thread{}{}\n", r->frame_bytes, stack,
                       r->frame_bytes == 0 ? ": no spills, no local arrays" : "");
  } else {
    out += "local mem    the cubin records no stack frame size\n";
  }
  std::string ptxas;
  const std::string verbose = ptxas_verbose(spec, &ptxas);
  if (!verbose.empty()) {
    out += fmt::format("ptxas -v     (on the NVRTC PTX, {})\n{}", ptxas, verbose);
  } else {
    out += fmt::format(
        "spills       not counted: ptxas was not found ({}); a 0-byte stack frame means none\n",
        "PATH, $CUDA_HOME/bin, /usr/local/cuda/bin");
  }
  out += fmt::format("params       {} bytes in constant bank 0\n", r->param_bank);
  out += fmt::format("code         {} bytes of SASS\n", r->code_bytes);
  out +=
      fmt::format("occupancy    {}\n", occupancy_text(spec, r->registers, k.threads, k.smem_bytes,
                                                      static_cast<std::int64_t>(r->static_smem)));
  if (const std::string cuobjdump = find_program("cuobjdump"); !cuobjdump.empty()) {
    const TempFile file(spec.to_string(), ".cubin", k.cubin.data(), k.cubin.size());
    const CommandResult res = run_command({cuobjdump, "--dump-resource-usage", file.path()});
    out += fmt::format("cuobjdump --dump-resource-usage ({}):\n{}", cuobjdump, res.output);
  }
  return out;
}

int run_kernel(const std::vector<std::string>& argv) {
  const Args args = Args::parse(argv, kernel_options());
  if (args.help()) {
    std::cout << kernel_help();
    return 0;
  }
  const std::string emit = args.get_choice(
      "--emit", "source", {"source", "ptx", "sass", "resources", "summary", "cubin"});
  if (emit == "cubin" && !args.has("--out")) {
    throw UsageError("--emit cubin writes binary data: give --out FILE");
  }
  const canopy::KernelSpec spec = kernel_spec_from_args(args);
  if (emit == "source") {
    emit_text(args, canopy::inspect_kernel(spec, canopy::KernelArtifact::kSource));
    return 0;
  }
  if (emit == "ptx") {
    emit_text(args, canopy::inspect_kernel(spec, canopy::KernelArtifact::kPtx));
    return 0;
  }
  if (emit == "summary") {
    emit_text(args, canopy::inspect_kernel(spec, canopy::KernelArtifact::kSummary));
    return 0;
  }
  canopy::families::validate_kernel_spec(spec);  // before creating a cache directory
  canopy::CubinCache cache(args.get("--cache-dir", ""));
  const canopy::CompiledKernel& k = cache.get(spec);
  if (emit == "cubin") {
    emit_text(args, std::string(k.cubin.begin(), k.cubin.end()));
  } else if (emit == "sass") {
    emit_text(args, sass_text(k));
  } else {
    emit_text(args, resources_text(k, cache.dir().empty() ? "memory only" : cache.dir()));
  }
  return 0;
}

// ---------------------------------------------------------------------------
// canopy-inspect plan

std::vector<Option> plan_options() {
  std::vector<Option> o = canopy::cli::workload_options();
  o.push_back({"--sms", "N", "plan for N SMs (default: the cost model's 132, H100 SXM)"});
  o.push_back({"--arch", "SM", "GPU target of the kernel specs listed, e.g. 80, 90a (default 90)"});
  o.push_back({"--db", "FILE", "plan with a tuning database's coefficients (docs/tuning.md)"});
  for (const Option& p : canopy::cli::planner_options()) o.push_back(p);
  o.push_back({"--json", "", "print JSON (plan_to_json plus tree summary) instead of text"});
  o.push_back({"--tree-lines", "N", "show at most N lines of the tree (default 40, 0: all)"});
  o.push_back({"--per-sm", "", "list the predicted busy time of every SM"});
  o.push_back({"--out", "FILE", "write to FILE instead of stdout"});
  return o;
}

std::string plan_help() {
  return "usage: canopy-inspect plan (--workload NAME | --tree STR | --batch FILE) [options]\n"
         "\n"
         "Discovers the prefix tree of a batch, plans it on the host with the cost\n"
         "model, and prints the tree, the plan (work items per kernel config, merge\n"
         "schedule, predicted time per SM) and the kernels it needs.\n"
         "\n"
         "options:\n" +
         canopy::cli::format_options(plan_options()) +
         "\nbatch file format (JSON):\n"
         "  {\"num_qo_heads\": 32, \"num_kv_heads\": 8, \"head_dim\": 128, \"dtype\": \"fp16\",\n"
         "   \"page_size\": 16, \"requests\": [{\"pages\": [3, 9, 10], \"seq_len\": 40}, ...]}\n"
         "  optional: \"kv_layout\" (\"NHD\"|\"HND\"), \"num_pages\" (default max id + 1)\n"
         "\nexamples:\n"
         "  canopy-inspect plan --tree '1,4,64|2048,1024,256'\n"
         "  canopy-inspect plan --workload sys-4k-x64 --sms 66 --no-split\n"
         "  canopy-inspect plan --batch batch.json --json\n";
}

/// At most `max_lines` lines of `text` (0: all), saying how many were left out.
std::string first_lines(const std::string& text, int max_lines) {
  if (max_lines <= 0) return text;
  std::size_t pos = 0;
  for (int i = 0; i < max_lines; ++i) {
    pos = text.find('\n', pos);
    if (pos == std::string::npos) return text;
    ++pos;
  }
  const auto rest = std::count(text.begin() + static_cast<std::ptrdiff_t>(pos), text.end(), '\n');
  if (rest == 0) return text;
  return text.substr(0, pos) +
         fmt::format("  ... {} more lines (--tree-lines 0 shows all)\n", rest);
}

struct MergeSummary {
  std::int64_t rows = 0;
  std::map<int, std::int64_t> fan_in;  ///< partials per row -> rows
};

MergeSummary merge_summary(const canopy::Plan& plan) {
  MergeSummary m;
  // Every qo head of a merged request merges the request's parts.
  const int heads = plan.spec.num_qo_heads;
  for (std::size_t r = 0; r + 1 < plan.merge_indptr.size(); ++r) {
    m.rows += heads;
    m.fan_in[plan.merge_indptr[r + 1] - plan.merge_indptr[r]] += heads;
  }
  return m;
}

std::string sm_load_text(const canopy::Plan& plan, bool per_sm) {
  const std::vector<float>& load = plan.sm_load_us;
  if (load.empty()) return "  (the plan records no SM loads)\n";
  std::string out;
  if (per_sm) {
    for (std::size_t i = 0; i < load.size(); ++i) {
      out += fmt::format("  sm{:<4}{:>8.2f}", i, load[i]);
      if (i % 6 == 5 || i + 1 == load.size()) out += '\n';
    }
    return out;
  }
  const float hi = *std::max_element(load.begin(), load.end());
  constexpr int kBuckets = 8;
  std::vector<int> counts(kBuckets, 0);
  for (float v : load) {
    const int b = hi > 0 ? std::min(kBuckets - 1, static_cast<int>(v / hi * kBuckets)) : 0;
    ++counts[b];
  }
  const int most = *std::max_element(counts.begin(), counts.end());
  for (int b = 0; b < kBuckets; ++b) {
    const int bar = most > 0 ? (counts[b] * 40 + most - 1) / most : 0;
    out += fmt::format("  [{:>8.2f}, {:>8.2f}{} us {:>4} slots{}{}\n", hi * b / kBuckets,
                       hi * (b + 1) / kBuckets, b + 1 == kBuckets ? "]" : ")", counts[b],
                       bar > 0 ? " " : "", std::string(static_cast<std::size_t>(bar), '#'));
  }
  out += "  (block slots: SMs x resident blocks; --per-sm lists every slot)\n";
  return out;
}

int run_plan(const std::vector<std::string>& argv) {
  const Args args = Args::parse(argv, plan_options());
  if (args.help()) {
    std::cout << plan_help();
    return 0;
  }
  const int tree_lines = static_cast<int>(args.get_int("--tree-lines", 40, 0, 1 << 30));
  const canopy::Arch arch = arch_from_args(args);
  // --coefficients first: --sms overrides
  canopy::PlannerOptions options = canopy::cli::parse_planner_options(args);
  args.at_most_one_of({"--db", "--coefficients"});
  if (const auto db_path = args.value("--db")) {
    // Read as the Runtime reads it: the file must parse and be complete.
    const canopy::TuningDb db = canopy::load_tuning_db(*db_path);
    canopy::check_tuning_db(db, db.device, *db_path);
    canopy::GpuCoefficients c = db.coefficients;
    c.name = fmt::format("{} (tuning database {})", db.device.name, *db_path);
    options.cost_model = canopy::CostModel(c);
  }
  if (args.has("--sms")) {
    canopy::GpuCoefficients c = options.cost_model.coefficients();
    c.num_sms = static_cast<int>(args.get_int("--sms", c.num_sms, 1, 4096));
    c.name += fmt::format(", --sms {}", c.num_sms);
    options.cost_model = canopy::CostModel(c);
  }
  const canopy::workload::Workload w = canopy::cli::select_workload(args, "");

  w.spec.validate();
  const canopy::PrefixTree tree = canopy::discover_prefix_tree(w.tables, w.spec.page_size);
  const canopy::Plan plan = canopy::make_plan(w.spec, tree, options);
  const std::int64_t unique_pages = canopy::cli::unique_kv_pages(w.tables, w.spec.page_size);
  const double unique_bytes = canopy::cli::unique_kv_bytes(w.spec, unique_pages);
  const canopy::GpuCoefficients& gpu = options.cost_model.coefficients();
  std::vector<std::string> kernels;
  for (const canopy::KernelSpec& k : canopy::plan_kernel_specs(plan, arch)) {
    kernels.push_back(k.to_string());
  }
  const MergeSummary merges = merge_summary(plan);
  std::int64_t path_tokens = 0;
  for (int len : w.tables.seq_lens) path_tokens += len;

  if (args.has("--json")) {
    nlohmann::json j;
    j["workload"] = {{"name", w.name},
                     {"tree", w.tree},
                     {"model", w.model},
                     {"batch_size", w.tables.batch_size()},
                     {"kv_tokens", path_tokens},
                     {"unique_pages", unique_pages},
                     {"unique_kv_bytes", unique_bytes}};
    std::map<int, int> per_depth;
    for (const auto& n : tree.nodes) ++per_depth[n.depth];
    nlohmann::json depth = nlohmann::json::array();
    for (const auto& [d, n] : per_depth) depth.push_back(n);
    j["tree"] = {{"requests", tree.batch_size}, {"nodes", tree.nodes.size()},
                 {"roots", tree.roots.size()},  {"depth", tree.max_depth()},
                 {"nodes_per_depth", depth},    {"pages", tree.pages.size()}};
    j["cost_model"] = {{"name", gpu.name}, {"num_sms", gpu.num_sms}};
    j["kernels"] = kernels;
    j["options"] = nlohmann::json::parse(canopy::planner_options_to_json(options));
    j["plan"] = nlohmann::json::parse(canopy::plan_to_json(plan));
    emit_text(args, j.dump(2) + "\n");
    return 0;
  }

  std::string out;
  out += fmt::format("workload     {}{}\n", w.name,
                     w.tree.empty() || w.tree == w.name ? "" : fmt::format(" (tree {})", w.tree));
  if (!w.model.empty()) out += fmt::format("model        {}\n", w.model);
  out += fmt::format("spec         {}\n", w.spec.to_string());
  out += fmt::format(
      "batch        {} requests, {} KV tokens in all; {} unique pages = {:.2f} MiB of K+V\n",
      w.tables.batch_size(), path_tokens, unique_pages, unique_bytes / 1048576.0);
  out += fmt::format("             read once at 3.0 TB/s: {:.2f} us (the floor)\n",
                     unique_bytes / 3.0e6);
  out += fmt::format("cost model   {}: {} SMs\n", gpu.name, gpu.num_sms);
  out += fmt::format("planner      absorb {}, split {}, head packs {}, {}{}\n\n",
                     options.allow_absorb ? "on" : "off", options.allow_split ? "on" : "off",
                     options.head_packs ? "on" : "off",
                     options.prefix_blind ? "prefix-blind" : "prefix-aware",
                     options.candidates.empty() ? "" : ", candidates given");
  out += "== " + first_lines(tree.to_string(), tree_lines) + "\n";
  out += "== " + canopy::plan_to_text(plan) + "\n";
  out += fmt::format("== merge schedule: {} output rows from {} partial states, max fan-in {}\n",
                     merges.rows, plan.num_partial_slots, plan.max_merge_fan_in);
  for (const auto& [fan_in, rows] : merges.fan_in) {
    out += fmt::format("  {:>3} partial{} per row: {:>8} rows{}\n", fan_in, fan_in == 1 ? " " : "s",
                       rows, fan_in == 1 ? " (copied through)" : "");
  }
  out += "\n== predicted busy time per SM\n" + sm_load_text(plan, args.has("--per-sm"));
  out += fmt::format("\n== kernels ({})\n", arch.to_string());
  for (std::size_t i = 0; i < kernels.size(); ++i) {
    if (i + 1 < kernels.size()) {
      int items = 0;
      for (const canopy::WorkItem& it : plan.items) items += it.config == static_cast<int>(i);
      out += fmt::format("  {}  ({} items{})\n", kernels[i], items,
                         items == 0 ? "; in plan.configs but never launched" : "");
    } else {
      out += fmt::format("  {}  ({} output rows)\n", kernels[i], merges.rows);
    }
  }
  emit_text(args, out);
  return 0;
}

// ---------------------------------------------------------------------------
// canopy-inspect workloads

int run_workloads(const std::vector<std::string>& argv) {
  const std::vector<Option> options = {{"--json", "", "print JSON instead of a table"}};
  const Args args = Args::parse(argv, options);
  if (args.help()) {
    std::cout << "usage: canopy-inspect workloads [--json]\n\nLists the workload suite ("
              << canopy::workload::default_suite_path() << ", or $CANOPY_SUITE).\n\noptions:\n"
              << canopy::cli::format_options(options);
    return 0;
  }
  const std::vector<canopy::workload::Workload> suite = canopy::workload::load_suite();
  nlohmann::json j = nlohmann::json::array();
  std::size_t name_width = 4, tree_width = 4, model_width = 5;
  for (const auto& w : suite) {
    name_width = std::max(name_width, w.name.size());
    tree_width = std::max(tree_width, w.tree.size());
    model_width = std::max(model_width, w.model.size());
  }
  std::string out = fmt::format("{:<{}} {:<{}} {:<{}} {:>3}/{:<2} {:>4} {:<5} {:>3} {:>6} {:>9}\n",
                                "name", name_width, "tree", tree_width, "model", model_width, "Hq",
                                "Hk", "D", "dtype", "pg", "reqs", "KV MiB");
  for (const auto& w : suite) {
    const std::int64_t pages = canopy::cli::unique_kv_pages(w.tables, w.spec.page_size);
    const double mib = canopy::cli::unique_kv_bytes(w.spec, pages) / 1048576.0;
    out +=
        fmt::format("{:<{}} {:<{}} {:<{}} {:>3}/{:<2} {:>4} {:<5} {:>3} {:>6} {:>9.1f}\n", w.name,
                    name_width, w.tree, tree_width, w.model, model_width, w.spec.num_qo_heads,
                    w.spec.num_kv_heads, w.spec.head_dim, canopy::to_string(w.spec.kv_dtype),
                    w.spec.page_size, w.tables.batch_size(), mib);
    j.push_back({{"name", w.name},
                 {"tree", w.tree},
                 {"model", w.model},
                 {"num_qo_heads", w.spec.num_qo_heads},
                 {"num_kv_heads", w.spec.num_kv_heads},
                 {"head_dim", w.spec.head_dim},
                 {"dtype", canopy::to_string(w.spec.kv_dtype)},
                 {"page_size", w.spec.page_size},
                 {"requests", w.tables.batch_size()},
                 {"unique_pages", pages},
                 {"unique_kv_bytes", canopy::cli::unique_kv_bytes(w.spec, pages)}});
  }
  out += fmt::format("\n{} workloads from {}; KV MiB = unique K+V pages, each read once\n",
                     suite.size(), canopy::workload::default_suite_path());
  std::cout << (args.has("--json") ? j.dump(2) + "\n" : out);
  return 0;
}

// ---------------------------------------------------------------------------
// canopy-inspect tuning

std::string tuning_text(const canopy::TuningDb& db) {
  std::string out;
  out += fmt::format("device       {}\n", db.device.to_string());
  out +=
      fmt::format("made         {} by Canopy {}, NVRTC {}, driver {}{}{}\n", db.date,
                  db.canopy_version, db.nvrtc_version, db.driver_version,
                  db.synthetic ? "; SYNTHETIC timings" : "", db.complete ? "" : "; UNFINISHED run");
  out += fmt::format("measurements {} items, {} merges; {} recorded winners\n", db.items.size(),
                     db.merges.size(), db.winners.size());
  const canopy::GpuCoefficients& c = db.coefficients;
  out += fmt::format(
      "gpu          {} SMs, HBM {:.3g} B/us, L2 {:.3g} B/us, launch {:.3g} us, "
      "merge {:.3g} B/us\n",
      c.num_sms, c.hbm_bytes_per_us, c.l2_bytes_per_us, c.launch_overhead_us, c.merge_bytes_per_us);
  out += fmt::format("\n{:<26} {:>12} {:>12} {:>10}   fit (residual, samples), held-out error\n",
                     "kernel", "overhead us", "flops/us", "bandwidth");
  for (const auto& [key, k] : c.kernels) {
    std::string fit = "  prior";
    if (const auto it = db.fits.find(key); it != db.fits.end()) {
      const canopy::KernelFit& f = it->second;
      fit = fmt::format("  {:.1f}%/{:.1f}%/{:.1f}% ({}), {:.1f}% rho {:.3f}",
                        100 * f.item_overhead_us.residual, 100 * f.flops_per_us.residual,
                        100 * f.bandwidth_fraction.residual, f.samples,
                        100 * f.holdout.median_abs_rel_error, f.holdout.spearman);
    }
    out += fmt::format("{:<26} {:>12.4g} {:>12.4g} {:>10.4g} {}\n", key, k.item_overhead_us,
                       k.flops_per_us, k.bandwidth_fraction, fit);
  }
  return out;
}

int run_tuning(const std::vector<std::string>& argv) {
  const std::vector<Option> options = {
      {"--db", "FILE", "show this database (searched first on a GPU)"},
      {"--device", "N", "CUDA device ordinal (default 0)"},
      {"--json", "", "print the database's JSON"},
  };
  const Args args = Args::parse(argv, options);
  if (args.help()) {
    std::cout << "usage: canopy-inspect tuning [--db FILE] [--json]\n\nThe tuning database "
                 "the Runtime uses on this GPU (docs/tuning.md): the search path, what was "
                 "refused and why, the coefficients and their fit. Without a GPU, --db FILE "
                 "shows one file.\n\noptions:\n"
              << canopy::cli::format_options(options);
    return 0;
  }
  const std::string explicit_path = args.get("--db", "");
  std::string why;
  std::optional<canopy::TuningDb> db;
  std::string out;
  if (canopy::gpu_available(&why)) {
    canopy::RuntimeOptions ro;
    ro.device = static_cast<int>(args.get_int("--device", 0, 0, 1024));
    ro.cache_dir = "off";
    ro.tuning_db = explicit_path;
    const canopy::Runtime rt(ro);
    const canopy::TuningStatus& s = rt.tuning_status();
    out += fmt::format("device       {}\nstatus       {}\n", s.device, s.message);
    for (const std::string& p : s.searched) out += fmt::format("searched     {}\n", p);
    for (const std::string& r : s.refused) out += fmt::format("refused      {}\n", r);
    if (s.tuned) db = canopy::load_tuning_db(s.database);
  } else {
    out += fmt::format("no GPU ({}): no device to match a database to\n", why);
    for (const std::string& p : canopy::tuning_search_path(explicit_path)) {
      out += fmt::format("search path  {}\n", p);
    }
    if (!explicit_path.empty()) db = canopy::load_tuning_db(explicit_path);
  }
  if (args.has("--json") && db) {
    std::cout << db->to_json(2) << "\n";
    return 0;
  }
  if (db) out += "\n" + tuning_text(*db);
  std::cout << out;
  return 0;
}

int dispatch(const std::vector<std::string>& argv) {
  if (argv.empty()) {
    std::cerr << top_help();
    return 2;
  }
  const std::string& command = argv[0];
  const std::vector<std::string> rest(argv.begin() + 1, argv.end());
  if (command == "-h" || command == "--help" || command == "help") {
    std::cout << top_help();
    return 0;
  }
  if (command == "kernel") return run_kernel(rest);
  if (command == "plan") return run_plan(rest);
  if (command == "workloads") return run_workloads(rest);
  if (command == "tuning") return run_tuning(rest);
  std::string message =
      fmt::format("unknown command '{}'; expected kernel, plan, workloads or tuning", command);
  if (const std::string hint =
          canopy::cli::closest(command, {"kernel", "plan", "workloads", "tuning"});
      !hint.empty()) {
    message += fmt::format(" (did you mean {}?)", hint);
  }
  throw UsageError(message);
}

}  // namespace

int main(int argc, char** argv) { return canopy::cli::run_tool(kProgram, argc, argv, dispatch); }
