// Cubin cache: in-process map over an on-disk store of atomically written,
// self-checking entries.
#include "runtime/jit/cubin_cache.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <sstream>
#include <thread>

#include "canopy/error.hpp"
#include "families/kernel_families.hpp"
#include "generator/kernel_source.hpp"
#include "runtime/jit/nvrtc_compiler.hpp"
#include "runtime/jit/sha256.hpp"

#ifndef CANOPY_VERSION
#define CANOPY_VERSION "unknown"
#endif

namespace canopy {

namespace fs = std::filesystem;

void (*detail::cubin_write_interrupt)(const std::string& path) = nullptr;

namespace {

constexpr std::string_view kMagic = "canopy-cubin v1\n";

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const std::string& s : items) out += (out.empty() ? "" : " ") + s;
  return out;
}

/// Writes `bytes` to a unique temp file beside `path`, then renames it over
/// `path`: readers see the old entry, no entry, or the whole new one.
bool write_atomically(const fs::path& path, std::string_view bytes) {
  static std::atomic<unsigned> counter{0};
  const fs::path tmp =
      fs::path(path.string() + fmt::format(".tmp-{}-{:x}-{}", static_cast<long>(getpid()),
                                           std::hash<std::thread::id>{}(std::this_thread::get_id()),
                                           counter++));
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    const std::size_t half = bytes.size() / 2;
    out.write(bytes.data(), static_cast<std::streamsize>(half));
    if (detail::cubin_write_interrupt != nullptr) {
      out.flush();
      detail::cubin_write_interrupt(path.string());
    }
    out.write(bytes.data() + half, static_cast<std::streamsize>(bytes.size() - half));
    out.flush();
    if (!out) {
      std::error_code ec;
      fs::remove(tmp, ec);
      return false;
    }
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) fs::remove(tmp, ec);
  return !ec;
}

bool read_whole_file(const fs::path& path, std::string& out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream ss;
  ss << in.rdbuf();
  out = ss.str();
  return true;
}

/// "name value" header lines of an entry, up to the blank line.
bool parse_header(const std::string& text, std::map<std::string, std::string>& fields,
                  std::size_t& body) {
  if (text.compare(0, kMagic.size(), kMagic) != 0) return false;
  std::size_t pos = kMagic.size();
  while (true) {
    const std::size_t end = text.find('\n', pos);
    if (end == std::string::npos) return false;
    if (end == pos) {
      body = end + 1;
      return true;
    }
    const std::string line = text.substr(pos, end - pos);
    const std::size_t space = line.find(' ');
    fields[line.substr(0, space)] = space == std::string::npos ? "" : line.substr(space + 1);
    pos = end + 1;
  }
}

bool parse_size(const std::string& text, std::size_t& out) {
  if (text.empty() || text.size() > 18) return false;
  out = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    out = out * 10 + static_cast<std::size_t>(c - '0');
  }
  return true;
}

std::string env(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? "" : value;
}

}  // namespace

std::string cubin_cache_key(const std::string& source, const std::vector<std::string>& options,
                            const std::string& nvrtc_version, Arch arch,
                            const std::string& canopy_version) {
  // Length-prefixed fields, so no two different inputs hash the same bytes.
  Sha256 h;
  auto field = [&h](std::string_view name, std::string_view value) {
    h.update(fmt::format("{}:{}:", name, value.size()));
    h.update(value);
  };
  field("canopy", canopy_version);
  field("nvrtc", nvrtc_version);
  field("arch", arch.id());  // "90", "90a": keys of plain targets are as before
  field("options", join(options));
  field("source", source);
  return h.hex_digest();
}

std::string default_cubin_cache_dir() {
  const std::string explicit_dir = env("CANOPY_CACHE_DIR");
  if (explicit_dir == "off") return "";
  if (!explicit_dir.empty()) return explicit_dir;
  const std::string xdg = env("XDG_CACHE_HOME");
  if (!xdg.empty()) return (fs::path(xdg) / "canopy").string();
  const std::string home = env("HOME");
  if (!home.empty()) return (fs::path(home) / ".cache" / "canopy").string();
  return "";
}

