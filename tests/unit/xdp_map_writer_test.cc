// MapWriter against FakeBpfMaps: id allocation and stability, write order,
// O(1) writes per endpoint change, removal semantics, adoption of pinned
// state, Prune, capacity errors and rollback.
#include "dataplane/xdp/map_writer.h"

#include <arpa/inet.h>

#include <algorithm>
#include <atomic>
#include <limits>
#include <set>
#include <tuple>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

#include "dataplane/xdp/abi_convert.h"
#include "dataplane/xdp/fake_bpf_maps.h"
#include "dataplane/xdp/maglev.h"
#include "glog/logging.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kpx::xdp {
namespace {

using controller::Backend;
using controller::FrontendKey;
using controller::FrontendType;
using controller::Protocol;
using controller::ServiceRule;
using controller::ServiceTable;
using controller::TableDiff;
using ::testing::AllOf;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::StartsWith;

// A typo in a test address fails the test here, not as whatever bits an
// empty optional holds (that differed between Release and Debug builds).
Ipv4 Ip(const char* s) {
  std::optional<Ipv4> ip = Ipv4::Parse(s);
  CHECK(ip.has_value()) << "bad test address " << s;
  return *ip;
}

Backend B(const char* ip, uint16_t port = 8080, bool healthy = true) {
  Backend b;
  b.ip = Ip(ip);
  b.port = port;
  b.healthy = healthy;
  return b;
}

ServiceRule Rule(const char* vip, uint16_t port, std::vector<Backend> backends) {
  ServiceRule r;
  r.service.service = {"default", std::string("svc-") + vip};
  r.frontend = FrontendKey{Ip(vip), port, Protocol::kTCP};
  r.backends = std::move(backends);
  return r;
}

class MapWriterTest : public ::testing::Test {
 protected:
  std::unique_ptr<MapWriter> NewWriter(FakeBpfMaps* maps) {
    MapWriterOptions opts;
    opts.now = [this] { return now_; };
    absl::StatusOr<std::unique_ptr<MapWriter>> w = MapWriter::Create(maps, opts);
    EXPECT_TRUE(w.ok()) << w.status();
    return w.ok() ? std::move(*w) : nullptr;
  }
  kpx_svc Svc(const FakeBpfMaps& maps, const ServiceRule& r) {
    auto all = maps.services();
    auto it = all.find(FakeBpfMaps::SvcKeyPacked(SvcKey(r.frontend)));
    EXPECT_NE(it, all.end()) << r.frontend.String();
    return it == all.end() ? kpx_svc{} : it->second;
  }
  // Whether a recorded op touches service `svc_id` or its table at `off`.
  static bool MentionsService(const std::string& op, uint32_t svc_id, uint32_t off) {
    return absl::StartsWith(op, absl::StrCat("WriteMaglev off=", off, " ")) ||
           absl::StrContains(op, absl::StrCat(" id=", svc_id, " ")) || op == absl::StrCat("ClearStats ", svc_id);
  }
  // "WriteMaglev off=0 m=251 changed=84" -> 84.
  static int Changed(const std::string& op) {
    size_t at = op.find("changed=");
    return at == std::string::npos ? -1 : std::stoi(op.substr(at + 8));
  }

