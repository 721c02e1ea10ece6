// The tuning database: round trip, every bad database refused with an error
// naming the file and the problem, the search path and the selection's
// fallback to the defaults, and shape classes.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "canopy/error.hpp"
#include "canopy/planner.hpp"
#include "canopy/tuning.hpp"
#include "tests/test_data.hpp"
#include "workloads/workload.hpp"

namespace canopy {
namespace {

using nlohmann::json;
using test::expect_error;
namespace fs = std::filesystem;

const DeviceKey kH200{"NVIDIA H200", 9, 0, 132, 2619000, 143771};

TuningDb valid_db() {
  TuningDb db;
  db.device = kH200;
  db.canopy_version = canopy_version();
  db.nvrtc_version = "12.8";
  db.driver_version = "12.8";
  db.date = "2025-01-01T00:00:00Z";
  db.clocks["sm_peak"] = 1980;
  db.complete = true;
  db.coefficients.name = "NVIDIA H200";
  db.coefficients.kernels["mma_q64_kv64_w4_s3"] = {0.8, 2.1e8, 0.88};
  db.fits["mma_q64_kv64_w4_s3"] = {
      {0.8, 0.02, 30}, {2.1e8, 0.03, 10}, {0.88, 0.02, 20}, 30, {8, 0.025, 0.97}};
  db.family_validation["mma"] = {8, 0.025, 0.97};
  db.merge_bytes_per_us = {2.6e6, 0.01, 12};
  db.launch_overhead_us = {2.9, 0.01, 12};
  db.items.push_back({"mma_q64_kv64_w4_s3", DType::kF16, 128, 16, 64, 16, 1024, 1, 2.5});
  db.merges.push_back({DType::kBF16, 128, 2, 4096, 9.0});
  db.winners["d128.fp16.g4.h3.p16|b7|L0:n1.f7.t12"] = {"{\"allow_split\":false}", 40, 45, false,
                                                       "no-split"};
  db.winners["d128.fp16.g4.h8.p16|b6|L0:n0.f2.t11|L1:n2.f6.t8"] = {"{}", 30, 32, true,
                                                                   "builtin-defaults"};
  return db;
}

std::string edited(void (*edit)(json&)) {
  json j = json::parse(valid_db().to_json());
  edit(j);
  return j.dump();
}

// The error of reading `text` as "db.json", "" when it is accepted.
std::string refusal(const std::string& text) {
  try {
    TuningDb::from_json(text, "db.json");
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
    return e.what();
  }
  return "";
}

TEST(TuningDb, RoundTripIsExact) {
  const TuningDb db = valid_db();
  EXPECT_EQ(TuningDb::from_json(db.to_json(), "db.json"), db);
  EXPECT_NO_THROW(check_tuning_db(db, kH200, "db.json"));
}

TEST(TuningDb, BadDatabasesNameTheFileAndTheProblem) {
  const std::string good = valid_db().to_json();
  struct Case {
    const char* what;
    std::string text;
    const char* needle;
  };
  const Case cases[] = {
      {"empty", "", "empty file"},
      {"blank", "  \n", "empty file"},
      {"truncated", good.substr(0, good.size() / 2), "not valid JSON"},
      {"corrupt", std::string("\x7f\x45\x4c\x46\x02", 5), "not valid JSON"},
      {"not an object", "[1, 2]", "not a tuning database"},
      {"no format", edited([](json& j) { j.erase("format"); }), "not a tuning database"},
      {"future schema", edited([](json& j) { j["format"] = "canopy-tuning-db/2"; }),
       "canopy-tuning-db/2 is not the one this Canopy reads"},
      {"other format", edited([](json& j) { j["format"] = "canopy-plan/3"; }), "is not canopy"},
      {"NaN (null) coefficient", edited([](json& j) {
         j["coefficients"]["kernels"]["mma_q64_kv64_w4_s3"]["flops_per_us"] = nullptr;
       }),
       "flops_per_us"},
      {"negative coefficient", edited([](json& j) {
         j["coefficients"]["kernels"]["mma_q64_kv64_w4_s3"]["item_overhead_us"] = -1;
       }),
       "item_overhead_us"},
      {"zero coefficient", edited([](json& j) {
         j["coefficients"]["kernels"]["mma_q64_kv64_w4_s3"]["flops_per_us"] = 0;
       }),
       "flops_per_us: must be a finite number > 0"},
      {"zero launch", edited([](json& j) { j["coefficients"]["launch_overhead_us"] = 0; }),
       "launch_overhead_us"},
      {"infinite",
       std::string(good).replace(good.find("\"hbm_bytes_per_us\":") + 19, 0, "1e999,\"x\":"),
       "number overflow parsing '1e999'"},
      {"hand-edited type", edited([](json& j) { j["device"]["num_sms"] = "132"; }),
       "device.num_sms: must be an integer"},
      {"SMs disagree", edited([](json& j) { j["coefficients"]["num_sms"] = 66; }),
       "differs from the device's 132"},
      {"arch disagrees", edited([](json& j) { j["coefficients"]["arch"] = "sm_80"; }),
       "compute capability 9.0"},
      {"missing field", edited([](json& j) { j.erase("items"); }), "items: missing"},
      {"bad measurement", edited([](json& j) { j["items"][0]["us"] = -2.5; }), "items[0].us"},
      {"bad config", edited([](json& j) { j["items"][0]["config"] = "mma_q64"; }),
       "items[0].config"},
      {"bad winner",
       edited([](json& j) { j["winners"].begin().value()["options"]["waves"] = "x"; }), "options"},
      {"winner with coefficients", edited([](json& j) {
         j["winners"].begin().value()["options"]["coefficients"] = j["coefficients"];
       }),
       "without coefficients"},
      {"winner's flag not a bool",
       edited([](json& j) { j["winners"].begin().value()["builtin_coefficients"] = 1; }),
       "builtin_coefficients: must be true or false"},
      {"winner's name not a string",
       edited([](json& j) { j["winners"].begin().value()["alternative"] = 3; }),
       "alternative: must be a string"},
      {"fit of an unknown kernel",
       edited([](json& j) { j["fits"]["wgmma_x"] = j["fits"].begin().value(); }), "fits.wgmma_x"},
  };
  for (const Case& c : cases) {
    const std::string error = refusal(c.text);
    EXPECT_NE(error, "") << c.what;
    EXPECT_NE(error.find("db.json"), std::string::npos) << c.what << ": " << error;
    EXPECT_NE(error.find(c.needle), std::string::npos) << c.what << ": " << error;
  }
}

// canopy-tune --workloads records a winner's options as planner_options_to_json
// writes them, "coefficients": null included (the H100 run of 2026-12-07 wrote
// such a database and the Runtime refused it).
TEST(TuningDb, WinnerOptionsAsThePlannerWritesThemAreAccepted) {
  TuningDb db = valid_db();
  PlannerOptions options;
  options.allow_split = false;
  options.candidates = {KernelConfig::parse("mma_q64_kv64_w4_s3")};
  db.winners.begin()->second.options_json = planner_options_to_json(options);
  ASSERT_NE(db.winners.begin()->second.options_json.find("\"coefficients\":null"),
            std::string::npos);
  const TuningDb back = TuningDb::from_json(db.to_json(), "db.json");
  EXPECT_EQ(planner_options_from_json(back.winners.begin()->second.options_json), options);
}

// Databases written before the winners' builtin_coefficients and alternative
// fields read as they did: database coefficients, no name.
TEST(TuningDb, WinnersWithoutTheNewerFieldsReadAsBefore) {
  json j = json::parse(valid_db().to_json());
  for (auto& [key, w] : j["winners"].items()) {
    w.erase("builtin_coefficients");
    w.erase("alternative");
  }
  const TuningDb back = TuningDb::from_json(j.dump(), "db.json");
  for (const auto& [key, w] : back.winners) {
    EXPECT_FALSE(w.builtin_coefficients) << key;
    EXPECT_EQ(w.alternative, "") << key;
  }
  // ... and are written back without them.
  EXPECT_EQ(json::parse(back.to_json())["winners"], j["winners"]);
}

TEST(TuningDb, MeasuredHeadDimsAreTheItemsOnes) {
  TuningDb db = valid_db();
  EXPECT_EQ(db.measured_head_dims(), (std::set<int>{128}));
  db.items.push_back(db.items.front());
  db.items.back().head_dim = 64;
  EXPECT_EQ(db.measured_head_dims(), (std::set<int>{64, 128}));
  db.items.clear();
  EXPECT_TRUE(db.measured_head_dims().empty());
}

TEST(TuningDb, OnlyACompleteMeasuredCompatibleDatabaseForThisGpuIsUsed) {
  auto refused = [](const TuningDb& db, const DeviceKey& key, const char* needle) {
    EXPECT_EQ(expect_error([&] { check_tuning_db(db, key, "db.json"); },
                           ErrorKind::kInvalidArgument, {"db.json", needle}),
              "");
  };
  DeviceKey h100 = kH200;
  h100.name = "NVIDIA H100 80GB HBM3";
  refused(valid_db(), h100, "made for another GPU: device 'NVIDIA H200'");
  DeviceKey mig = kH200;
  mig.memory_mib = 17000;
  refused(valid_db(), mig, "143771 MiB, not 17000");
  TuningDb db = valid_db();
  db.complete = false;
  refused(db, kH200, "unfinished canopy-tune run");
  db = valid_db();
  db.synthetic = true;
  refused(db, kH200, "synthetic timings");
  db = valid_db();
  db.canopy_version = "9.9.0";
  refused(db, kH200, "made by Canopy 9.9.0");
}

TEST(TuningDb, LoadNamesAMissingFile) {
  EXPECT_EQ(expect_error([] { load_tuning_db("/nonexistent/canopy/db.json"); }, ErrorKind::kIo,
                         {"/nonexistent/canopy/db.json", "cannot read"}),
            "");
}

// A scratch folder and environment for the search path, restored after.
class TuningSearch : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("canopy-tuning-test-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "config" / "canopy");
    for (const char* name : {"CANOPY_TUNING_DB", "XDG_CONFIG_HOME"}) {
      const char* v = std::getenv(name);
      saved_.emplace_back(name, v != nullptr ? std::optional<std::string>(v) : std::nullopt);
    }
    ::unsetenv("CANOPY_TUNING_DB");
    ::setenv("XDG_CONFIG_HOME", (dir_ / "config").c_str(), 1);
  }
  void TearDown() override {
    for (const auto& [name, value] : saved_) {
      if (value) {
        ::setenv(name.c_str(), value->c_str(), 1);
      } else {
        ::unsetenv(name.c_str());
      }
    }
    fs::remove_all(dir_);
  }
  std::string write(const std::string& rel, const std::string& text) {
    const fs::path p = dir_ / rel;
    fs::create_directories(p.parent_path());
    std::ofstream(p) << text;
    return p.string();
  }
  std::string user_dir() const { return (dir_ / "config" / "canopy").string(); }

