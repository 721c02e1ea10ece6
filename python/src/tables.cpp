// canopy.BlockTables: padded [batch, max_pages] or CSR (indptr, indices) host
// arrays -> canopy::BlockTables, validated by the C++ library (its messages
// name the request and the value).
#include "tables.hpp"

#include <fmt/format.h>
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <vector>

#include "bindings.hpp"
#include "canopy/error.hpp"
#include "canopy/spec.hpp"

namespace nb = nanobind;

namespace canopy::python {
namespace {

using Table2d = nb::ndarray<const std::int32_t, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using Array1d = nb::ndarray<const std::int32_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

std::vector<std::int32_t> to_vector(const Array1d& a) {
  return std::vector<std::int32_t>(a.data(), a.data() + a.shape(0));
}

/// A NumPy int32 copy of `v` (the caller may keep or change it freely).
nb::ndarray<nb::numpy, std::int32_t, nb::ndim<1>> to_numpy(const std::vector<std::int32_t>& v) {
  auto* copy = new std::vector<std::int32_t>(v);
  nb::capsule owner(copy,
                    [](void* p) noexcept { delete static_cast<std::vector<std::int32_t>*>(p); });
  return nb::ndarray<nb::numpy, std::int32_t, nb::ndim<1>>(copy->data(), {copy->size()}, owner);
}

/// Validates `t` for `page_size`; without `num_pages` it becomes the largest
/// used page id + 1 (the smallest KV cache the tables fit).
Tables finish(BlockTables t, int page_size, std::optional<std::int64_t> num_pages) {
  check_page_size(page_size);
  if (num_pages) {
    CANOPY_CHECK(*num_pages >= 0, ErrorKind::kInvalidArgument, "num_pages ({}) must be >= 0",
                 *num_pages);
    t.num_pages = *num_pages;
    t.validate(page_size);
  } else {
    t.validate(page_size, std::int64_t{1} << 31);
    std::int64_t max_page = -1;
    for (int r = 0; r < t.batch_size(); ++r) {
      const std::int64_t used = (std::int64_t{t.seq_lens[r]} + page_size - 1) / page_size;
      for (std::int64_t i = 0; i < used; ++i) {
        max_page = std::max<std::int64_t>(max_page, t.indices[t.indptr[r] + i]);
      }
    }
    t.num_pages = max_page + 1;
  }
  return Tables{std::move(t), page_size};
}

Tables from_padded(const Table2d& table, const Array1d& seq_lens, int page_size,
                   std::optional<std::int64_t> num_pages) {
  CANOPY_CHECK(table.shape(0) == seq_lens.shape(0), ErrorKind::kInvalidArgument,
               "block_tables has {} rows but seq_lens has {} entries (one per request)",
               table.shape(0), seq_lens.shape(0));
  const std::size_t batch = table.shape(0);
  const std::size_t max_pages = table.shape(1);
  CANOPY_CHECK(batch == 0 || max_pages >= 1, ErrorKind::kInvalidArgument,
               "block_tables has shape [{}, 0]: every request needs at least one page", batch);
  CANOPY_CHECK(max_pages <= static_cast<std::size_t>(INT32_MAX), ErrorKind::kInvalidArgument,
               "block_tables has {} columns, more than 2^31 - 1", max_pages);
  check_page_size(page_size);
  const std::vector<std::int32_t> flat(table.data(), table.data() + batch * max_pages);
  BlockTables t = batch == 0 ? BlockTables{{0}, {}, {}, 0}
                             : BlockTables::from_padded(flat, static_cast<int>(max_pages),
                                                        to_vector(seq_lens), 0, page_size);
  return finish(std::move(t), page_size, num_pages);
}

Tables from_csr(const Array1d& indptr, const Array1d& indices, const Array1d& seq_lens,
                int page_size, std::optional<std::int64_t> num_pages) {
  BlockTables t;
  t.indptr = to_vector(indptr);
  t.indices = to_vector(indices);
  t.seq_lens = to_vector(seq_lens);
  CANOPY_CHECK(!t.indptr.empty(), ErrorKind::kInvalidArgument,
               "indptr is empty; expected batch + 1 = {} entries", t.seq_lens.size() + 1);
  return finish(std::move(t), page_size, num_pages);
}

constexpr const char* kTablesDoc = R"(Per-request page lists (CSR) and lengths, validated.

Request r owns page ids indices[indptr[r]:indptr[r+1]] and seq_lens[r] KV tokens;
token t lives in page indices[indptr[r] + t // page_size], slot t % page_size.
Only the first ceil(seq_len / page_size) pages of a request are used. Build
with BlockTables.from_padded or BlockTables.from_csr (host int32 arrays);
canopy.plan() does this for you.)";

}  // namespace

void bind_tables(nb::module_& m) {
  nb::class_<Tables>(m, "BlockTables", kTablesDoc)
      .def_static("from_padded", &from_padded, nb::arg("block_tables"), nb::arg("seq_lens"),
                  nb::arg("page_size"), nb::arg("num_pages").none() = nb::none(),
                  R"(From a padded table.

Args:
  block_tables: int32 [batch, max_pages], host, C-contiguous; entries past a
    request's used pages are ignored (e.g. -1).
  seq_lens: int32 [batch], each >= 1.
  page_size: tokens per page.
  num_pages: pages in the KV cache (page ids must be below it); None: the
    largest used page id + 1.)")
      .def_static("from_csr", &from_csr, nb::arg("indptr"), nb::arg("indices"), nb::arg("seq_lens"),
                  nb::arg("page_size"), nb::arg("num_pages").none() = nb::none(),
                  R"(From CSR arrays.

Args:
  indptr: int32 [batch + 1], indptr[0] == 0, non-decreasing.
  indices: int32 [indptr[-1]] page ids.
  seq_lens: int32 [batch], each >= 1.
  page_size: tokens per page.
  num_pages: pages in the KV cache; None: the largest used page id + 1.)")
      .def_prop_ro(
          "indptr", [](const Tables& t) { return to_numpy(t.tables.indptr); }, nb::rv_policy::move,
          "int32 [batch + 1] (a copy).")
      .def_prop_ro(
          "indices", [](const Tables& t) { return to_numpy(t.tables.indices); },
          nb::rv_policy::move, "int32 [indptr[-1]] page ids (a copy).")
      .def_prop_ro(
          "seq_lens", [](const Tables& t) { return to_numpy(t.tables.seq_lens); },
          nb::rv_policy::move, "int32 [batch] (a copy).")
      .def_prop_ro(
          "num_pages", [](const Tables& t) { return t.tables.num_pages; },
          "Pages in the KV cache the tables were checked against.")
      .def_prop_ro("page_size", [](const Tables& t) { return t.page_size; })
      .def_prop_ro("batch_size", [](const Tables& t) { return t.tables.batch_size(); })
      .def("__repr__", [](const Tables& t) {
        return fmt::format("BlockTables(batch_size={}, num_indices={}, num_pages={}, page_size={})",
                           t.tables.batch_size(), t.tables.indices.size(), t.tables.num_pages,
                           t.page_size);
      });
}

}  // namespace canopy::python
