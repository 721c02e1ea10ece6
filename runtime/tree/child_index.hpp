// ChildIndex: (parent node, first element key) -> child node, an open-addressing
// hash map. Tree discovery does one lookup per request per branch point.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

namespace canopy {

class ChildIndex {
 public:
  /// Empties the index, with room for `entries` without growing. A slot is
  /// empty unless it carries the current generation, so a table of the right
  /// size is emptied without clearing it.
  void reserve(std::size_t entries) {
    std::size_t capacity = 16;
    while (capacity < 2 * entries) capacity *= 2;
    size_ = 0;
    if (capacity <= slots_.size() && ++generation_ != 0) return;
    slots_.assign(std::max(capacity, slots_.size()), Slot{});
    generation_ = 1;
  }
  /// The child of `parent` whose first element is `key`, or -1.
  int find(int parent, std::uint64_t key) const {
    for (std::size_t i = hash(parent, key) & mask();; i = (i + 1) & mask()) {
      if (slots_[i].generation != generation_) return -1;
      if (slots_[i].key == key && slots_[i].parent == parent) return slots_[i].value;
    }
  }
  void insert(int parent, std::uint64_t key, int child) {
    if (2 * (size_ + 1) > slots_.size()) grow();
    put(parent, key, child);
  }
  /// Points an existing entry at another child (used when a node is split).
  void replace(int parent, std::uint64_t key, int child) { put(parent, key, child); }

 private:
  struct Slot {
    std::uint64_t key = 0;
    int parent = 0;
    int value = -1;
    std::uint32_t generation = 0;  // != generation_: empty
  };
  static std::size_t hash(int parent, std::uint64_t key) {
    std::uint64_t x = key * 0x9E3779B97F4A7C15ull ^ static_cast<std::uint64_t>(parent);
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    return static_cast<std::size_t>(x ^ (x >> 29));
  }
  std::size_t mask() const { return slots_.size() - 1; }
  void put(int parent, std::uint64_t key, int value) {
    for (std::size_t i = hash(parent, key) & mask();; i = (i + 1) & mask()) {
      if (slots_[i].generation != generation_) {
        slots_[i] = {key, parent, value, generation_};
        ++size_;
        return;
      }
      if (slots_[i].key == key && slots_[i].parent == parent) {
        slots_[i].value = value;
        return;
      }
    }
  }
  void grow() {
    std::vector<Slot> old = std::move(slots_);
    const std::uint32_t live = generation_;
    slots_.assign(old.size() * 2, Slot{});
    generation_ = 1;
    size_ = 0;
    for (const Slot& s : old) {
      if (s.generation == live) put(s.parent, s.key, s.value);
    }
  }
  std::vector<Slot> slots_;
  std::size_t size_ = 0;
  std::uint32_t generation_ = 1;
};

}  // namespace canopy
