// K8sApiSource against FakeApiServer (real HTTP/1.1, chunked watches, TLS on
// 127.0.0.1): the table, fed through an ObjectStore and Translate(), converges
// in every scenario, and relists hand out only real differences.
#include "controller/source/k8s_api_source.h"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "controller/manifest_parser.h"
#include "controller/object_store.h"
#include "controller/translate.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testlib/fake_apiserver.h"

namespace kpx::controller {
namespace {

using json = nlohmann::json;
using kpx::testing::FakeApiServer;
using kpx::testing::FakeRequest;
using kpx::testing::TestPki;
using ::testing::Each;
using ::testing::ElementsAre;
using ::testing::Field;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;

constexpr absl::Duration kWait = absl::Seconds(20);
constexpr char kServices[] = "/api/v1/services";
constexpr char kSlices[] = "/apis/discovery.k8s.io/v1/endpointslices";

json Svc(const std::string& name, const std::string& ip, int port = 80,
         json labels = json::object()) {
  return {{"metadata", {{"name", name}, {"namespace", "default"}, {"labels", labels}}},
          {"spec",
           {{"clusterIP", ip},
            {"selector", {{"app", name}}},
            {"ports", json::array({json{{"name", "http"}, {"port", port}, {"protocol", "TCP"}}})}}}};
}

json Slice(const std::string& service, const std::vector<std::string>& ips, int port = 8080) {
  json eps = json::array();
  for (const std::string& ip : ips) {
    eps.push_back({{"addresses", json::array({ip})}, {"conditions", {{"ready", true}}}});
  }
  return {{"metadata",
           {{"name", service + "-abc"},
            {"namespace", "default"},
            {"labels", {{"kubernetes.io/service-name", service}}}}},
          {"addressType", "IPv4"},
          {"endpoints", eps},
          {"ports", json::array({json{{"name", "http"}, {"port", port}, {"protocol", "TCP"}}})}};
}

class K8sApiSourceTest : public ::testing::Test {
 protected:
  void TearDown() override {
    source_.reset();  // stops its threads first
    server_.reset();
  }

  void StartServer(FakeApiServer::Options o = {}) {
    auto s = FakeApiServer::Start(std::move(o));
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = std::move(*s);
  }

  K8sApiOptions Options() const {
    K8sApiOptions o;
    o.access.server = server_->url();
    o.access.origin = "test";
    o.page_size = 2;
    o.min_watch_timeout = absl::Seconds(60);
    o.connect_timeout = absl::Seconds(5);
    o.initial_backoff = absl::Milliseconds(10);
    o.max_backoff = absl::Milliseconds(200);
    o.proxy_from_env = false;
    return o;
  }

  void StartSource(K8sApiOptions o) {
    auto s = K8sApiSource::Create(std::move(o));
    ASSERT_TRUE(s.ok()) << s.status();
    source_ = std::move(*s);
    ASSERT_TRUE(source_->Start().ok());
  }

  // Waits (bounded) on the source's fd, then applies what it hands out to
  // the store, as kpxd's loop does.
  void PumpOnce(absl::Duration wait) {
    pollfd p{source_->fd(), POLLIN, 0};
    poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(wait)));
    std::vector<SourceUpdate> batch = source_->TakeUpdates();
    if (batch.empty()) return;
    batch_sizes_.push_back(batch.size());
    for (SourceUpdate& u : batch) {
      if (u.kind == SourceUpdate::Kind::kReplace) {
        log_.push_back("+" + u.source);
        store_.Replace(u.source, std::move(u.objects));
      } else {
        log_.push_back("-" + u.source);
        store_.Remove(u.source);
      }
    }
  }

  bool PumpUntil(const std::function<bool()>& pred, absl::Duration timeout = kWait) {
    const absl::Time deadline = absl::Now() + timeout;
    while (!pred()) {
      if (absl::Now() > deadline) return false;
      PumpOnce(absl::Milliseconds(50));
    }
    return true;
  }

  bool Synced() {
    return PumpUntil([&] { return source_->Synced(); });
  }

  // Frontend -> "ip:port,..." of its backends, from Translate() over the store.
  std::map<std::string, std::string> Rules() const {
    std::map<std::string, std::string> out;
    const TranslateResult r = Translate(store_.state(), NodeInfo{"node-a", ""});
    for (const auto& [key, rule] : r.table) {
      std::vector<std::string> backends;
      for (const Backend& b : rule.backends) {
        backends.push_back(absl::StrCat(b.ip.ToString(), ":", b.port));
      }
      std::sort(backends.begin(), backends.end());
      out[key.String()] = absl::StrJoin(backends, ",");
    }
    return out;
  }

