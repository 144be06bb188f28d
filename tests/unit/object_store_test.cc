// ObjectStore: multi-source merge (latest source wins), affected-service sets
// and the slice index that incremental translation relies on.
#include "controller/object_store.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kpx::controller {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

Service MakeService(const std::string& name, const std::string& ip, const std::string& file) {
  Service s;
  s.meta.id = {"default", name};
  s.meta.source = {file, 3, 0};
  s.cluster_ip = ip;
  s.ports.push_back({.name = "http", .port = 80});
  return s;
}

EndpointSlice MakeSlice(const std::string& name, const std::string& service,
                        const std::string& file) {
  EndpointSlice s;
  s.meta.id = {"default", name};
  s.meta.source = {file, 10, 1};
  s.service_name = service;
  s.address_type = "IPv4";
  return s;
}

TEST(ObjectStore, ReplaceReportsAffectedServicesForEveryKind) {
  ObjectStore store;
  ObjectSet set;
  set.services.push_back(MakeService("web", "10.96.0.1", "a.yaml"));
  set.slices.push_back(MakeSlice("db-abc", "db", "a.yaml"));
  Endpoints legacy;
  legacy.meta.id = {"default", "legacy"};
  set.endpoints.push_back(legacy);
  EXPECT_THAT(store.Replace("a.yaml", set),
              ElementsAre(NamespacedName{"default", "db"}, NamespacedName{"default", "legacy"},
                          NamespacedName{"default", "web"}));
  EXPECT_EQ(store.state().services.size(), 1u);
  EXPECT_EQ(store.state().slices.size(), 1u);
}

TEST(ObjectStore, SliceMovingBetweenServicesAffectsBoth) {
  ObjectStore store;
  ObjectSet set;
  set.slices.push_back(MakeSlice("s1", "old", "a.yaml"));
  store.Replace("a.yaml", set);
  set.slices[0].service_name = "new";
  EXPECT_THAT(store.Replace("a.yaml", set),
              ElementsAre(NamespacedName{"default", "new"}, NamespacedName{"default", "old"}));
  EXPECT_THAT(store.EndpointsFor({"default", "old"}).slices, IsEmpty());
  ASSERT_EQ(store.EndpointsFor({"default", "new"}).slices.size(), 1u);
}

TEST(ObjectStore, LatestSourceWinsAndRemovalRestoresTheOther) {
  ObjectStore store;
  ObjectSet a, b;
  a.services.push_back(MakeService("web", "10.96.0.1", "a.yaml"));
  b.services.push_back(MakeService("web", "10.96.0.2", "b.yaml"));
  store.Replace("a.yaml", a);
  store.Replace("b.yaml", b);
  EXPECT_EQ(store.state().services.at({"default", "web"})->cluster_ip, "10.96.0.2");
  auto warnings = store.TakeWarnings();
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_THAT(warnings[0], HasSubstr("b.yaml:3: default/web: Service is also defined at a.yaml:3"));
  EXPECT_THAT(warnings[0], HasSubstr("using the one at b.yaml:3"));

  // Deleting b.yaml falls back to a.yaml's definition, not to nothing.
  EXPECT_THAT(store.Remove("b.yaml"), ElementsAre(NamespacedName{"default", "web"}));
  EXPECT_EQ(store.state().services.at({"default", "web"})->cluster_ip, "10.96.0.1");
  // Rewriting a file makes it the latest source again.
  store.Replace("b.yaml", b);
  store.Replace("a.yaml", a);
  EXPECT_EQ(store.state().services.at({"default", "web"})->cluster_ip, "10.96.0.1");
}

TEST(ObjectStore, RemoveForgetsEverythingOfTheSource) {
  ObjectStore store;
  ObjectSet set;
  set.services.push_back(MakeService("web", "10.96.0.1", "a.yaml"));
  set.slices.push_back(MakeSlice("web-1", "web", "a.yaml"));
  store.Replace("a.yaml", set);
  EXPECT_TRUE(store.HasSource("a.yaml"));
  EXPECT_THAT(store.Remove("a.yaml"), ElementsAre(NamespacedName{"default", "web"}));
  EXPECT_FALSE(store.HasSource("a.yaml"));
  EXPECT_TRUE(store.state().services.empty());
  EXPECT_TRUE(store.state().slices.empty());
  EXPECT_THAT(store.EndpointsFor({"default", "web"}).slices, IsEmpty());
  EXPECT_THAT(store.Remove("a.yaml"), IsEmpty());
}

TEST(ObjectStore, LegacyEndpointsOnlyWhenNoSlices) {
  ObjectStore store;
  ObjectSet set;
  Endpoints legacy;
  legacy.meta.id = {"default", "web"};
  set.endpoints.push_back(legacy);
  store.Replace("a.yaml", set);
  ServiceEndpoints eps = store.EndpointsFor({"default", "web"});
  EXPECT_NE(eps.legacy, nullptr);
  set.slices.push_back(MakeSlice("web-1", "web", "a.yaml"));
  store.Replace("a.yaml", set);
  eps = store.EndpointsFor({"default", "web"});
  EXPECT_EQ(eps.legacy, nullptr);
  EXPECT_EQ(eps.slices.size(), 1u);
}

TEST(ObjectStore, UnchangedReplaceStillReportsItsServices) {
  // A rewrite of the same content reports the services; the reconciler's
  // diff (not the store) decides that nothing changed.
  ObjectStore store;
  ObjectSet set;
  set.services.push_back(MakeService("web", "10.96.0.1", "a.yaml"));
  store.Replace("a.yaml", set);
  EXPECT_THAT(store.Replace("a.yaml", set), ElementsAre(NamespacedName{"default", "web"}));
}

}  // namespace
}  // namespace kpx::controller