  absl::Time now_ = absl::FromUnixSeconds(1700000000);
  FakeBpfMaps maps_;
};

TEST_F(MapWriterTest, NewFrontendWritesBackendsThenTableThenService) {
  auto w = NewWriter(&maps_);
  ServiceRule r = Rule("10.96.0.10", 80, {B("10.0.0.1"), B("10.0.0.2")});
  ASSERT_TRUE(w->Upsert(r).ok());
  // The first table creates the pool's first chunk.
  EXPECT_THAT(maps_.ops(), ElementsAre("UpdateBackend 1 10.0.0.1:8080", "UpdateBackend 2 10.0.0.2:8080",
                                       "AddChunks 0", "WriteMaglev off=0 m=251 changed=251", "ClearStats 1",
                                       "UpdateService 10.96.0.10:80/6 id=1 n=2 m=251"));
  kpx_svc v = Svc(maps_, r);
  EXPECT_EQ(v.id, 1u);
  EXPECT_EQ(v.maglev_off, 0u);
  EXPECT_EQ(w->pool_usage().used_slots, 251u);
  EXPECT_EQ(w->pool_usage().capacity_slots, KPX_MAGLEV_CHUNK_SLOTS);
  EXPECT_EQ(v.backend_count, 2u);
  EXPECT_EQ(v.flags, 0u);
  // The table is exactly what the pure builder makes from the addresses.
  std::vector<MaglevBackend> expect = {{1, MaglevKey(Ip("10.0.0.1"), 8080)}, {2, MaglevKey(Ip("10.0.0.2"), 8080)}};
  EXPECT_EQ(maps_.maglev(1), BuildMaglevTable(expect, 251));
  EXPECT_EQ(maps_.backend(2).addr, Ip("10.0.0.2").be());
  EXPECT_EQ(ntohs(maps_.backend(2).port), 8080);
}

TEST_F(MapWriterTest, FlagsFromRule) {
  auto w = NewWriter(&maps_);
  ServiceRule r = Rule("0.0.0.0", 30080, {B("10.0.0.1")});
  r.type = FrontendType::kNodePort;
  r.affinity_timeout_s = 10800;
  r.local_only = true;
  ASSERT_TRUE(w->Upsert(r).ok());
  kpx_svc v = Svc(maps_, r);
  EXPECT_EQ(v.flags, KPX_SVC_F_AFFINITY | KPX_SVC_F_NODEPORT | KPX_SVC_F_EXTERNAL | KPX_SVC_F_LOCAL);
  EXPECT_EQ(v.affinity_timeout_s, 10800u);
}

TEST_F(MapWriterTest, IdsStableAndBackendsSharedAcrossServices) {
  auto w = NewWriter(&maps_);
  ASSERT_TRUE(w->Upsert(Rule("10.96.0.10", 80, {B("10.0.0.1"), B("10.0.0.2")})).ok());
  ASSERT_TRUE(w->Upsert(Rule("10.96.0.11", 80, {B("10.0.0.2"), B("10.0.0.3")})).ok());
  EXPECT_EQ(w->ServiceId({Ip("10.96.0.10"), 80}), 1u);
  EXPECT_EQ(w->ServiceId({Ip("10.96.0.11"), 80}), 2u);
  EXPECT_EQ(w->BackendId(Ip("10.0.0.2"), 8080), 2u);  // one id for both services
  EXPECT_EQ(w->BackendId(Ip("10.0.0.3"), 8080), 3u);
  // Changing the first service keeps its id and the shared backend's id.
  ASSERT_TRUE(w->Upsert(Rule("10.96.0.10", 80, {B("10.0.0.2"), B("10.0.0.4")})).ok());
  EXPECT_EQ(w->ServiceId({Ip("10.96.0.10"), 80}), 1u);
  EXPECT_EQ(w->BackendId(Ip("10.0.0.2"), 8080), 2u);
  EXPECT_EQ(w->BackendId(Ip("10.0.0.4"), 8080), 4u);
  EXPECT_EQ(w->BackendId(Ip("10.0.0.1"), 8080), std::nullopt);
  EXPECT_EQ(maps_.backend(1).addr, 0u);  // 10.0.0.1 left every rule: zeroed
}

// A pod that turns terminating while ready ones exist leaves `backends` but is
// listed in `draining`: its slot stays live (its flows finish, as under
// kube-proxy's conntrack) and it is not in the table; once it is gone from
// `draining` too, the slot is zeroed.
TEST_F(MapWriterTest, DrainingBackendKeepsItsSlotButTakesNoNewFlows) {
  auto w = NewWriter(&maps_);
  ASSERT_TRUE(w->Upsert(Rule("10.96.0.10", 80, {B("10.0.0.1"), B("10.0.0.2")})).ok());
  ServiceRule terminating = Rule("10.96.0.10", 80, {B("10.0.0.1")});
  Backend gone = B("10.0.0.2");
  gone.ready = false;
  gone.terminating = true;
  terminating.draining = {gone};
  ASSERT_TRUE(w->Upsert(terminating).ok());
  EXPECT_EQ(maps_.backend(2).addr, Ip("10.0.0.2").be());  // still alive for its flows
  EXPECT_EQ(w->BackendId(Ip("10.0.0.2"), 8080), 2u);
  ASSERT_TRUE(w->Upsert(Rule("10.96.0.10", 80, {B("10.0.0.1")})).ok());
  EXPECT_EQ(maps_.backend(2).addr, 0u);  // pod gone: flows to it now fail fast
}

TEST_F(MapWriterTest, OneEndpointChangeTouchesOnlyThatService) {
  auto w = NewWriter(&maps_);
  ServiceRule a = Rule("10.96.0.10", 80, {B("10.0.0.1"), B("10.0.0.2")});
  ServiceRule b = Rule("10.96.0.11", 80, {B("10.0.0.2"), B("10.0.0.3")});
  ASSERT_TRUE(w->Upsert(a).ok());
  ASSERT_TRUE(w->Upsert(b).ok());
  const std::vector<uint32_t> b_table = maps_.maglev(2);
  const uint32_t b_off = Svc(maps_, b).maglev_off;
  EXPECT_EQ(b_off, 251u);
  maps_.ClearOps();
  a.backends.push_back(B("10.0.0.9"));
  ASSERT_TRUE(w->Upsert(a).ok());
  // 2 -> 3 backends keeps M = 251 (83 slots each): the table is rewritten in
  // place, and only the slots the new backend takes over change (~1/3).
  ASSERT_THAT(maps_.ops(), ElementsAre("UpdateBackend 4 10.0.0.9:8080", StartsWith("WriteMaglev off=0 m=251 "),
                                       "UpdateService 10.96.0.10:80/6 id=1 n=3 m=251"));
  EXPECT_GT(Changed(maps_.ops()[1]), 60);
  EXPECT_LT(Changed(maps_.ops()[1]), 110);
  EXPECT_EQ(Svc(maps_, a).maglev_off, 0u);
  for (const std::string& op : maps_.ops()) EXPECT_FALSE(MentionsService(op, 2, b_off)) << op;
  EXPECT_EQ(maps_.maglev(2), b_table);

  // Marking a backend unhealthy: same service, table only (the slot stays
  // alive for its established flows).
  maps_.ClearOps();
  a.backends[0].healthy = false;
  ASSERT_TRUE(w->Upsert(a).ok());
  EXPECT_THAT(maps_.ops(), ElementsAre(StartsWith("WriteMaglev off=0 m=251 "),
                                       "UpdateService 10.96.0.10:80/6 id=1 n=2 m=251"));
  EXPECT_EQ(w->pool_usage().quarantined_slots, 0u) << "in place: no range replaced";
  EXPECT_EQ(maps_.backend(1).addr, Ip("10.0.0.1").be());
  EXPECT_THAT(maps_.maglev(1), Not(Contains(1u)));
}

TEST_F(MapWriterTest, ReapplyingSameRuleWritesNothing) {
  auto w = NewWriter(&maps_);
  ServiceRule a = Rule("10.96.0.10", 80, {B("10.0.0.1"), B("10.0.0.2")});
  ASSERT_TRUE(w->Upsert(a).ok());
  maps_.ClearOps();
  ASSERT_TRUE(w->Upsert(a).ok());
  std::reverse(a.backends.begin(), a.backends.end());  // order does not matter
  ASSERT_TRUE(w->Upsert(a).ok());
  ASSERT_TRUE(w->Remove({Ip("10.96.0.99"), 80}).ok());  // unknown: no-op
  EXPECT_THAT(maps_.ops(), IsEmpty());
}

TEST_F(MapWriterTest, RemovalDeletesKeyQuarantinesTableAndZeroesOnlyUnusedBackends) {
  auto w = NewWriter(&maps_);
  ASSERT_TRUE(w->Upsert(Rule("10.96.0.10", 80, {B("10.0.0.1"), B("10.0.0.2")})).ok());
  ASSERT_TRUE(w->Upsert(Rule("10.96.0.11", 80, {B("10.0.0.2"), B("10.0.0.3")})).ok());
  maps_.ClearOps();
  TableDiff diff;
  diff.removals.push_back({Ip("10.96.0.10"), 80});
  ASSERT_TRUE(w->Apply(diff).ok());
  EXPECT_THAT(maps_.ops(), ElementsAre("DeleteService 10.96.0.10:80/6", "UpdateBackend 1 0.0.0.0:0"));
  EXPECT_EQ(maps_.backend(2).addr, Ip("10.0.0.2").be());  // still used by the other service
  EXPECT_EQ(maps_.services().size(), 1u);
  EXPECT_TRUE(maps_.maglev(1).empty());
  EXPECT_EQ(w->pool_usage().quarantined_slots, 251u);
  // Again: idempotent.
  maps_.ClearOps();
  ASSERT_TRUE(w->Apply(diff).ok());
  EXPECT_THAT(maps_.ops(), IsEmpty());
}

TEST_F(MapWriterTest, BackendMovingBetweenFrontendsInOneDiffKeepsItsSlot) {
  auto w = NewWriter(&maps_);
  ASSERT_TRUE(w->Upsert(Rule("10.96.0.10", 80, {B("10.0.0.1")})).ok());
  maps_.ClearOps();
  TableDiff diff;  // e.g. a Service renamed: same endpoints, new VIP
  diff.removals.push_back({Ip("10.96.0.10"), 80});
  diff.upserts.push_back(Rule("10.96.0.20", 80, {B("10.0.0.1")}));
  ASSERT_TRUE(w->Apply(diff).ok());
  for (const std::string& op : maps_.ops()) EXPECT_THAT(op, Not(StartsWith("UpdateBackend"))) << op;
  EXPECT_EQ(w->BackendId(Ip("10.0.0.1"), 8080), 1u);
}

TEST_F(MapWriterTest, NoBackendsMeansRejectWithoutTable) {
  auto w = NewWriter(&maps_);
  ServiceRule r = Rule("10.96.0.10", 80, {B("10.0.0.1")});
  ASSERT_TRUE(w->Upsert(r).ok());
  maps_.ClearOps();
  r.backends.clear();
  ASSERT_TRUE(w->Upsert(r).ok());
  // Value (backend_count 0, no table), then the slot; the range waits.
  EXPECT_THAT(maps_.ops(), ElementsAre("UpdateService 10.96.0.10:80/6 id=1 n=0 m=0", "UpdateBackend 1 0.0.0.0:0"));
  EXPECT_EQ(w->pool_usage().quarantined_slots, 251u);
  ServiceRule empty = Rule("10.96.0.11", 80, {});
  maps_.ClearOps();
  ASSERT_TRUE(w->Upsert(empty).ok());
  EXPECT_THAT(maps_.ops(), ElementsAre("ClearStats 2", "UpdateService 10.96.0.11:80/6 id=2 n=0 m=0"));
}

TEST_F(MapWriterTest, AllUnhealthyUsesAllBackends) {
  auto w = NewWriter(&maps_);
  ServiceRule r = Rule("10.96.0.10", 80, {B("10.0.0.1", 80, false), B("10.0.0.2", 80, false)});
  ASSERT_TRUE(w->Upsert(r).ok());
  EXPECT_EQ(Svc(maps_, r).backend_count, 2u);
  const std::vector<uint32_t> table = maps_.maglev(1);
  std::set<uint32_t> ids(table.begin(), table.end());
  EXPECT_THAT(ids, ElementsAre(1u, 2u));
}

TEST_F(MapWriterTest, ResizeFillsANewRangeSwitchesThenQuarantinesTheOld) {
  auto w = NewWriter(&maps_);
  std::vector<Backend> many;
  for (int i = 1; i <= 30; ++i) many.push_back(B(absl::StrCat("10.0.1.", i).c_str()));
  ServiceRule r = Rule("10.96.0.10", 80, many);
  ASSERT_TRUE(w->Upsert(r).ok());
  EXPECT_EQ(Svc(maps_, r).maglev_m, 4093u);
  EXPECT_EQ(Svc(maps_, r).maglev_off, 0u);
  maps_.ClearOps();
  r.backends.resize(1);
  ASSERT_TRUE(w->Upsert(r).ok());
  std::vector<std::string> ops = maps_.ops();
  ASSERT_GE(ops.size(), 2u);
  // The new table is complete before one kpx_services update switches
  // (offset, M) together; the old range is not touched.
  EXPECT_EQ(ops[0], "WriteMaglev off=4093 m=251 changed=251");
  EXPECT_EQ(ops[1], "UpdateService 10.96.0.10:80/6 id=1 n=1 m=251");
  EXPECT_EQ(Svc(maps_, r).maglev_off, 4093u);
  EXPECT_EQ(w->pool_usage().quarantined_slots, 4093u);
  EXPECT_EQ(w->pool_usage().used_slots, 4093u + 251);
  // Within the quarantine the old range is not handed out again...
  ASSERT_TRUE(w->Upsert(Rule("10.96.0.11", 80, {B("10.0.0.1")})).ok());
  EXPECT_EQ(*w->MaglevOffset({Ip("10.96.0.11"), 80}), 4093u + 251);
  // ... after it, first fit finds it again.
  now_ += absl::Seconds(2);
  ASSERT_TRUE(w->Upsert(Rule("10.96.0.12", 80, {B("10.0.0.1")})).ok());
  EXPECT_EQ(*w->MaglevOffset({Ip("10.96.0.12"), 80}), 0u);
  EXPECT_EQ(w->pool_usage().quarantined_slots, 0u);
  EXPECT_EQ(w->pool_usage().used_slots, 3u * 251);
}

TEST_F(MapWriterTest, UnsupportedAndUdpIgnored) {
  auto w = NewWriter(&maps_);
  ServiceRule udp = Rule("10.96.0.10", 53, {B("10.0.0.1", 53)});
  udp.frontend.protocol = Protocol::kUDP;
  ServiceRule unsupported = Rule("10.96.0.11", 80, {B("10.0.0.1")});
  unsupported.supported = false;
  ASSERT_TRUE(w->Upsert(udp).ok());
  ASSERT_TRUE(w->Upsert(unsupported).ok());
  EXPECT_THAT(maps_.ops(), IsEmpty());
}

TEST_F(MapWriterTest, FullServicesMapIsClearErrorAndChangesNothing) {
  FakeBpfMaps small(MapCapacities{.services = 2, .service_ids = 16, .backends = 16});
  auto w = NewWriter(&small);
  ASSERT_TRUE(w->Upsert(Rule("10.96.0.10", 80, {B("10.0.0.1")})).ok());
  ASSERT_TRUE(w->Upsert(Rule("10.96.0.11", 80, {B("10.0.0.1")})).ok());
  small.ClearOps();
  absl::Status s = w->Upsert(Rule("10.96.0.12", 80, {B("10.0.0.2")}));
  EXPECT_TRUE(absl::IsResourceExhausted(s)) << s;
  EXPECT_THAT(std::string(s.message()), AllOf(HasSubstr("kpx_services"), HasSubstr("2 frontends"),
                                             HasSubstr("10.96.0.12:80/TCP")));
  EXPECT_THAT(small.ops(), IsEmpty());
  EXPECT_EQ(w->BackendId(Ip("10.0.0.2"), 8080), std::nullopt);
  // Updating an existing frontend still works at capacity.
  ASSERT_TRUE(w->Upsert(Rule("10.96.0.11", 80, {B("10.0.0.1"), B("10.0.0.3")})).ok());
}

TEST_F(MapWriterTest, FullBackendsMapIsClearErrorAndChangesNothing) {
  FakeBpfMaps small(MapCapacities{.services = 16, .service_ids = 16, .backends = 4});  // ids 1..3
  auto w = NewWriter(&small);
  ASSERT_TRUE(w->Upsert(Rule("10.96.0.10", 80, {B("10.0.0.1"), B("10.0.0.2")})).ok());
  small.ClearOps();
  absl::Status s = w->Upsert(Rule("10.96.0.11", 80, {B("10.0.0.3"), B("10.0.0.4")}));
  EXPECT_TRUE(absl::IsResourceExhausted(s)) << s;
  EXPECT_THAT(std::string(s.message()), AllOf(HasSubstr("kpx_backends"), HasSubstr("4 slots"),
                                             HasSubstr("needs 2 new"), HasSubstr("1 free")));
  EXPECT_THAT(small.ops(), IsEmpty());
  EXPECT_EQ(w->ServiceId({Ip("10.96.0.11"), 80}), std::nullopt);
  // Room appears when the first service goes: Apply retries after removals.
  TableDiff diff;
  diff.upserts.push_back(Rule("10.96.0.11", 80, {B("10.0.0.3"), B("10.0.0.4")}));
  diff.removals.push_back({Ip("10.96.0.10"), 80});
  now_ += absl::Hours(1);
  EXPECT_TRUE(w->Apply(diff).ok());
  EXPECT_TRUE(w->ServiceId({Ip("10.96.0.11"), 80}).has_value());
}

TEST_F(MapWriterTest, FailedTableWriteRollsBackNewFrontend) {
  auto w = NewWriter(&maps_);
  maps_.FailNext("WriteMaglev", absl::InternalError("EFAULT"));
  absl::Status s = w->Upsert(Rule("10.96.0.10", 80, {B("10.0.0.1")}));
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr("Maglev table of 10.96.0.10:80/TCP"));
  EXPECT_TRUE(maps_.services().empty());
  EXPECT_EQ(maps_.backend(1).addr, 0u);  // the slot written first was zeroed again
  EXPECT_EQ(w->ServiceId({Ip("10.96.0.10"), 80}), std::nullopt);
  EXPECT_EQ(w->pool_usage().used_slots, 0u) << "the range went back at once (never visible)";
  // The resend succeeds and reuses the rolled-back ids (never visible).
  ASSERT_TRUE(w->Upsert(Rule("10.96.0.10", 80, {B("10.0.0.1")})).ok());
  EXPECT_EQ(w->ServiceId({Ip("10.96.0.10"), 80}), 1u);
  EXPECT_EQ(w->BackendId(Ip("10.0.0.1"), 8080), 1u);
}

