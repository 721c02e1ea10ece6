// KernelSpec strings, names and hashes; AttentionSpec validation messages.
#include "canopy/kernel_spec.hpp"

#include <gtest/gtest.h>

#include <cctype>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "canopy/error.hpp"
#include "canopy/spec.hpp"

namespace canopy {
namespace {

KernelSpec base_spec() { return KernelSpec{}; }

TEST(KernelSpec, StringIsStableAndNamesEveryField) {
  EXPECT_EQ(base_spec().to_string(),
            "mma_hd128_q-fp16_kv-fp16_o-fp16_nhd_q64_kv64_w4_s3_cap0_lse0_fan0_sm90");
  EXPECT_EQ(base_spec().kernel_name(),
            "canopy_mma_hd128_q_fp16_kv_fp16_o_fp16_nhd_q64_kv64_w4_s3_cap0_lse0_fan0_sm90");
  EXPECT_EQ(base_spec().hash(), base_spec().hash());
  KernelSpec a_target = base_spec();
  a_target.arch = kSm90a;
  EXPECT_TRUE(a_target.to_string().ends_with("_sm90a")) << a_target.to_string();
}

TEST(KernelSpec, KernelNameIsACIdentifier) {
  const std::string name = base_spec().kernel_name();
  ASSERT_FALSE(name.empty());
  EXPECT_FALSE(std::isdigit(static_cast<unsigned char>(name[0])));
  for (char c : name) EXPECT_TRUE(std::isalnum(static_cast<unsigned char>(c)) || c == '_') << c;
}

TEST(KernelSpec, EveryFieldChangesStringNameAndHash) {
  const std::vector<std::function<void(KernelSpec&)>> flips = {
      [](KernelSpec& s) { s.family = KernelFamily::kMergeStates; },
      [](KernelSpec& s) { s.family = KernelFamily::kFmaAttention; },
      [](KernelSpec& s) { s.head_dim = 64; },
      [](KernelSpec& s) { s.q_dtype = DType::kBF16; },
      [](KernelSpec& s) { s.kv_dtype = DType::kBF16; },
      [](KernelSpec& s) { s.o_dtype = DType::kF32; },
      [](KernelSpec& s) { s.kv_layout = KvLayout::kHND; },
      [](KernelSpec& s) { s.tile.tile_q = 32; },
      [](KernelSpec& s) { s.tile.tile_kv = 32; },
      [](KernelSpec& s) { s.tile.warps = 8; },
      [](KernelSpec& s) { s.tile.stages = 1; },
      [](KernelSpec& s) { s.soft_cap = true; },
      [](KernelSpec& s) { s.with_lse = true; },
      [](KernelSpec& s) { s.merge_fan_in = 4; },
      [](KernelSpec& s) { s.arch = kSm80; },
      [](KernelSpec& s) { s.arch = kSm90a; },
      [](KernelSpec& s) { s.persistent = true; },
  };
  std::set<std::string> strings = {base_spec().to_string()};
  std::set<std::string> names = {base_spec().kernel_name()};
  std::set<std::uint64_t> hashes = {base_spec().hash()};
  for (const auto& flip : flips) {
    KernelSpec s = base_spec();
    flip(s);
    EXPECT_NE(s, base_spec());
    EXPECT_TRUE(strings.insert(s.to_string()).second) << s.to_string();
    EXPECT_TRUE(names.insert(s.kernel_name()).second) << s.kernel_name();
    EXPECT_TRUE(hashes.insert(s.hash()).second) << s.to_string();
  }
}

TEST(KernelSpec, PartialSpecNormalisesFieldsTheKernelIgnores) {
  AttentionSpec a;
  a.o_dtype = DType::kBF16;
  a.with_lse = true;
  a.logits_soft_cap = 30;
  const KernelConfig tile{KernelFamily::kMmaAttention, 64, 64, 4, 3};
  const KernelSpec k = partial_kernel_spec(a, tile, kSm80);
  EXPECT_EQ(k.family, KernelFamily::kMmaAttention);
  EXPECT_EQ(k.o_dtype, DType::kF32);  // partial states are float32
  EXPECT_FALSE(k.with_lse);
  EXPECT_TRUE(k.soft_cap);
  EXPECT_EQ(k.tile, tile);
  EXPECT_EQ(k.arch, kSm80);
  a.o_dtype = DType::kF16;
  a.with_lse = false;
  EXPECT_EQ(partial_kernel_spec(a, tile, kSm80), k);
}

TEST(KernelSpec, PersistentFormIsItsOwnKernel) {
  const AttentionSpec a;
  const KernelConfig tile{KernelFamily::kMmaAttention, 64, 64, 4, 3};
  const KernelSpec plain = partial_kernel_spec(a, tile, kSm90);
  const KernelSpec persistent = partial_kernel_spec(a, tile, kSm90, /*persistent=*/true);
  EXPECT_FALSE(plain.persistent);
  EXPECT_TRUE(persistent.persistent);
  // The plain form keeps the string (and so the cached cubins) it always had.
  EXPECT_EQ(plain.to_string(),
            "mma_hd128_q-fp16_kv-fp16_o-fp32_nhd_q64_kv64_w4_s3_cap0_lse0_fan0_sm90");
  EXPECT_EQ(persistent.to_string(), plain.to_string() + "_persistent");
  EXPECT_NE(persistent.kernel_name(), plain.kernel_name());
}

TEST(KernelSpec, MergeSpecRoundsFanInUpToAnUnrolledBucket) {
  AttentionSpec a;
  a.with_lse = true;
  const std::vector<std::pair<int, int>> cases = {{0, 0}, {1, 1},  {2, 2},   {3, 4},  {4, 4},
                                                  {5, 8}, {9, 16}, {16, 16}, {17, 0}, {100, 0}};
  for (auto [fan_in, bucket] : cases) {
    const KernelSpec k = merge_kernel_spec(a, fan_in, kSm90);
    EXPECT_EQ(k.merge_fan_in, bucket) << fan_in;
    EXPECT_EQ(k.family, KernelFamily::kMergeStates);
    EXPECT_TRUE(k.with_lse);
    EXPECT_EQ(k.o_dtype, a.o_dtype);
  }
  AttentionSpec b = a;
  b.kv_layout = KvLayout::kHND;  // merges do not read KV
  b.q_dtype = DType::kBF16;
  EXPECT_EQ(merge_kernel_spec(a, 4, kSm90), merge_kernel_spec(b, 4, kSm90));
}

TEST(KernelConfig, ParseReadsWhatToStringWrites) {
  const std::vector<KernelConfig> configs = {
      {KernelFamily::kMmaAttention, 64, 64, 4, 3}, {KernelFamily::kMmaAttention, 128, 32, 4, 3},
      {KernelFamily::kMmaAttention, 64, 64, 4, 2}, {KernelFamily::kMmaAttention, 256, 128, 8, 4},
      {KernelFamily::kFmaAttention, 16, 64, 4, 2}, {KernelFamily::kFmaAttention, 64, 32, 4, 1},
      {KernelFamily::kMergeStates, 0, 0, 0, 0},
  };
  for (const KernelConfig& c : configs) {
    EXPECT_EQ(KernelConfig::parse(c.to_string()), c) << c.to_string();
  }
  EXPECT_EQ(KernelConfig{}.to_string(), "mma_q64_kv64_w4_s3");
  EXPECT_EQ((KernelConfig{KernelFamily::kFmaAttention, 16, 64, 4, 2}.to_string()),
            "fma_q16_kv64_w4_s2");
  for (KernelFamily f :
       {KernelFamily::kFmaAttention, KernelFamily::kMmaAttention, KernelFamily::kMergeStates}) {
    EXPECT_EQ(kernel_family_from_string(to_string(f)), f);
  }
}

TEST(KernelConfig, ParseRejectsMalformedTextNamingIt) {
  for (const std::string text :
       {"", "mma", "mma_", "mma_q64_kv64_w4", "mma_q64_kv64_w4_s3_x", "mma_q64kv64_w4_s3",
        "mma_q64_kv64_w4_s3 ", "mma_qx_kv64_w4_s3", "mma-q64-kv64-w4-s3",
        // Non-canonical spellings sscanf would read: signs, spaces, leading zeros.
        "mma_q 64_kv64_w4_s3", "mma_q-64_kv64_w4_s3", "mma_q+64_kv64_w4_s3", "mma_q064_kv64_w4_s3",
        // Zero sizes for an attention family, or a tile for the merge kernel.
        "mma_q0_kv64_w4_s3", "fma_q16_kv64_w4_s0", "merge_q64_kv0_w0_s0"}) {
    try {
      KernelConfig::parse(text);
      ADD_FAILURE() << "accepted '" << text << "'";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument) << e.what();
      EXPECT_NE(std::string(e.what()).find("'" + text + "'"), std::string::npos) << e.what();
    }
  }
  // A well-formed string of an unknown family names the family.
  for (const std::string text : {"tc_q64_kv64_w4_s3", "_q64_kv64_w4_s3"}) {
    try {
      KernelConfig::parse(text);
      ADD_FAILURE() << "accepted '" << text << "'";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument) << e.what();
      EXPECT_NE(std::string(e.what()).find("unknown kernel family"), std::string::npos) << e.what();
    }
  }
}

