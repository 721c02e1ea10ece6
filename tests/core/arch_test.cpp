// Arch: spelling, parsing, feature predicates and limits.
#include "canopy/arch.hpp"

#include <gtest/gtest.h>

#include <string>

#include "canopy/error.hpp"

namespace canopy {
namespace {

TEST(Arch, SpellsEveryForm) {
  EXPECT_EQ(kSm80.to_string(), "sm_80");
  EXPECT_EQ(kSm86.to_string(), "sm_86");
  EXPECT_EQ(kSm90a.to_string(), "sm_90a");
  EXPECT_EQ(kSm90a.virtual_name(), "compute_90a");
  EXPECT_EQ(kSm90.id(), "90");
  EXPECT_EQ(kSm90a.id(), "90a");
  EXPECT_EQ((Arch{10, 0, true}).to_string(), "sm_100a");
}

TEST(Arch, ParsesWhatItSpells) {
  EXPECT_EQ(Arch::parse("sm_90a"), kSm90a);
  EXPECT_EQ(Arch::parse("90a"), kSm90a);
  EXPECT_EQ(Arch::parse("90"), kSm90);
  EXPECT_EQ(Arch::parse("sm90"), kSm90);
  EXPECT_EQ(Arch::parse("compute_89"), kSm89);
  EXPECT_EQ(Arch::parse("sm_100a"), (Arch{10, 0, true}));
  EXPECT_EQ(Arch::parse("120"), (Arch{12, 0}));
  for (const Arch a : {kSm80, kSm86, kSm89, kSm90, kSm90a}) {
    EXPECT_EQ(Arch::parse(a.to_string()), a);
    EXPECT_EQ(Arch::parse(a.id()), a);
    EXPECT_EQ(Arch::parse(a.virtual_name()), a);
  }
  for (const char* bad : {"", "9", "sm_", "abc", "sm_9x", "09", "1000", "90b", "a"}) {
    try {
      Arch::parse(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find("'" + std::string(bad) + "'"), std::string::npos)
          << e.what();
    }
  }
}

TEST(Arch, Features) {
  EXPECT_FALSE((Arch{7, 5}).has_mma());
  EXPECT_FALSE((Arch{7, 5}).has_cp_async());
  for (const Arch a : {kSm80, kSm86, kSm89, kSm90, kSm90a}) {
    EXPECT_TRUE(a.has_mma()) << a.to_string();
    EXPECT_TRUE(a.has_cp_async()) << a.to_string();
  }
  EXPECT_FALSE(kSm89.has_tma());
  EXPECT_TRUE(kSm90.has_tma());
  EXPECT_TRUE(kSm90a.has_tma());
  EXPECT_TRUE((Arch{10, 0}).has_tma());
  // wgmma needs the exact sm_90a target.
  EXPECT_TRUE(kSm90a.has_wgmma());
  EXPECT_FALSE(kSm90.has_wgmma());
  EXPECT_FALSE((Arch{10, 0, true}).has_wgmma());
  EXPECT_FALSE(kSm89.has_wgmma());
}

TEST(Arch, OrderAndArchSpecificTargets) {
  EXPECT_TRUE(kSm90.at_least(kSm80));
  EXPECT_TRUE(kSm90a.at_least(kSm90));  // the `a` suffix aside
  EXPECT_TRUE(kSm90.at_least(kSm90a));
  EXPECT_TRUE(kSm86.at_least(kSm80));
  EXPECT_FALSE(kSm80.at_least(kSm86));
  EXPECT_FALSE((Arch{7, 5}).at_least(kSm80));
  EXPECT_TRUE((Arch{10, 0}).at_least(kSm90));
  EXPECT_TRUE(kSm90.same_sm(kSm90a));
  EXPECT_FALSE(kSm90.same_sm(kSm89));
  EXPECT_EQ(kSm90.specific(), kSm90a);
  EXPECT_EQ(kSm90a.specific(), kSm90a);
  EXPECT_EQ((Arch{10, 0}).specific().to_string(), "sm_100a");
}

TEST(Arch, Limits) {
  EXPECT_EQ(kSm80.max_smem_per_block(), 163 * 1024);
  EXPECT_EQ(kSm86.max_smem_per_block(), 99 * 1024);
  EXPECT_EQ(kSm89.max_smem_per_block(), 99 * 1024);
  EXPECT_EQ(kSm90.max_smem_per_block(), 227 * 1024);
  EXPECT_EQ(kSm90a.max_smem_per_block(), 227 * 1024);  // the `a` changes features, not limits
  EXPECT_EQ(kSm80.max_smem_per_sm(), 164 * 1024);
  EXPECT_EQ(kSm90.max_smem_per_sm(), 228 * 1024);
  EXPECT_EQ(kSm86.max_smem_per_sm(), 100 * 1024);
  EXPECT_EQ(kSm90.max_registers_per_thread(), 255);
  EXPECT_EQ(kSm90.registers_per_sm(), 65536);
  EXPECT_EQ(kSm80.max_threads_per_sm(), 2048);
  EXPECT_EQ(kSm86.max_threads_per_sm(), 1536);
  EXPECT_EQ(kSm89.max_blocks_per_sm(), 24);
  EXPECT_EQ(kSm90.default_num_sms(), 132);
  EXPECT_EQ(kSm80.default_num_sms(), 108);
  for (const Arch a : {kSm80, kSm86, kSm89, kSm90, kSm90a}) {
    EXPECT_TRUE(a.is_known()) << a.to_string();
    EXPECT_LT(a.max_smem_per_block(), a.max_smem_per_sm()) << a.to_string();
  }
  EXPECT_FALSE((Arch{7, 5}).is_known());
}

}  // namespace
}  // namespace canopy
