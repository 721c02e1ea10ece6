#include "tests/test_data.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <numeric>

namespace canopy::test {

HostResult run_reference(const HostProblem& problem, bool with_lse) {
  HostResult r;
  r.out.assign(static_cast<std::size_t>(problem.out_elems()), 0.0);
  if (with_lse) r.lse.assign(static_cast<std::size_t>(problem.lse_elems()), 0.0);
  reference_attention(problem.spec, problem.tables, problem.tensors(), r.out.data(),
                      with_lse ? r.lse.data() : nullptr);
  return r;
}

HostResult run_plan_cpu(const Plan& plan, const HostProblem& problem, bool with_lse) {
  HostResult r;
  r.out.assign(static_cast<std::size_t>(problem.out_elems()), 0.0);
  if (with_lse) r.lse.assign(static_cast<std::size_t>(problem.lse_elems()), 0.0);
  execute_plan_cpu(plan, problem.tensors(), r.out.data(), with_lse ? r.lse.data() : nullptr);
  return r;
}

BlockTables tables_of_explicit(const ExplicitTree& tree) {
  BlockTables t;
  t.num_pages = tree.num_pages;
  std::vector<int> at(static_cast<std::size_t>(tree.batch_size), -1);
  for (std::size_t n = 0; n < tree.nodes.size(); ++n)
    for (int r : tree.nodes[n].requests) at[static_cast<std::size_t>(r)] = static_cast<int>(n);
  t.indptr.push_back(0);
  for (int r = 0; r < tree.batch_size; ++r) {
    std::vector<int> path;
    for (int n = at[static_cast<std::size_t>(r)]; n >= 0;
         n = tree.nodes[static_cast<std::size_t>(n)].parent)
      path.push_back(n);
    std::reverse(path.begin(), path.end());
    std::int32_t len = 0;
    for (int n : path) {
      const auto& node = tree.nodes[static_cast<std::size_t>(n)];
      t.indices.insert(t.indices.end(), node.pages.begin(), node.pages.end());
      len += node.num_tokens;
    }
    t.seq_lens.push_back(len);
    t.indptr.push_back(static_cast<std::int32_t>(t.indices.size()));
  }
  return t;
}

RandomTree random_tree(std::mt19937_64& rng, const RandomTreeOptions& opt) {
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  auto chance = [&](double p) { return std::uniform_real_distribution<double>(0, 1)(rng) < p; };
  const int ps = opt.page_size;

  struct Gen {
    int parent;
    int depth;  // 1 for roots
    int children = 0;
  };
  std::vector<Gen> gen;
  const int roots = uniform(opt.min_roots, std::max(opt.min_roots, opt.max_roots));
  // A spine from root 0 of a random depth, so that deep trees actually occur.
  const int spine = uniform(1, std::max(1, opt.max_depth));
  gen.push_back({-1, 1});
  for (int d = 2; d <= spine; ++d) {
    gen.back().children++;
    gen.push_back({static_cast<int>(gen.size()) - 1, d});
  }
  for (int r = 1; r < roots; ++r) gen.push_back({-1, 1});
  const int target =
      uniform(static_cast<int>(gen.size()), std::max(static_cast<int>(gen.size()), opt.max_nodes));
  for (int tries = 0; static_cast<int>(gen.size()) < target && tries < 20 * target; ++tries) {
    const int p = uniform(0, static_cast<int>(gen.size()) - 1);
    Gen& g = gen[static_cast<std::size_t>(p)];
    if (g.depth >= opt.max_depth || g.children >= opt.max_fanout) continue;
    g.children++;
    gen.push_back({p, g.depth + 1});
  }

  // Pages: a random permutation of the cache, handed out in node order.
  int total_pages = 0;
  std::vector<int> page_count(gen.size());
  for (auto& c : page_count) total_pages += (c = uniform(1, std::max(1, opt.max_pages_per_node)));
  const int num_pages =
      total_pages + static_cast<int>(std::ceil(total_pages * std::max(0.0, opt.spare_pages)));
  std::vector<std::int32_t> ids(static_cast<std::size_t>(num_pages));
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);

  RandomTree out;
  ExplicitTree& tree = out.tree;
  tree.num_pages = num_pages;
  tree.nodes.resize(gen.size());
  std::vector<int> request_nodes;  // one entry per request, the node it ends at
  std::size_t next_page = 0;
  for (std::size_t n = 0; n < gen.size(); ++n) {
    auto& node = tree.nodes[n];
    node.parent = gen[n].parent;
    const int pc = page_count[n];
    node.pages.assign(ids.begin() + static_cast<std::ptrdiff_t>(next_page),
                      ids.begin() + static_cast<std::ptrdiff_t>(next_page + pc));
    next_page += static_cast<std::size_t>(pc);
    const bool leaf = gen[n].children == 0;
    node.num_tokens = pc * ps;
    if (leaf && ps > 1 && chance(opt.partial_leaf_prob)) node.num_tokens -= uniform(1, ps - 1);
    if (leaf || chance(opt.inner_request_prob)) {
      request_nodes.push_back(static_cast<int>(n));
      if (chance(opt.duplicate_prob)) request_nodes.push_back(static_cast<int>(n));
    }
  }
  std::shuffle(request_nodes.begin(), request_nodes.end(), rng);
  tree.batch_size = static_cast<int>(request_nodes.size());
  for (int r = 0; r < tree.batch_size; ++r)
    tree.nodes[static_cast<std::size_t>(request_nodes[static_cast<std::size_t>(r)])]
        .requests.push_back(r);

  // Tables: each request's path, sometimes followed by unused trailing pages.
  BlockTables used = tables_of_explicit(tree);
  BlockTables& t = out.tables;
  t.num_pages = num_pages;
  t.seq_lens = used.seq_lens;
  t.indptr.push_back(0);
  for (int r = 0; r < tree.batch_size; ++r) {
    t.indices.insert(t.indices.end(), used.indices.begin() + used.indptr[r],
                     used.indices.begin() + used.indptr[r + 1]);
    if (chance(opt.extra_table_pages_prob)) {
      const int extra = uniform(1, 2);
      for (int i = 0; i < extra; ++i) t.indices.push_back(uniform(0, num_pages - 1));
    }
    t.indptr.push_back(static_cast<std::int32_t>(t.indices.size()));
  }
  return out;
}

BlockTables random_tree_tables(std::mt19937_64& rng, const RandomTreeOptions& options) {
  return random_tree(rng, options).tables;
}

std::string expect_error(const std::function<void()>& fn, ErrorKind kind,
                         std::initializer_list<std::string> needles) {
  try {
    fn();
  } catch (const Error& e) {
    std::string problems;
    if (e.kind() != kind)
      problems +=
          std::string("kind is ") + to_string(e.kind()) + ", expected " + to_string(kind) + "; ";
    const std::string what = e.what();
    for (const auto& n : needles)
      if (what.find(n) == std::string::npos) problems += "message lacks \"" + n + "\"; ";
    if (!problems.empty()) problems += "message: " + what;
    return problems;
  } catch (const std::exception& e) {
    return std::string("threw a non-canopy exception: ") + e.what();
  }
  return "did not throw";
}

}  // namespace canopy::test
