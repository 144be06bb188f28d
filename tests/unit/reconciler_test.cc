// Reconciler: incremental sync programs exactly the frontends that changed,
// stays equal to a full Translate(), survives dataplane errors, and applies
// the health overlay without dropping backends from rules.
#include "controller/reconciler.h"

#include <random>

#include "controller/translate.h"
#include "dataplane/fake/fake_dataplane.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kpx::controller {
namespace {

using ::testing::SizeIs;

Service MakeService(const std::string& name, const std::string& ip, int port = 80) {
  Service s;
  s.meta.id = {"default", name};
  s.meta.source = {"test.yaml", 1, 0};
  s.cluster_ip = ip;
  s.cluster_ips = {ip};
  s.has_selector = true;
  s.ports.push_back({.name = "http", .protocol = Protocol::kTCP, .port = port});
  return s;
}

EndpointSlice MakeSlice(const std::string& service, const std::vector<std::string>& ips,
                        int port = 8080) {
  EndpointSlice s;
  s.meta.id = {"default", service + "-slice"};
  s.meta.source = {"test.yaml", 1, 1};
  s.service_name = service;
  s.address_type = "IPv4";
  s.ports.push_back({.name = "http", .protocol = Protocol::kTCP, .port = port});
  for (const auto& ip : ips) {
    Endpoint ep;
    ep.addresses = {ip};
    ep.node_name = "node-a";
    s.endpoints.push_back(ep);
  }
  return s;
}

ObjectSet ServiceWithBackends(const std::string& name, const std::string& vip,
                              const std::vector<std::string>& ips) {
  ObjectSet set;
  set.services.push_back(MakeService(name, vip));
  set.slices.push_back(MakeSlice(name, ips));
  return set;
}

TEST(Reconciler, FirstSyncProgramsEveryFrontend) {
  dataplane::FakeDataplane dp;
  Reconciler r({"node-a", ""}, &dp);
  ASSERT_TRUE(r.Update("web.yaml", ServiceWithBackends("web", "10.96.0.1", {"10.0.0.1", "10.0.0.2"})).ok());
  ASSERT_THAT(dp.diffs(), SizeIs(1));
  EXPECT_THAT(dp.diffs()[0].upserts, SizeIs(1));
  const ServiceTable table = dp.table();
  const ServiceRule& rule = table.begin()->second;
  EXPECT_EQ(rule.frontend.String(), "10.96.0.1:80/TCP");
  EXPECT_THAT(rule.backends, SizeIs(2));
  EXPECT_EQ(r.applied(), r.desired());
}

TEST(Reconciler, OneEndpointChangeIsOneUpsertAmongManyServices) {
  dataplane::FakeDataplane dp;
  Reconciler r({"node-a", ""}, &dp);
  for (int i = 0; i < 200; ++i) {
    std::string name = "svc" + std::to_string(i);
    ASSERT_TRUE(r.Update(name + ".yaml",
                         ServiceWithBackends(name, "10.96.1." + std::to_string(i),
                                             {"10.1.0." + std::to_string(i)}))
                    .ok());
  }
  dp.ClearDiffs();
  ASSERT_TRUE(r.Update("svc77.yaml",
                       ServiceWithBackends("svc77", "10.96.1.77", {"10.1.0.77", "10.1.9.9"}))
                  .ok());
  const std::vector<TableDiff> diffs = dp.diffs();
  ASSERT_THAT(diffs, SizeIs(1));
  const TableDiff& diff = diffs[0];
  EXPECT_THAT(diff.removals, SizeIs(0));
  ASSERT_THAT(diff.upserts, SizeIs(1));
  EXPECT_EQ(diff.upserts[0].service.String(), "default/svc77:http");
  EXPECT_THAT(diff.upserts[0].backends, SizeIs(2));
}

TEST(Reconciler, UnchangedRewriteSendsNothing) {
  dataplane::FakeDataplane dp;
  Reconciler r({"node-a", ""}, &dp);
  ObjectSet set = ServiceWithBackends("web", "10.96.0.1", {"10.0.0.1"});
  ASSERT_TRUE(r.Update("web.yaml", set).ok());
  dp.ClearDiffs();
  ASSERT_TRUE(r.Update("web.yaml", set).ok());
  EXPECT_THAT(dp.diffs(), SizeIs(0));
}

TEST(Reconciler, RemovingTheSourceRemovesItsFrontends) {
  dataplane::FakeDataplane dp;
  Reconciler r({"node-a", ""}, &dp);
  ASSERT_TRUE(r.Update("web.yaml", ServiceWithBackends("web", "10.96.0.1", {"10.0.0.1"})).ok());
  ASSERT_TRUE(r.RemoveSource("web.yaml").ok());
  ASSERT_THAT(dp.diffs(), SizeIs(2));
  EXPECT_THAT(dp.diffs()[1].removals, SizeIs(1));
  EXPECT_TRUE(dp.table().empty());
  EXPECT_TRUE(r.desired().empty());
}

TEST(Reconciler, SplitSourcesJoinServiceAndSlices) {
  // Service and its EndpointSlice in different files, arriving in either order.
  dataplane::FakeDataplane dp;
  Reconciler r({"node-a", ""}, &dp);
  ObjectSet svc, slice;
  svc.services.push_back(MakeService("web", "10.96.0.1"));
  slice.slices.push_back(MakeSlice("web", {"10.0.0.1"}));
  ASSERT_TRUE(r.Update("slice.yaml", slice).ok());
  EXPECT_TRUE(dp.table().empty());
  ASSERT_TRUE(r.Update("svc.yaml", svc).ok());
  ASSERT_THAT(dp.table(), SizeIs(1));
  EXPECT_THAT(dp.table().begin()->second.backends, SizeIs(1));
  ASSERT_TRUE(r.RemoveSource("slice.yaml").ok());
  ASSERT_THAT(dp.table(), SizeIs(1));
  EXPECT_THAT(dp.table().begin()->second.backends, SizeIs(0));  // frontend stays, rejects
}

TEST(Reconciler, DataplaneErrorKeepsDesiredAndResyncCatchesUp) {
  dataplane::FakeDataplane dp;
  Reconciler r({"node-a", ""}, &dp);
  dp.FailNextApply(absl::UnavailableError("map full"));
  EXPECT_FALSE(r.Update("web.yaml", ServiceWithBackends("web", "10.96.0.1", {"10.0.0.1"})).ok());
  EXPECT_FALSE(r.in_sync());
  EXPECT_TRUE(r.applied().empty());
  EXPECT_THAT(r.desired(), SizeIs(1));
  EXPECT_EQ(r.stats().sync_errors, 1u);
  EXPECT_EQ(r.stats().capacity_errors, 0u);
  EXPECT_EQ(r.stats().last_error, "map full");
  // A full map is counted apart.
  dp.FailNextApply(absl::ResourceExhaustedError("kpx_services is full"));
  EXPECT_FALSE(r.Resync().ok());
  EXPECT_EQ(r.stats().sync_errors, 2u);
  EXPECT_EQ(r.stats().capacity_errors, 1u);
  EXPECT_EQ(r.stats().last_error, "kpx_services is full");
  // A later unrelated change must also carry the failed frontend.
  ASSERT_TRUE(r.Update("db.yaml", ServiceWithBackends("db", "10.96.0.2", {"10.0.0.2"})).ok());
  EXPECT_TRUE(r.in_sync());
  EXPECT_EQ(r.stats().last_error, "");
  EXPECT_THAT(dp.table(), SizeIs(2));
  EXPECT_EQ(r.applied(), r.desired());
}

// A failed Apply may still have programmed part of its diff (MapWriter and
// the io_uring proxy continue past a failing operation). A frontend added by
// such an Apply and deleted before the retry must still be removed.
TEST(Reconciler, FrontendOfAPartlyFailedApplyIsRemovedWhenDeleted) {
  dataplane::FakeDataplane dp;
  Reconciler r({"node-a", ""}, &dp);
  ASSERT_TRUE(r.Update("web.yaml", ServiceWithBackends("web", "10.96.0.1", {"10.0.0.1"})).ok());
  dp.FailNextApply(absl::ResourceExhaustedError("kpx_services is full"), /*after_applying=*/true);
  EXPECT_FALSE(r.Update("db.yaml", ServiceWithBackends("db", "10.96.0.2", {"10.0.0.2"})).ok());
  ASSERT_THAT(dp.table(), SizeIs(2));  // db made it into the dataplane anyway
  ASSERT_THAT(r.applied(), SizeIs(1));
  ASSERT_TRUE(r.RemoveSource("db.yaml").ok());
  EXPECT_TRUE(r.in_sync());
  EXPECT_EQ(dp.table(), r.desired()) << "db leaked in the dataplane";
  EXPECT_THAT(dp.table(), SizeIs(1));
}

TEST(Reconciler, HealthOverlayMarksBackendDownAndBack) {
  dataplane::FakeDataplane dp;
  Reconciler r({"node-a", ""}, &dp);
  ASSERT_TRUE(r.Update("web.yaml", ServiceWithBackends("web", "10.96.0.1", {"10.0.0.1", "10.0.0.2"})).ok());
  ASSERT_TRUE(r.Update("db.yaml", ServiceWithBackends("db", "10.96.0.2", {"10.0.0.3"})).ok());
  dp.ClearDiffs();
  BackendAddr dead{*Ipv4::Parse("10.0.0.2"), 8080};
  ASSERT_TRUE(r.SetBackendHealth(dead, false).ok());
  ASSERT_THAT(dp.diffs(), SizeIs(1));
  const std::vector<TableDiff> diffs = dp.diffs();
  ASSERT_THAT(diffs[0].upserts, SizeIs(1));  // only web, not db
  const ServiceRule& web = diffs[0].upserts[0];
  ASSERT_THAT(web.backends, SizeIs(2));  // kept in the rule, marked down
  EXPECT_TRUE(web.backends[0].healthy);
  EXPECT_FALSE(web.backends[1].healthy);
  // Marking it down again changes nothing; marking it up restores it.
  ASSERT_TRUE(r.SetBackendHealth(dead, false).ok());
  EXPECT_THAT(dp.diffs(), SizeIs(1));
  ASSERT_TRUE(r.SetBackendHealth(dead, true).ok());
  ASSERT_THAT(dp.diffs(), SizeIs(2));
  EXPECT_TRUE(dp.diffs()[1].upserts[0].backends[1].healthy);
}

TEST(Reconciler, FrontendConflictFirstServiceKeepsItAndLoserTakesOverWhenItGoes) {
  dataplane::FakeDataplane dp;
  Reconciler r({"node-a", ""}, &dp);
  ASSERT_TRUE(r.Update("b.yaml", ServiceWithBackends("bbb", "10.96.0.1", {"10.0.0.2"})).ok());
  ASSERT_TRUE(r.Update("a.yaml", ServiceWithBackends("aaa", "10.96.0.1", {"10.0.0.1"})).ok());
  ASSERT_THAT(dp.table(), SizeIs(1));
  EXPECT_EQ(dp.table().begin()->second.service.service.name, "aaa");
  EXPECT_FALSE(r.TakeWarnings().empty());
  ASSERT_TRUE(r.RemoveSource("a.yaml").ok());
  ASSERT_THAT(dp.table(), SizeIs(1));
  EXPECT_EQ(dp.table().begin()->second.service.service.name, "bbb");
}

// Property: after any sequence of updates, the incrementally maintained table
// equals a full Translate() of the same objects.
TEST(Reconciler, IncrementalEqualsFullTranslate) {
  dataplane::FakeDataplane dp;
  Reconciler r({"node-a", ""}, &dp);
  std::mt19937 rng(12345);
  for (int step = 0; step < 400; ++step) {
    int file = rng() % 12;
    std::string source = "f" + std::to_string(file) + ".yaml";
    int op = rng() % 5;
    if (op == 0) {
      ASSERT_TRUE(r.RemoveSource(source).ok());
      continue;
    }
    ObjectSet set;
    int svc = rng() % 8;  // services shared across files: exercises last-wins
    std::string name = "s" + std::to_string(svc);
    if (op != 1) set.services.push_back(MakeService(name, "10.96.2." + std::to_string(rng() % 6)));
    if (op != 2) {
      std::vector<std::string> ips;
      for (int i = 0, n = rng() % 4; i < n; ++i) ips.push_back("10.2.0." + std::to_string(rng() % 10));
      EndpointSlice slice = MakeSlice(name, ips);
      slice.meta.id.name = name + "-" + std::to_string(rng() % 2);
      set.slices.push_back(slice);
    }
    ASSERT_TRUE(r.Update(source, set).ok());
    TranslateResult full = Translate(r.store().state(), {"node-a", ""});
    ASSERT_EQ(r.desired(), full.table) << "step " << step;
    ASSERT_EQ(dp.table(), full.table) << "step " << step;
  }
}

// A big batch (a cold start) is translated on worker threads: the result
// is the same as a full Translate, conflicts resolve the same way, and the
// warnings come in the services' order, as when translated one by one.
TEST(Reconciler, BigBatchTranslatedInParallelEqualsFullTranslate) {
  std::vector<Reconciler::SourceChange> changes;
  for (int i = 0; i < 700; ++i) {
    const std::string name = "svc-" + std::to_string(1000 + i);
    // Every 50th Service claims its predecessor's VIP: a conflict.
    const int vip = i % 50 == 49 ? i - 1 : i;
    ObjectSet set = ServiceWithBackends(name, "10.96." + std::to_string(vip / 250) + "." + std::to_string(vip % 250),
                                        {"10.1." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1)});
    if (i % 7 == 0) set.slices[0].endpoints.push_back(Endpoint{.addresses = {"fd00::" + std::to_string(i)}});
    changes.push_back({name + ".yaml", std::move(set)});
  }
  dataplane::FakeDataplane dp;
  Reconciler r({"node-a", ""}, &dp);
  ASSERT_TRUE(r.UpdateMany(changes).ok());
  TranslateResult full = Translate(r.store().state(), {"node-a", ""});
  EXPECT_EQ(r.desired().size(), 700u - 14u);
  EXPECT_EQ(r.desired(), full.table);
  EXPECT_EQ(dp.table(), full.table);
  // The dataplane got a head start on the batch (Prepare, on a helper
  // thread during the bookkeeping) with every translated rule, conflicting
  // ones included, and it was over before Apply.
  EXPECT_EQ(dp.events(), (std::vector<std::string>{"prepare", "apply"}));
  const std::vector<std::vector<ServiceRule>> calls = dp.prepared();
  ASSERT_EQ(calls.size(), 1u);
  ServiceTable prepared;
  for (const ServiceRule& rule : calls[0]) prepared.emplace(rule.frontend, rule);  // first claim wins
  EXPECT_EQ(calls[0].size(), 700u);
  EXPECT_EQ(prepared, full.table);
  std::vector<std::string> want;
  for (int i = 0; i < 700; i += 7) {
    want.push_back("default/svc-" + std::to_string(1000 + i) + "-slice (EndpointSlice of default/svc-" +
                   std::to_string(1000 + i) + "): endpoints[1].addresses[0] \"fd00::" + std::to_string(i) +
                   "\" is not an IPv4 address; ignored");
  }
  std::vector<std::string> got;
  for (const std::string& w : r.TakeWarnings()) {
    if (w.find("is not an IPv4 address") != std::string::npos) got.push_back(w);
  }
  EXPECT_EQ(got, want);
}

}  // namespace
}  // namespace kpx::controller

