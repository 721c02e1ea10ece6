// Kernel resources from a cubin's sections, read through ElfImage.
#include "runtime/jit/cubin_resources.hpp"

#include <map>

#include "runtime/jit/elf_reader.hpp"

namespace canopy {

std::vector<KernelResources> cubin_resources(const std::vector<char>& cubin) {
  const ElfImage elf(cubin);
  // Symbols of the first symbol table, by index: .nv.info records name their
  // function by symbol index.
  std::vector<ElfSymbol> symbols;
  for (const ElfSection& s : elf.sections()) {
    if (s.type == ElfImage::kSymtab) {
      symbols = elf.symbols(s);
      break;
    }
  }

  std::vector<KernelResources> kernels;
  std::map<std::string, std::size_t> by_name;
  for (const ElfSymbol& s : symbols) {
    if (!s.is_function || !s.is_global || s.name.empty() || by_name.count(s.name)) continue;
    by_name[s.name] = kernels.size();
    kernels.emplace_back().name = s.name;
  }
  auto find = [&](const std::string& name) -> KernelResources* {
    const auto it = by_name.find(name);
    return it == by_name.end() ? nullptr : &kernels[it->second];
  };
  auto starts = [](const std::string& s, const std::string& prefix) {
    return s.rfind(prefix, 0) == 0;
  };
  for (const ElfSection& s : elf.sections()) {
    const std::string name = elf.name(s);
    if (starts(name, ".text.")) {
      if (KernelResources* k = find(name.substr(6))) {
        if (k->registers < 0 && (s.info >> 24) != 0) k->registers = static_cast<int>(s.info >> 24);
        k->code_bytes = s.size;
      }
    } else if (starts(name, ".nv.shared.")) {
      if (KernelResources* k = find(name.substr(11))) k->static_smem = s.size;
    } else if (starts(name, ".nv.constant0.")) {
      if (KernelResources* k = find(name.substr(14))) k->param_bank = s.size;
    } else if (name == ".nv.info") {
      // Records: u8 format, u8 attribute, u16 value or payload size (format 4), payload.
      constexpr std::uint8_t kSval = 0x04, kFrameSize = 0x11, kMinStack = 0x12, kMaxStack = 0x23,
                             kRegCount = 0x2f;
      std::uint64_t off = 0;
      while (off + 4 <= s.size) {
        const auto format = elf.read<std::uint8_t>(s.offset + off, "EIATTR format");
        const auto attribute = elf.read<std::uint8_t>(s.offset + off + 1, "EIATTR attribute");
        const auto value = elf.read<std::uint16_t>(s.offset + off + 2, "EIATTR value");
        off += 4;
        if (format != kSval) continue;
        if (value == 8 && off + 8 <= s.size &&
            (attribute == kFrameSize || attribute == kMinStack || attribute == kMaxStack ||
             attribute == kRegCount)) {
          const auto symbol = elf.read<std::uint32_t>(s.offset + off, "EIATTR symbol");
          const auto amount = elf.read<std::uint32_t>(s.offset + off + 4, "EIATTR amount");
          KernelResources* k = symbol < symbols.size() ? find(symbols[symbol].name) : nullptr;
          if (k != nullptr && attribute == kRegCount) {
            k->registers = static_cast<int>(amount);
          } else if (k != nullptr) {
            (attribute == kFrameSize  ? k->frame_bytes
             : attribute == kMinStack ? k->min_stack
                                      : k->max_stack) = amount;
          }
        }
        off += value;
      }
    }
  }
  return kernels;
}

}  // namespace canopy
