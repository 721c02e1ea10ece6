// Helpers shared by the float64 CPU reference and the CPU plan executor.
#pragma once

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "canopy/error.hpp"

namespace canopy::cpu {

/// Threads parallel_for may use: $CANOPY_CPU_THREADS (1 to 1024) if set,
/// else hardware_concurrency. Many processes at once (a fuzzing campaign,
/// parallel test runs) set it to 1: each call otherwise starts a thread per
/// core in every process.
inline std::int64_t max_threads() {
  static const std::int64_t threads = [] {
    if (const char* env = std::getenv("CANOPY_CPU_THREADS"); env != nullptr && *env != '\0') {
      char* end = nullptr;
      const long value = std::strtol(env, &end, 10);
      if (*end != '\0' || value < 1 || value > 1024)
        throw Error(
            ErrorKind::kInvalidArgument,
            fmt::format("CANOPY_CPU_THREADS='{}': expected an integer from 1 to 1024", env));
      return static_cast<std::int64_t>(value);
    }
    const unsigned hw = std::thread::hardware_concurrency();
    return hw == 0 ? std::int64_t{1} : static_cast<std::int64_t>(hw);
  }();
  return threads;
}

/// Runs fn(i) for i in [0, n) on up to max_threads() threads, first come
/// first served; rethrows the first exception.
template <class Fn>
void parallel_for(std::int64_t n, Fn&& fn) {
  const std::int64_t threads = std::min<std::int64_t>(n, max_threads());
  if (threads <= 1) {
    for (std::int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::atomic<std::int64_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto worker = [&] {
    try {
      for (;;) {
        const std::int64_t i = next.fetch_add(1);
        if (i >= n) break;
        fn(i);
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      next.store(n);
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(static_cast<std::size_t>(threads));
  for (std::int64_t t = 0; t < threads; ++t) pool.emplace_back(worker);
  for (auto& th : pool) th.join();
  if (error) std::rethrow_exception(error);
}

/// Dot product with four partial sums (a fixed order: results are reproducible).
inline double dot(const double* a, const double* b, int n) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += a[i] * b[i];
    s1 += a[i + 1] * b[i + 1];
    s2 += a[i + 2] * b[i + 2];
    s3 += a[i + 3] * b[i + 3];
  }
  for (; i < n; ++i) s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}

}  // namespace canopy::cpu
