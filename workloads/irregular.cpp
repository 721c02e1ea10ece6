#include "workloads/irregular.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <unordered_set>
#include <utility>

#include "canopy/error.hpp"

namespace canopy::workload {
namespace {

// SplitMix64 with modulo range reduction: the same numbers on every standard
// library (std:: distributions are implementation-defined).
class Rng {
 public:
  explicit Rng(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  int uniform(int lo, int hi) {  // [lo, hi]
    return lo + static_cast<int>(next() % static_cast<std::uint64_t>(hi - lo + 1));
  }
  bool chance(double p) { return static_cast<double>(next() >> 11) * 0x1.0p-53 < p; }

 private:
  std::uint64_t state_;
};

class ForestBuilder {
 public:
  ForestBuilder(std::uint64_t seed, const IrregularOptions& o) : rng_(seed), o_(o) {}

  IrregularForest build() {
    depth_ = rng_.uniform(o_.min_depth, o_.max_depth);
    const int roots = std::min(o_.requests, rng_.uniform(o_.min_roots, o_.max_roots));
    for (const int n : partition(o_.requests, roots)) grow(-1, 1, n);
    f_.roots = roots;
    // Requests are numbered in tree order, then some swapped: batches list
    // requests roughly by arrival, not by prefix.
    std::vector<int>& order = f_.request_node;
    for (int i = 0; i < static_cast<int>(order.size()) / 10; ++i) {
      std::swap(order[rng_.uniform(0, static_cast<int>(order.size()) - 1)],
                order[rng_.uniform(0, static_cast<int>(order.size()) - 1)]);
    }
    return std::move(f_);
  }

 private:
  // A length no other node has: drawn in 1..max, then the next free one up.
  int fresh_length(int max) {
    int t = rng_.uniform(1, std::max(1, max));
    while (!lengths_.insert(t).second) ++t;
    return t;
  }

  // `n` >= 1 parts summing to `total`, each at least 1, uniform over compositions.
  std::vector<int> partition(int total, int n) {
    std::vector<int> cuts(n - 1);
    for (int& c : cuts) c = rng_.uniform(0, total - n);
    std::sort(cuts.begin(), cuts.end());
    std::vector<int> parts(n);
    int prev = 0;
    for (int i = 0; i < n; ++i) {
      const int cut = i + 1 < n ? cuts[i] : total - n;
      parts[i] = 1 + cut - prev;
      prev = cut;
    }
    return parts;
  }

  // A node at `level` (1: a root) with `n` requests in its subtree.
  void grow(int parent, int level, int n) {
    const int id = static_cast<int>(f_.parent.size());
    const bool leaf = n == 1;
    const int max = level == 1 ? o_.root_tokens_max
                    : leaf     ? o_.leaf_tokens_max
                               : o_.inner_tokens_max;
    f_.parent.push_back(parent);
    f_.tokens.push_back(fresh_length(max));
    f_.depth = std::max(f_.depth, level);
    if (leaf) {
      f_.request_node.push_back(id);
      return;
    }
    const bool own = rng_.chance(o_.inner_request_prob);
    if (own) {
      f_.request_node.push_back(id);
      --n;
    }
    int k = n;  // the level before the last: every remaining request its own leaf
    if (level + 1 < depth_) {
      // Fan-outs that reach the drawn depth: about n^(1 / levels left) each.
      const double spread = std::pow(n, 1.0 / (depth_ - level));
      const int most =
          std::max(2, std::min(o_.max_fanout, static_cast<int>(std::ceil(2 * spread))));
      // Without a request of its own a single child would merge into this node.
      k = rng_.uniform(own ? 1 : std::min(2, n), std::min(n, most));
    }
    for (const int part : partition(n, k)) grow(id, level + 1, part);
  }

