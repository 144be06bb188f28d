// The Maglev slot pool end to end: kpxd's MapWriter over LibbpfMaps (real
// chunks, mmapped, batched installs and batched cold-start writes) programs
// the loaded programs, and SYNs run through BPF_PROG_TEST_RUN go to exactly
// the backend the written table names -- in the first chunk and later ones,
// after an in-place rewrite and after a resize to a new range.
#include <bpf/bpf.h>

#include "controller/diff.h"
#include "dataplane/xdp/libbpf_maps.h"
#include "dataplane/xdp/map_writer.h"
#include "tests/bpf/lb_test_util.h"

namespace kpx::bpftest {
namespace {

using V = std::map<uint32_t, uint64_t>;

class LbPoolTest : public LbTest {
 protected:
  void SetUp() override {
    LbTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    auto maps = xdp::LibbpfMaps::Open(lb().pin_dir());
    ASSERT_TRUE(maps.ok()) << maps.status();
    maps_ = std::move(*maps);
    auto w = xdp::MapWriter::Create(maps_.get(), {});
    ASSERT_TRUE(w.ok()) << w.status();
    writer_ = std::move(*w);
  }
  void TearDown() override {
    writer_.reset();
    maps_.reset();  // unmaps the chunks before the fixture unpins
  }

  static controller::ServiceRule Rule(uint32_t vip, int backends) {
    controller::ServiceRule r;
    r.service.service = {"pool", IpText(vip)};
    r.frontend = controller::FrontendKey{Ipv4::FromBe(vip), kVipPort, controller::Protocol::kTCP};
    for (int i = 0; i < backends; ++i) {
      controller::Backend b;
      b.ip = Ipv4::FromBe(htonl(0x0af40100u + 1 + i));  // 10.244.1.(1+i), shared by all services
      b.port = kBackendPort;
      r.backends.push_back(b);
    }
    return r;
  }

  // SYN from kClient:sport to vip: DNATed to the backend the service's
  // table (read back from the pool) names for this flow's hash.
  void ExpectSynFollowsTable(uint32_t vip, uint16_t sport) {
    SCOPED_TRACE(IpText(vip) + ":" + std::to_string(sport));
    std::optional<uint32_t> off = writer_->MaglevOffset({Ipv4::FromBe(vip), kVipPort});
    ASSERT_TRUE(off.has_value());
    kpx_svc svc{};
    for (const auto& f : writer_->Frontends()) {
      if (f.frontend.ip == Ipv4::FromBe(vip)) svc = f.value;
    }
    auto table = maps_->ReadMaglevSlots(*off, svc.maglev_m);
    ASSERT_TRUE(table.ok()) << table.status();
    const uint32_t id = (*table)[RefHash(kClient, vip, sport, kVipPort) % svc.maglev_m];
    auto be = writer_->BackendAddress(id);
    ASSERT_TRUE(be.has_value()) << "slot names backend id " << id;
    TcpSpec syn = ToVip(sport, kSyn);
    syn.daddr = vip;
    TcpSpec want = syn;
    want.daddr = be->first.be();
    want.dport = be->second;
    Step("syn", BuildTcp(syn), {Action::kPass, BuildTcp(want), V{{KPX_V_NEW_FLOW, 1}, {KPX_V_PASS_STACK, 1}}});
  }

  std::unique_ptr<xdp::LibbpfMaps> maps_;
  std::unique_ptr<xdp::MapWriter> writer_;
};

TEST_P(LbPoolTest, ColdStartBatchThenInPlaceAndResizedTablesAreFollowed) {
  // 70 services of 30 backends: 4093-slot tables, 64 per chunk, so the last
  // ones live in the second chunk. One Apply: the batched path.
  controller::ServiceTable table;
  std::vector<uint32_t> vips;
  for (int i = 0; i < 70; ++i) {
    vips.push_back(htonl(0x0a600100u + 1 + i));  // 10.96.1.(1+i)
    table[Rule(vips.back(), 30).frontend] = Rule(vips.back(), 30);
  }
  ASSERT_TRUE(writer_->Apply(controller::Diff(table, {})).ok());
  EXPECT_EQ(writer_->pool_usage().chunks, 3u) << "one install for the diff: 2 needed + 1 spare";
  EXPECT_EQ(writer_->pool_usage().used_slots, 70u * 4093);
  auto services = maps_->ListServices();
  ASSERT_TRUE(services.ok());
  EXPECT_EQ(services->size(), 70u);
  EXPECT_EQ(*writer_->MaglevOffset({Ipv4::FromBe(vips[69]), kVipPort}) >> KPX_MAGLEV_CHUNK_SHIFT, 1u);
  ExpectSynFollowsTable(vips[0], 41000);
  ExpectSynFollowsTable(vips[69], 41001);

  // One backend fewer: same M, rewritten in place at the same offset.
  const uint32_t off = *writer_->MaglevOffset({Ipv4::FromBe(vips[69]), kVipPort});
  ASSERT_TRUE(writer_->Upsert(Rule(vips[69], 29)).ok());
  EXPECT_EQ(*writer_->MaglevOffset({Ipv4::FromBe(vips[69]), kVipPort}), off);
  for (uint16_t sport = 41010; sport < 41020; ++sport) ExpectSynFollowsTable(vips[69], sport);

  // Down to 2 backends: a 251-slot table in a new range, switched with the
  // kpx_services update; the old range waits in quarantine.
  ASSERT_TRUE(writer_->Upsert(Rule(vips[69], 2)).ok());
  EXPECT_NE(*writer_->MaglevOffset({Ipv4::FromBe(vips[69]), kVipPort}), off);
  EXPECT_EQ(writer_->pool_usage().quarantined_slots, 4093u);
  for (uint16_t sport = 41020; sport < 41030; ++sport) ExpectSynFollowsTable(vips[69], sport);

  // A restarted writer adopts the pool: the same chunks and ranges, no writes.
  writer_.reset();
  maps_.reset();
  auto maps = xdp::LibbpfMaps::Open(lb().pin_dir());
  ASSERT_TRUE(maps.ok()) << maps.status();
  maps_ = std::move(*maps);
  auto w = xdp::MapWriter::Create(maps_.get(), {});
  ASSERT_TRUE(w.ok()) << w.status();
  writer_ = std::move(*w);
  EXPECT_EQ(writer_->adoption().chunks, 3u);
  EXPECT_EQ(writer_->adoption().tables, 70u);
  EXPECT_EQ(writer_->adoption().inconsistent, 0u);
  EXPECT_EQ(writer_->pool_usage().used_slots, 69u * 4093 + 251);
  ExpectSynFollowsTable(vips[69], 41040);
}

INSTANTIATE_TEST_SUITE_P(Hooks, LbPoolTest, ::testing::Values(Hook::kXdp, Hook::kTc), HookParamName);

}  // namespace
}  // namespace kpx::bpftest
