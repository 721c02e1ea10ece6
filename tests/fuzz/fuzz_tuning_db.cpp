// Fuzz target tuning_db: TuningDb::from_json on raw text and on a valid
// database's JSON after mutations (a value replaced by another type, an
// extreme, a negative or zero number; a key deleted; the text truncated or a
// byte flipped). The parser must throw Error or return a database that
// survives a round trip unchanged; check_tuning_db and select's checks must
// throw Error or pass, never anything else.
#include <limits>
#include <nlohmann/json.hpp>
#include <string>

#include "canopy/tuning.hpp"
#include "tests/fuzz/fuzz_support.hpp"

namespace canopy::fuzz {
namespace {

using nlohmann::json;

// A small valid database (the seed every mutation starts from).
const std::string& seed_text() {
  static const std::string text = [] {
    TuningDb db;
    db.device = {"fuzz GPU", 9, 0, 132, 2619000, 97871};
    db.canopy_version = canopy_version();
    db.nvrtc_version = "12.8";
    db.driver_version = "12.8";
    db.date = "2025-01-01T00:00:00Z";
    db.clocks["sm_peak"] = 1980;
    db.complete = true;
    db.fits["mma"] = KernelFit{{1, 0.02, 10}, {2e8, 0.03, 4}, {0.9, 0.02, 6}, 10, {2, 0.02, 1}};
    db.family_validation["mma"] = {2, 0.02, 1};
    db.merge_bytes_per_us = {2.5e6, 0.01, 3};
    db.launch_overhead_us = {3, 0.01, 3};
    db.items.push_back({"mma_q64_kv64_w4_s3", DType::kF16, 128, 16, 64, 16, 1024, 1, 2.5});
    db.merges.push_back({DType::kBF16, 128, 2, 4096, 9.0});
    db.winners["d128.fp16.g4.h4.p16|b7|L0:n1.f7.t12"] = {"{\"allow_split\":false}", 40, 45, true,
                                                         "builtin-defaults"};
    return db.to_json(-1);
  }();
  return text;
}

json random_value(FuzzReader& r) {
  switch (r.int_in(0, 9)) {
    case 0:
      return -1.0;
    case 1:
      return 0;
    case 2:
      return 1e308;
    case 3:
      return nullptr;
    case 4:
      return "canopy-tuning-db/2";
    case 5:
      return json::array();
    case 6:
      return json::object();
    case 7:
      return r.flag();
    case 8:
      return std::numeric_limits<std::int64_t>::max();
    default:
      return r.int_in(-3, 300);
  }
}

void mutate(FuzzReader& r, json& node, int depth) {
  if ((node.is_object() || node.is_array()) && !node.empty() && depth < 5) {
    auto it = node.begin();
    std::advance(it, r.int_in(0, static_cast<int>(node.size()) - 1));
    const int how = r.int_in(0, 5);
    if (how == 0) {
      node.erase(it);
    } else if (how == 1) {
      *it = random_value(r);
    } else {
      mutate(r, *it, depth + 1);
    }
    return;
  }
  node = random_value(r);
}

}  // namespace

void fuzz_tuning_db(const std::uint8_t* data, std::size_t size) {
  FuzzReader r(data, size);
  std::string text;
  if (r.int_in(0, 3) == 0) {
    text = r.text(1 << 16);
  } else {
    json doc = json::parse(seed_text());
    const int mutations = r.int_in(0, 4);
    for (int m = 0; m < mutations; ++m) mutate(r, doc, 0);
    text = doc.dump();
    if (r.chance(10)) {
      text.resize(static_cast<std::size_t>(r.in_range(0, static_cast<std::int64_t>(text.size()))));
    }
    if (r.chance(10) && !text.empty()) {
      text[static_cast<std::size_t>(r.in_range(0, static_cast<std::int64_t>(text.size()) - 1))] ^=
          static_cast<char>(r.byte() | 1);
    }
  }
  TuningDb db;
  if (rejects([&] { db = TuningDb::from_json(text, "fuzz.json"); })) return;
  TuningDb again;
  if (rejects([&] { again = TuningDb::from_json(db.to_json(), "round trip"); })) {
    fail("an accepted database does not read back its own JSON");
  }
  if (!(again == db)) fail("an accepted database changes in a round trip");
  (void)rejects([&] { check_tuning_db(db, db.device, "fuzz.json"); });
}

}  // namespace canopy::fuzz
