// XdpDataplane over FakeBpfMaps (CreateOnMaps): the Dataplane calls, stats
// from per-service counters, active flows from conntrack, adoption through a
// second instance, Prune; plus the option parsers.
#include "dataplane/xdp/xdp_dataplane.h"

#include <time.h>

#include <set>

#include "absl/strings/str_cat.h"
#include "dataplane/xdp/abi_convert.h"
#include "dataplane/xdp/fake_bpf_maps.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kpx::xdp {
namespace {

using controller::Backend;
using controller::FrontendKey;
using controller::ServiceRule;
using controller::ServiceTable;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

Ipv4 Ip(const char* s) { return *Ipv4::Parse(s); }

ServiceRule Rule(const char* vip, std::vector<const char*> backends) {
  ServiceRule r;
  r.frontend = FrontendKey{Ip(vip), 80};
  for (const char* b : backends) {
    Backend be;
    be.ip = Ip(b);
    be.port = 8080;
    r.backends.push_back(be);
  }
  return r;
}

struct Fixture {
  FakeBpfMaps* maps = nullptr;
  std::unique_ptr<XdpDataplane> dp;
};

Fixture Make() {
  Fixture f;
  auto maps = std::make_unique<FakeBpfMaps>();
  f.maps = maps.get();
  auto dp = XdpDataplane::CreateOnMaps(std::move(maps), XdpOptions{});
  EXPECT_TRUE(dp.ok()) << dp.status();
  f.dp = std::move(*dp);
  return f;
}

// A BpfMaps that forwards to a FakeBpfMaps owned elsewhere, so two
// dataplanes (a "restart") can share one set of maps.
class SharedMaps final : public BpfMaps {
 public:
  explicit SharedMaps(FakeBpfMaps* m) : m_(m) {}
  MapCapacities capacities() const override { return m_->capacities(); }
  absl::Status UpdateService(const kpx_svc_key& k, const kpx_svc& v) override { return m_->UpdateService(k, v); }
  absl::Status DeleteService(const kpx_svc_key& k) override { return m_->DeleteService(k); }
  absl::StatusOr<std::vector<ServiceEntry>> ListServices() const override { return m_->ListServices(); }
  absl::Status UpdateBackend(uint32_t id, const kpx_backend& v) override { return m_->UpdateBackend(id, v); }
  absl::StatusOr<std::vector<BackendEntry>> ListBackends() const override { return m_->ListBackends(); }
  absl::StatusOr<std::vector<uint32_t>> ListMaglevChunks() const override { return m_->ListMaglevChunks(); }
  absl::Status AddMaglevChunks(absl::Span<const uint32_t> idx) override { return m_->AddMaglevChunks(idx); }
  absl::StatusOr<uint32_t> WriteMaglevSlots(uint32_t off, absl::Span<const uint32_t> t) override {
    return m_->WriteMaglevSlots(off, t);
  }
  absl::StatusOr<std::vector<uint32_t>> ReadMaglevSlots(uint32_t off, uint32_t n) const override {
    return m_->ReadMaglevSlots(off, n);
  }
  absl::Status UpdateNodeAddress(Ipv4 a) override { return m_->UpdateNodeAddress(a); }
  absl::Status DeleteNodeAddress(Ipv4 a) override { return m_->DeleteNodeAddress(a); }
  absl::StatusOr<std::vector<Ipv4>> ListNodeAddresses() const override { return m_->ListNodeAddresses(); }
  absl::Status UpdateTxPort(int i) override { return m_->UpdateTxPort(i); }
  absl::Status DeleteTxPort(int i) override { return m_->DeleteTxPort(i); }
  absl::StatusOr<std::vector<int>> ListTxPorts() const override { return m_->ListTxPorts(); }
  absl::Status WriteConfig(const kpx_config& c) override { return m_->WriteConfig(c); }
  absl::StatusOr<kpx_config> ReadConfig() const override { return m_->ReadConfig(); }
  absl::StatusOr<kpx_svc_stats> ReadServiceStats(uint32_t id) const override { return m_->ReadServiceStats(id); }
  absl::Status ClearServiceStats(uint32_t id) override { return m_->ClearServiceStats(id); }
  using BpfMaps::ClearServiceStats;
  absl::StatusOr<VerdictCounters> ReadVerdictStats() const override { return m_->ReadVerdictStats(); }
  absl::Status ForEachConntrack(absl::FunctionRef<bool(const kpx_ct_key&, const kpx_ct_entry&)> fn) const override {
    return m_->ForEachConntrack(fn);
  }
  absl::Status DeleteConntrack(const kpx_ct_key& k) override { return m_->DeleteConntrack(k); }