TEST_F(MapWriterTest, FailedTableWriteKeepsExistingFrontendAsItWas) {
  auto w = NewWriter(&maps_);
  ServiceRule r = Rule("10.96.0.10", 80, {B("10.0.0.1")});
  ASSERT_TRUE(w->Upsert(r).ok());
  const std::vector<uint32_t> before = maps_.maglev(1);
  maps_.FailNext("WriteMaglev", absl::InternalError("EFAULT"));
  r.backends.push_back(B("10.0.0.2"));
  EXPECT_FALSE(w->Upsert(r).ok());
  EXPECT_EQ(maps_.maglev(1), before);
  EXPECT_EQ(maps_.backend(2).addr, 0u);
  EXPECT_EQ(Svc(maps_, r).backend_count, 1u);
  ASSERT_TRUE(w->Upsert(r).ok());
  EXPECT_EQ(Svc(maps_, r).backend_count, 2u);
}

TEST_F(MapWriterTest, ReleasedIdsAreQuarantinedButSameAddressKeepsItsId) {
  auto w = NewWriter(&maps_);
  ServiceRule r = Rule("10.96.0.10", 80, {B("10.0.0.1"), B("10.0.0.2")});
  ASSERT_TRUE(w->Upsert(r).ok());
  r.backends = {B("10.0.0.2")};
  ASSERT_TRUE(w->Upsert(r).ok());  // 10.0.0.1 (id 1) released
  r.backends = {B("10.0.0.2"), B("10.0.0.3")};
  ASSERT_TRUE(w->Upsert(r).ok());
  EXPECT_EQ(w->BackendId(Ip("10.0.0.3"), 8080), 3u);  // not the quarantined 1
  r.backends = {B("10.0.0.1"), B("10.0.0.2"), B("10.0.0.3")};
  ASSERT_TRUE(w->Upsert(r).ok());
  EXPECT_EQ(w->BackendId(Ip("10.0.0.1"), 8080), 1u);  // came back: same id
  // Service ids too: a removed frontend's id is not the next one handed out.
  ASSERT_TRUE(w->Remove(r.frontend).ok());
  ASSERT_TRUE(w->Upsert(Rule("10.96.0.11", 80, {B("10.0.0.1")})).ok());
  EXPECT_EQ(w->ServiceId({Ip("10.96.0.11"), 80}), 2u);
}