  std::vector<FakeRequest> Requests(const std::string& path, bool watch) const {
    std::vector<FakeRequest> out;
    for (const FakeRequest& r : server_->Requests()) {
      if (r.path == path && r.IsWatch() == watch) out.push_back(r);
    }
    return out;
  }

  std::vector<std::string> TakeLog() {
    std::vector<std::string> out;
    out.swap(log_);
    std::sort(out.begin(), out.end());
    return out;
  }

  // Two Services with one slice each, listed and watched.
  void StartWithWebAndDb(FakeApiServer::Options server_options = {}) {
    StartServer(std::move(server_options));
    server_->Apply("services", Svc("web", "10.96.0.1"));
    server_->Apply("endpointslices", Slice("web", {"10.0.0.1"}));
    server_->Apply("services", Svc("db", "10.96.0.2", 5432));
    server_->Apply("endpointslices", Slice("db", {"10.0.1.1"}, 5432));
    StartSource(Options());
    ASSERT_TRUE(Synced());
    ASSERT_TRUE(server_->WaitForOpenWatches("services", 1, kWait));
    ASSERT_TRUE(server_->WaitForOpenWatches("endpointslices", 1, kWait));
    ASSERT_TRUE(PumpUntil([&] { return Rules().size() == 2; }));
    TakeLog();
  }

  std::unique_ptr<FakeApiServer> server_;
  std::unique_ptr<K8sApiSource> source_;
  ObjectStore store_;
  std::vector<std::string> log_;
  std::vector<size_t> batch_sizes_;
};

TEST_F(K8sApiSourceTest, InitialListIsPaginatedFilteredAndHandedOutInOneBatch) {
  StartServer();
  for (int i = 0; i < 5; ++i) {
    const std::string name = absl::StrCat("svc", i);
    server_->Apply("services", Svc(name, absl::StrCat("10.96.0.", 10 + i)));
    server_->Apply("endpointslices", Slice(name, {absl::StrCat("10.0.0.", 10 + i)}));
  }
  // Meant for another proxy: the label selector keeps it away.
  server_->Apply("services",
                 Svc("other", "10.96.0.99", 80, {{"service.kubernetes.io/service-proxy-name", "x"}}));
  // Headless: handed out, and Translate skips it (kube-proxy semantics).
  server_->Apply("services", Svc("headless", "None"));
  const int64_t list_rv = server_->resource_version();

  StartSource(Options());
  ASSERT_TRUE(Synced());
  ASSERT_TRUE(PumpUntil([&] { return Rules().size() == 5; }));
  EXPECT_EQ(Rules()["10.96.0.10:80/TCP"], "10.0.0.10:8080");
  EXPECT_EQ(Rules()["10.96.0.14:80/TCP"], "10.0.0.14:8080");
  EXPECT_FALSE(Rules().contains("10.96.0.99:80/TCP"));
  EXPECT_TRUE(store_.state().services.contains(NamespacedName{"default", "headless"}));
  // Nothing before both lists were complete: one batch with all 11 objects.
  ASSERT_FALSE(batch_sizes_.empty());
  EXPECT_EQ(batch_sizes_.front(), 11u);

  // 6 Services at limit=2: three pages, chained by continue tokens.
  const std::vector<FakeRequest> lists = Requests(kServices, false);
  ASSERT_EQ(lists.size(), 3u);
  EXPECT_EQ(lists[0].Param("continue"), "");
  EXPECT_NE(lists[1].Param("continue"), "");
  EXPECT_NE(lists[2].Param("continue"), lists[1].Param("continue"));
  for (const FakeRequest& r : server_->Requests()) {
    EXPECT_EQ(r.Param("labelSelector"), kKubeProxyLabelSelector) << r.path;
    if (!r.IsWatch()) {
      EXPECT_EQ(r.Param("limit"), "2");
    }
    EXPECT_EQ(r.headers.count("authorization"), 0u);  // no credentials configured
  }
  EXPECT_EQ(Requests(kSlices, false).size(), 3u);

  ASSERT_TRUE(server_->WaitForRequests(
      [](const std::vector<FakeRequest>& rs) {
        return std::count_if(rs.begin(), rs.end(),
                             [](const FakeRequest& r) { return r.IsWatch(); }) == 2;
      },
      kWait));
  for (const char* path : {kServices, kSlices}) {
    const std::vector<FakeRequest> watches = Requests(path, true);
    ASSERT_EQ(watches.size(), 1u) << path;
    EXPECT_EQ(watches[0].Param("resourceVersion"), absl::StrCat(list_rv));
    EXPECT_EQ(watches[0].Param("allowWatchBookmarks"), "true");
    int timeout = 0;
    ASSERT_TRUE(absl::SimpleAtoi(watches[0].Param("timeoutSeconds"), &timeout));
    EXPECT_GE(timeout, 60);  // jittered in [min, 2*min)
    EXPECT_LT(timeout, 120);
  }
  const K8sApiStats st = source_->stats();
  EXPECT_EQ(st.services.list_pages, 3u);
  EXPECT_EQ(st.services.objects, 6u);
  EXPECT_EQ(st.slices.objects, 5u);
  EXPECT_TRUE(st.services.synced);
  EXPECT_EQ(st.services.relists, 0u);
}

