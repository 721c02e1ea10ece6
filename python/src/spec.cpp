// canopy.AttentionSpec: every field of canopy::AttentionSpec, validated on
// construction, read-only afterwards (a plan keeps its own copy).
#include "canopy/spec.hpp"

#include <fmt/format.h>
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>

#include <new>
#include <string>

#include "bindings.hpp"
#include "names.hpp"

namespace nb = nanobind;

namespace canopy::python {
namespace {

constexpr const char* kSpecDoc =
    R"(The shape of one decode-attention layer, shared by every request.

Tensors (all contiguous, row-major):
  q        [batch, num_qo_heads, head_dim]                     q_dtype
  k_cache  [num_pages, page_size, num_kv_heads, head_dim]      kv_dtype  (kv_layout "NHD")
           [num_pages, num_kv_heads, page_size, head_dim]      kv_dtype  (kv_layout "HND")
  v_cache  like k_cache
  out      [batch, num_qo_heads, head_dim]                     o_dtype
  lse      [batch, num_qo_heads] float32 (natural log), only with with_lse=True

Args:
  num_qo_heads: query heads.
  num_kv_heads: KV heads; num_qo_heads % num_kv_heads == 0 (GQA; 1 is MQA).
  head_dim: 64, 128 or 256.
  dtype: sets q_dtype, kv_dtype and o_dtype at once: "fp16" or "bf16" (also
    "float16"/"bfloat16", torch.float16/torch.bfloat16, NumPy float16).
  q_dtype, kv_dtype, o_dtype: override `dtype` per tensor (o_dtype may be "fp32").
  kv_layout: "NHD" or "HND".
  page_size: tokens per KV page, 1..256.
  sm_scale: softmax scale; 0 means 1/sqrt(head_dim).
  logits_soft_cap: > 0 applies s = cap * tanh(s / cap) after scaling; 0 disables.
  with_lse: also write the log-sum-exp of each (request, head).

Raises InvalidArgumentError / NotSupportedError naming the bad field and value.)";

void init_spec(AttentionSpec* self, int num_qo_heads, int num_kv_heads, int head_dim,
               nb::handle dtype, nb::handle q_dtype, nb::handle kv_dtype, nb::handle o_dtype,
               nb::handle kv_layout, int page_size, double sm_scale, double logits_soft_cap,
               bool with_lse) {
  AttentionSpec s;
  s.num_qo_heads = num_qo_heads;
  s.num_kv_heads = num_kv_heads;
  s.head_dim = head_dim;
  const DType all = dtype_arg(dtype, "dtype");
  s.q_dtype = q_dtype.is_none() ? all : dtype_arg(q_dtype, "q_dtype");
  s.kv_dtype = kv_dtype.is_none() ? all : dtype_arg(kv_dtype, "kv_dtype");
  s.o_dtype = o_dtype.is_none() ? all : dtype_arg(o_dtype, "o_dtype");
  s.kv_layout = layout_arg(kv_layout, "kv_layout");
  s.page_size = page_size;
  s.sm_scale = sm_scale;
  s.logits_soft_cap = logits_soft_cap;
  s.with_lse = with_lse;
  s.validate();
  new (self) AttentionSpec(s);
}

std::string spec_repr(const AttentionSpec& s) {
  return fmt::format(
      "AttentionSpec(num_qo_heads={}, num_kv_heads={}, head_dim={}, q_dtype='{}', "
      "kv_dtype='{}', o_dtype='{}', kv_layout='{}', page_size={}, sm_scale={}, "
      "logits_soft_cap={}, with_lse={})",
      s.num_qo_heads, s.num_kv_heads, s.head_dim, to_string(s.q_dtype), to_string(s.kv_dtype),
      to_string(s.o_dtype), layout_name(s.kv_layout), s.page_size, s.sm_scale, s.logits_soft_cap,
      s.with_lse ? "True" : "False");
}

bool spec_equal(const AttentionSpec& a, const AttentionSpec& b) {
  return a.num_qo_heads == b.num_qo_heads && a.num_kv_heads == b.num_kv_heads &&
         a.head_dim == b.head_dim && a.q_dtype == b.q_dtype && a.kv_dtype == b.kv_dtype &&
         a.o_dtype == b.o_dtype && a.kv_layout == b.kv_layout && a.page_size == b.page_size &&
         a.sm_scale == b.sm_scale && a.logits_soft_cap == b.logits_soft_cap &&
         a.with_lse == b.with_lse;
}

nb::dict spec_dict(const AttentionSpec& s) {
  nb::dict d;
  d["num_qo_heads"] = s.num_qo_heads;
  d["num_kv_heads"] = s.num_kv_heads;
  d["head_dim"] = s.head_dim;
  d["q_dtype"] = to_string(s.q_dtype);
  d["kv_dtype"] = to_string(s.kv_dtype);
  d["o_dtype"] = to_string(s.o_dtype);
  d["kv_layout"] = layout_name(s.kv_layout);
  d["page_size"] = s.page_size;
  d["sm_scale"] = s.sm_scale;
  d["logits_soft_cap"] = s.logits_soft_cap;
  d["with_lse"] = s.with_lse;
  return d;
}

}  // namespace

