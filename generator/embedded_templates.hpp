// The text of templates/**/*.cuh, compiled into the library.
#pragma once

#include <string_view>
#include <vector>

namespace canopy::generator {

struct EmbeddedTemplate {
  std::string_view name;  ///< path under templates/, e.g. "sm80/attention_mma.cuh"
  std::string_view text;
};

const std::vector<EmbeddedTemplate>& embedded_templates();
/// Throws Error(kNotSupported) if no template has that name.
std::string_view template_text(std::string_view name);
/// Whether a template of that name is embedded.
bool has_template(std::string_view name);

}  // namespace canopy::generator