  Rng rng_;
  const IrregularOptions& o_;
  IrregularForest f_;
  std::unordered_set<int> lengths_;
  int depth_ = 0;
};

}  // namespace

IrregularForest irregular_forest(std::uint64_t seed, const IrregularOptions& options) {
  CANOPY_CHECK(options.requests >= 1 && options.min_depth >= 1 &&
                   options.min_depth <= options.max_depth && options.min_roots >= 1 &&
                   options.min_roots <= options.max_roots && options.max_fanout >= 2,
               ErrorKind::kInvalidArgument,
               "irregular forest: need requests >= 1, 1 <= min_depth <= max_depth, 1 <= "
               "min_roots <= max_roots, max_fanout >= 2");
  return ForestBuilder(seed, options).build();
}

BlockTables irregular_tables(const IrregularForest& forest, int page_size) {
  check_page_size(page_size);
  const int nodes = static_cast<int>(forest.parent.size());
  // Per node: its own new pages (the inherited tail included) and the tokens
  // of its partly filled last page, which each child copies into a fresh one.
  std::vector<std::vector<std::int32_t>> own(nodes);
  std::vector<int> tail(nodes, 0);
  std::vector<std::int64_t> full(nodes, 0);  // full pages on the path to the node's end
  std::int32_t next_page = 0;
  for (int n = 0; n < nodes; ++n) {
    const int p = forest.parent[n];
    const int tokens = (p >= 0 ? tail[p] : 0) + forest.tokens[n];
    for (int i = 0; i < tokens / page_size; ++i) own[n].push_back(next_page++);
    tail[n] = tokens % page_size;
    full[n] = (p >= 0 ? full[p] : 0) + tokens / page_size;
  }
  std::vector<char> has_children(nodes, 0);
  for (int n = 0; n < nodes; ++n) {
    if (forest.parent[n] >= 0) has_children[forest.parent[n]] = 1;
  }
  BlockTables tables;
  tables.indptr.push_back(0);
  std::vector<int> path;
  for (const int node : forest.request_node) {
    path.clear();
    for (int n = node; n >= 0; n = forest.parent[n]) path.push_back(n);
    for (auto it = path.rbegin(); it != path.rend(); ++it) {
      tables.indices.insert(tables.indices.end(), own[*it].begin(), own[*it].end());
    }
    std::int64_t len = full[node] * page_size;
    // An inner request with a full page stops at it; otherwise it copies the tail.
    if (tail[node] > 0 && (!has_children[node] || full[node] == 0)) {
      tables.indices.push_back(next_page++);
      len += tail[node];
    }
    tables.indptr.push_back(static_cast<std::int32_t>(tables.indices.size()));
    tables.seq_lens.push_back(static_cast<std::int32_t>(len));
  }
  tables.num_pages = next_page;
  return tables;
}

Workload irregular_workload(std::uint64_t seed, const IrregularOptions& options) {
  const IrregularForest forest = irregular_forest(seed, options);
  // GQA group and page size from a stream of their own: the forest does not
  // change when only they are fixed.
  Rng rng(seed ^ 0x5DEECE66Dull);
  const int group = options.group > 0 ? options.group : rng.uniform(1, 8);
  const int page_size = options.page_size > 0 ? options.page_size : 1 << rng.uniform(0, 8);
  Workload w;
  w.name = fmt::format("irr-{}-s{}", options.requests, seed);
  w.model = fmt::format("gqa{}", group);
  w.spec.num_kv_heads = options.num_kv_heads;
  w.spec.num_qo_heads = options.num_kv_heads * group;
  w.spec.head_dim = options.head_dim;
  w.spec.page_size = page_size;
  w.tables = irregular_tables(forest, page_size);
  return w;
}

BlockTables churn_step(const BlockTables& tables, int page_size, std::uint64_t seed, int finish,
                       int join) {
  const int batch = tables.batch_size();
  CANOPY_CHECK(finish >= 0 && join >= 0 && finish < batch, ErrorKind::kInvalidArgument,
               "churn_step: {} of {} requests cannot finish", finish, batch);
  Rng rng(seed);
  std::vector<char> leaves(batch, 0);
  for (int i = 0; i < finish;) {
    const int r = rng.uniform(0, batch - 1);
    if (leaves[r] == 0) {
      leaves[r] = 1;
      ++i;
    }
  }
  const BlockTables grown = decode_step(tables, page_size);
  BlockTables next;
  next.num_pages = grown.num_pages;
  next.indptr.push_back(0);
  const auto append = [&](const std::int32_t* pages, std::int32_t count, std::int32_t len) {
    next.indices.insert(next.indices.end(), pages, pages + count);
    next.indptr.push_back(static_cast<std::int32_t>(next.indices.size()));
    next.seq_lens.push_back(len);
  };
  for (int r = 0; r < batch; ++r) {
    if (leaves[r] == 0) {
      append(grown.indices.data() + grown.indptr[r], grown.indptr[r + 1] - grown.indptr[r],
             grown.seq_lens[r]);
    }
  }
  // Arrivals share a random request's full pages up to a random one, then a
  // fresh tail of their own (a new turn, a new sample).
  std::vector<std::int32_t> pages;
  for (int j = 0; j < join; ++j) {
    const int from = rng.uniform(0, batch - 1);
    const std::int32_t* src = grown.indices.data() + grown.indptr[from];
    const std::int32_t full = grown.seq_lens[from] / page_size;
    const std::int32_t shared = full > 0 ? rng.uniform(0, full) : 0;
    const std::int32_t tail = rng.uniform(1, 512);
    pages.assign(src, src + shared);
    for (std::int32_t t = 0; t < tail; t += page_size) {
      pages.push_back(static_cast<std::int32_t>(next.num_pages++));
    }
    append(pages.data(), static_cast<std::int32_t>(pages.size()), shared * page_size + tail);
  }
  return next;
}

}  // namespace canopy::workload