void bind_spec(nb::module_& m) {
  nb::class_<AttentionSpec>(m, "AttentionSpec", kSpecDoc)
      .def("__init__", &init_spec, nb::kw_only(), nb::arg("num_qo_heads") = 32,
           nb::arg("num_kv_heads") = 8, nb::arg("head_dim") = 128,
           nb::arg("dtype").sig("'fp16'") = nb::str("fp16"), nb::arg("q_dtype").none() = nb::none(),
           nb::arg("kv_dtype").none() = nb::none(), nb::arg("o_dtype").none() = nb::none(),
           nb::arg("kv_layout").sig("'NHD'") = nb::str("NHD"), nb::arg("page_size") = 16,
           nb::arg("sm_scale") = 0.0, nb::arg("logits_soft_cap") = 0.0, nb::arg("with_lse") = false)
      .def_ro("num_qo_heads", &AttentionSpec::num_qo_heads, "Query heads.")
      .def_ro("num_kv_heads", &AttentionSpec::num_kv_heads, "KV heads.")
      .def_ro("head_dim", &AttentionSpec::head_dim, "64, 128 or 256.")
      .def_prop_ro(
          "q_dtype", [](const AttentionSpec& s) { return to_string(s.q_dtype); },
          "'fp16' or 'bf16'.")
      .def_prop_ro(
          "kv_dtype", [](const AttentionSpec& s) { return to_string(s.kv_dtype); },
          "'fp16' or 'bf16'.")
      .def_prop_ro(
          "o_dtype", [](const AttentionSpec& s) { return to_string(s.o_dtype); },
          "'fp16', 'bf16' or 'fp32'.")
      .def_prop_ro(
          "kv_layout", [](const AttentionSpec& s) { return layout_name(s.kv_layout); },
          "'NHD' or 'HND'.")
      .def_ro("page_size", &AttentionSpec::page_size, "Tokens per KV page.")
      .def_ro("sm_scale", &AttentionSpec::sm_scale, "As given; 0 means 1/sqrt(head_dim).")
      .def_ro("logits_soft_cap", &AttentionSpec::logits_soft_cap, "0: no soft cap.")
      .def_ro("with_lse", &AttentionSpec::with_lse, "Whether run() writes the log-sum-exp.")
      .def_prop_ro("group_size", &AttentionSpec::group_size, "num_qo_heads // num_kv_heads.")
      .def_prop_ro("effective_sm_scale", &AttentionSpec::effective_sm_scale,
                   "The scale the kernels use: sm_scale, or 1/sqrt(head_dim) when it is 0.")
      .def("to_dict", &spec_dict, "Every field, as AttentionSpec(**d) accepts them.")
      .def("__repr__", &spec_repr)
      .def("__str__", &AttentionSpec::to_string)
      .def("__eq__", &spec_equal, nb::is_operator())
      .def("__eq__", [](const AttentionSpec&, nb::handle) { return false; });
}

}  // namespace canopy::python
