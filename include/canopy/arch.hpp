// Arch: one GPU target and everything Canopy decides by it (features, limits).
// The only place that compares SM numbers: everyone else asks an Arch.
#pragma once

#include <string>
#include <string_view>

namespace canopy {

/// A compile target sm_<major><minor>[a]. `arch_specific` marks the `a`
/// targets (sm_90a, sm_100a): their code may use instructions only that exact
/// architecture has (wgmma, setmaxnreg), so it runs on no other GPU.
///
///   Arch::parse("sm_90a") == Arch{9, 0, true}     Arch{8, 6}.to_string() == "sm_86"
///   Arch::parse("86") == kSm86                    kSm90a.id() == "90a"
struct Arch {
  int major = 9;
  int minor = 0;
  bool arch_specific = false;

  /// Accepts "sm_90a", "sm90a", "compute_90a", "90a" and the same without the
  /// `a`; the last digit is the minor version ("100" is 10.0). Throws
  /// Error(kInvalidArgument) naming the text otherwise.
  static Arch parse(std::string_view text);
  std::string to_string() const;     ///< "sm_90a": the real target (cubin, ptxas -arch)
  std::string virtual_name() const;  ///< "compute_90a": the PTX target
  std::string id() const;            ///< "90a": KernelSpec names, cache keys, --arch

  /// Whether this arch has every feature of `oldest`: the same SM or a newer
  /// one (the `a` suffix aside: whether `a` code runs here is same_sm's question).
  constexpr bool at_least(const Arch& oldest) const { return at_least(oldest.major, oldest.minor); }
  /// Whether both name the same SM (sm_90 and sm_90a do).
  constexpr bool same_sm(const Arch& other) const {
    return major == other.major && minor == other.minor;
  }
  /// This SM's arch-specific target: sm_90 -> sm_90a (sm_90a stays).
  constexpr Arch specific() const { return Arch{major, minor, true}; }

  // Features. mma.sync with bf16 inputs and cp.async both came with Ampere.
  constexpr bool has_mma() const { return at_least(8, 0); }       ///< mma.sync, fp16 and bf16
  constexpr bool has_cp_async() const { return at_least(8, 0); }  ///< cp.async global->shared
  constexpr bool has_tma() const { return at_least(9, 0); }       ///< Tensor Memory Accelerator
  /// Warpgroup MMA exists on sm_90a only: not on sm_90 (no `a`), nor on
  /// sm_100a (Blackwell replaced it with tcgen05).
  constexpr bool has_wgmma() const { return major == 9 && minor == 0 && arch_specific; }

  // Limits (CUDA Programming Guide, "Technical Specifications per Compute
  // Capability"). An arch missing from the tables gets the smallest values
  // of its generation's consumer parts (sm_86-like), and is_known() is false.
  constexpr bool is_known() const {
    switch (cc()) {
      case 80:
      case 86:
      case 87:
      case 89:
      case 90:
      case 100:
      case 103:
      case 120:
        return true;
      default:
        return false;
    }
  }
  /// Opt-in dynamic shared memory per block (cuFuncSetAttribute maximum), bytes.
  constexpr int max_smem_per_block() const {
    switch (cc()) {
      case 80:
      case 87:
        return 163 * 1024;
      case 90:
      case 100:
      case 103:
      case 110:
        return 227 * 1024;
      default:
        return 99 * 1024;  // sm_86, sm_89, sm_120 and unknown parts
    }
  }
  /// Shared memory per SM, bytes (what blocks on one SM share).
  constexpr int max_smem_per_sm() const {
    switch (cc()) {
      case 80:
      case 87:
        return 164 * 1024;
      case 90:
      case 100:
      case 103:
      case 110:
        return 228 * 1024;
      default:
        return 100 * 1024;
    }
  }
  /// Shared memory the system reserves per block, bytes.
  constexpr int reserved_smem_per_block() const { return 1024; }
  constexpr int max_registers_per_thread() const { return 255; }
  constexpr int registers_per_sm() const { return 65536; }
  constexpr int max_threads_per_sm() const {
    switch (cc()) {
      case 80:
      case 87:
      case 90:
      case 100:
      case 103:
        return 2048;
      default:
        return 1536;
    }
  }
  constexpr int max_blocks_per_sm() const {
    switch (cc()) {
      case 80:
      case 90:
      case 100:
      case 103:
      case 120:
        return 32;
      case 89:
        return 24;
      default:
        return 16;
    }
  }
  /// SMs of this arch's reference part, for planning without that GPU:
  /// A100 108, A40 84, Orin 16, L40S 142, H100 SXM 132, B200 148, RTX 5090 170.
  constexpr int default_num_sms() const {
    switch (cc()) {
      case 80:
        return 108;
      case 86:
        return 84;
      case 87:
        return 16;
      case 89:
        return 142;
      case 100:
      case 103:
        return 148;
      case 120:
        return 170;
      default:
        return 132;
    }
  }

  bool operator==(const Arch&) const = default;

 private:
  constexpr int cc() const { return major * 10 + minor; }
  constexpr bool at_least(int maj, int min) const {
    return major > maj || (major == maj && minor >= min);
  }
};

inline constexpr Arch kSm80{8, 0};
inline constexpr Arch kSm86{8, 6};
inline constexpr Arch kSm89{8, 9};
inline constexpr Arch kSm90{9, 0};
inline constexpr Arch kSm90a{9, 0, true};

}  // namespace canopy