CubinCache::CubinCache(std::string dir) {
  dir_ = dir.empty() ? default_cubin_cache_dir() : (dir == "off" ? "" : std::move(dir));
  if (dir_.empty()) return;
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec || !fs::is_directory(dir_, ec)) {
    disable_disk(fmt::format("cannot create cubin cache directory {} ({}); caching in memory only",
                             dir_, ec ? ec.message() : "not a directory"));
  }
}

std::string CubinCache::dir() const {
  std::lock_guard lock(mutex_);
  return dir_;
}

CubinCache::BatchResult CubinCache::compile_all(const std::vector<KernelSpec>& specs,
                                                unsigned threads) {
  const auto t0 = std::chrono::steady_clock::now();
  unsigned n = threads > 0 ? threads : std::max(1u, std::thread::hardware_concurrency());
  n = std::max(
      1u, std::min<unsigned>(n, static_cast<unsigned>(std::max<std::size_t>(specs.size(), 1))));
  std::atomic<std::size_t> next{0};
  std::mutex mutex;
  BatchResult result;
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < n; ++t) {
    pool.emplace_back([&] {
      for (std::size_t i = next++; i < specs.size(); i = next++) {
        try {
          (void)get(specs[i]);
        } catch (const std::exception& e) {
          std::lock_guard lock(mutex);
          if (result.failures++ == 0) {
            result.first_error = fmt::format("{}: {}", specs[i].to_string(), e.what());
          }
        }
      }
    });
  }
  for (std::thread& t : pool) t.join();
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return result;
}

CubinCacheStats CubinCache::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

void CubinCache::warn_once(const std::string& what, const std::string& message) {
  std::lock_guard lock(mutex_);
  if (warned_.insert(what).second) std::cerr << "canopy: warning: " << message << "\n";
}

void CubinCache::disable_disk(const std::string& why) {
  warn_once("disk", why);
  std::lock_guard lock(mutex_);
  dir_.clear();
}

std::string CubinCache::entry_path(const KernelSpec& spec) const {
  const std::string dir = this->dir();
  if (dir.empty()) return "";
  const std::string source = generator::generate_kernel_source(spec);
  const std::string key =
      cubin_cache_key(source, nvrtc_options(spec.arch), nvrtc_version(), spec.arch, CANOPY_VERSION);
  return (fs::path(dir) / (spec.kernel_name() + "." + key.substr(0, 16) + ".cubin")).string();
}

const CompiledKernel& CubinCache::get(const KernelSpec& spec) {
  const std::string id = spec.to_string();
  {
    std::unique_lock lock(mutex_);
    while (true) {
      auto it = kernels_.find(id);
      if (it != kernels_.end()) {
        ++stats_.memory_hits;
        return *it->second;
      }
      if (in_flight_.insert(id).second) break;  // this thread builds it
      built_.wait(lock);
    }
  }
  std::unique_ptr<CompiledKernel> built;
  try {
    built = std::make_unique<CompiledKernel>(build(spec));
  } catch (...) {
    std::lock_guard lock(mutex_);
    in_flight_.erase(id);
    built_.notify_all();
    throw;
  }
  std::lock_guard lock(mutex_);
  const CompiledKernel& result = *(kernels_[id] = std::move(built));
  in_flight_.erase(id);
  built_.notify_all();
  return result;
}