TEST_F(MapWriterTest, AdoptionReproducesIdsAndWritesNothingForSameRules) {
  ServiceTable table;
  for (auto& r : {Rule("10.96.0.10", 80, {B("10.0.0.1"), B("10.0.0.2")}),
                  Rule("10.96.0.11", 443, {B("10.0.0.2", 8443), B("10.0.0.3", 8443)}),
                  Rule("10.96.0.12", 80, {})}) {
    table[r.frontend] = r;
  }
  ServiceRule np = Rule("0.0.0.0", 30080, {B("10.0.0.4")});
  np.type = FrontendType::kNodePort;
  table[np.frontend] = np;
  std::vector<std::optional<uint32_t>> svc_ids, backend_ids;
  auto ids_of = [&](const MapWriter& w) {
    std::vector<std::optional<uint32_t>> svcs, backends;
    for (const auto& [fk, r] : table) {
      svcs.push_back(w.ServiceId(fk));
      for (const Backend& b : r.backends) backends.push_back(w.BackendId(b.ip, b.port));
    }
    return std::pair(svcs, backends);
  };
  {
    auto first = NewWriter(&maps_);
    // Churn first so ids are not simply 1..n.
    ASSERT_TRUE(first->Upsert(Rule("10.96.0.99", 80, {B("10.0.0.99")})).ok());
    ASSERT_TRUE(first->Apply(controller::Diff(table, {})).ok());
    ASSERT_TRUE(first->Remove({Ip("10.96.0.99"), 80}).ok());
    std::tie(svc_ids, backend_ids) = ids_of(*first);
  }
  auto second = NewWriter(&maps_);
  EXPECT_EQ(second->adoption().frontends, 4u);
  EXPECT_EQ(second->adoption().backends, 5u);  // 10.0.0.2:8080 and :8443 are two
  EXPECT_EQ(second->adoption().tables, 3u);
  auto [svc_ids2, backend_ids2] = ids_of(*second);
  EXPECT_EQ(svc_ids2, svc_ids);
  EXPECT_EQ(backend_ids2, backend_ids);
  EXPECT_THAT(svc_ids, Not(Contains(std::nullopt)));
  maps_.ClearOps();
  ASSERT_TRUE(second->Apply(controller::Diff(table, {})).ok());
  EXPECT_THAT(maps_.ops(), IsEmpty());
  ASSERT_TRUE(second->Prune(table).ok());
  EXPECT_THAT(maps_.ops(), IsEmpty());
  // New ids after adoption do not collide with adopted or released ones.
  ASSERT_TRUE(second->Upsert(Rule("10.96.0.13", 80, {B("10.0.0.7")})).ok());
  EXPECT_EQ(second->ServiceId({Ip("10.96.0.13"), 80}), 6u);
  EXPECT_EQ(second->BackendId(Ip("10.0.0.7"), 8080), 7u);
}

