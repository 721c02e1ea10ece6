// The Runtime loads the tuning database of its device, and falls back to
// the defaults, saying why, for a database it refuses (docs/tuning.md).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "canopy/planner.hpp"
#include "canopy/runtime.hpp"
#include "canopy/tuning.hpp"
#include "tests/runtime/device/gpu_test_util.hpp"

namespace canopy {
namespace {

namespace fs = std::filesystem;

TEST(GpuTuning, RuntimeUsesItsDevicesDatabaseAndRefusesOthers) {
  CANOPY_REQUIRE_GPU();
  const fs::path dir =
      fs::temp_directory_path() / ("canopy-gpu-tuning-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir / "good");
  const Runtime& shared = test::shared_runtime();
  TuningDb db;
  db.device = shared.device_key();
  db.canopy_version = canopy_version();
  db.nvrtc_version = db.driver_version = "test";
  db.date = "2025-01-01T00:00:00Z";
  db.complete = true;
  db.coefficients = shared.cost_model().coefficients();
  db.coefficients.kernels["mma_q64_kv64_w4_s3"] = {0.7, 2.3e8, 0.93};
  std::ofstream(dir / "good" / "db.json") << db.to_json();

  RuntimeOptions options;
  options.tuning_db = (dir / "good").string();
  Runtime tuned(options);
  EXPECT_TRUE(tuned.tuning_status().tuned) << tuned.tuning_status().message;
  EXPECT_EQ(tuned.cost_model().coefficients().kernels.at("mma_q64_kv64_w4_s3"),
            (KernelCoefficients{0.7, 2.3e8, 0.93}));

  std::ofstream(dir / "broken.json") << "{\"format\": \"canopy-tuning-db/1\"";
  options.tuning_db = (dir / "broken.json").string();
  Runtime fallback(options);
  const TuningStatus& s = fallback.tuning_status();
  ASSERT_FALSE(s.refused.empty());
  EXPECT_NE(s.refused[0].find("broken.json"), std::string::npos) << s.refused[0];
  // The search goes on past a refused file (docs/tuning.md): to the database
  // for this GPU found next (the shipped H100 and H200 ones), else the defaults.
  if (s.tuned) {
    EXPECT_FALSE(s.database.empty());
    EXPECT_EQ(s.database.find("broken.json"), std::string::npos) << s.database;
  } else {
    EXPECT_NE(s.message.find("built-in default coefficients"), std::string::npos) << s.message;
  }
  // The defaults still plan.
  AttentionSpec spec;
  BlockTables tables;
  tables.indptr = {0, 2};
  tables.indices = {0, 1};
  tables.seq_lens = {20};
  tables.num_pages = 2;
  EXPECT_NO_THROW(fallback.plan(spec, tables));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace canopy
