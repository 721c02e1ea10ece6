// Lookup into the templates embedded at build time (see embed_templates.cmake).
#include "generator/embedded_templates.hpp"

#include <string>

#include "canopy/error.hpp"

namespace canopy::generator {

bool has_template(std::string_view name) {
  for (const EmbeddedTemplate& t : embedded_templates()) {
    if (t.name == name) return true;
  }
  return false;
}

std::string_view template_text(std::string_view name) {
  for (const EmbeddedTemplate& t : embedded_templates()) {
    if (t.name == name) return t.text;
  }
  std::string known;
  for (const EmbeddedTemplate& t : embedded_templates()) {
    known.append(" ").append(t.name);
  }
  std::string message = "no embedded kernel template named '";
  message.append(name).append("'; have:").append(known);
  throw Error(ErrorKind::kNotSupported, message);
}

}  // namespace canopy::generator
