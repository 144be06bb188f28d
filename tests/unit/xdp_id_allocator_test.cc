// IdAllocator: fresh ids first, quarantine before reuse, early reuse only
// when nothing else is left, adoption gaps quarantined, rollback frees at once.
#include "dataplane/xdp/id_allocator.h"

#include "gtest/gtest.h"

namespace kpx::xdp {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1700000000);

TEST(IdAllocator, FreshIdsThenQuarantinedOldestFirst) {
  IdAllocator ids("kpx_backends", 4, absl::Minutes(10));  // ids 1..3
  EXPECT_EQ(*ids.Allocate(kT0), 1u);
  EXPECT_EQ(*ids.Allocate(kT0), 2u);
  ids.Release(2, kT0);
  ids.Release(1, kT0 + absl::Seconds(1));
  EXPECT_EQ(*ids.Allocate(kT0), 3u);  // a never-used id beats a quarantined one
  EXPECT_EQ(ids.available(), 2u);
  // Quarantine over: the id released first comes back first.
  EXPECT_EQ(*ids.Allocate(kT0 + absl::Minutes(11)), 2u);
  EXPECT_EQ(*ids.Allocate(kT0 + absl::Minutes(11)), 1u);
  absl::StatusOr<uint32_t> full = ids.Allocate(kT0 + absl::Minutes(11));
  ASSERT_FALSE(full.ok());
  EXPECT_TRUE(absl::IsResourceExhausted(full.status()));
  EXPECT_NE(full.status().message().find("kpx_backends is full"), absl::string_view::npos);
}

TEST(IdAllocator, EarlyReuseOnlyWhenNothingElse) {
  IdAllocator ids("x", 3, absl::Minutes(10));  // ids 1..2
  ASSERT_EQ(*ids.Allocate(kT0), 1u);
  ASSERT_EQ(*ids.Allocate(kT0), 2u);
  ids.Release(1, kT0);
  EXPECT_EQ(*ids.Allocate(kT0 + absl::Seconds(5)), 1u);  // still quarantined, but the only one
}

TEST(IdAllocator, TakeAndUnallocate) {
  IdAllocator ids("x", 10, absl::Minutes(10));
  ASSERT_EQ(*ids.Allocate(kT0), 1u);
  ids.Release(1, kT0);
  EXPECT_TRUE(ids.Take(1));   // same address comes back: same id
  EXPECT_FALSE(ids.Take(1));  // in use
  EXPECT_FALSE(ids.Take(0));
  EXPECT_FALSE(ids.Take(10));
  ASSERT_EQ(*ids.Allocate(kT0), 2u);
  ids.Unallocate(2);  // rolled back: free at once
  EXPECT_EQ(*ids.Allocate(kT0), 2u);
}

TEST(IdAllocator, AdoptionQuarantinesGapsBelowHighestId) {
  IdAllocator ids("x", 10, absl::Minutes(10));
  EXPECT_TRUE(ids.Reserve(2));
  EXPECT_TRUE(ids.Reserve(5));
  EXPECT_FALSE(ids.Reserve(5));
  ids.FinishAdoption(kT0);
  // 1, 3, 4 may still be named by conntrack: fresh ids from 6 first.
  EXPECT_EQ(*ids.Allocate(kT0), 6u);
  EXPECT_EQ(*ids.Allocate(kT0), 7u);
  EXPECT_EQ(*ids.Allocate(kT0), 8u);
  EXPECT_EQ(*ids.Allocate(kT0), 9u);
  EXPECT_EQ(*ids.Allocate(kT0 + absl::Hours(1)), 1u);
}

}  // namespace
}  // namespace kpx::xdp