TEST_F(MapWriterTest, AdoptionOfStateWrittenByHand) {
  // What an older kpxd (or a crash mid-update) could leave: a service, its
  // table, a backend no table uses, and an orphan table (a range no service
  // points at: free for the new process).
  kpx_svc_key key = SvcKey({Ip("10.96.0.10"), 80});
  ASSERT_TRUE(maps_.UpdateBackend(7, BackendValue(Ip("10.0.0.1"), 8080)).ok());
  ASSERT_TRUE(maps_.UpdateBackend(9, BackendValue(Ip("10.0.0.2"), 8080)).ok());
  ASSERT_TRUE(maps_.UpdateBackend(11, BackendValue(Ip("10.0.0.9"), 8080)).ok());
  std::vector<MaglevBackend> entries = {{7, MaglevKey(Ip("10.0.0.1"), 8080)}, {9, MaglevKey(Ip("10.0.0.2"), 8080)}};
  const uint32_t chunk[] = {0};
  ASSERT_TRUE(maps_.AddMaglevChunks(chunk).ok());
  ASSERT_TRUE(maps_.WriteMaglevSlots(0, BuildMaglevTable(entries, 251)).ok());  // orphan
  ASSERT_TRUE(maps_.WriteMaglevSlots(300, BuildMaglevTable(entries, 251)).ok());
  kpx_svc v{};
  v.id = 3;
  v.backend_count = 2;
  v.maglev_m = 251;
  v.maglev_off = 300;
  ASSERT_TRUE(maps_.UpdateService(key, v).ok());
  maps_.ClearOps();

  auto w = NewWriter(&maps_);
  EXPECT_THAT(maps_.ops(), IsEmpty());  // adoption only reads
  ServiceRule r = Rule("10.96.0.10", 80, {B("10.0.0.1"), B("10.0.0.2")});
  ServiceTable desired{{r.frontend, r}};
  ASSERT_TRUE(w->Upsert(r).ok());
  EXPECT_THAT(maps_.ops(), IsEmpty());
  EXPECT_EQ(w->ServiceId(r.frontend), 3u);
  EXPECT_EQ(w->adoption().chunks, 1u);
  EXPECT_EQ(w->pool_usage().used_slots, 251u);
  // Prune: the unused backend slot goes, nothing else.
  ASSERT_TRUE(w->Prune(desired).ok());
  EXPECT_THAT(maps_.ops(), ElementsAre("UpdateBackend 11 0.0.0.0:0"));
  // The orphan's slots are free: a new table fits before the adopted one.
  ASSERT_TRUE(w->Upsert(Rule("10.96.0.11", 80, {B("10.0.0.1")})).ok());
  EXPECT_EQ(*w->MaglevOffset({Ip("10.96.0.11"), 80}), 0u);
  // A new backend id is neither adopted nor freed-at-adoption (quarantined).
  r.backends.push_back(B("10.0.0.3"));
  ASSERT_TRUE(w->Upsert(r).ok());
  EXPECT_EQ(w->BackendId(Ip("10.0.0.3"), 8080), 12u);
}

