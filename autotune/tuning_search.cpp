// Finding the tuning database for a device (docs/tuning.md, "Search path"):
// explicit path, $CANOPY_TUNING_DB, the user's config folder, the shipped
// databases. A bad database is refused with its reason and the search goes
// on; nothing here throws, so a broken file can never stop planning.
#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <system_error>

#include "canopy/error.hpp"
#include "canopy/tuning.hpp"

#ifndef CANOPY_TUNING_DB_INSTALLED
#define CANOPY_TUNING_DB_INSTALLED ""
#endif
#ifndef CANOPY_TUNING_DB_SOURCE
#define CANOPY_TUNING_DB_SOURCE ""
#endif

namespace canopy {

namespace fs = std::filesystem;

namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::string(v) : std::string();
}

std::string user_config_dir() {
  if (const std::string xdg = env("XDG_CONFIG_HOME"); !xdg.empty()) return xdg + "/canopy";
  if (const std::string home = env("HOME"); !home.empty()) return home + "/.config/canopy";
  return "";
}

// The *.json files of `dir`, in name order.
std::vector<std::string> json_files(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code kind;
    if (it->path().extension() == ".json" && it->is_regular_file(kind)) {
      out.push_back(it->path().string());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

std::vector<std::string> tuning_search_path(const std::string& explicit_path) {
  std::vector<std::string> path;
  auto add = [&](const std::string& p) {
    if (!p.empty() && std::find(path.begin(), path.end(), p) == path.end()) path.push_back(p);
  };
  add(explicit_path);
  add(env("CANOPY_TUNING_DB"));
  add(user_config_dir());
  add(CANOPY_TUNING_DB_INSTALLED);
  add(CANOPY_TUNING_DB_SOURCE);
  return path;
}

TuningSelection select_tuning_db(const DeviceKey& device, const std::string& explicit_path) {
  TuningSelection out;
  TuningStatus& s = out.status;
  s.device = device.to_string();
  if (explicit_path == "off") {
    s.message = "tuning database off: the built-in default coefficients";
    return out;
  }
  s.searched = tuning_search_path(explicit_path);
  const std::string env_path = env("CANOPY_TUNING_DB");
  for (const std::string& place : s.searched) {
    std::error_code ec;
    const bool is_dir = fs::is_directory(place, ec);
    // A file named on purpose must be usable; a folder may hold other GPUs'.
    const bool named = !is_dir && (place == explicit_path || place == env_path);
    if (!is_dir && !named) continue;
    if (named && !fs::exists(place, ec)) {
      s.refused.push_back(fmt::format("{}: no such file", place));
      continue;
    }
    for (const std::string& file : is_dir ? json_files(place) : std::vector{place}) {
      try {
        TuningDb db = load_tuning_db(file);
        if (!named && !db.device.mismatch(device).empty()) continue;  // another GPU's
        check_tuning_db(db, device, file);
        s.tuned = true;
        s.database = file;
        s.message = fmt::format("tuning database {} ({} measurements, {})", file,
                                db.items.size() + db.merges.size(), db.date);
        out.db = std::move(db);
        return out;
      } catch (const std::exception& e) {
        s.refused.push_back(e.what());
      }
    }
  }
  if (!s.refused.empty()) {
    s.message = fmt::format("refused {} (and {} more); using the built-in default coefficients",
                            s.refused.front(), s.refused.size() - 1);
    if (s.refused.size() == 1) {
      s.message =
          fmt::format("refused {}; using the built-in default coefficients", s.refused.front());
    }
  } else {
    s.message = "no tuning database for this GPU; using the built-in default coefficients";
  }
  return out;
}

}  // namespace canopy
