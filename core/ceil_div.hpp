// Rounding-up division in 64 bits, for page, tile and piece counts: written
// inline in int32 it overflowed for lengths near 2^31, and came back after a
// rewrite (both found by fuzzing; docs/reliability.md).
#pragma once

#include <cstdint>

namespace canopy {

constexpr std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

}  // namespace canopy
