// canopy-inspect's artifacts of one kernel (the source needs no NVRTC).
#include "runtime/jit/kernel_inspect.hpp"

#include <gtest/gtest.h>

#include "canopy/error.hpp"
#include "generator/kernel_source.hpp"

namespace canopy {
namespace {

KernelSpec merge_spec() {
  AttentionSpec a;
  a.with_lse = true;
  return merge_kernel_spec(a, 4, kSm90);
}

TEST(KernelInspect, SourceArtifactIsTheGeneratedSource) {
  EXPECT_EQ(inspect_kernel(merge_spec(), KernelArtifact::kSource),
            generator::generate_kernel_source(merge_spec()));
  EXPECT_EQ(kernel_artifact_from_string("ptx"), KernelArtifact::kPtx);
  EXPECT_THROW(kernel_artifact_from_string("sass"), Error);
}

}  // namespace
}  // namespace canopy