 private:
  FakeBpfMaps* m_;
};

TEST(XdpDataplane, ApplyStatsAndCounters) {
  Fixture f = Make();
  EXPECT_EQ(f.dp->Name(), "xdp");
  controller::TableDiff diff;
  diff.upserts = {Rule("10.96.0.10", {"10.0.0.1", "10.0.0.2"}), Rule("10.96.0.11", {})};
  ASSERT_TRUE(f.dp->Apply(diff).ok());
  f.maps->SetServiceStats(1, kpx_svc_stats{.packets = 100, .bytes = 6400, .new_flows = 7, .no_backend = 0});
  f.maps->SetServiceStats(2, kpx_svc_stats{.packets = 3, .bytes = 180, .new_flows = 0, .no_backend = 3});

  dataplane::DataplaneStats stats = f.dp->Stats();
  ASSERT_EQ(stats.frontends.size(), 2u);
  EXPECT_EQ(stats.frontends[0].frontend.String(), "10.96.0.10:80/TCP");
  EXPECT_EQ(stats.frontends[0].total, 7u);
  ASSERT_EQ(stats.frontends[0].backends.size(), 2u);
  EXPECT_EQ(stats.frontends[0].backends[1].ip, Ip("10.0.0.2"));
  EXPECT_EQ(stats.frontends[1].rejected, 3u);

  // StatsOf answers for the frontends asked only (an unknown one is left out),
  // with the same counters Stats() reads.
  controller::FrontendKey second = stats.frontends[1].frontend;
  controller::FrontendKey unknown = second;
  unknown.port = 9;
  dataplane::DataplaneStats one = f.dp->StatsOf({second, unknown});
  ASSERT_EQ(one.frontends.size(), 1u);
  EXPECT_EQ(one.frontends[0].frontend, second);
  EXPECT_EQ(one.frontends[0].rejected, 3u);
  EXPECT_EQ(one.frontends[0].backends.size(), stats.frontends[1].backends.size());

  absl::StatusOr<std::vector<FrontendCounters>> counters = f.dp->Counters();
  ASSERT_TRUE(counters.ok());
  ASSERT_EQ(counters->size(), 2u);
  EXPECT_EQ((*counters)[0].stats.bytes, 6400u);
  EXPECT_EQ((*counters)[0].svc_id, 1u);
}

TEST(XdpDataplane, VerdictsAndNames) {
  Fixture f = Make();
  f.maps->SetVerdict(KPX_V_CT_HIT, 41);
  f.maps->SetVerdict(KPX_V_NO_BACKEND, 2);
  absl::StatusOr<VerdictCounters> v = f.dp->VerdictStats();
  ASSERT_TRUE(v.ok());
  EXPECT_EQ((*v)[KPX_V_CT_HIT], 41u);
  EXPECT_EQ((*v)[KPX_V_NO_BACKEND], 2u);
  std::set<std::string> names;
  for (int i = 0; i < KPX_V_MAX; ++i) names.insert(XdpDataplane::VerdictName(i));
  EXPECT_EQ(names.size(), static_cast<size_t>(KPX_V_MAX));  // one distinct name each
  EXPECT_STREQ(XdpDataplane::VerdictName(KPX_V_MAX), "unknown");
}

TEST(XdpDataplane, ActiveFlowsCountForwardConntrackEntries) {
  Fixture f = Make();
  controller::TableDiff diff;
  diff.upserts = {Rule("10.96.0.10", {"10.0.0.1"}), Rule("10.96.0.11", {"10.0.0.1"})};
  ASSERT_TRUE(f.dp->Apply(diff).ok());
  auto add = [&](uint16_t sport, uint32_t svc, uint8_t flags) {
    kpx_ct_key k{};
    k.sport = sport;
    kpx_ct_entry e{};
    e.svc_id = svc;
    e.flags = flags;
    f.maps->AddConntrack(k, e);
  };
  add(1, 1, 0);
  add(1, 1, KPX_CT_F_REPLY);  // the reverse entry of the same flow
  add(2, 1, KPX_CT_F_SEEN_REPLY);
  add(3, 9, 0);  // a service id nobody holds
  auto flows = f.dp->ActiveFlows();
  ASSERT_TRUE(flows.ok()) << flows.status();
  ASSERT_EQ(flows->size(), 2u);
  EXPECT_EQ((*flows)[0].second, 2u);
  EXPECT_EQ((*flows)[1].second, 0u);
}

// Stats().active comes from the conntrack walk: open forward entries per
// (service, backend); closing flows are not active, and closing entries past
// KPX_CT_CLOSING_NS are deleted by the walk (both directions).
TEST(XdpDataplane, StatsCountOpenFlowsPerBackendAndWalkDropsExpiredClosingEntries) {
  Fixture f = Make();
  controller::TableDiff diff;
  diff.upserts = {Rule("10.96.0.10", {"10.0.0.1", "10.0.0.2"})};
  ASSERT_TRUE(f.dp->Apply(diff).ok());
  auto backends = f.maps->ListBackends();
  ASSERT_TRUE(backends.ok());
  uint32_t id1 = 0, id2 = 0;
  for (const BackendEntry& b : *backends) (b.value.addr == Ip("10.0.0.1").be() ? id1 : id2) = b.id;
  ASSERT_NE(id1, 0u);
  ASSERT_NE(id2, 0u);
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  const uint64_t now = uint64_t(ts.tv_sec) * 1000000000ull + ts.tv_nsec;
  uint16_t port = 1;
  auto add = [&](uint32_t backend, uint8_t flags, uint64_t last_seen) {
    kpx_ct_key k{};
    k.sport = port++;
    kpx_ct_entry e{};
    e.svc_id = 1;
    e.backend_id = backend;
    e.flags = flags;
    e.last_seen_ns = last_seen;
    f.maps->AddConntrack(k, e);
  };
  add(id1, 0, now);
  add(id1, KPX_CT_F_SEEN_REPLY | KPX_CT_F_FIN_FWD, now);  // half closed: still open
  add(id1, KPX_CT_F_REPLY, now);                          // reverse entries never count
  add(id2, KPX_CT_F_SEEN_REPLY, now);
  add(id2, KPX_CT_F_RST, now);                                            // closing
  add(id2, KPX_CT_F_FIN_FWD | KPX_CT_F_FIN_REPLY, now - KPX_CT_CLOSING_NS - 1000000000ull);  // expired
  add(id2, KPX_CT_F_REPLY | KPX_CT_F_RST, now - KPX_CT_CLOSING_NS - 1000000000ull);          // expired

  dataplane::DataplaneStats stats = f.dp->Stats();
  ASSERT_EQ(stats.frontends.size(), 1u);
  EXPECT_EQ(stats.frontends[0].active, 3u);
  ASSERT_EQ(stats.frontends[0].backends.size(), 2u);
  for (const dataplane::BackendStats& b : stats.frontends[0].backends) {
    EXPECT_EQ(b.active, b.ip == Ip("10.0.0.1") ? 2u : 1u) << b.ip.ToString();
  }
  size_t left = 0;
  ASSERT_TRUE(f.maps->ForEachConntrack([&](const kpx_ct_key&, const kpx_ct_entry&) { return ++left, true; }).ok());
  EXPECT_EQ(left, 5u) << "the two expired closing entries are deleted";
  absl::StatusOr<ConntrackCensus> again = f.dp->WalkConntrack();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->entries, 5u);
  EXPECT_EQ(again->closing, 1u);
  EXPECT_EQ(again->deleted, 0u);
}

