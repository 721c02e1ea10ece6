// BlockTables: building them from padded tables.
#include "canopy/batch.hpp"

#include <algorithm>

#include "canopy/error.hpp"

namespace canopy {

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
    const std::int64_t needed = (std::int64_t{seq_lens[r]} + page_size - 1) / page_size;
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