TEST_F(K8sApiSourceTest, WatchAddModifyDeleteEachCostOneUpdate) {
  // Events arrive split mid-line over chunks: the decoder must buffer lines.
  StartWithWebAndDb({.split_events = true});

  server_->Apply("services", Svc("api", "10.96.0.3"));
  server_->Apply("endpointslices", Slice("api", {"10.0.2.1"}));
  ASSERT_TRUE(PumpUntil([&] { return Rules()["10.96.0.3:80/TCP"] == "10.0.2.1:8080"; }));
  EXPECT_THAT(TakeLog(), ElementsAre("+api/EndpointSlice/default/api-abc",
                                     "+api/Service/default/api"));

  server_->Apply("endpointslices", Slice("web", {"10.0.0.1", "10.0.0.9"}));
  ASSERT_TRUE(PumpUntil(
      [&] { return Rules()["10.96.0.1:80/TCP"] == "10.0.0.1:8080,10.0.0.9:8080"; }));
  EXPECT_THAT(TakeLog(), ElementsAre("+api/EndpointSlice/default/web-abc"));

  server_->Delete("services", "default", "api");
  ASSERT_TRUE(PumpUntil([&] { return !Rules().contains("10.96.0.3:80/TCP"); }));
  EXPECT_THAT(TakeLog(), ElementsAre("-api/Service/default/api"));

  server_->Delete("endpointslices", "default", "api-abc");
  ASSERT_TRUE(PumpUntil(
      [&] { return !store_.state().slices.contains(NamespacedName{"default", "api-abc"}); }));
  EXPECT_THAT(TakeLog(), ElementsAre("-api/EndpointSlice/default/api-abc"));

  const K8sApiStats st = source_->stats();
  EXPECT_EQ(st.services.events, 2u);
  EXPECT_EQ(st.slices.events, 3u);
  EXPECT_EQ(st.services.resource_version, absl::StrCat(server_->resource_version() - 1));
  EXPECT_EQ(st.slices.resource_version, absl::StrCat(server_->resource_version()));
  EXPECT_EQ(st.services.reconnects + st.slices.reconnects, 0u);
}

TEST_F(K8sApiSourceTest, BookmarkAdvancesResourceVersionForTheNextWatch) {
  StartWithWebAndDb();
  const int64_t bookmark = server_->Bookmark("services");
  ASSERT_TRUE(PumpUntil(
      [&] { return source_->stats().services.resource_version == absl::StrCat(bookmark); }));
  EXPECT_THAT(TakeLog(), IsEmpty());  // a bookmark changes no object

  server_->EndWatches("services");  // the server-side timeout
  ASSERT_TRUE(server_->WaitForRequests(
      [&](const std::vector<FakeRequest>& rs) {
        return std::any_of(rs.begin(), rs.end(), [&](const FakeRequest& r) {
          return r.IsWatch() && r.path == kServices &&
                 r.Param("resourceVersion") == absl::StrCat(bookmark);
        });
      },
      kWait));
  server_->Apply("services", Svc("late", "10.96.0.7"));
  ASSERT_TRUE(PumpUntil([&] { return Rules().contains("10.96.0.7:80/TCP"); }));
  EXPECT_EQ(Requests(kServices, false).size(), 1u);  // resumed, never relisted
  const K8sApiStats st = source_->stats();
  EXPECT_EQ(st.services.bookmarks, 1u);
  EXPECT_EQ(st.services.relists, 0u);
  EXPECT_EQ(st.services.reconnects, 0u);  // a clean end is not an error
}

