// FuzzReader: turns a fuzzer's bytes into structured choices (sizes, picks,
// edge-case values), so that a mutation of one byte changes one decision and
// the fuzzer reaches deep into the planner instead of failing the first
// parse. Bytes are consumed from the front; an exhausted reader answers zeros,
// so every prefix of an input is an input too (short inputs decode to small,
// mostly valid cases).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <limits>
#include <span>
#include <string>

namespace canopy::fuzz {

class FuzzReader {
 public:
  FuzzReader(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}

  std::size_t remaining() const { return size_ - pos_; }
  bool empty() const { return pos_ >= size_; }

  std::uint8_t byte() { return pos_ < size_ ? data_[pos_++] : 0; }

  /// A value in [lo, hi] from as few bytes as the range needs (big endian,
  /// then reduced: nearby byte values give nearby results).
  std::int64_t in_range(std::int64_t lo, std::int64_t hi) {
    if (hi <= lo) return lo;
    const std::uint64_t span = static_cast<std::uint64_t>(hi) - static_cast<std::uint64_t>(lo);
    std::uint64_t value = 0;
    for (std::uint64_t seen = 0; seen < span && !empty(); seen = (seen << 8) | 0xff) {
      value = (value << 8) | byte();
    }
    if (span != std::numeric_limits<std::uint64_t>::max()) value %= span + 1;
    return static_cast<std::int64_t>(static_cast<std::uint64_t>(lo) + value);
  }
  int int_in(int lo, int hi) { return static_cast<int>(in_range(lo, hi)); }

  bool flag() { return (byte() & 1) != 0; }
  /// True with probability about percent / 100 (an exhausted reader says no).
  bool chance(int percent) { return !empty() && byte() < percent * 256 / 100; }

  template <class T>
  const T& pick(std::span<const T> options) {
    return options[static_cast<std::size_t>(
        in_range(0, static_cast<std::int64_t>(options.size()) - 1))];
  }

  /// An int32 that breaks things: 0, +-1, the extremes, powers of two around
  /// the int32 and page-count limits, or any raw value.
  std::int32_t nasty_int32() {
    static constexpr std::int32_t kEdges[] = {0,
                                              1,
                                              -1,
                                              2,
                                              -2,
                                              255,
                                              256,
                                              257,
                                              65535,
                                              65536,
                                              (1 << 23) + 1,
                                              (1 << 30),
                                              std::numeric_limits<std::int32_t>::max(),
                                              std::numeric_limits<std::int32_t>::max() - 1,
                                              std::numeric_limits<std::int32_t>::max() - 255,
                                              std::numeric_limits<std::int32_t>::min(),
                                              std::numeric_limits<std::int32_t>::min() + 1};
    const int which = int_in(0, static_cast<int>(std::size(kEdges)));
    if (which < static_cast<int>(std::size(kEdges))) return kEdges[which];
    return static_cast<std::int32_t>(static_cast<std::uint32_t>(in_range(0, 0xffffffffll)));
  }

  /// Up to `max` of the remaining bytes as text.
  std::string text(std::size_t max) {
    const std::size_t n = std::min(max, remaining());
    std::string out(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return out;
  }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t pos_ = 0;
};

}  // namespace canopy::fuzz
