// Several processes sharing one cubin cache directory: workers compiling the
// same and different kernels at once (and deleting entries to force
// rewrites), writers SIGKILLed in the middle of writing an entry, one worker
// SIGKILLed at a random moment. No process may ever load a broken entry: every
// cubin any of them gets must equal a memory-only compile. Processes are
// fork()ed: each has its own CubinCache, as separate programs would.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "runtime/jit/cubin_cache.hpp"

namespace canopy {
namespace {

namespace fs = std::filesystem;

// Merge kernels compile in ~0.15 s each: the fastest real entries.
std::vector<KernelSpec> specs() {
  AttentionSpec a;
  return {merge_kernel_spec(a, 2, kSm90), merge_kernel_spec(a, 3, kSm90),
          merge_kernel_spec(a, 4, kSm90), merge_kernel_spec(a, 5, kSm90)};
}

// Exit codes of a child (a SIGKILLed child reports the signal instead).
constexpr int kChildOk = 0;
constexpr int kChildBrokenEntry = 3;  // got a cubin that differs from the real one
constexpr int kChildError = 4;        // an exception

pid_t spawn(const std::function<int()>& body) {
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    int code = kChildError;
    try {
      code = body();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child %d: %s\n", static_cast<int>(getpid()), e.what());
    }
    _exit(code);  // no gtest or static destructors in the child
  }
  return pid;
}

// Exit code, or 128 + signal.
int wait_for(pid_t pid) {
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) return -1;
  return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}

class CubinCacheProcesses : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("canopy-cache-processes-" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    for (const KernelSpec& k : specs()) expected_[k.to_string()] = CubinCache("off").get(k).cubin;
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A process that deletes `spec`'s entry, compiles it again and is killed
  // by SIGKILL when half of the entry (the .cubin file) is in its temp file.
  pid_t spawn_killed_writer(const KernelSpec& spec) {
    return spawn([this, spec] {
      detail::cubin_write_interrupt = [](const std::string& path) {
        if (path.ends_with(".cubin")) raise(SIGKILL);
      };
      CubinCache cache(dir_.string());
      std::error_code ec;
      fs::remove(cache.entry_path(spec), ec);
      (void)cache.get(spec);
      return kChildOk;  // not reached: the write kills it
    });
  }

  // A process that, `rounds` times (0: until killed), opens the cache afresh
  // (as a new program would), gets its kernels, checks each against the real
  // cubin and now and then deletes an entry so that it is written again.
  pid_t spawn_worker(std::vector<KernelSpec> mine, int rounds, unsigned seed) {
    return spawn([this, mine, rounds, seed] {
      std::mt19937 rng(seed);
      for (int round = 0; rounds == 0 || round < rounds; ++round) {
        CubinCache cache(dir_.string());
        for (const KernelSpec& k : mine) {
          if (rng() % 3 == 0) {
            std::error_code ec;
            fs::remove(cache.entry_path(k), ec);
          }
          if (cache.get(k).cubin != expected_.at(k.to_string())) return kChildBrokenEntry;
        }
        // A damaged entry is recompiled, never loaded: count it as a failure
        // only if its bytes came back (checked above); report it here.
        if (cache.stats().corrupt_entries > 0)
          std::fprintf(stderr, "worker %d: %d damaged entries seen and recompiled\n",
                       static_cast<int>(getpid()), cache.stats().corrupt_entries);
      }
      return kChildOk;
    });
  }

  std::vector<fs::path> temp_files() const {
    std::vector<fs::path> out;
    for (const auto& e : fs::directory_iterator(dir_))
      if (e.path().filename().string().find(".tmp-") != std::string::npos) out.push_back(e.path());
    return out;
  }

  fs::path dir_;
  std::map<std::string, std::vector<char>> expected_;
};

TEST_F(CubinCacheProcesses, WriterKilledMidWriteLeavesNoEntry) {
  const KernelSpec k = specs()[0];
  EXPECT_EQ(wait_for(spawn_killed_writer(k)), 128 + SIGKILL);
  // The half-written temp file is there; the entry is not.
  const std::vector<fs::path> temps = temp_files();
  ASSERT_EQ(temps.size(), 1u);
  EXPECT_NE(temps[0].string().find(".cubin.tmp-"), std::string::npos) << temps[0];
  EXPECT_GT(fs::file_size(temps[0]), 0u);
  const std::string entry = CubinCache(dir_.string()).entry_path(k);
  EXPECT_FALSE(fs::exists(entry));
  // The next process compiles it and writes a whole entry.
  CubinCache next(dir_.string());
  EXPECT_EQ(next.get(k).cubin, expected_.at(k.to_string()));
  EXPECT_EQ(next.stats().compiles, 1);
  EXPECT_EQ(next.stats().corrupt_entries, 0);
  EXPECT_TRUE(fs::exists(entry));
}

TEST_F(CubinCacheProcesses, ConcurrentWorkersAndKilledWritersNeverLoadABrokenEntry) {
  const std::vector<KernelSpec> all = specs();
  // Four workers: all share kernel 0, each has one other (two pairs share it).
  std::vector<pid_t> workers;
  for (unsigned i = 0; i < 4; ++i)
    workers.push_back(spawn_worker({all[0], all[1 + i % 2]}, 6, 100 + i));
  // One more worker on kernels 0 and 3, forever, SIGKILLed at a random moment.
  const pid_t doomed = spawn_worker({all[3], all[0]}, 0, 7);
  // Writers of kernels 0 and 1 killed mid-write while the workers run.
  std::vector<pid_t> killed = {spawn_killed_writer(all[0]), spawn_killed_writer(all[1])};
  std::this_thread::sleep_for(std::chrono::milliseconds(std::random_device{}() % 400 + 100));
  kill(doomed, SIGKILL);
  killed.push_back(spawn_killed_writer(all[0]));  // and one more, later

  for (pid_t w : workers) EXPECT_EQ(wait_for(w), kChildOk) << "worker " << w;
  EXPECT_EQ(wait_for(doomed), 128 + SIGKILL);
  for (pid_t k : killed) EXPECT_EQ(wait_for(k), 128 + SIGKILL) << "killed writer " << k;

  // Afterwards a fresh process finds every entry whole, or none at all.
  CubinCache after(dir_.string());
  for (const KernelSpec& k : all) EXPECT_EQ(after.get(k).cubin, expected_.at(k.to_string()));
  EXPECT_EQ(after.stats().corrupt_entries, 0);
  // The killed writers' temp files stay behind (a crash cannot clean up);
  // they are never read, since no entry has their names.
  const std::size_t temps = temp_files().size();
  EXPECT_GE(temps, 3u);
  std::printf(
      "[ processes] 5 workers, 3 writers killed mid-write, 1 worker killed at random; "
      "%zu temp files left, 0 broken entries loaded\n",
      temps);
}

}  // namespace
}  // namespace canopy
