// Strict integers from JSON documents (plan JSON, batch files).
// nlohmann::json's implicit conversions static_cast whatever the document
// holds: 1e300 into an int is undefined behaviour and 2^32 + 8 silently
// becomes 8 (found by fuzzing). json_int accepts only an integer that fits.
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "canopy/error.hpp"

namespace canopy {

template <class Int>
Int json_int(const nlohmann::json& value, std::string_view field) {
  constexpr auto lo = static_cast<std::int64_t>(std::numeric_limits<Int>::min());
  constexpr auto hi = static_cast<std::uint64_t>(std::numeric_limits<Int>::max());
  bool fits = false;
  if (value.is_number_unsigned()) {
    fits = value.get<std::uint64_t>() <= hi;
  } else if (value.is_number_integer()) {
    const auto v = value.get<std::int64_t>();
    fits = v >= lo && (v < 0 || static_cast<std::uint64_t>(v) <= hi);
  }
  if (!fits) {
    std::string text = value.dump();
    if (text.size() > 40) text = text.substr(0, 40) + "...";
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("{} must be an integer in [{}, {}], got {}", field, lo, hi, text));
  }
  return value.is_number_unsigned() ? static_cast<Int>(value.get<std::uint64_t>())
                                    : static_cast<Int>(value.get<std::int64_t>());
}

}  // namespace canopy