TEST_F(MapWriterTest, PruneRemovesOnlyStaleFrontends) {
  ServiceTable table;
  for (auto& r : {Rule("10.96.0.10", 80, {B("10.0.0.1"), B("10.0.0.2")}),
                  Rule("10.96.0.11", 80, {B("10.0.0.2"), B("10.0.0.3")}),
                  Rule("10.96.0.12", 80, {B("10.0.0.4")})}) {
    table[r.frontend] = r;
  }
  { ASSERT_TRUE(NewWriter(&maps_)->Apply(controller::Diff(table, {})).ok()); }
  auto w = NewWriter(&maps_);
  table.erase(FrontendKey{Ip("10.96.0.11"), 80});
  maps_.ClearOps();
  ASSERT_TRUE(w->Apply(controller::Diff(table, {})).ok());
  EXPECT_THAT(maps_.ops(), IsEmpty());
  ASSERT_TRUE(w->Prune(table).ok());
  EXPECT_THAT(maps_.ops(), ElementsAre("DeleteService 10.96.0.11:80/6", "UpdateBackend 3 0.0.0.0:0"));
  EXPECT_EQ(maps_.services().size(), 2u);
  EXPECT_EQ(maps_.backend(2).addr, Ip("10.0.0.2").be());  // still used by .10
}

TEST_F(MapWriterTest, AdoptedFrontendsAreMarkedUntilPrune) {
  { ASSERT_TRUE(NewWriter(&maps_)->Upsert(Rule("10.96.0.10", 80, {B("10.0.0.1")})).ok()); }
  auto w = NewWriter(&maps_);
  ASSERT_EQ(w->Frontends().size(), 1u);
  EXPECT_TRUE(w->Frontends()[0].adopted);
  EXPECT_THAT(w->Frontends()[0].backend_ids, ElementsAre(1u));
  ASSERT_TRUE(w->Prune(ServiceTable{}).ok());
  EXPECT_TRUE(w->Frontends().empty());
  EXPECT_TRUE(maps_.services().empty());
  EXPECT_EQ(maps_.backend(1).addr, 0u);
}

// A cold start: many new frontends in one diff. Every table is in the pool
// (chunks created with one install) before any backend/service write, and
// the writes come in the order backends -> counters -> services.
TEST_F(MapWriterTest, BigDiffOfNewFrontendsIsBatched) {
  auto w = NewWriter(&maps_);
  ServiceTable table;
  for (int i = 0; i < 300; ++i) {
    std::vector<Backend> bs;
    for (int j = 0; j < 10; ++j) bs.push_back(B(absl::StrCat("10.", 1 + i / 200, ".", i % 200, ".", j + 1).c_str()));
    ServiceRule r = Rule(absl::StrCat("10.96.", i / 200, ".", i % 200 + 1).c_str(), 80, bs);
    table[r.frontend] = r;
  }
  ASSERT_TRUE(w->Apply(controller::Diff(table, {})).ok());
  const std::vector<std::string> ops = maps_.ops();
  // 300 x 1021 slots need 2 chunks; one install for all (first fit's tail
  // waste is covered by one spare chunk).
  EXPECT_EQ(std::count_if(ops.begin(), ops.end(), [](const std::string& op) { return absl::StartsWith(op, "AddChunks"); }),
            1);
  EXPECT_THAT(ops, Contains("AddChunks 0,1,2"));
  auto first_of = [&](const char* prefix) {
    return std::find_if(ops.begin(), ops.end(), [&](const std::string& op) { return absl::StartsWith(op, prefix); }) -
           ops.begin();
  };
  auto last_of = [&](const char* prefix) {
    return ops.rend() -
           std::find_if(ops.rbegin(), ops.rend(), [&](const std::string& op) { return absl::StartsWith(op, prefix); }) -
           1;
  };
  EXPECT_LT(last_of("WriteMaglev"), first_of("UpdateBackend"));
  EXPECT_LT(last_of("UpdateBackend"), first_of("ClearStats"));
  EXPECT_LT(last_of("ClearStats"), first_of("UpdateService"));
  EXPECT_EQ(maps_.services().size(), 300u);
  EXPECT_EQ(w->pool_usage().used_slots, 300u * 1021);
  // Every service's table is what the builder makes, at its own range.
  for (const auto& [fk, r] : table) {
    kpx_svc v = Svc(maps_, r);
    std::vector<MaglevBackend> entries;
    for (const Backend& b : r.backends) entries.push_back({*w->BackendId(b.ip, b.port), MaglevKey(b.ip, b.port)});
    ASSERT_EQ(maps_.maglev(v.id), BuildMaglevTable(entries, 1021)) << fk.String();
  }
}

// A batch's tables built on worker threads (indexes, mapped to ids later)
// are exactly the tables the serial path builds: the same kpx_services
// values, backend slots and Maglev contents, over services with unhealthy,
// duplicate, draining and no backends and different table sizes.
// 400 services with unhealthy, duplicate, draining and no backends and
// different table sizes, backends shared between neighbours.
ServiceTable MixedTable() {
  ServiceTable table;
  for (int i = 0; i < 400; ++i) {
    std::vector<Backend> bs;
    const int n = i % 7 == 0 ? 0 : 1 + (i * 13) % 40;  // 251..4093 slots
    for (int j = 0; j < n; ++j) {
      // Backends shared between neighbouring services, a few unhealthy.
      bs.push_back(B(absl::StrCat("10.", 1 + (i + j) / 250, ".", (i + j) % 250, ".", 1 + j % 3).c_str(), 8080,
                     (i + j) % 11 != 0));
    }
    if (n > 2) bs.push_back(bs[1]);  // duplicate
    ServiceRule r = Rule(absl::StrCat("10.96.", i / 200, ".", i % 200 + 1).c_str(), 80, bs);
    if (i % 5 == 0) r.draining.push_back(B(absl::StrCat("10.9.0.", 1 + i % 200).c_str()));
    table[r.frontend] = r;
  }
  return table;
}