namespace kpx::controller {
namespace {

BackendAddr Addr(const std::string& ip, uint16_t port) { return {*Ipv4::Parse(ip), port}; }

TEST(ReconcilerOverrides, SetAddRemoveDrainAndReset) {
  dataplane::FakeDataplane dp;
  Reconciler r({"node-a", ""}, &dp);
  ASSERT_TRUE(r.Update("web.yaml", ServiceWithBackends("web", "10.96.0.1", {"10.0.0.1", "10.0.0.2"})).ok());
  auto backends = [&] {
    std::vector<std::string> out;
    const ServiceTable table = dp.table();  // a copy: keep it alive while iterating
    for (const Backend& b : table.begin()->second.backends) {
      out.push_back(b.ip.ToString() + ":" + std::to_string(b.port) + (b.healthy ? "" : "(drain)"));
    }
    return out;
  };
  EndpointOverride o;
  o.set = std::vector<BackendAddr>{Addr("10.9.0.1", 80)};
  ASSERT_TRUE(r.SetOverride({"default", "web"}, o).ok());
  EXPECT_THAT(backends(), ::testing::ElementsAre("10.9.0.1:80"));

  o = {};
  o.add = {Addr("10.9.0.2", 80)};
  o.remove = {Addr("10.0.0.1", 8080)};
  o.drain = {Addr("10.0.0.2", 8080)};
  ASSERT_TRUE(r.SetOverride({"default", "web"}, o).ok());
  EXPECT_THAT(backends(), ::testing::ElementsAre("10.0.0.2:8080(drain)", "10.9.0.2:80"));

  // Slice changes keep flowing under the override.
  ASSERT_TRUE(r.Update("web.yaml", ServiceWithBackends("web", "10.96.0.1", {"10.0.0.2", "10.0.0.3"})).ok());
  EXPECT_THAT(backends(), ::testing::ElementsAre("10.0.0.2:8080(drain)", "10.0.0.3:8080", "10.9.0.2:80"));

  ASSERT_TRUE(r.SetOverride({"default", "web"}, std::nullopt).ok());
  EXPECT_THAT(backends(), ::testing::ElementsAre("10.0.0.2:8080", "10.0.0.3:8080"));
  EXPECT_TRUE(r.overrides().empty());
}

TEST(ReconcilerOverrides, OverrideOfAnUnknownServiceWaitsForIt) {
  dataplane::FakeDataplane dp;
  Reconciler r({"node-a", ""}, &dp);
  EndpointOverride o;
  o.set = std::vector<BackendAddr>{Addr("10.9.0.1", 80)};
  ASSERT_TRUE(r.SetOverride({"default", "web"}, o).ok());
  EXPECT_TRUE(dp.table().empty());
  ASSERT_TRUE(r.Update("web.yaml", ServiceWithBackends("web", "10.96.0.1", {"10.0.0.1"})).ok());
  ASSERT_EQ(dp.table().size(), 1u);
  ASSERT_EQ(dp.table().begin()->second.backends.size(), 1u);
  EXPECT_EQ(dp.table().begin()->second.backends[0].ip.ToString(), "10.9.0.1");
}

// What the admin API and kpxd's per-change bookkeeping read instead of the
// whole table: one Service's rules, and the frontends that changed.
TEST(Reconciler, DesiredRulesOfAndChangedFrontendsCoverOnlyTheChange) {
  dataplane::FakeDataplane dp;
  Reconciler r({"node-a", ""}, &dp);
  for (int i = 0; i < 50; ++i) {
    std::string name = "svc" + std::to_string(i);
    ASSERT_TRUE(r.Update(name + ".yaml", ServiceWithBackends(name, "10.96.2." + std::to_string(i),
                                                             {"10.2.0." + std::to_string(i)}))
                    .ok());
  }
  EXPECT_THAT(r.TakeChangedFrontends(), SizeIs(50));
  EXPECT_THAT(r.TakeChangedFrontends(), SizeIs(0));  // taken

  std::vector<const ServiceRule*> rules = r.DesiredRulesOf({"default", "svc7"});
  ASSERT_THAT(rules, SizeIs(1));
  EXPECT_EQ(rules[0]->frontend.String(), "10.96.2.7:80/TCP");
  EXPECT_THAT(r.DesiredRulesOf({"default", "nope"}), SizeIs(0));

  ASSERT_TRUE(r.Update("svc7.yaml", ServiceWithBackends("svc7", "10.96.2.7", {"10.2.9.9"})).ok());
  std::vector<FrontendKey> changed = r.TakeChangedFrontends();
  ASSERT_THAT(changed, SizeIs(1));
  EXPECT_EQ(changed[0].String(), "10.96.2.7:80/TCP");

  // A frontend lost to another Service is not among the loser's rules.
  ASSERT_TRUE(r.Update("dup.yaml", ServiceWithBackends("a-dup", "10.96.2.7", {"10.2.8.8"})).ok());
  EXPECT_THAT(r.DesiredRulesOf({"default", "svc7"}), SizeIs(0));
  ASSERT_THAT(r.DesiredRulesOf({"default", "a-dup"}), SizeIs(1));
  ASSERT_TRUE(r.RemoveSource("svc7.yaml").ok());
  changed = r.TakeChangedFrontends();
  ASSERT_THAT(changed, SizeIs(1));  // the shared frontend, recomputed
}

}  // namespace
}  // namespace kpx::controller