CompiledKernel CubinCache::build(const KernelSpec& spec) {
  const std::string source = generator::generate_kernel_source(spec);
  const std::vector<std::string> options = nvrtc_options(spec.arch);
  CompiledKernel k;
  k.spec = spec;
  k.name = spec.kernel_name();
  k.options = join(options);
  k.key = cubin_cache_key(source, options, nvrtc_version(), spec.arch, CANOPY_VERSION);
  k.threads = families::kernel_threads(spec);
  k.smem_bytes = families::kernel_smem_bytes(spec);

  const std::string dir = this->dir();
  const std::string base =
      dir.empty() ? "" : (fs::path(dir) / (k.name + "." + k.key.substr(0, 16))).string();
  if (!base.empty() && load_entry(base + ".cubin", k.key, k)) {
    std::lock_guard lock(mutex_);
    ++stats_.disk_hits;
    return k;
  }

  NvrtcResult compiled =
      nvrtc_compile(source, k.name, spec.to_string(), spec.arch, NvrtcOutput::kCubin, dir);
  k.cubin = std::move(compiled.binary);
  k.log = std::move(compiled.log);
  k.compile_ms = compiled.compile_ms;
  {
    std::lock_guard lock(mutex_);
    ++stats_.compiles;
  }
  if (!base.empty()) store_entry(base, source, k);
  return k;
}

bool CubinCache::load_entry(const std::string& path, const std::string& key, CompiledKernel& out) {
  std::string text;
  if (!read_whole_file(path, text)) return false;  // a plain miss
  auto corrupt = [&](const std::string& why) {
    warn_once(path, fmt::format("cubin cache entry {} is damaged ({}); recompiling", path, why));
    std::lock_guard lock(mutex_);
    ++stats_.corrupt_entries;
    return false;
  };
  std::map<std::string, std::string> fields;
  std::size_t body = 0;
  if (!parse_header(text, fields, body)) return corrupt("bad or truncated header");
  if (fields["key"] != key) return corrupt("key mismatch");
  if (fields["name"] != out.name) return corrupt("kernel name mismatch");
  std::size_t log_bytes = 0;
  std::size_t cubin_bytes = 0;
  if (!parse_size(fields["log_bytes"], log_bytes) ||
      !parse_size(fields["cubin_bytes"], cubin_bytes)) {
    return corrupt("bad sizes");
  }
  if (text.size() - body != log_bytes + cubin_bytes) {
    return corrupt(fmt::format("expected {} payload bytes, found {}", log_bytes + cubin_bytes,
                               text.size() - body));
  }
  const std::string_view cubin = std::string_view(text).substr(body + log_bytes, cubin_bytes);
  if (cubin_bytes == 0 || sha256_hex(cubin) != fields["cubin_sha256"]) {
    return corrupt("checksum mismatch");
  }
  out.log = text.substr(body, log_bytes);
  out.cubin.assign(cubin.begin(), cubin.end());
  out.from_disk = true;
  out.compile_ms = 0;
  return true;
}

void CubinCache::store_entry(const std::string& base, const std::string& source,
                             const CompiledKernel& k) {
  const std::string_view cubin(k.cubin.data(), k.cubin.size());
  std::string entry(kMagic);
  entry += fmt::format(
      "key {}\nname {}\nspec {}\noptions {}\ncompile_ms {:.1f}\nlog_bytes {}\ncubin_bytes "
      "{}\ncubin_sha256 {}\n\n",
      k.key, k.name, k.spec.to_string(), k.options, k.compile_ms, k.log.size(), cubin.size(),
      sha256_hex(cubin));
  entry += k.log;
  entry += cubin;
  // Companions first, for people: the source, the spec and the log. The entry
  // itself goes last so that a reader finding it finds them too.
  const std::string spec_text =
      fmt::format("spec {}\nkernel {}\nkey {}\noptions {}\nthreads {}\nsmem_bytes {}\n",
                  k.spec.to_string(), k.name, k.key, k.options, k.threads, k.smem_bytes);
  const bool ok =
      write_atomically(base + ".cu", source) && write_atomically(base + ".spec.txt", spec_text) &&
      write_atomically(base + ".log", k.log) && write_atomically(base + ".cubin", entry);
  if (!ok) {
    disable_disk(fmt::format("cannot write the cubin cache under {}; caching in memory only",
                             fs::path(base).parent_path().string()));
    return;
  }
  std::lock_guard lock(mutex_);
  ++stats_.disk_writes;
}

}  // namespace canopy
