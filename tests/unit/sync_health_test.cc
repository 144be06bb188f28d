// SyncHealth: kube-proxy's /healthz rule (503 only once a change has waited
// longer than the timeout to be programmed).
#include "controller/base/sync_health.h"

#include "gtest/gtest.h"

namespace kpx {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1700000000);

TEST(SyncHealthTest, HealthyWithNothingPendingHoweverOldTheLastSync) {
  SyncHealth h(absl::Seconds(60));
  EXPECT_TRUE(h.Check(kT0).healthy);
  h.Synced(kT0);
  SyncHealth::Verdict v = h.Check(kT0 + absl::Hours(5));
  EXPECT_TRUE(v.healthy);
  EXPECT_EQ(v.last_updated, kT0);
  EXPECT_EQ(v.oldest_pending, absl::InfiniteFuture());
}

TEST(SyncHealthTest, UnhealthyOncePendingLongerThanTimeoutUntilSynced) {
  SyncHealth h(absl::Seconds(60));
  h.Synced(kT0);
  h.Queued(kT0 + absl::Seconds(10));
  EXPECT_TRUE(h.Check(kT0 + absl::Seconds(70)).healthy);   // exactly the timeout
  EXPECT_FALSE(h.Check(kT0 + absl::Seconds(71)).healthy);
  h.Synced(kT0 + absl::Seconds(80));
  SyncHealth::Verdict v = h.Check(kT0 + absl::Seconds(81));
  EXPECT_TRUE(v.healthy);
  EXPECT_EQ(v.last_updated, kT0 + absl::Seconds(80));
}

TEST(SyncHealthTest, TheOldestPendingChangeCounts) {
  SyncHealth h(absl::Seconds(60));
  h.Queued(kT0);
  // A stream of newer changes does not hide the stuck one.
  for (int i = 1; i <= 100; ++i) h.Queued(kT0 + absl::Seconds(i));
  SyncHealth::Verdict v = h.Check(kT0 + absl::Seconds(61));
  EXPECT_FALSE(v.healthy);
  EXPECT_EQ(v.oldest_pending, kT0);
}

}  // namespace
}  // namespace kpx