TEST(AttentionSpec, ValidateNamesFieldAndValue) {
  auto message_of = [](const AttentionSpec& s, ErrorKind kind) {
    try {
      s.validate();
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), kind) << e.what();
      return std::string(e.what());
    }
    ADD_FAILURE() << "validate() accepted " << s.to_string();
    return std::string();
  };
  AttentionSpec ok;
  EXPECT_NO_THROW(ok.validate());
  AttentionSpec s = ok;
  s.num_qo_heads = 30;
  EXPECT_EQ(message_of(s, ErrorKind::kInvalidArgument),
            "num_qo_heads (30) must be a multiple of num_kv_heads (8)");
  s = ok;
  s.head_dim = 96;
  EXPECT_NE(message_of(s, ErrorKind::kNotSupported).find("head_dim (96)"), std::string::npos);
  s = ok;
  s.page_size = 0;
  EXPECT_NE(message_of(s, ErrorKind::kInvalidArgument).find("page_size (0)"), std::string::npos);
  s = ok;
  s.page_size = 257;
  EXPECT_NE(message_of(s, ErrorKind::kInvalidArgument).find("page_size (257)"), std::string::npos);
  s = ok;
  s.kv_dtype = DType::kF32;
  EXPECT_NE(message_of(s, ErrorKind::kNotSupported).find("kv_dtype (fp32)"), std::string::npos);
  s = ok;
  s.num_kv_heads = 0;
  EXPECT_NE(message_of(s, ErrorKind::kInvalidArgument).find("num_kv_heads (0)"), std::string::npos);
  s = ok;
  s.sm_scale = -1;
  EXPECT_NE(message_of(s, ErrorKind::kInvalidArgument).find("sm_scale"), std::string::npos);
  s = ok;
  s.logits_soft_cap = -2;
  EXPECT_NE(message_of(s, ErrorKind::kInvalidArgument).find("logits_soft_cap"), std::string::npos);
  s = ok;
  s.o_dtype = DType::kF32;
  s.num_kv_heads = 1;  // MQA
  EXPECT_NO_THROW(s.validate());
}

TEST(AttentionSpec, NamesRoundTrip) {
  for (DType t : {DType::kF16, DType::kBF16, DType::kF32}) {
    EXPECT_EQ(dtype_from_string(to_string(t)), t);
  }
  EXPECT_EQ(dtype_from_string("f16"), DType::kF16);
  EXPECT_EQ(dtype_bytes(DType::kBF16), 2);
  EXPECT_EQ(dtype_bytes(DType::kF32), 4);
  for (KvLayout l : {KvLayout::kNHD, KvLayout::kHND}) {
    EXPECT_EQ(kv_layout_from_string(to_string(l)), l);
  }
  EXPECT_THROW(dtype_from_string("fp8"), Error);
  EXPECT_THROW(kv_layout_from_string("nd"), Error);
  EXPECT_STREQ(to_string(ErrorKind::kCompile), "compile error");
  AttentionSpec s;
  s.head_dim = 64;
  EXPECT_DOUBLE_EQ(s.effective_sm_scale(), 0.125);
  s.sm_scale = 0.5;
  EXPECT_DOUBLE_EQ(s.effective_sm_scale(), 0.5);
}

}  // namespace
}  // namespace canopy