TEST_F(MapWriterTest, ParallelTableBuildMatchesSerialBuild) {
  const ServiceTable table = MixedTable();
  auto run = [&](FakeBpfMaps* maps, size_t parallel_min, unsigned threads) {
    MapWriterOptions opts;
    opts.now = [this] { return now_; };
    opts.parallel_min = parallel_min;
    opts.build_threads = threads;
    absl::StatusOr<std::unique_ptr<MapWriter>> w = MapWriter::Create(maps, opts);
    EXPECT_TRUE(w.ok()) << w.status();
    EXPECT_TRUE((*w)->Apply(controller::Diff(table, {})).ok());
    return std::move(*w);
  };
  FakeBpfMaps serial_maps, parallel_maps;
  auto serial = run(&serial_maps, std::numeric_limits<size_t>::max(), 1);
  auto parallel = run(&parallel_maps, 1, 3);
  ASSERT_EQ(serial_maps.services().size(), 400u);
  EXPECT_EQ(parallel_maps.services().size(), 400u);
  size_t tables = 0;
  for (const auto& [fk, r] : table) {
    const kpx_svc a = Svc(serial_maps, r), b = Svc(parallel_maps, r);
    EXPECT_EQ(a.id, b.id) << fk.String();
    EXPECT_EQ(a.backend_count, b.backend_count) << fk.String();
    EXPECT_EQ(a.maglev_m, b.maglev_m) << fk.String();
    const std::vector<uint32_t> ta = serial_maps.maglev(a.id);
    ASSERT_EQ(ta, parallel_maps.maglev(b.id)) << fk.String();
    tables += !ta.empty();
    for (const Backend& be : r.backends) {
      ASSERT_EQ(serial->BackendId(be.ip, be.port), parallel->BackendId(be.ip, be.port)) << fk.String();
    }
  }
  EXPECT_GT(tables, 300u);
}

// Prepare (kpxd: during the reconciler's bookkeeping) grows the pool and
// builds the new frontends' tables ahead; the batch uses a prepared table
// only while the rule still selects the same backends, and the maps come
// out exactly as without it: here 50 rules change between Prepare and Apply,
// and a second writer is stopped before it builds anything.
TEST_F(MapWriterTest, PreparedTablesAreUsedOnlyWhileCurrent) {
  const ServiceTable before = MixedTable();
  ServiceTable after = before;
  int changed = 0;
  for (auto& [fk, r] : after) {
    if (r.backends.size() > 3 && changed < 50) {
      r.backends.erase(r.backends.begin());  // a different backend set
      ++changed;
    }
  }
  ASSERT_EQ(changed, 50);
  std::vector<const ServiceRule*> ptrs;
  for (const auto& [fk, r] : before) ptrs.push_back(&r);
  auto writer = [&](FakeBpfMaps* maps, size_t parallel_min) {
    MapWriterOptions opts;
    opts.now = [this] { return now_; };
    opts.parallel_min = parallel_min;
    opts.build_threads = 2;
    absl::StatusOr<std::unique_ptr<MapWriter>> w = MapWriter::Create(maps, opts);
    EXPECT_TRUE(w.ok()) << w.status();
    return std::move(*w);
  };
  FakeBpfMaps serial_maps, prepared_maps, stopped_maps;
  auto serial = writer(&serial_maps, std::numeric_limits<size_t>::max());
  ASSERT_TRUE(serial->Apply(controller::Diff(after, {})).ok());

  auto prepared = writer(&prepared_maps, 1);
  std::atomic<bool> go_on{false};
  prepared->Prepare(ptrs, go_on);
  EXPECT_GT(prepared->pool_usage().chunks, 0u);  // grown before Apply
  EXPECT_EQ(prepared->prepared_tables(), 400u);
  ASSERT_TRUE(prepared->Apply(controller::Diff(after, {})).ok());
  EXPECT_EQ(prepared->prepared_tables(), 0u);
  // Every unchanged rule's table (those without backends have an empty
  // one), none of the 50 changed ones.
  EXPECT_EQ(prepared->prepared_tables_used(), 400u - 50u);

  auto stopped = writer(&stopped_maps, 1);
  std::atomic<bool> stop{true};
  stopped->Prepare(ptrs, stop);
  EXPECT_EQ(stopped->prepared_tables(), 0u);
  EXPECT_GT(stopped->pool_usage().chunks, 0u);  // the pool still grew
  ASSERT_TRUE(stopped->Apply(controller::Diff(after, {})).ok());

  for (const auto& [fk, r] : after) {
    const kpx_svc a = Svc(serial_maps, r);
    for (FakeBpfMaps* other : {&prepared_maps, &stopped_maps}) {
      const kpx_svc b = Svc(*other, r);
      EXPECT_EQ(a.id, b.id) << fk.String();
      EXPECT_EQ(a.backend_count, b.backend_count) << fk.String();
      EXPECT_EQ(a.maglev_m, b.maglev_m) << fk.String();
      ASSERT_EQ(serial_maps.maglev(a.id), other->maglev(b.id)) << fk.String();
    }
  }
}

// The batch's tables are written on worker threads after the serial pass:
// a frontend whose table write fails is undone before anything of it is
// visible, the others go in, and a resend installs it.
TEST_F(MapWriterTest, FailedParallelTableWriteUndoesOnlyThatFrontend) {
  auto w = NewWriter(&maps_);
  ServiceTable table;
  for (int i = 0; i < 300; ++i) {
    ServiceRule r = Rule(absl::StrCat("10.96.", i / 200, ".", i % 200 + 1).c_str(), 80,
                         {B(absl::StrCat("10.1.", i / 200, ".", i % 200 + 1).c_str())});
    table[r.frontend] = r;
  }
  maps_.FailNext("WriteMaglev", absl::InternalError("injected"));
  absl::Status s = w->Apply(controller::Diff(table, {}));
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), AllOf(HasSubstr("Maglev table of 10.96."), HasSubstr("injected")));
  EXPECT_EQ(maps_.services().size(), 299u);
  EXPECT_EQ(w->Frontends().size(), 299u);
  EXPECT_EQ(w->pool_usage().used_slots, 299u * 251);
  // Every installed service points at its full table.
  size_t missing = 0;
  for (const auto& [fk, r] : table) {
    if (!w->ServiceId(fk).has_value()) {
      ++missing;
      EXPECT_EQ(w->BackendId(r.backends[0].ip, r.backends[0].port), std::nullopt) << "undone backend kept";
      continue;
    }
    EXPECT_EQ(maps_.maglev(Svc(maps_, r).id), std::vector<uint32_t>(251, *w->BackendId(r.backends[0].ip, 8080)));
  }
  EXPECT_EQ(missing, 1u);
  ASSERT_TRUE(w->Apply(controller::Diff(table, {})).ok());
  EXPECT_EQ(maps_.services().size(), 300u);
}

