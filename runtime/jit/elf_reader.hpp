// ElfImage: a bounds-checked reader of the ELF64 files NVRTC writes (cubins),
// without the CUDA driver. Symbols say which kernels a cubin exports; the
// sections carry what cubin_resources() reads (registers, shared memory).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace canopy {

struct ElfSymbol {
  std::string name;          ///< "" for unnamed (section and null) symbols
  bool is_function = false;  ///< STT_FUNC
  bool is_global = false;    ///< STB_GLOBAL or STB_WEAK
  std::uint64_t size = 0;
};

struct ElfSection {
  std::uint32_t name_offset = 0;  ///< into the section-name string table; see ElfImage::name
  std::uint32_t type = 0;         ///< SHT_*: 2 symbol table, 8 no bits (e.g. .nv.shared.*), ...
  std::uint64_t offset = 0;       ///< file offset of the contents
  std::uint64_t size = 0;         ///< bytes (for SHT_NOBITS: in memory, none in the file)
  std::uint32_t link = 0;         ///< symbol tables: index of their string table
  std::uint32_t info = 0;
  std::uint64_t entsize = 0;
};

/// A view of a little-endian ELF64 image (the caller keeps the bytes alive).
/// Every read is checked: malformed or truncated data throws
/// Error(kInvalidArgument) naming the problem, never reads out of bounds.
class ElfImage {
 public:
  static constexpr std::uint32_t kSymtab = 2;   ///< SHT_SYMTAB
  static constexpr std::uint32_t kNobits = 8;   ///< SHT_NOBITS
  static constexpr std::uint32_t kDynsym = 11;  ///< SHT_DYNSYM

  /// Checks the header and reads the section table.
  ElfImage(const void* data, std::size_t size);
  explicit ElfImage(const std::vector<char>& image) : ElfImage(image.data(), image.size()) {}

  const std::vector<ElfSection>& sections() const { return sections_; }
  /// The section's name, e.g. ".nv.info" (needs a valid e_shstrndx).
  std::string name(const ElfSection& section) const;
  /// Every entry of a symbol table (SHT_SYMTAB or SHT_DYNSYM), in index order.
  std::vector<ElfSymbol> symbols(const ElfSection& table) const;

  /// A little-endian field of type T at `offset` in the image.
  template <class T>
  T read(std::uint64_t offset, const char* what) const;
  /// The NUL-terminated string at `offset` inside string-table section `table`.
  std::string string_at(const ElfSection& table, std::uint64_t offset) const;

 private:
  void check_range(std::uint64_t offset, std::uint64_t bytes, const char* what) const;

  const unsigned char* data_;
  std::size_t size_;
  std::uint16_t names_index_ = 0;  ///< e_shstrndx
  std::vector<ElfSection> sections_;
};

template <class T>
T ElfImage::read(std::uint64_t offset, const char* what) const {
  check_range(offset, sizeof(T), what);
  T value;
  std::memcpy(&value, data_ + offset, sizeof(T));  // ELF for CUDA is little-endian, as the host
  return value;
}

/// Every named symbol of every symbol table.
std::vector<ElfSymbol> elf_symbols(const void* data, std::size_t size);
std::vector<ElfSymbol> elf_symbols(const std::vector<char>& image);

/// Names of the global function symbols (the kernels of a cubin).
std::vector<std::string> elf_function_names(const std::vector<char>& image);

}  // namespace canopy
