// AttentionSpec, DType and KvLayout: names, parsing and validation.
#include "canopy/spec.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>

#include "canopy/error.hpp"

namespace canopy {

const char* to_string(DType dtype) noexcept {
  switch (dtype) {
    case DType::kF16:
      return "fp16";
    case DType::kBF16:
      return "bf16";
    case DType::kF32:
      return "fp32";
  }
  return "unknown";
}

DType dtype_from_string(const std::string& name) {
  if (name == "fp16" || name == "f16" || name == "float16" || name == "half") return DType::kF16;
  if (name == "bf16" || name == "bfloat16") return DType::kBF16;
  if (name == "fp32" || name == "f32" || name == "float32" || name == "float") return DType::kF32;
  throw Error(ErrorKind::kInvalidArgument,
              fmt::format("dtype '{}' is unknown; expected fp16, bf16 or fp32", name));
}

int dtype_bytes(DType dtype) noexcept { return dtype == DType::kF32 ? 4 : 2; }

const char* to_string(KvLayout layout) noexcept { return layout == KvLayout::kNHD ? "nhd" : "hnd"; }

KvLayout kv_layout_from_string(const std::string& name) {
  if (name == "nhd" || name == "NHD") return KvLayout::kNHD;
  if (name == "hnd" || name == "HND") return KvLayout::kHND;
  throw Error(ErrorKind::kInvalidArgument,
              fmt::format("kv layout '{}' is unknown; expected nhd or hnd", name));
}

void check_head_dim(int head_dim) {
  CANOPY_CHECK(is_supported_head_dim(head_dim), ErrorKind::kNotSupported,
               "head_dim ({}) is not supported; expected one of {}", head_dim,
               fmt::join(kSupportedHeadDims, ", "));
}

void check_page_size(int page_size) {
  CANOPY_CHECK(page_size >= 1 && page_size <= kMaxPageSize, ErrorKind::kInvalidArgument,
               "page_size ({}) must be in 1..{}", page_size, kMaxPageSize);
}

double AttentionSpec::effective_sm_scale() const {
  return sm_scale > 0 ? sm_scale : 1.0 / std::sqrt(static_cast<double>(head_dim));
}

namespace {

bool is_half_type(DType t) { return t == DType::kF16 || t == DType::kBF16; }

}  // namespace

// CANOPY_CHECK formats a message only on failure: validate() runs on every
// make_plan, so a valid spec must cost no string formatting.
void AttentionSpec::validate() const {
  CANOPY_CHECK(num_qo_heads > 0, ErrorKind::kInvalidArgument, "num_qo_heads ({}) must be positive",
               num_qo_heads);
  CANOPY_CHECK(num_kv_heads > 0, ErrorKind::kInvalidArgument, "num_kv_heads ({}) must be positive",
               num_kv_heads);
  CANOPY_CHECK(num_qo_heads % num_kv_heads == 0, ErrorKind::kInvalidArgument,
               "num_qo_heads ({}) must be a multiple of num_kv_heads ({})", num_qo_heads,
               num_kv_heads);
  check_head_dim(head_dim);
  check_page_size(page_size);
  CANOPY_CHECK(is_half_type(q_dtype), ErrorKind::kNotSupported,
               "q_dtype ({}) is not supported; expected fp16 or bf16", canopy::to_string(q_dtype));
  CANOPY_CHECK(is_half_type(kv_dtype), ErrorKind::kNotSupported,
               "kv_dtype ({}) is not supported; expected fp16 or bf16",
               canopy::to_string(kv_dtype));
  CANOPY_CHECK(std::isfinite(sm_scale) && sm_scale >= 0, ErrorKind::kInvalidArgument,
               "sm_scale ({}) must be >= 0 (0 means 1/sqrt(head_dim))", sm_scale);
  CANOPY_CHECK(std::isfinite(logits_soft_cap) && logits_soft_cap >= 0, ErrorKind::kInvalidArgument,
               "logits_soft_cap ({}) must be >= 0 (0 disables it)", logits_soft_cap);
}

std::string AttentionSpec::to_string() const {
  return fmt::format(
      "qo_heads={} kv_heads={} head_dim={} q={} kv={} o={} layout={} page_size={} sm_scale={} "
      "soft_cap={} lse={}",
      num_qo_heads, num_kv_heads, head_dim, canopy::to_string(q_dtype), canopy::to_string(kv_dtype),
      canopy::to_string(o_dtype), canopy::to_string(kv_layout), page_size, effective_sm_scale(),
      logits_soft_cap, with_lse ? 1 : 0);
}

}  // namespace canopy
