// A bounds-checked reader for the few ELF64 structures a symbol list needs.
#include "runtime/jit/elf_symbols.hpp"

#include <fmt/format.h>

#include <cstring>

#include "canopy/error.hpp"

namespace canopy {

namespace {

constexpr std::uint32_t kShtSymtab = 2;
constexpr std::uint32_t kShtDynsym = 11;
constexpr std::size_t kEhdrSize = 64;
constexpr std::size_t kShdrSize = 64;
constexpr std::size_t kSymSize = 24;

/// Little-endian field reads that throw instead of running off the end.
class Reader {
 public:
  Reader(const unsigned char* data, std::size_t size) : data_(data), size_(size) {}

  template <class T>
  T read(std::uint64_t offset, const char* what) const {
    if (offset > size_ || sizeof(T) > size_ - offset) {
      throw Error(ErrorKind::kInvalidArgument,
                  fmt::format("ELF image truncated: {} at offset {} needs {} bytes, image has {}",
                              what, offset, sizeof(T), size_));
    }
    T value;
    std::memcpy(&value, data_ + offset, sizeof(T));  // ELF for CUDA is little-endian, as the host
    return value;
  }

  /// A NUL-terminated string inside [begin, end) of the image.
  std::string c_string(std::uint64_t begin, std::uint64_t end, std::uint64_t offset) const {
    if (end > size_ || begin > end || offset >= end - begin) {
      throw Error(ErrorKind::kInvalidArgument,
                  fmt::format("ELF string offset {} outside its table ({} bytes)", offset,
                              end > begin ? end - begin : 0));
    }
    const char* first = reinterpret_cast<const char*>(data_ + begin + offset);
    const void* nul = std::memchr(first, '\0', end - begin - offset);
    if (nul == nullptr) throw Error(ErrorKind::kInvalidArgument, "ELF string is not terminated");
    return std::string(first, static_cast<const char*>(nul));
  }

  std::size_t size() const { return size_; }

 private:
  const unsigned char* data_;
  std::size_t size_;
};

struct Section {
  std::uint32_t type;
  std::uint64_t offset;
  std::uint64_t size;
  std::uint32_t link;
  std::uint64_t entsize;
};

Section read_section(const Reader& r, std::uint64_t shoff, std::uint64_t index) {
  const std::uint64_t base = shoff + index * kShdrSize;
  Section s;
  s.type = r.read<std::uint32_t>(base + 4, "sh_type");
  s.offset = r.read<std::uint64_t>(base + 24, "sh_offset");
  s.size = r.read<std::uint64_t>(base + 32, "sh_size");
  s.link = r.read<std::uint32_t>(base + 40, "sh_link");
  s.entsize = r.read<std::uint64_t>(base + 56, "sh_entsize");
  if (s.offset > r.size() || s.size > r.size() - s.offset) {
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("ELF section {} [{}, +{}) lies outside the {}-byte image", index,
                            s.offset, s.size, r.size()));
  }
  return s;
}

}  // namespace

std::vector<ElfSymbol> elf_symbols(const void* data, std::size_t size) {
  const Reader r(static_cast<const unsigned char*>(data), size);
  check(data != nullptr && size >= kEhdrSize, ErrorKind::kInvalidArgument,
        fmt::format("not an ELF image: {} bytes, an ELF64 header needs {}", size, kEhdrSize));
  const auto* bytes = static_cast<const unsigned char*>(data);
  check(std::memcmp(bytes,
                    "\x7f"
                    "ELF",
                    4) == 0,
        ErrorKind::kInvalidArgument, "not an ELF image: bad magic");
  check(bytes[4] == 2, ErrorKind::kInvalidArgument,
        fmt::format("ELF class {} is not ELF64 (2)", static_cast<int>(bytes[4])));
  check(bytes[5] == 1, ErrorKind::kInvalidArgument, "ELF image is not little-endian");

  const auto shoff = r.read<std::uint64_t>(0x28, "e_shoff");
  const auto shentsize = r.read<std::uint16_t>(0x3A, "e_shentsize");
  const auto shnum = r.read<std::uint16_t>(0x3C, "e_shnum");
  check(shnum == 0 || shentsize == kShdrSize, ErrorKind::kInvalidArgument,
        fmt::format("ELF section header size {} is not {}", shentsize, kShdrSize));
  check(shoff <= size && std::uint64_t{shnum} * kShdrSize <= size - shoff,
        ErrorKind::kInvalidArgument,
        fmt::format("ELF section headers ({} at offset {}) lie outside the {}-byte image", shnum,
                    shoff, size));

  std::vector<ElfSymbol> symbols;
  for (std::uint64_t i = 0; i < shnum; ++i) {
    const Section symtab = read_section(r, shoff, i);
    if (symtab.type != kShtSymtab && symtab.type != kShtDynsym) continue;
    check(symtab.entsize == kSymSize, ErrorKind::kInvalidArgument,
          fmt::format("ELF symbol entry size {} is not {}", symtab.entsize, kSymSize));
    check(symtab.link < shnum, ErrorKind::kInvalidArgument,
          fmt::format("ELF symbol table links string table {} of {}", symtab.link, shnum));
    const Section strtab = read_section(r, shoff, symtab.link);
    for (std::uint64_t off = 0; off + kSymSize <= symtab.size; off += kSymSize) {
      const std::uint64_t sym = symtab.offset + off;
      const auto name_offset = r.read<std::uint32_t>(sym, "st_name");
      const auto info = r.read<std::uint8_t>(sym + 4, "st_info");
      if (name_offset == 0) continue;  // unnamed (section or null) symbol
      ElfSymbol s;
      s.name = r.c_string(strtab.offset, strtab.offset + strtab.size, name_offset);
      s.is_function = (info & 0xf) == 2;
      s.is_global = (info >> 4) == 1 || (info >> 4) == 2;
      s.size = r.read<std::uint64_t>(sym + 16, "st_size");
      symbols.push_back(std::move(s));
    }
  }
  return symbols;
}

std::vector<ElfSymbol> elf_symbols(const std::vector<char>& image) {
  return elf_symbols(image.data(), image.size());
}

std::vector<std::string> elf_function_names(const std::vector<char>& image) {
  std::vector<std::string> names;
  for (const ElfSymbol& s : elf_symbols(image)) {
    if (s.is_function && s.is_global) names.push_back(s.name);
  }
  return names;
}

}  // namespace canopy