TEST_F(K8sApiSourceTest, ExpiredWatchRelistsAndHandsOutOnlyRealDifferences) {
  StartServer();
  for (const char* name : {"a", "b", "c"}) {
    server_->Apply("services", Svc(name, absl::StrCat("10.96.1.", name[0] - 'a' + 1)));
    server_->Apply("endpointslices", Slice(name, {absl::StrCat("10.0.1.", name[0] - 'a' + 1)}));
  }
  StartSource(Options());
  ASSERT_TRUE(Synced());
  ASSERT_TRUE(server_->WaitForOpenWatches("services", 1, kWait));
  ASSERT_TRUE(server_->WaitForOpenWatches("endpointslices", 1, kWait));
  ASSERT_TRUE(PumpUntil([&] { return Rules().size() == 3; }));
  TakeLog();

  // Changes the client never sees as events: then the history is compacted.
  server_->SetStalled(true);
  server_->Apply("services", Svc("a", "10.96.1.1"));                  // new RV, same content
  server_->Apply("endpointslices", Slice("a", {"10.0.1.1"}));         // likewise
  server_->Apply("endpointslices", Slice("b", {"10.0.1.2", "10.0.1.22"}));  // real change
  server_->Delete("services", "default", "c");
  server_->Delete("endpointslices", "default", "c-abc");
  server_->Apply("services", Svc("d", "10.96.1.4"));
  server_->Apply("endpointslices", Slice("d", {"10.0.1.4"}));
  server_->Expire("services");
  server_->Expire("endpointslices");

  // Still stalled: whatever converges now came from the relists.
  const std::map<std::string, std::string> want = {
      {"10.96.1.1:80/TCP", "10.0.1.1:8080"},
      {"10.96.1.2:80/TCP", "10.0.1.22:8080,10.0.1.2:8080"},
      {"10.96.1.4:80/TCP", "10.0.1.4:8080"},
  };
  ASSERT_TRUE(PumpUntil([&] {
    const K8sApiStats st = source_->stats();
    return st.services.relists == 1 && st.slices.relists == 1 && Rules() == want;
  })) << absl::StrJoin(Rules(), "; ", absl::PairFormatter("="));
  // Unchanged objects (a, b's Service) were not handed out again; nothing
  // that still exists was removed, even for a moment.
  EXPECT_THAT(TakeLog(), ElementsAre("+api/EndpointSlice/default/b-abc",
                                     "+api/EndpointSlice/default/d-abc",
                                     "+api/Service/default/d", "-api/EndpointSlice/default/c-abc",
                                     "-api/Service/default/c"));
  EXPECT_EQ(Requests(kServices, false).size(), 4u);  // 2 pages, then 2 pages again
  EXPECT_EQ(source_->stats().services.events, 0u);
  EXPECT_EQ(source_->stats().slices.events, 0u);

  // The watches resume from the relists' resourceVersion: no replays.
  server_->SetStalled(false);
  server_->Apply("services", Svc("e", "10.96.1.5"));
  ASSERT_TRUE(PumpUntil([&] { return Rules().contains("10.96.1.5:80/TCP"); }));
  EXPECT_THAT(TakeLog(), ElementsAre("+api/Service/default/e"));
}

TEST_F(K8sApiSourceTest, Http410OnResumeRelists) {
  StartWithWebAndDb();
  server_->SetStalled(true);
  server_->Apply("endpointslices", Slice("web", {"10.0.0.5"}));  // missed
  // The stream breaks; the resume from the old resourceVersion gets HTTP 410.
  server_->Expire("endpointslices", FakeApiServer::ExpiryMode::kHttp410);
  server_->SetStalled(false);
  ASSERT_TRUE(PumpUntil([&] { return Rules()["10.96.0.1:80/TCP"] == "10.0.0.5:8080"; }));
  EXPECT_THAT(TakeLog(), ElementsAre("+api/EndpointSlice/default/web-abc"));
  const K8sApiStats st = source_->stats();
  EXPECT_EQ(st.slices.relists, 1u);
  EXPECT_EQ(Requests(kSlices, false).size(), 2u);  // the first list and the relist
  EXPECT_EQ(st.services.relists, 0u);
}

