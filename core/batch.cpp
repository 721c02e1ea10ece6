// BlockTables: the one validation of block tables, and building them from
// padded tables.
#include "canopy/batch.hpp"

#include <algorithm>
#include <cstdint>

#include "canopy/error.hpp"
#include "canopy/spec.hpp"
#include "core/ceil_div.hpp"

namespace canopy {

namespace {

// Index of the first page id outside [0, page_limit) in pages[0 .. n), or n.
// The tables are checked on every plan, so the scan is branch-free and
// vectorizes: with lim = min(page_limit, 2^31) - 1, a page is in range iff
// neither page nor lim - page is negative, i.e. neither has the sign bit set.
std::int64_t first_bad_page(const std::int32_t* pages, std::int64_t n, std::int64_t page_limit) {
  const auto lim = static_cast<std::uint32_t>(
      std::clamp<std::int64_t>(page_limit, 0, std::int64_t{1} << 31) - 1);
  std::uint32_t signs = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const auto page = static_cast<std::uint32_t>(pages[i]);
    signs |= page | (lim - page);
  }
  if ((signs >> 31) == 0) return n;
  std::int64_t i = 0;
  while (pages[i] >= 0 && pages[i] < page_limit) ++i;
  return i;
}

}  // namespace

void BlockTables::validate(int page_size, std::int64_t page_limit) const {
  check_page_size(page_size);
  const std::size_t batch = seq_lens.size();
  CANOPY_CHECK(indptr.size() == batch + 1, ErrorKind::kInvalidArgument,
               "indptr has {} entries, expected batch + 1 = {}", indptr.size(), batch + 1);
  CANOPY_CHECK(indptr[0] == 0, ErrorKind::kInvalidArgument, "indptr[0] must be 0, got {}",
               indptr[0]);
  CANOPY_CHECK(static_cast<std::size_t>(indptr.back()) == indices.size(),
               ErrorKind::kInvalidArgument, "indptr[{}] = {} but indices has {} entries", batch,
               indptr.back(), indices.size());
  for (std::size_t r = 0; r < batch; ++r) {
    const std::int64_t held = std::int64_t{indptr[r + 1]} - indptr[r];
    CANOPY_CHECK(held >= 0, ErrorKind::kInvalidArgument, "request {}: indptr decreases ({} -> {})",
                 r, indptr[r], indptr[r + 1]);
    // Within indices too: a later decrease back to indices.size() would let
    // this request's pages be read past the end (found by fuzzing).
    CANOPY_CHECK(static_cast<std::size_t>(indptr[r + 1]) <= indices.size(),
                 ErrorKind::kInvalidArgument,
                 "request {}: indptr[{}] = {} is past the end of indices ({} entries)", r, r + 1,
                 indptr[r + 1], indices.size());
    const std::int64_t len = seq_lens[r];
    CANOPY_CHECK(len >= 1, ErrorKind::kInvalidArgument,
                 "request {}: seq_len is {}, must be at least 1", r, len);
    const std::int64_t needed = ceil_div(len, page_size);
    CANOPY_CHECK(needed <= held, ErrorKind::kInvalidArgument,
                 "request {}: seq_len {} needs {} pages of {} tokens but its table holds {}", r,
                 len, needed, page_size, held);
    const std::int32_t* pages = indices.data() + indptr[r];
    const std::int64_t i = first_bad_page(pages, needed, page_limit);
    CANOPY_CHECK(i == needed, ErrorKind::kInvalidArgument,
                 "request {}: page id {} at table position {} is out of range [0, {})", r,
                 i < needed ? pages[i] : 0, i, page_limit);
  }
}

BlockTables BlockTables::from_padded(const std::vector<std::int32_t>& table, int max_pages,
                                     const std::vector<std::int32_t>& seq_lens,
                                     std::int64_t num_pages, int page_size) {
  CANOPY_CHECK(max_pages >= 1 && page_size >= 1, ErrorKind::kInvalidArgument,
               "padded table: max_pages ({}) and page_size ({}) must be >= 1", max_pages,
               page_size);
  CANOPY_CHECK(table.size() == seq_lens.size() * static_cast<std::size_t>(max_pages),
               ErrorKind::kInvalidArgument,
               "padded table has {} entries, expected batch {} x max_pages {}", table.size(),
               seq_lens.size(), max_pages);
  BlockTables t;
  t.num_pages = num_pages;
  t.seq_lens = seq_lens;
  t.indptr.push_back(0);
  for (std::size_t r = 0; r < seq_lens.size(); ++r) {
    const std::int64_t needed = ceil_div(seq_lens[r], page_size);
    CANOPY_CHECK(needed <= max_pages, ErrorKind::kInvalidArgument,
                 "request {}: seq_len {} needs {} pages of {} tokens but its table holds {}", r,
                 seq_lens[r], needed, page_size, max_pages);
    const std::int64_t used = std::max<std::int64_t>(needed, 0);
    t.indices.insert(t.indices.end(), table.begin() + r * max_pages,
                     table.begin() + r * max_pages + used);
    t.indptr.push_back(static_cast<std::int32_t>(t.indices.size()));
  }
  return t;
}

}  // namespace canopy
