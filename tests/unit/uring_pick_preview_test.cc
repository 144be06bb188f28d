// PreviewPick: the io_uring proxy's next answer for a client, read without
// moving the round-robin cursor or pinning affinity.
#include "dataplane/uring/pick_preview.h"

#include "gtest/gtest.h"

namespace kpx::uring {
namespace {

controller::ServiceRule Rule(int backends, uint32_t affinity_s = 0) {
  controller::ServiceRule r;
  r.frontend = {*Ipv4::Parse("10.96.0.10"), 80, controller::Protocol::kTCP};
  r.affinity_timeout_s = affinity_s;
  for (int i = 0; i < backends; ++i) {
    controller::Backend b;
    b.ip = *Ipv4::Parse("10.244.0." + std::to_string(i + 2));
    b.port = 8080;
    r.backends.push_back(b);
  }
  return r;
}

TEST(PickPreviewTest, RoundRobinNamesTheNextPickWithoutTakingIt) {
  auto shared = std::make_shared<FrontendShared>(Rule(3).frontend);
  auto config = BuildFrontendConfig(Rule(3), LbAlgorithm::kRoundRobin, shared, nullptr);
  Rng rng(1);
  for (int i = 0; i < 5; ++i) {
    PickPreview p = PreviewPick(config, *Ipv4::Parse("10.0.0.1"), absl::Now());
    ASSERT_EQ(p.decision, PickPreview::Decision::kRoundRobin);
    EXPECT_EQ(PreviewPick(config, *Ipv4::Parse("10.0.0.1"), absl::Now()).backend, p.backend)
        << "preview moved the cursor";
    BackendEntry* got = PickBackend(*config, *Ipv4::Parse("10.0.0.1"), absl::Now(), {}, rng);
    EXPECT_EQ(got, p.backend) << "pick " << i;
  }
}

TEST(PickPreviewTest, LeastConnIsDefiniteOnlyForAUniqueMinimum) {
  auto shared = std::make_shared<FrontendShared>(Rule(3).frontend);
  auto config = BuildFrontendConfig(Rule(3), LbAlgorithm::kLeastConn, shared, nullptr);
  EXPECT_EQ(PreviewPick(config, *Ipv4::Parse("10.0.0.1"), absl::Now()).backend, nullptr);
  config->backends[0]->active = 2;
  config->backends[2]->active = 1;
  PickPreview p = PreviewPick(config, *Ipv4::Parse("10.0.0.1"), absl::Now());
  EXPECT_EQ(p.backend, config->backends[1].get());
}

TEST(PickPreviewTest, AffinityPinWinsAndRandomHasNoSingleAnswer) {
  auto shared = std::make_shared<FrontendShared>(Rule(3, 60).frontend);
  auto config = BuildFrontendConfig(Rule(3, 60), LbAlgorithm::kRandom, shared, nullptr);
  Ipv4 client = *Ipv4::Parse("10.0.0.1");
  PickPreview p = PreviewPick(config, client, absl::Now());
  EXPECT_EQ(p.decision, PickPreview::Decision::kRandom);
  EXPECT_EQ(p.backend, nullptr);
  EXPECT_EQ(p.candidates.size(), 3u);
  Rng rng(7);
  BackendEntry* got = PickBackend(*config, client, absl::Now(), {}, rng);
  p = PreviewPick(config, client, absl::Now());
  EXPECT_EQ(p.decision, PickPreview::Decision::kAffinity);
  EXPECT_EQ(p.backend, got);
}

TEST(PickPreviewTest, NoBackendsNoAnswer) {
  auto shared = std::make_shared<FrontendShared>(Rule(0).frontend);
  auto config = BuildFrontendConfig(Rule(0), LbAlgorithm::kRoundRobin, shared, nullptr);
  EXPECT_EQ(PreviewPick(config, *Ipv4::Parse("10.0.0.1"), absl::Now()).decision,
            PickPreview::Decision::kNoBackend);
}

}  // namespace
}  // namespace kpx::uring
