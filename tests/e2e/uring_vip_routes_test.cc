// --vip-local-routes on the io_uring path (lab kpxvr-): VIPs inside the
// prefix are local through one `local` route on kpx0, not one /32 each;
// traffic through the VIP works the same, and the route goes with kpxd.
#include "tests/e2e/fault_load.h"

namespace kpx::e2e {
namespace {

class UringVipRoutesTest : public KpxdLabFixture {
 protected:
  static void SetUpTestSuite() { LabUp("kpxvr-"); }
  static void TearDownTestSuite() { LabDown("kpxvr-"); }
  std::string Prefix() const override { return "kpxvr-"; }
  std::vector<std::string> DataplaneArgs() const override {
    return {"--dataplane=uring", "--vip-local-routes=10.96.0.0/12", "--health_checks=false"};
  }
  std::string Node(const std::string& cmd) const { return ShOut("ip -n " + Prefix() + "node " + cmd + " 2>&1"); }
};

TEST_F(UringVipRoutesTest, VipsInThePrefixNeedNoAddressAndTrafficFlows) {
  CopyExample("flask.yaml");
  StartKpxd();
  Spread s = Requests(40);
  EXPECT_EQ(s.failed, 0);
  EXPECT_EQ(s.by_pod.size(), 4u) << "requests through the VIP reached " << s.by_pod.size() << " pods";
  EXPECT_THAT(Node("-4 route show table local"), HasSubstr("local 10.96.0.0/12 dev kpx0"));
  const std::string addrs = Node("-4 addr show dev kpx0");
  EXPECT_THAT(addrs, Not(HasSubstr("10.96.4.197"))) << addrs;
  // Another address of the prefix is local too: nothing listens there, so
  // the node answers a connect with a reset at once (no timeout, no route out).
  InNetns(Prefix() + "client", [] {
    const auto t0 = Clock::now();
    int fd = ConnectTimeout("10.96.77.77", 5000, 2000);
    EXPECT_LT(fd, 0);
    EXPECT_LT(MsBetween(t0, Clock::now()), 1000) << "a connect to an unserved VIP timed out instead of a reset";
    if (fd >= 0) close(fd);
  });

  ASSERT_EQ(StopKpxd(), 0);
  EXPECT_THAT(Node("-4 route show table local"), Not(HasSubstr("10.96.0.0/12")));
}

TEST_F(UringVipRoutesTest, BadPrefixIsRefusedNamingTheFlag) {
  const std::string out = ShOut(kpx::testing::BinaryPath("tools/kpxd") + " --netns=" + Prefix() +
                                "node --dataplane=uring --vip-local-routes=10.96.0.0/33 2>&1");
  EXPECT_THAT(out, HasSubstr("--vip-local-routes"));
}

}  // namespace
}  // namespace kpx::e2e
