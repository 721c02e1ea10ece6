// A bounds-checked reader for the few ELF64 structures cubins need.
#include "runtime/jit/elf_reader.hpp"

#include <fmt/format.h>

#include "canopy/error.hpp"

namespace canopy {

namespace {

constexpr std::size_t kEhdrSize = 64;
constexpr std::size_t kShdrSize = 64;
constexpr std::size_t kSymSize = 24;

}  // namespace

ElfImage::ElfImage(const void* data, std::size_t size)
    : data_(static_cast<const unsigned char*>(data)), size_(size) {
  check(data != nullptr && size >= kEhdrSize, ErrorKind::kInvalidArgument,
        fmt::format("not an ELF image: {} bytes, an ELF64 header needs {}", size, kEhdrSize));
  check(std::memcmp(data_,
                    "\x7f"
                    "ELF",
                    4) == 0,
        ErrorKind::kInvalidArgument, "not an ELF image: bad magic");
  check(data_[4] == 2, ErrorKind::kInvalidArgument,
        fmt::format("ELF class {} is not ELF64 (2)", static_cast<int>(data_[4])));
  check(data_[5] == 1, ErrorKind::kInvalidArgument, "ELF image is not little-endian");

  const auto shoff = read<std::uint64_t>(0x28, "e_shoff");
  const auto shentsize = read<std::uint16_t>(0x3A, "e_shentsize");
  const auto shnum = read<std::uint16_t>(0x3C, "e_shnum");
  names_index_ = read<std::uint16_t>(0x3E, "e_shstrndx");
  check(shnum == 0 || shentsize == kShdrSize, ErrorKind::kInvalidArgument,
        fmt::format("ELF section header size {} is not {}", shentsize, kShdrSize));
  check(shoff <= size && std::uint64_t{shnum} * kShdrSize <= size - shoff,
        ErrorKind::kInvalidArgument,
        fmt::format("ELF section headers ({} at offset {}) lie outside the {}-byte image", shnum,
                    shoff, size));
  sections_.resize(shnum);
  for (std::uint64_t i = 0; i < shnum; ++i) {
    const std::uint64_t base = shoff + i * kShdrSize;
    ElfSection& s = sections_[i];
    s.name_offset = read<std::uint32_t>(base, "sh_name");
    s.type = read<std::uint32_t>(base + 4, "sh_type");
    s.offset = read<std::uint64_t>(base + 24, "sh_offset");
    s.size = read<std::uint64_t>(base + 32, "sh_size");
    s.link = read<std::uint32_t>(base + 40, "sh_link");
    s.info = read<std::uint32_t>(base + 44, "sh_info");
    s.entsize = read<std::uint64_t>(base + 56, "sh_entsize");
    // SHT_NOBITS sections (.nv.shared.*) have a size but no bytes in the file.
    if (s.type != kNobits && (s.offset > size_ || s.size > size_ - s.offset)) {
      throw Error(ErrorKind::kInvalidArgument,
                  fmt::format("ELF section {} [{}, +{}) lies outside the {}-byte image", i,
                              s.offset, s.size, size_));
    }
  }
}

void ElfImage::check_range(std::uint64_t offset, std::uint64_t bytes, const char* what) const {
  if (offset > size_ || bytes > size_ - offset) {
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("ELF image truncated: {} at offset {} needs {} bytes, image has {}",
                            what, offset, bytes, size_));
  }
}

std::string ElfImage::string_at(const ElfSection& table, std::uint64_t offset) const {
  // The constructor checked that the table's bytes lie inside the image.
  if (table.type == kNobits || offset >= table.size) {
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("ELF string offset {} outside its table ({} bytes)", offset,
                            table.type == kNobits ? 0 : table.size));
  }
  const char* first = reinterpret_cast<const char*>(data_ + table.offset + offset);
  const void* nul = std::memchr(first, '\0', table.size - offset);
  if (nul == nullptr) throw Error(ErrorKind::kInvalidArgument, "ELF string is not terminated");
  return std::string(first, static_cast<const char*>(nul));
}

std::string ElfImage::name(const ElfSection& section) const {
  check(names_index_ < sections_.size(), ErrorKind::kInvalidArgument,
        fmt::format("ELF section-name table {} of {} sections", names_index_, sections_.size()));
  return string_at(sections_[names_index_], section.name_offset);
}

std::vector<ElfSymbol> ElfImage::symbols(const ElfSection& table) const {
  check(table.entsize == kSymSize, ErrorKind::kInvalidArgument,
        fmt::format("ELF symbol entry size {} is not {}", table.entsize, kSymSize));
  check(table.link < sections_.size(), ErrorKind::kInvalidArgument,
        fmt::format("ELF symbol table links string table {} of {}", table.link, sections_.size()));
  const ElfSection& strtab = sections_[table.link];
  std::vector<ElfSymbol> out;
  for (std::uint64_t off = 0; off + kSymSize <= table.size; off += kSymSize) {
    const std::uint64_t sym = table.offset + off;
    const auto name_offset = read<std::uint32_t>(sym, "st_name");
    const auto info = read<std::uint8_t>(sym + 4, "st_info");
    ElfSymbol& s = out.emplace_back();
    if (name_offset != 0) s.name = string_at(strtab, name_offset);
    s.is_function = (info & 0xf) == 2;
    s.is_global = (info >> 4) == 1 || (info >> 4) == 2;
    s.size = read<std::uint64_t>(sym + 16, "st_size");
  }
  return out;
}

std::vector<ElfSymbol> elf_symbols(const void* data, std::size_t size) {
  const ElfImage elf(data, size);
  std::vector<ElfSymbol> named;
  for (const ElfSection& section : elf.sections()) {
    if (section.type != ElfImage::kSymtab && section.type != ElfImage::kDynsym) continue;
    for (ElfSymbol& s : elf.symbols(section)) {
      if (!s.name.empty()) named.push_back(std::move(s));
    }
  }
  return named;
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
