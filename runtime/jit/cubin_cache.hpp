// The cubin cache: KernelSpec -> compiled CUBIN, once per process (memory) and
// once per machine (disk). docs/cubin-cache.md describes the key and layout.
#pragma once

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "canopy/kernel_spec.hpp"

namespace canopy {

struct CompiledKernel {
  KernelSpec spec;
  std::string name;         ///< the extern "C" symbol to cuModuleGetFunction
  std::vector<char> cubin;  ///< for cuModuleLoadData
  std::string log;          ///< NVRTC's log when it was compiled
  std::string options;      ///< NVRTC options, space separated
  std::string key;          ///< the cache key (SHA-256 hex)
  int threads = 0;          ///< block size to launch with
  int smem_bytes = 0;       ///< dynamic shared memory to launch with
  bool from_disk = false;   ///< read from the disk cache, not compiled in this process
  double compile_ms = 0;    ///< NVRTC time when compiled (0 when read from disk)
};

struct CubinCacheStats {
  int compiles = 0;         ///< NVRTC runs
  int disk_hits = 0;        ///< entries read from disk
  int memory_hits = 0;      ///< get() answered from the in-process map
  int disk_writes = 0;      ///< entries written
  int corrupt_entries = 0;  ///< entries found damaged and recompiled
};

namespace detail {
/// Test seam (tests/runtime/jit/cubin_cache_processes_test.cpp): when set, the
/// cache's atomic writer calls it with the final path after half of a file's
/// bytes are in the temp file, so a test can SIGKILL a process mid-write.
/// Null in production.
extern void (*cubin_write_interrupt)(const std::string& path);
}  // namespace detail

/// Key of one cache entry: SHA-256 over everything that changes the cubin.
std::string cubin_cache_key(const std::string& source, const std::vector<std::string>& options,
                            const std::string& nvrtc_version, Arch arch,
                            const std::string& canopy_version);

/// Where the cache lives when nothing is given explicitly: $CANOPY_CACHE_DIR,
/// else $XDG_CACHE_HOME/canopy, else $HOME/.cache/canopy. "off" (or no home)
/// means no disk cache and is returned as "".
std::string default_cubin_cache_dir();

/// Thread-safe. A kernel is compiled (or read from disk) at most once per
/// cache object; concurrent get()s of one spec wait for the first.
class CubinCache {
 public:
  /// `dir` empty: default_cubin_cache_dir(); "off": memory only.
  explicit CubinCache(std::string dir = "");

  /// Compiles on a miss. Throws Error(kCompile) from NVRTC, or the generator's
  /// kInvalidArgument / kNotSupported for a bad spec. The reference stays valid
  /// for the cache's lifetime.
  const CompiledKernel& get(const KernelSpec& spec);

  /// What compile_all() did: how many specs failed and the first failure
  /// (its spec string and message), and how long it took.
  struct BatchResult {
    int failures = 0;
    std::string first_error;
    double seconds = 0;
  };
  /// get() for every spec, on `threads` threads (0: every core): the
  /// prewarm before a benchmark or a test suite. Never throws for a spec.
  BatchResult compile_all(const std::vector<KernelSpec>& specs, unsigned threads = 0);

  CubinCacheStats stats() const;
  /// The directory entries go to; "" when the disk cache is off or unusable.
  std::string dir() const;
  /// Path of the entry file for `spec` ("" when the disk cache is off).
  std::string entry_path(const KernelSpec& spec) const;

 private:
  CompiledKernel build(const KernelSpec& spec);
  bool load_entry(const std::string& path, const std::string& key, CompiledKernel& out);
  void store_entry(const std::string& base, const std::string& source, const CompiledKernel& k);
  void disable_disk(const std::string& why);
  void warn_once(const std::string& what, const std::string& message);

  mutable std::mutex mutex_;
  std::condition_variable built_;
  std::string dir_;
  std::map<std::string, std::unique_ptr<CompiledKernel>> kernels_;  // by spec string
  std::set<std::string> in_flight_;
  std::set<std::string> warned_;
  CubinCacheStats stats_;
};

}  // namespace canopy