TEST_F(K8sApiSourceTest, AbruptDisconnectResumesFromLastResourceVersion) {
  StartWithWebAndDb();
  server_->Apply("services", Svc("x", "10.96.0.8"));
  ASSERT_TRUE(PumpUntil([&] { return Rules().contains("10.96.0.8:80/TCP"); }));
  const std::string last_rv = source_->stats().services.resource_version;
  ASSERT_EQ(last_rv, absl::StrCat(server_->resource_version()));

  server_->SetStalled(true);
  server_->Apply("services", Svc("y", "10.96.0.9"));  // happens while the stream breaks
  server_->DisconnectWatches("services");
  ASSERT_TRUE(server_->WaitForRequests(
      [&](const std::vector<FakeRequest>& rs) {
        return std::any_of(rs.begin(), rs.end(), [&](const FakeRequest& r) {
          return r.IsWatch() && r.path == kServices && r.Param("resourceVersion") == last_rv;
        });
      },
      kWait));
  server_->SetStalled(false);
  ASSERT_TRUE(PumpUntil([&] { return Rules().contains("10.96.0.9:80/TCP"); }));
  EXPECT_EQ(Requests(kServices, false).size(), 1u);  // no relist
  const K8sApiStats st = source_->stats();
  EXPECT_EQ(st.services.relists, 0u);
  EXPECT_GE(st.services.reconnects, 1u);
  EXPECT_THAT(st.services.last_error, HasSubstr("resuming"));
  EXPECT_EQ(Rules().size(), 4u);
}

TEST_F(K8sApiSourceTest, GarbageAndMalformedObjectsAreSkippedNeverCleared) {
  StartServer();
  server_->Apply("services", Svc("web", "10.96.0.1"));
  server_->Apply("endpointslices", Slice("web", {"10.0.0.1"}));
  json bad = Svc("bad", "10.96.0.66");
  bad["spec"]["ports"][0]["port"] = "http";
  server_->Apply("services", bad);  // malformed in the list
  StartSource(Options());
  ASSERT_TRUE(Synced());
  ASSERT_TRUE(server_->WaitForOpenWatches("services", 1, kWait));
  ASSERT_TRUE(PumpUntil([&] { return Rules().size() == 1; }));
  TakeLog();

  server_->InjectLine("services", "this is not json");
  server_->InjectLine("services", R"({"type":"ADDED"})");
  server_->InjectLine("services", R"({"type":"SOMETHING","object":{}})");
  server_->Apply("services", Svc("bad2", "not-an-ip"));
  json broken_web = Svc("web", "10.96.0.1");
  broken_web["spec"]["ports"][0]["port"] = 70000;
  server_->Apply("services", broken_web);  // a good object turning bad keeps its last version
  server_->Apply("services", Svc("after", "10.96.0.5"));
  ASSERT_TRUE(PumpUntil([&] { return Rules().contains("10.96.0.5:80/TCP"); }));
  EXPECT_EQ(Rules()["10.96.0.1:80/TCP"], "10.0.0.1:8080");
  EXPECT_THAT(TakeLog(), ElementsAre("+api/Service/default/after"));
  EXPECT_EQ(source_->stats().services.malformed, 6u);
  EXPECT_TRUE(source_->Synced());

  // The stream survived all of it, and web is still known: deleting it works.
  server_->Delete("services", "default", "web");
  ASSERT_TRUE(PumpUntil([&] { return !Rules().contains("10.96.0.1:80/TCP"); }));
  EXPECT_THAT(TakeLog(), ElementsAre("-api/Service/default/web"));
}

TEST_F(K8sApiSourceTest, ExpiredContinueTokenStartsTheListOver) {
  StartServer();
  for (int i = 0; i < 5; ++i) {
    server_->Apply("services", Svc(absl::StrCat("s", i), absl::StrCat("10.96.2.", i + 1)));
  }
  server_->ExpireNextContinue();
  StartSource(Options());
  ASSERT_TRUE(Synced());
  EXPECT_EQ(store_.state().services.size(), 5u);
  // Only Services need a continue token (there are no slices).
  const std::vector<FakeRequest> lists = Requests(kServices, false);
  ASSERT_EQ(lists.size(), 5u);
  EXPECT_EQ(lists[0].Param("continue"), "");
  EXPECT_NE(lists[1].Param("continue"), "");  // answered 410 Expired
  EXPECT_EQ(lists[2].Param("continue"), "");  // from the top again
  EXPECT_NE(lists[3].Param("continue"), "");
  EXPECT_NE(lists[4].Param("continue"), "");
  EXPECT_EQ(source_->stats().services.relists, 0u);  // a restarted list is not a relist
}

