// The cubin cache, in the spirit of Triton's test_cache.py: keys, hits,
// damaged entries, unusable directories and concurrent writers.
#include "runtime/jit/cubin_cache.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>

#include "canopy/error.hpp"
#include "families/kernel_families.hpp"
#include "generator/kernel_source.hpp"
#include "runtime/jit/nvrtc_compiler.hpp"

namespace canopy {
namespace {

namespace fs = std::filesystem;

/// A fresh directory per test, removed afterwards.
class CubinCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("canopy-cache-test-" + std::to_string(getpid()) + "-" + info->name());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  static KernelSpec spec(int fan_in = 2) {
    AttentionSpec a;
    return merge_kernel_spec(a, fan_in, kSm90);  // merges compile fastest
  }
  std::string dir() const { return dir_.string(); }
  std::vector<fs::path> files() const {
    std::vector<fs::path> out;
    if (!fs::exists(dir_)) return out;
    for (const auto& e : fs::directory_iterator(dir_)) out.push_back(e.path());
    return out;
  }

  fs::path dir_;
};

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const fs::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

TEST_F(CubinCacheTest, KeyChangesWithEveryInputAndOnlyThen) {
  const std::string src = generator::generate_kernel_source(spec());
  const std::vector<std::string> opts = nvrtc_options(kSm90);
  const std::string base = cubin_cache_key(src, opts, "13.0", kSm90, "0.1.0");
  EXPECT_EQ(base.size(), 64u);
  EXPECT_EQ(base, cubin_cache_key(src, opts, "13.0", kSm90, "0.1.0"));
  std::vector<std::string> more = opts;
  more.push_back("-lineinfo");
  EXPECT_NE(base, cubin_cache_key(src + " ", opts, "13.0", kSm90, "0.1.0"));
  EXPECT_NE(base, cubin_cache_key(src, more, "13.0", kSm90, "0.1.0"));
  EXPECT_NE(base, cubin_cache_key(src, opts, "13.1", kSm90, "0.1.0"));
  EXPECT_NE(base, cubin_cache_key(src, opts, "13.0", kSm80, "0.1.0"));
  EXPECT_NE(base, cubin_cache_key(src, opts, "13.0", kSm90a, "0.1.0"));
  EXPECT_NE(base, cubin_cache_key(src, opts, "13.0", kSm90, "0.1.1"));
  // Field boundaries are unambiguous: moving a character between fields changes the key.
  EXPECT_NE(cubin_cache_key("ab", {"c"}, "1", kSm90, "v"),
            cubin_cache_key("a", {"bc"}, "1", kSm90, "v"));
  // Every KernelSpec field reaches the source, hence the key.
  const std::vector<std::function<void(KernelSpec&)>> flips = {
      [](KernelSpec& s) { s.head_dim = 64; },
      [](KernelSpec& s) { s.o_dtype = DType::kBF16; },
      [](KernelSpec& s) { s.with_lse = true; },
      [](KernelSpec& s) { s.merge_fan_in = 4; },
      [](KernelSpec& s) { s.arch = kSm80; },
      [](KernelSpec& s) { s.q_dtype = DType::kF16; },
      [](KernelSpec& s) { s.tile.tile_q = 32; },
      [](KernelSpec& s) { s.kv_layout = KvLayout::kHND; },
  };
  for (const auto& flip : flips) {
    KernelSpec s = spec();
    flip(s);
    EXPECT_NE(generator::generate_kernel_source(s), src) << s.to_string();
  }
}

TEST_F(CubinCacheTest, SecondGetCompilesNothingAndDiskServesANewProcess) {
  std::vector<char> first_cubin;
  {
    CubinCache cache(dir());
    const CompiledKernel& a = cache.get(spec());
    const CompiledKernel& b = cache.get(spec());
    EXPECT_EQ(&a, &b);
    EXPECT_EQ(cache.stats().compiles, 1);
    EXPECT_EQ(cache.stats().memory_hits, 1);
    EXPECT_EQ(cache.stats().disk_writes, 1);
    EXPECT_FALSE(a.from_disk);
    EXPECT_EQ(a.name, spec().kernel_name());
    EXPECT_EQ(a.threads, families::kernel_threads(spec()));
    first_cubin = a.cubin;
  }
  CubinCache again(dir());  // as a new process would
  const CompiledKernel& c = again.get(spec());
  EXPECT_TRUE(c.from_disk);
  EXPECT_EQ(again.stats().compiles, 0);
  EXPECT_EQ(again.stats().disk_hits, 1);
  EXPECT_EQ(c.cubin, first_cubin);
  EXPECT_EQ(c.options, "--gpu-architecture=sm_90 -std=c++17");
}

TEST_F(CubinCacheTest, EntryKeepsInspectableCompanions) {
  CubinCache cache(dir());
  const CompiledKernel& k = cache.get(spec());
  const fs::path entry = cache.entry_path(spec());
  ASSERT_TRUE(fs::exists(entry)) << entry;
  const std::string stem = entry.string().substr(0, entry.string().size() - 6);
  EXPECT_EQ(read_file(stem + ".cu"), generator::generate_kernel_source(spec()));
  EXPECT_NE(read_file(stem + ".spec.txt").find(spec().to_string()), std::string::npos);
  EXPECT_TRUE(fs::exists(stem + ".log"));
  EXPECT_NE(read_file(entry).find("key " + k.key), std::string::npos);
  EXPECT_EQ(files().size(), 4u);  // no temp files left behind
}

TEST_F(CubinCacheTest, DamagedEntriesAreRecompiledWithOneWarning) {
  std::string path;
  {
    CubinCache cache(dir());
    cache.get(spec());
    path = cache.entry_path(spec());
  }
  const std::string good = read_file(path);
  std::string flipped = good;
  flipped[flipped.size() - 100] ^= 0x5a;
  const std::vector<std::string> damaged = {good.substr(0, good.size() / 2),  // truncated
                                            good.substr(0, 20),
                                            "",
                                            "garbage",
                                            flipped,
                                            good + "trailing bytes"};
  for (const std::string& bytes : damaged) {
    write_file(path, bytes);
    CubinCache cache(dir());
    ::testing::internal::CaptureStderr();
    const CompiledKernel& k = cache.get(spec());
    const std::string err = ::testing::internal::GetCapturedStderr();
    EXPECT_FALSE(k.from_disk);
    EXPECT_EQ(cache.stats().compiles, 1);
    EXPECT_EQ(cache.stats().corrupt_entries, 1);
    EXPECT_NE(err.find("damaged"), std::string::npos) << err;
    EXPECT_NE(err.find(path), std::string::npos) << err;
    CubinCache reread(dir());  // rewritten whole: the next process reads it
    EXPECT_TRUE(reread.get(spec()).from_disk);
    EXPECT_EQ(reread.stats().corrupt_entries, 0);
  }
}

TEST_F(CubinCacheTest, UnwritableDirectoryFallsBackToMemoryWithOneWarning) {
  fs::create_directories(dir_);
  write_file(dir_ / "a-file", "x");  // a directory cannot be made under a file, even by root
  ::testing::internal::CaptureStderr();
  CubinCache cache((dir_ / "a-file" / "cache").string());
  const CompiledKernel& k = cache.get(spec());
  cache.get(spec(4));
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_FALSE(k.cubin.empty());
  EXPECT_EQ(cache.dir(), "");
  EXPECT_EQ(cache.stats().compiles, 2);
  EXPECT_EQ(cache.stats().disk_writes, 0);
  EXPECT_NE(err.find("memory only"), std::string::npos) << err;
  EXPECT_EQ(err.find("memory only"), err.rfind("memory only")) << "warned twice: " << err;
}

TEST_F(CubinCacheTest, OffMeansNoFiles) {
  CubinCache cache("off");
  EXPECT_EQ(cache.dir(), "");
  EXPECT_FALSE(cache.get(spec()).cubin.empty());
  EXPECT_EQ(cache.entry_path(spec()), "");
  EXPECT_TRUE(files().empty());
}

TEST_F(CubinCacheTest, EnvironmentChoosesTheDirectory) {
  const char* saved = std::getenv("CANOPY_CACHE_DIR");
  const std::string restore = saved == nullptr ? "" : saved;
  setenv("CANOPY_CACHE_DIR", dir().c_str(), 1);
  EXPECT_EQ(default_cubin_cache_dir(), dir());
  {
    CubinCache cache;
    EXPECT_EQ(cache.dir(), dir());
    cache.get(spec());
  }
  EXPECT_EQ(files().size(), 4u);
  setenv("CANOPY_CACHE_DIR", "off", 1);
  EXPECT_EQ(default_cubin_cache_dir(), "");
  unsetenv("CANOPY_CACHE_DIR");
  setenv("XDG_CACHE_HOME", "/somewhere", 1);
  EXPECT_EQ(default_cubin_cache_dir(), "/somewhere/canopy");
  unsetenv("XDG_CACHE_HOME");
  if (std::getenv("HOME") != nullptr) {
    EXPECT_EQ(default_cubin_cache_dir(), std::string(std::getenv("HOME")) + "/.cache/canopy");
  }
  if (saved != nullptr) setenv("CANOPY_CACHE_DIR", restore.c_str(), 1);
}

TEST_F(CubinCacheTest, ConcurrentGetsOfOneSpecCompileOnce) {
  CubinCache cache(dir());
  const CompiledKernel* seen[4] = {};
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) threads.emplace_back([&, i] { seen[i] = &cache.get(spec()); });
  for (auto& t : threads) t.join();
  EXPECT_EQ(cache.stats().compiles, 1);
  for (const CompiledKernel* k : seen) EXPECT_EQ(k, seen[0]);
}

