// SlotPool: first-fit allocation inside chunks, coalescing on free, full
// pool, fragmentation, adoption's Reserve checks and the quarantine.
#include "dataplane/xdp/slot_pool.h"

#include <algorithm>
#include <random>
#include <set>

#include "gtest/gtest.h"

namespace kpx::xdp {
namespace {

TEST(SlotPool, NothingWithoutChunks) {
  SlotPool pool(100, 4);
  EXPECT_EQ(pool.Allocate(10), std::nullopt);
  EXPECT_EQ(pool.MissingChunks(2), (std::vector<uint32_t>{0, 1}));
  pool.AddChunk(0);
  EXPECT_EQ(pool.chunk_count(), 1u);
  EXPECT_EQ(pool.capacity_slots(), 100u);
  EXPECT_EQ(pool.MissingChunks(5), (std::vector<uint32_t>{1, 2, 3}));
  pool.AddChunk(9);  // out of range: ignored
  EXPECT_EQ(pool.chunk_count(), 1u);
}

TEST(SlotPool, FirstFitAndRangesNeverCrossAChunk) {
  SlotPool pool(100, 4);
  pool.AddChunk(0);
  pool.AddChunk(1);
  EXPECT_EQ(pool.Allocate(60), 0u);
  EXPECT_EQ(pool.Allocate(30), 60u);
  // 10 left in chunk 0: a 20-slot range goes to chunk 1, not across.
  EXPECT_EQ(pool.Allocate(20), 100u);
  EXPECT_EQ(pool.Allocate(10), 90u);  // first fit fills chunk 0's tail
  EXPECT_EQ(pool.Allocate(101), std::nullopt);
  EXPECT_EQ(pool.Allocate(0), std::nullopt);
  EXPECT_EQ(pool.used_slots(), 120u);
}

TEST(SlotPool, FullPoolThenFreeMakesRoom) {
  SlotPool pool(100, 1);
  pool.AddChunk(0);
  for (uint32_t i = 0; i < 4; ++i) EXPECT_EQ(pool.Allocate(25), i * 25);
  EXPECT_EQ(pool.Allocate(1), std::nullopt);
  EXPECT_EQ(pool.largest_free(), 0u);
  pool.Free(25, 25);
  EXPECT_EQ(pool.Allocate(26), std::nullopt);
  EXPECT_EQ(pool.Allocate(25), 25u);
}

TEST(SlotPool, FreeCoalescesBothNeighbours) {
  SlotPool pool(100, 1);
  pool.AddChunk(0);
  const uint32_t a = *pool.Allocate(30), b = *pool.Allocate(30), c = *pool.Allocate(30);
  EXPECT_EQ(pool.free_extents(), 1u);  // the 10-slot tail
  pool.Free(a, 30);
  pool.Free(c, 30);  // merges with the tail
  EXPECT_EQ(pool.free_extents(), 2u);
  pool.Free(b, 30);  // joins all three
  EXPECT_EQ(pool.free_extents(), 1u);
  EXPECT_EQ(pool.largest_free(), 100u);
  EXPECT_EQ(pool.used_slots(), 0u);
  EXPECT_EQ(pool.Allocate(100), 0u);
}

TEST(SlotPool, ReserveRejectsOverlapCrossingAndAbsentChunks) {
  SlotPool pool(100, 4);
  pool.AddChunk(0);
  pool.AddChunk(1);
  EXPECT_TRUE(pool.Reserve(10, 20));
  EXPECT_FALSE(pool.Reserve(25, 10)) << "overlaps 10..29";
  EXPECT_FALSE(pool.Reserve(5, 10)) << "overlaps 10..29 from below";
  EXPECT_FALSE(pool.Reserve(95, 10)) << "crosses into chunk 1";
  EXPECT_FALSE(pool.Reserve(250, 5)) << "chunk 2 does not exist";
  EXPECT_FALSE(pool.Reserve(40, 0));
  EXPECT_TRUE(pool.Reserve(30, 5));  // adjacent is fine
  EXPECT_TRUE(pool.Reserve(100, 100));
  EXPECT_EQ(pool.used_slots(), 125u);
  // Allocation works around the reserved ranges.
  EXPECT_EQ(pool.Allocate(10), 0u);
  EXPECT_EQ(pool.Allocate(10), 35u);
  EXPECT_EQ(pool.Allocate(60), std::nullopt);
}

TEST(SlotPool, QuarantinedRangesAreReusedOnlyAfterTheirTime) {
  SlotPool pool(100, 1);
  pool.AddChunk(0);
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  const uint32_t a = *pool.Allocate(100);
  pool.Quarantine(a, 100, t0 + absl::Seconds(2));
  EXPECT_EQ(pool.quarantined_slots(), 100u);
  EXPECT_EQ(pool.used_slots(), 100u) << "quarantined slots are not free";
  EXPECT_EQ(pool.Reclaim(t0 + absl::Seconds(1)), 0u);
  EXPECT_EQ(pool.Allocate(1), std::nullopt);
  EXPECT_EQ(pool.Reclaim(t0 + absl::Seconds(2)), 1u);
  EXPECT_EQ(pool.quarantined_slots(), 0u);
  EXPECT_EQ(pool.Allocate(100), 0u);
}

// Churn with the Maglev size list: every live range stays disjoint and inside
// one chunk, and after freeing everything the pool is whole again.
TEST(SlotPool, RandomChurnKeepsRangesDisjointAndCoalescesBack) {
  constexpr uint32_t kChunk = 1 << 14;
  SlotPool pool(kChunk, 8);
  for (uint32_t c = 0; c < 8; ++c) pool.AddChunk(c);
  const uint32_t sizes[] = {251, 509, 1021, 2039, 4093};
  std::mt19937 rng(7);
  std::vector<std::pair<uint32_t, uint32_t>> live;
  for (int step = 0; step < 20000; ++step) {
    if (live.empty() || rng() % 3 != 0) {
      const uint32_t len = sizes[rng() % 5];
      if (auto off = pool.Allocate(len)) {
        EXPECT_EQ(*off / kChunk, (*off + len - 1) / kChunk) << "range crosses a chunk";
        live.emplace_back(*off, len);
      }
    } else {
      const size_t i = rng() % live.size();
      pool.Free(live[i].first, live[i].second);
      live[i] = live.back();
      live.pop_back();
    }
  }
  std::sort(live.begin(), live.end());
  uint64_t used = 0;
  for (size_t i = 0; i < live.size(); ++i) {
    used += live[i].second;
    if (i > 0) {
      EXPECT_LE(live[i - 1].first + live[i - 1].second, live[i].first) << "overlap";
    }
  }
  EXPECT_EQ(pool.used_slots(), used);
  // Fragmentation stays bounded: the free space is in few extents.
  EXPECT_LT(pool.free_extents(), live.size() + 8);
  for (const auto& [off, len] : live) pool.Free(off, len);
  EXPECT_EQ(pool.used_slots(), 0u);
  EXPECT_EQ(pool.free_extents(), 8u);
  EXPECT_EQ(pool.largest_free(), kChunk);
}

}  // namespace
}  // namespace kpx::xdp
