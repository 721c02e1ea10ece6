// canopy.BlockTables: canopy::BlockTables and the page size it was checked for.
#pragma once

#include "canopy/batch.hpp"

namespace canopy::python {

struct Tables {
  BlockTables tables;  ///< CSR, validated for page_size and num_pages
  int page_size = 16;
};

}  // namespace canopy::python