TEST(XdpDataplane, RestartAdoptsAndPruneRemovesOnlyStale) {
  FakeBpfMaps maps;
  ServiceTable desired;
  for (auto r : {Rule("10.96.0.10", {"10.0.0.1"}), Rule("10.96.0.11", {"10.0.0.2"})}) desired[r.frontend] = r;
  {
    auto first = XdpDataplane::CreateOnMaps(std::make_unique<SharedMaps>(&maps), XdpOptions{});
    ASSERT_TRUE(first.ok());
    ASSERT_TRUE((*first)->Apply(controller::Diff(desired, {})).ok());
    ASSERT_TRUE((*first)->Apply({.upserts = {Rule("10.96.0.12", {"10.0.0.3"})}}).ok());
  }
  maps.ClearOps();
  auto second = XdpDataplane::CreateOnMaps(std::make_unique<SharedMaps>(&maps), XdpOptions{});
  ASSERT_TRUE(second.ok());
  EXPECT_EQ((*second)->adoption().frontends, 3u);
  EXPECT_EQ((*second)->Stats().frontends.size(), 3u);  // adopted ones are reported too
  ASSERT_TRUE((*second)->Apply(controller::Diff(desired, {})).ok());
  EXPECT_THAT(maps.ops(), IsEmpty());
  ASSERT_TRUE((*second)->Prune(desired).ok());
  EXPECT_THAT(maps.ops(), ElementsAre("DeleteService 10.96.0.12:80/6", "UpdateBackend 3 0.0.0.0:0"));
  // The pruned service's range is quarantined, the others stay in use.
  EXPECT_EQ((*second)->PoolUsage().used_slots, 3u * 251);
  EXPECT_EQ((*second)->PoolUsage().quarantined_slots, 251u);
}