  fs::path dir_;
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

TEST_F(TuningSearch, PathOrder) {
  ::setenv("CANOPY_TUNING_DB", "/env/db.json", 1);
  const std::vector<std::string> path = tuning_search_path("/explicit.json");
  ASSERT_GE(path.size(), 3u);
  EXPECT_EQ(path[0], "/explicit.json");
  EXPECT_EQ(path[1], "/env/db.json");
  EXPECT_EQ(path[2], user_dir());
}

TEST_F(TuningSearch, FindsTheMatchingDatabaseAndSkipsOtherGpus) {
  TuningDb other = valid_db();
  other.device.name = "NVIDIA A100-SXM4-80GB";
  write("config/canopy/a100.json", other.to_json());
  const std::string mine = write("config/canopy/h200.json", valid_db().to_json());
  const TuningSelection s = select_tuning_db(kH200);
  ASSERT_TRUE(s.db.has_value()) << s.status.message;
  EXPECT_TRUE(s.status.tuned);
  EXPECT_EQ(s.status.database, mine);
  EXPECT_TRUE(s.status.refused.empty());
  EXPECT_EQ(s.db->coefficients, valid_db().coefficients);
}

TEST_F(TuningSearch, RefusedDatabasesFallBackToTheDefaultsAndSaySo) {
  // A corrupt file in the user's folder, an explicit database for another
  // GPU and one made by another Canopy: each refused with its reason.
  write("config/canopy/broken.json", "{\"format\": \"canopy-tuning-db/1\", \"dev");
  TuningDb other = valid_db();
  other.device.num_sms = 114;
  other.coefficients.num_sms = 114;
  const std::string explicit_path = write("other.json", other.to_json());
  TuningDb old = valid_db();
  old.canopy_version = "0.0.1";
  write("config/canopy/old.json", old.to_json());
  const TuningSelection s = select_tuning_db(kH200, explicit_path);
  EXPECT_FALSE(s.db.has_value());
  EXPECT_FALSE(s.status.tuned);
  ASSERT_EQ(s.status.refused.size(), 3u) << s.status.message;
  EXPECT_NE(s.status.refused[0].find("other.json: made for another GPU: 114 SMs, not 132"),
            std::string::npos)
      << s.status.refused[0];
  EXPECT_NE(s.status.refused[1].find("broken.json: not valid JSON"), std::string::npos);
  EXPECT_NE(s.status.refused[2].find("old.json: made by Canopy 0.0.1"), std::string::npos);
  EXPECT_NE(s.status.message.find("built-in default coefficients"), std::string::npos);
  EXPECT_NE(s.status.message.find("other.json"), std::string::npos);
}

TEST_F(TuningSearch, EnvironmentFileMustExistAndOffSearchesNothing) {
  ::setenv("CANOPY_TUNING_DB", (dir_ / "missing.json").c_str(), 1);
  TuningSelection s = select_tuning_db(kH200);
  ASSERT_EQ(s.status.refused.size(), 1u);
  EXPECT_NE(s.status.refused[0].find("missing.json: no such file"), std::string::npos);
  s = select_tuning_db(kH200, "off");
  EXPECT_TRUE(s.status.searched.empty());
  EXPECT_FALSE(s.status.tuned);
  EXPECT_NE(s.status.message.find("off"), std::string::npos);
}

TEST_F(TuningSearch, NothingFoundIsNotAnError) {
  const TuningSelection s = select_tuning_db(kH200);
  EXPECT_FALSE(s.status.tuned);
  EXPECT_TRUE(s.status.refused.empty());
  EXPECT_NE(s.status.message.find("no tuning database for this GPU"), std::string::npos);
}

PrefixTree tree_of(const char* text, int page_size = 16) {
  return discover_prefix_tree(
      workload::block_tables_from_shape(workload::TreeShape::parse(text), page_size), page_size);
}

TEST(ShapeClass, BucketsByLog2AndKeepsTheSpec) {
  AttentionSpec spec;
  spec.num_qo_heads = 32;
  spec.num_kv_heads = 8;
  const std::string a = shape_class(spec, tree_of("1,4,64|2048,1024,256"));
  EXPECT_EQ(a, "d128.fp16.g4.h4.p16|b7|L0:n1.f3.t12|L1:n3.f5.t11|L2:n7.f0.t9");
  // 1.5x the lengths stays in the class; twice the prompt does not.
  EXPECT_EQ(shape_class(spec, tree_of("1,4,64|3000,1100,300")), a);
  EXPECT_NE(shape_class(spec, tree_of("1,4,64|4096,1024,256")), a);
  EXPECT_NE(shape_class(spec, tree_of("1,64|2048,256")), a);
  spec.kv_dtype = DType::kBF16;
  EXPECT_NE(shape_class(spec, tree_of("1,4,64|2048,1024,256")), a);
}

}  // namespace
}  // namespace canopy
