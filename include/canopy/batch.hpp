// Batch input in the forms serving engines already hold: block tables + lengths.
#pragma once

#include <cstdint>
#include <vector>

namespace canopy {

/// Per-request block tables as CSR: request r owns page ids
/// indices[indptr[r] .. indptr[r+1]) and seq_lens[r] KV tokens. The first
/// ceil(seq_len / page_size) pages are used, the rest ignored; token t of the
/// request lives in page indices[indptr[r] + t / page_size], slot t % page_size.
/// Canopy discovers the shared prefixes itself (see PrefixTree).
struct BlockTables {
  std::vector<std::int32_t> indptr;    ///< [batch + 1], indptr[0] == 0, non-decreasing
  std::vector<std::int32_t> indices;   ///< [indptr.back()] page ids
  std::vector<std::int32_t> seq_lens;  ///< [batch] tokens per request, >= 1
  std::int64_t num_pages = 0;          ///< pages in the KV cache; ids must be < this

  int batch_size() const { return static_cast<int>(seq_lens.size()); }

  /// Throws Error(kInvalidArgument) naming the request and the value unless
  /// the tables are well formed for pages of `page_size` tokens: indptr is a
  /// CSR index of indices (batch + 1 entries from 0 to indices.size(),
  /// non-decreasing), every seq_len is >= 1 and fits its table, and every
  /// used page id lies in [0, page_limit) (default: num_pages). An empty
  /// batch is well formed. Every entry point that takes tables checks them
  /// here, so all reject bad tables with the same message.
  void validate(int page_size) const { validate(page_size, num_pages); }
  void validate(int page_size, std::int64_t page_limit) const;

  /// From a padded table [batch, max_pages] (row-major; entries past a request's
  /// used pages are ignored and may hold any value, e.g. -1).
  static BlockTables from_padded(const std::vector<std::int32_t>& table, int max_pages,
                                 const std::vector<std::int32_t>& seq_lens, std::int64_t num_pages,
                                 int page_size);
};

/// An explicit prefix tree, for research use: each node owns a run of whole
/// pages (its KV tokens continue its parent's); requests are attached to the
/// node where their sequence ends, which may be an inner node.
struct ExplicitTree {
  struct Node {
    int parent = -1;                  ///< -1 for a root; several roots allowed
    std::vector<std::int32_t> pages;  ///< this node's pages, in order
    int num_tokens = 0;  ///< tokens in pages; only a childless node's last page may be partial
    std::vector<int> requests;  ///< requests whose sequence ends here
  };
  std::vector<Node> nodes;
  int batch_size = 0;  ///< every request 0..batch_size-1 ends at exactly one node
  std::int64_t num_pages = 0;
};

}  // namespace canopy
