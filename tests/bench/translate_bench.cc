// Benchmarks of Translate(): a full rebuild of a 10k-Service cluster (the
// cost of every full resync) and one Service (the cost per object change).
// items/s counts Services translated.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "controller/translate.h"

namespace kpx::controller {
namespace {

constexpr int kEndpointsPerService = 10;

Ipv4 Nth(uint32_t base, uint32_t n) { return Ipv4::FromHost(base + n); }

// Service i: ClusterIP 10.96.x.y:80 named "http", one IPv4 slice of
// kEndpointsPerService ready endpoints spread over 100 nodes and 3 zones.
void AddService(int i, ClusterState* state) {
  const std::string name = absl::StrCat("svc-", i);
  Service svc;
  svc.meta.id = {"bench", name};
  svc.cluster_ip = Nth(0x0A600000, i + 1).ToString();  // 10.96.0.0 + i + 1
  svc.cluster_ips = {svc.cluster_ip};
  svc.has_selector = true;
  ServicePort port;
  port.name = "http";
  port.port = 80;
  svc.ports = {port};

  EndpointSlice slice;
  slice.meta.id = {"bench", absl::StrCat(name, "-abcde")};
  slice.meta.labels["kubernetes.io/service-name"] = name;
  slice.service_name = name;
  slice.address_type = "IPv4";
  EndpointPort ep_port;
  ep_port.name = "http";
  ep_port.port = 8080;
  slice.ports = {ep_port};
  for (int e = 0; e < kEndpointsPerService; ++e) {
    Endpoint ep;
    // 10.0.0.0/8 pod range, endpoints in reverse order so sorting is exercised.
    ep.addresses = {Nth(0x0A000000, i * kEndpointsPerService + (kEndpointsPerService - e)).ToString()};
    ep.conditions.ready = true;
    ep.node_name = absl::StrCat("node-", (i + e) % 100);
    ep.zone = absl::StrCat("zone-", (i + e) % 3);
    slice.endpoints.push_back(std::move(ep));
  }
  state->services.emplace(svc.meta.id, std::move(svc));
  state->slices.emplace(slice.meta.id, std::move(slice));
}

const ClusterState& BigState() {
  static const ClusterState* const state = [] {
    auto* s = new ClusterState();
    for (int i = 0; i < 10000; ++i) AddService(i, s);
    return s;
  }();
  return *state;
}

void BM_Translate10kServices(benchmark::State& st) {
  const ClusterState& state = BigState();
  const NodeInfo node{"node-7", "zone-1"};
  size_t rules = 0;
  for (auto _ : st) {
    TranslateResult r = Translate(state, node);
    rules = r.table.size();
    benchmark::DoNotOptimize(r);
  }
  st.SetItemsProcessed(st.iterations() * static_cast<int64_t>(state.services.size()));
  st.counters["rules"] = static_cast<double>(rules);
  st.counters["backends"] = static_cast<double>(rules * kEndpointsPerService);
}
BENCHMARK(BM_Translate10kServices)->Unit(benchmark::kMillisecond)->MinTime(1.0);

void BM_TranslateOneService(benchmark::State& st) {
  const ClusterState& state = BigState();
  const NodeInfo node{"node-7", "zone-1"};
  const Service& svc = state.services.at(NamespacedName{"bench", "svc-4242"});
  ServiceEndpoints eps;
  eps.slices.push_back(&state.slices.at(NamespacedName{"bench", "svc-4242-abcde"}));
  std::vector<std::string> warnings;
  for (auto _ : st) {
    std::vector<ServiceRule> rules = TranslateService(svc, eps, node, &warnings);
    benchmark::DoNotOptimize(rules);
  }
  st.SetItemsProcessed(st.iterations());
}
BENCHMARK(BM_TranslateOneService)->MinTime(0.5);

}  // namespace
}  // namespace kpx::controller

BENCHMARK_MAIN();
