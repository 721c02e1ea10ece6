// A batch's shape class: the key under which canopy-tune records the
// planner choice measured fastest (docs/tuning.md, "Shape classes"). Two
// batches share a class when the planner's decisions would price alike:
// every crossover of the cost model (memory- or math-bound, overhead- or
// stream-bound, enough items to fill the SMs) is a ratio, so log2 buckets of
// rows, lengths and counts keep a class within a factor of two of each term.
#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <vector>

#include "canopy/tuning.hpp"

namespace canopy {

namespace {

// floor(log2(v)) + 1 for v >= 1, 0 for v <= 0: 1 -> 1, 2..3 -> 2, 4..7 -> 3.
int bucket(std::int64_t v) {
  return v <= 0 ? 0 : static_cast<int>(std::bit_width(static_cast<std::uint64_t>(v)));
}

// Depths beyond this share the last level's bucket (deep trees are rare and
// their lower levels short).
constexpr int kMaxLevels = 4;

}  // namespace

std::string shape_class(const AttentionSpec& spec, const PrefixTree& tree) {
  std::string key = fmt::format("d{}.{}.g{}.h{}.p{}|b{}", spec.head_dim, to_string(spec.kv_dtype),
                                spec.num_kv_heads > 0 ? spec.num_qo_heads / spec.num_kv_heads : 0,
                                bucket(spec.num_kv_heads), spec.page_size, bucket(tree.batch_size));
  const int levels = std::min(tree.max_depth(), kMaxLevels);
  for (int level = 0; level < levels; ++level) {
    // Nodes of this level (the last bucket takes every deeper one), their
    // median length and their mean number of children.
    std::vector<std::int32_t> lengths;
    std::int64_t children = 0;
    for (const PrefixTree::Node& n : tree.nodes) {
      if (n.depth == level || (level == kMaxLevels - 1 && n.depth > level)) {
        lengths.push_back(n.num_tokens);
        children += n.child_count;
      }
    }
    if (lengths.empty()) break;
    std::nth_element(lengths.begin(), lengths.begin() + lengths.size() / 2, lengths.end());
    const auto nodes = static_cast<std::int64_t>(lengths.size());
    key += fmt::format("|L{}:n{}.f{}.t{}", level, bucket(nodes),
                       bucket((children + nodes / 2) / nodes), bucket(lengths[lengths.size() / 2]));
  }
  return key;
}

}  // namespace canopy