TEST(XdpOptionsParsing, ModesAndCidrs) {
  EXPECT_EQ(*ParseXdpMode("auto"), XdpMode::kAuto);
  EXPECT_EQ(*ParseXdpMode("native"), XdpMode::kNative);
  EXPECT_EQ(*ParseXdpMode("generic"), XdpMode::kGeneric);
  EXPECT_FALSE(ParseXdpMode("skb").ok());
  for (XdpMode m : {XdpMode::kAuto, XdpMode::kNative, XdpMode::kGeneric}) EXPECT_EQ(*ParseXdpMode(XdpModeName(m)), m);

  absl::StatusOr<Ipv4Cidr> c = ParseIpv4Cidr("10.244.3.7/16");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->addr, Ip("10.244.0.0"));  // host bits cleared
  EXPECT_EQ(c->prefix, 16);
  EXPECT_EQ(ParseIpv4Cidr("0.0.0.0/0")->prefix, 0);
  EXPECT_EQ(ParseIpv4Cidr("10.0.0.1/32")->addr, Ip("10.0.0.1"));
  for (const char* bad : {"10.0.0.0", "10.0.0.0/33", "10.0.0.0/-1", "fd00::/64", "10.0.0/8", "x/8"}) {
    EXPECT_FALSE(ParseIpv4Cidr(bad).ok()) << bad;
  }
  EXPECT_EQ(DefaultPinDir(), "/sys/fs/bpf/kpx/v3");
}

TEST(XdpOptionsParsing, SnatPortRange) {
  absl::StatusOr<PortRange> r = ParsePortRange("61000-65535");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->min, 61000);
  EXPECT_EQ(r->max, 65535);
  r = ParsePortRange("40000-40000");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->min, 40000);
  EXPECT_EQ(r->max, 40000);
  for (const char* bad : {"", "61000", "61000-", "-65535", "a-b", "61000-65536", "80-1000", "65535-61000",
                          "61000:65535", "0-0", "61000-65535x"}) {
    absl::StatusOr<PortRange> b = ParsePortRange(bad);
    EXPECT_FALSE(b.ok()) << bad;
    EXPECT_THAT(std::string(b.status().message()), HasSubstr(absl::StrCat("\"", bad, "\""))) << bad;
  }
  EXPECT_THAT(std::string(ParsePortRange("65535-61000").status().message()), HasSubstr("first <= the last"));
}

}  // namespace
}  // namespace kpx::xdp
