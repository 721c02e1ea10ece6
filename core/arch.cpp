// Arch: spelling and parsing of GPU targets.
#include "canopy/arch.hpp"

#include <fmt/format.h>

#include "canopy/error.hpp"

namespace canopy {

Arch Arch::parse(std::string_view text) {
  std::string_view rest = text;
  for (std::string_view prefix : {"compute_", "sm_", "sm"}) {
    if (rest.starts_with(prefix)) {
      rest.remove_prefix(prefix.size());
      break;
    }
  }
  Arch arch;
  arch.arch_specific = rest.ends_with('a');
  if (arch.arch_specific) rest.remove_suffix(1);
  bool digits = rest.size() >= 2 && rest.size() <= 3 && rest.front() != '0';
  for (char c : rest) digits = digits && c >= '0' && c <= '9';
  CANOPY_CHECK(digits, ErrorKind::kInvalidArgument,
               "arch '{}' is not a GPU target; expected e.g. sm_90a, 90a, sm_86 or 80", text);
  int number = 0;
  for (char c : rest) number = number * 10 + (c - '0');
  arch.major = number / 10;
  arch.minor = number % 10;
  return arch;
}

std::string Arch::id() const {
  return fmt::format("{}{}{}", major, minor, arch_specific ? "a" : "");
}

std::string Arch::to_string() const { return "sm_" + id(); }

std::string Arch::virtual_name() const { return "compute_" + id(); }

}  // namespace canopy