TEST_F(K8sApiSourceTest, ServerErrorsAreRetriedAndNothingIsHandedOutBeforeSync) {
  StartServer();
  server_->Apply("services", Svc("web", "10.96.0.1"));
  server_->Apply("endpointslices", Slice("web", {"10.0.0.1"}));
  server_->FailNext("services", 500, 3);
  server_->FailNext("endpointslices", 503, 1);
  StartSource(Options());
  ASSERT_TRUE(Synced());
  ASSERT_TRUE(PumpUntil([&] { return Rules()["10.96.0.1:80/TCP"] == "10.0.0.1:8080"; }));
  // The Service never went out without its slice.
  ASSERT_FALSE(batch_sizes_.empty());
  EXPECT_EQ(batch_sizes_.front(), 2u);
  const K8sApiStats st = source_->stats();
  EXPECT_EQ(st.services.reconnects, 3u);
  EXPECT_EQ(st.slices.reconnects, 1u);
  EXPECT_THAT(st.services.last_error, HasSubstr("HTTP 500: injected failure"));
}

TEST_F(K8sApiSourceTest, StalledWatchIsAbandonedAndResumed) {
  StartServer();
  server_->Apply("services", Svc("web", "10.96.0.1"));
  K8sApiOptions o = Options();
  o.stall_timeout = absl::Seconds(1);
  StartSource(o);
  ASSERT_TRUE(Synced());
  ASSERT_TRUE(server_->WaitForOpenWatches("services", 1, kWait));
  server_->SetStalled(true);
  server_->Apply("services", Svc("late", "10.96.0.2"));
  ASSERT_TRUE(PumpUntil([&] { return source_->stats().services.reconnects >= 1; }));
  server_->SetStalled(false);
  ASSERT_TRUE(PumpUntil([&] { return store_.state().services.size() == 2; }));
  EXPECT_EQ(Requests(kServices, false).size(), 1u);
}

TEST_F(K8sApiSourceTest, LatestChangeWinsAgainstAManifestFile) {
  // What kpxd does with both sources: one ObjectStore, file loaded first.
  auto file = ParseManifest(
      "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\n"
      "spec: {clusterIP: 10.96.9.9, ports: [{name: http, port: 80}]}\n",
      "/etc/kpx/manifests/web.yaml");
  ASSERT_TRUE(file.ok()) << file.status();
  store_.Replace("/etc/kpx/manifests/web.yaml", file->objects);
  StartWithWebAndDb();
  // The API's version arrived later: it wins.
  EXPECT_TRUE(Rules().contains("10.96.0.1:80/TCP"));
  EXPECT_FALSE(Rules().contains("10.96.9.9:80/TCP"));

  store_.Replace("/etc/kpx/manifests/web.yaml", file->objects);  // the file is rewritten
  EXPECT_TRUE(Rules().contains("10.96.9.9:80/TCP"));

  // A relist that finds web unchanged hands nothing out: the file stays.
  server_->Expire("services");
  ASSERT_TRUE(PumpUntil([&] { return source_->stats().services.relists == 1; }));
  PumpOnce(absl::Milliseconds(100));
  EXPECT_THAT(TakeLog(), IsEmpty());
  EXPECT_TRUE(Rules().contains("10.96.9.9:80/TCP"));

  server_->Apply("services", Svc("web", "10.96.0.1", 8080));  // the API object changes
  ASSERT_TRUE(PumpUntil([&] { return Rules().contains("10.96.0.1:8080/TCP"); }));
  EXPECT_FALSE(Rules().contains("10.96.9.9:80/TCP"));
}

// ----------------------------------------------------------- TLS and auth

class K8sApiSourceTlsTest : public K8sApiSourceTest {
 protected:
  void SetUp() override {
    auto pki = TestPki::Generate();
    ASSERT_TRUE(pki.ok()) << pki.status();
    pki_ = *std::move(pki);
  }
  FakeApiServer::Options Tls() const {
    return {.tls = true, .cert_pem = pki_.server_cert_pem, .key_pem = pki_.server_key_pem};
  }
  TestPki pki_;
};

