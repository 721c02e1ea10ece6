// Lists the symbols of a CUBIN (an ELF64 file) without the CUDA driver, so CI
// can check that a compiled kernel exports the expected entry point.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace canopy {

struct ElfSymbol {
  std::string name;
  bool is_function = false;  ///< STT_FUNC
  bool is_global = false;    ///< STB_GLOBAL or STB_WEAK
  std::uint64_t size = 0;
};

/// Every named symbol of every symbol table. Throws Error(kInvalidArgument)
/// naming the problem for data that is not a well-formed little-endian
/// ELF64 file (truncated, offsets out of range); never reads out of bounds.
std::vector<ElfSymbol> elf_symbols(const void* data, std::size_t size);
std::vector<ElfSymbol> elf_symbols(const std::vector<char>& image);

/// Names of the global function symbols (the kernels of a cubin).
std::vector<std::string> elf_function_names(const std::vector<char>& image);

}  // namespace canopy