TEST_F(CubinCacheTest, ConcurrentWritersNeverExposeHalfAnEntry) {
  // Two independent caches (as two processes) race on one directory: one keeps
  // deleting and rewriting the entry, the other keeps reading it.
  const std::vector<char> expected = CubinCache("off").get(spec()).cubin;
  const std::string path = CubinCache(dir()).entry_path(spec());
  std::atomic<bool> done{false};
  std::atomic<int> corrupt{0};
  std::atomic<int> mismatched{0};
  std::atomic<int> reads{0};
  std::thread writer([&] {
    for (int i = 0; i < 6; ++i) {
      std::error_code ec;
      fs::remove(path, ec);
      CubinCache cache(dir());
      if (cache.get(spec()).cubin != expected) ++mismatched;
    }
    done = true;
  });
  std::thread reader([&] {
    while (!done) {
      CubinCache cache(dir());
      if (cache.get(spec()).cubin != expected) ++mismatched;
      corrupt += cache.stats().corrupt_entries;
      ++reads;
    }
  });
  writer.join();
  reader.join();
  EXPECT_EQ(corrupt, 0);
  EXPECT_EQ(mismatched, 0);
  EXPECT_GT(reads, 0);
  for (const fs::path& f : files()) {
    EXPECT_EQ(f.string().find(".tmp-"), std::string::npos) << "leftover " << f;
  }
}