TEST_F(MapWriterTest, FailedBatchKeepsWhatWasWrittenAndUndoesTheRest) {
  auto w = NewWriter(&maps_);
  TableDiff diff;
  for (int i = 1; i <= 20; ++i) {
    diff.upserts.push_back(Rule(absl::StrCat("10.96.0.", i).c_str(), 80, {B(absl::StrCat("10.0.0.", i).c_str())}));
  }
  // The fake's batch is a loop: the 11th service write fails, 10 are in.
  maps_.FailNext("UpdateService 10.96.0.11:", absl::ResourceExhaustedError("E2BIG"));
  absl::Status s = w->Apply(diff);
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr("10 of 20 new frontends not installed (first: 10.96.0.11:80/TCP)"));
  EXPECT_EQ(maps_.services().size(), 10u);
  EXPECT_EQ(w->Frontends().size(), 10u);
  EXPECT_EQ(w->ServiceId({Ip("10.96.0.11"), 80}), std::nullopt);
  EXPECT_EQ(w->pool_usage().used_slots, 10u * 251) << "undone ranges are free at once";
  EXPECT_EQ(maps_.backend(*w->BackendId(Ip("10.0.0.10"), 8080)).addr, Ip("10.0.0.10").be());
  EXPECT_EQ(w->BackendId(Ip("10.0.0.11"), 8080), std::nullopt);
  // The reconciler resends: the rest goes in.
  ASSERT_TRUE(w->Apply(diff).ok());
  EXPECT_EQ(maps_.services().size(), 20u);
}

TEST_F(MapWriterTest, FullPoolIsClearErrorNamingTheFlag) {
  FakeBpfMaps small(MapCapacities{.maglev_chunks = 1});
  auto w = NewWriter(&small);
  std::vector<Backend> many;
  for (int i = 1; i <= 30; ++i) many.push_back(B(absl::StrCat("10.0.1.", i).c_str()));
  // 4093-slot tables: 64 fit one chunk of 262144 slots.
  for (int i = 0; i < 64; ++i) {
    ASSERT_TRUE(w->Upsert(Rule(absl::StrCat("10.96.0.", i + 1).c_str(), 80, many)).ok()) << i;
  }
  const std::vector<uint32_t> before = small.maglev(1);
  small.ClearOps();
  absl::Status s = w->Upsert(Rule("10.96.1.1", 80, many));
  EXPECT_TRUE(absl::IsResourceExhausted(s)) << s;
  EXPECT_THAT(std::string(s.message()),
              AllOf(HasSubstr("Maglev slot pool"), HasSubstr("1 of 1 chunks"), HasSubstr("--bpf-maglev-chunks"),
                    HasSubstr("10.96.1.1:80/TCP")));
  for (const std::string& op : small.ops()) EXPECT_THAT(op, Not(StartsWith("UpdateService"))) << op;
  EXPECT_EQ(small.maglev(1), before) << "existing tables untouched";
  // Not even the smallest table fits the tail (262144 - 64 * 4093 = 192 slots).
  EXPECT_TRUE(absl::IsResourceExhausted(w->Upsert(Rule("10.96.1.2", 80, {B("10.0.0.1")}))));
}

// Adoption keeps only ranges that are inside the pool and disjoint; the
// others' services are kept aside and deleted by Prune.
TEST_F(MapWriterTest, AdoptionSetsAsideOverlappingAndOutOfPoolRanges) {
  ASSERT_TRUE(maps_.UpdateBackend(1, BackendValue(Ip("10.0.0.1"), 8080)).ok());
  const uint32_t chunk[] = {0};
  ASSERT_TRUE(maps_.AddMaglevChunks(chunk).ok());
  ASSERT_TRUE(maps_.WriteMaglevSlots(0, std::vector<uint32_t>(251, 1)).ok());
  auto put = [&](const char* vip, uint32_t id, uint32_t off, uint32_t m) {
    kpx_svc v{};
    v.id = id;
    v.backend_count = 1;
    v.maglev_m = m;
    v.maglev_off = off;
    ASSERT_TRUE(maps_.UpdateService(SvcKey({Ip(vip), 80}), v).ok());
  };
  put("10.96.0.1", 1, 0, 251);
  put("10.96.0.2", 2, 100, 251);                             // overlaps .1
  put("10.96.0.3", 3, KPX_MAGLEV_CHUNK_SLOTS - 100, 251);    // crosses the chunk's end
  put("10.96.0.4", 4, 5 * KPX_MAGLEV_CHUNK_SLOTS, 251);      // no such chunk
  auto w = NewWriter(&maps_);
  EXPECT_EQ(w->adoption().frontends, 1u);
  EXPECT_EQ(w->adoption().inconsistent, 3u);
  EXPECT_EQ(w->ServiceId({Ip("10.96.0.1"), 80}), 1u);
  maps_.ClearOps();
  ServiceRule r = Rule("10.96.0.1", 80, {B("10.0.0.1")});
  ASSERT_TRUE(w->Prune(ServiceTable{{r.frontend, r}}).ok());
  EXPECT_THAT(maps_.ops(), ElementsAre("DeleteService 10.96.0.2:80/6", "DeleteService 10.96.0.3:80/6",
                                       "DeleteService 10.96.0.4:80/6"));
  // A re-added frontend gets a fresh range that overlaps nothing live.
  ASSERT_TRUE(w->Upsert(Rule("10.96.0.2", 80, {B("10.0.0.1")})).ok());
  EXPECT_GE(*w->MaglevOffset({Ip("10.96.0.2"), 80}), 251u);
}

}  // namespace
}  // namespace kpx::xdp