TEST_F(K8sApiSourceTlsTest, VerifiesTheServerWithTheConfiguredCa) {
  StartServer(Tls());
  server_->Apply("services", Svc("web", "10.96.0.1"));
  ASSERT_THAT(server_->url(), HasSubstr("https://127.0.0.1:"));
  K8sApiOptions o = Options();
  o.access.ca_pem = pki_.ca_pem;
  StartSource(o);
  ASSERT_TRUE(Synced());
  EXPECT_EQ(store_.state().services.size(), 1u);
}

TEST_F(K8sApiSourceTlsTest, WrongCaNeverSyncs) {
  StartServer(Tls());
  server_->Apply("services", Svc("web", "10.96.0.1"));
  K8sApiOptions o = Options();
  o.access.ca_pem = pki_.other_ca_pem;
  StartSource(o);
  ASSERT_TRUE(PumpUntil([&] { return source_->stats().services.reconnects >= 2; }));
  EXPECT_FALSE(source_->Synced());
  EXPECT_THAT(source_->stats().services.last_error, HasSubstr("certificate"));
  EXPECT_THAT(server_->Requests(), IsEmpty());  // nothing got past the handshake
  EXPECT_THAT(log_, IsEmpty());
}

TEST_F(K8sApiSourceTlsTest, InsecureSkipVerifyOnlyWhenAsked) {
  StartServer(Tls());
  K8sApiOptions o = Options();
  o.access.insecure_skip_tls_verify = true;
  StartSource(o);
  ASSERT_TRUE(Synced());
}

TEST_F(K8sApiSourceTlsTest, ClientCertificate) {
  FakeApiServer::Options so = Tls();
  so.client_ca_pem = pki_.ca_pem;
  StartServer(so);
  K8sApiOptions o = Options();
  o.access.ca_pem = pki_.ca_pem;
  o.access.client_cert_pem = pki_.client_cert_pem;
  o.access.client_key_pem = pki_.client_key_pem;
  StartSource(o);
  ASSERT_TRUE(Synced());
  EXPECT_THAT(server_->Requests(), Each(Field(&FakeRequest::client_cn, "kpx-test-client")));

  // Without one, the server refuses the connection.
  source_.reset();
  o.access.client_cert_pem.clear();
  o.access.client_key_pem.clear();
  StartSource(o);
  ASSERT_TRUE(PumpUntil([&] { return source_->stats().services.reconnects >= 2; }));
  EXPECT_FALSE(source_->Synced());
}

TEST_F(K8sApiSourceTest, BearerTokenFromARotatingFile) {
  StartServer({.required_token = "s3cret"});
  server_->Apply("services", Svc("web", "10.96.0.1"));
  char tmpl[] = "/tmp/kpx-token-XXXXXX";
  const int fd = mkstemp(tmpl);
  ASSERT_GE(fd, 0);
  close(fd);
  const std::string token_file = tmpl;
  std::ofstream(token_file) << "expired\n";
  K8sApiOptions o = Options();
  o.access.token = "static-is-overridden-by-the-file";
  o.access.token_file = token_file;
  StartSource(o);
  ASSERT_TRUE(PumpUntil([&] { return source_->stats().services.reconnects >= 1; }));
  EXPECT_FALSE(source_->Synced());
  EXPECT_THAT(source_->stats().services.last_error, HasSubstr("HTTP 401"));

  // The kubelet rotates the token (atomically, by rename).
  std::ofstream(token_file + ".new") << "s3cret\n";
  std::filesystem::rename(token_file + ".new", token_file);
  ASSERT_TRUE(Synced());
  const std::vector<FakeRequest> reqs = server_->Requests();
  source_.reset();
  std::filesystem::remove(token_file);
  EXPECT_EQ(reqs.front().headers.at("authorization"), "Bearer expired");
  EXPECT_EQ(reqs.back().headers.at("authorization"), "Bearer s3cret");
  for (const FakeRequest& r : reqs) {
    EXPECT_THAT(r.headers.at("authorization"), ::testing::AnyOf("Bearer expired", "Bearer s3cret"));
  }
}

TEST(K8sApiSourceCreate, RejectsMissingServer) {
  auto s = K8sApiSource::Create(K8sApiOptions{});
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.status().message(), HasSubstr("no server URL"));
}

}  // namespace
}  // namespace kpx::controller