// Prints the numbers docs/cubin-cache.md quotes:
//   canopy_tests --gtest_filter='*ColdVsWarm*'
TEST_F(CubinCacheTest, ColdVsWarmTimings) {
  using Clock = std::chrono::steady_clock;
  auto ms_since = [](Clock::time_point t) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
  };
  AttentionSpec a;
  const std::vector<KernelSpec> specs = {
      partial_kernel_spec(a, {KernelFamily::kFmaAttention, 16, 64, 4, 2}, kSm90),
      partial_kernel_spec(a, {KernelFamily::kMmaAttention, 64, 64, 4, 3}, kSm90),
      partial_kernel_spec(a, {KernelFamily::kMmaAttention, 128, 32, 4, 3}, kSm90),
      merge_kernel_spec(a, 4, kSm90)};
  for (const KernelSpec& k : specs) {
    CubinCache cold(dir());
    auto t = Clock::now();
    cold.get(k);
    const double cold_ms = ms_since(t);
    t = Clock::now();
    cold.get(k);
    const double memory_ms = ms_since(t);
    CubinCache warm(dir());  // a new process with a filled disk cache
    t = Clock::now();
    const CompiledKernel& hit = warm.get(k);
    const double disk_ms = ms_since(t);
    EXPECT_TRUE(hit.from_disk);
    std::printf(
        "[ cache    ] %s: cold %.0f ms, warm (disk) %.2f ms, in-process %.4f ms, "
        "cubin %zu bytes\n",
        k.kernel_name().c_str(), cold_ms, disk_ms, memory_ms, hit.cubin.size());
  }
}

TEST_F(CubinCacheTest, FailedBuildIsReportedAndDoesNotWedgeTheCache) {
  CubinCache cache(dir());
  KernelSpec bad = spec();
  bad.head_dim = 96;
  EXPECT_THROW(cache.get(bad), Error);
  EXPECT_THROW(cache.get(bad), Error);  // not stuck "in flight"
  EXPECT_FALSE(cache.get(spec()).cubin.empty());
}

}  // namespace
}  // namespace canopy
