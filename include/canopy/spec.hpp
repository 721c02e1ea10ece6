// AttentionSpec: the shape of one decode-attention layer, shared by all requests.
#pragma once

#include <cstdint>
#include <string>

namespace canopy {

/// Element types. fp8 KV is reserved for a later issue (the enum leaves room for it).
enum class DType : std::uint8_t { kF16, kBF16, kF32 };

const char* to_string(DType dtype) noexcept;
DType dtype_from_string(const std::string& name);  ///< "fp16"|"f16", "bf16", "fp32"|"f32"
int dtype_bytes(DType dtype) noexcept;

/// Paged KV cache layouts; K and V are separate tensors with the same layout.
///  kNHD: [num_pages, page_size, num_kv_heads, head_dim]
///  kHND: [num_pages, num_kv_heads, page_size, head_dim]
enum class KvLayout : std::uint8_t { kNHD, kHND };

const char* to_string(KvLayout layout) noexcept;
KvLayout kv_layout_from_string(const std::string& name);

/// Everything about a layer that does not depend on the batch.
///
/// Tensors (all contiguous, row-major):
///   q   [batch, num_qo_heads, head_dim]   q_dtype
///   k,v paged, see KvLayout              kv_dtype
///   out [batch, num_qo_heads, head_dim]   o_dtype
///   lse [batch, num_qo_heads]             float32, natural log, only if with_lse
struct AttentionSpec {
  int num_qo_heads = 32;
  int num_kv_heads = 8;  ///< num_qo_heads % num_kv_heads == 0; any ratio (MQA: 1)
  int head_dim = 128;    ///< one of kSupportedHeadDims
  DType q_dtype = DType::kF16;
  DType kv_dtype = DType::kF16;
  DType o_dtype = DType::kF16;
  KvLayout kv_layout = KvLayout::kNHD;
  int page_size = 16;          ///< tokens per page, 1..kMaxPageSize
  double sm_scale = 0;         ///< 0 means 1/sqrt(head_dim)
  double logits_soft_cap = 0;  ///< >0: s = cap * tanh(s / cap) after scaling
  bool with_lse = false;       ///< also write the log-sum-exp of each (request, head)

  int group_size() const { return num_qo_heads / num_kv_heads; }
  double effective_sm_scale() const;
  /// Throws Error(kInvalidArgument / kNotSupported) naming the bad field and value.
  void validate() const;
  std::string to_string() const;
  bool operator==(const AttentionSpec&) const = default;
};

/// Head dims the kernels are generated for.
inline constexpr int kSupportedHeadDims[] = {64, 128, 256};
constexpr bool is_supported_head_dim(int head_dim) {
  for (int d : kSupportedHeadDims) {
    if (d == head_dim) return true;
  }
  return false;
}
/// Throws Error(kNotSupported) naming `head_dim` unless it is supported.
void check_head_dim(int head_dim);

/// Tokens per KV page: 1..kMaxPageSize (the kernels keep a page's slot in 8 bits).
inline constexpr int kMaxPageSize = 256;
/// Throws Error(kInvalidArgument) naming `page_size` unless it is in 1..kMaxPageSize.
void check_page_size(int page_size);

}  // namespace canopy
