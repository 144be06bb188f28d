// `kpx-bench lb`: the backend-choice algorithms side by side -- the io_uring
// proxy's random, round-robin and least-conn (the real PickBackend) and the
// eBPF path's Maglev (the real table builder + the BPF program's 5-tuple
// hash, mirrored here), with plain hash-modulo-N as the naive stateless
// peer -- for spread, flows remapped by a backend change, and cost per pick.
#include <arpa/inet.h>

#include <chrono>
#include <cmath>
#include <memory>
#include <numeric>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "controller/service_table.h"
#include "dataplane/uring/backend_picker.h"
#include "dataplane/uring/lb_algorithm.h"
#include "dataplane/xdp/maglev.h"
#include "tools/kpx-bench/subcommand.h"

namespace kpx::bench {
namespace {

struct LbOptions {
  std::vector<int> backends = {4, 10, 100};
  int flows = 200000;
  int picks = 2000000;
};

struct Flow {
  uint32_t saddr;  // network order, as the BPF program sees it
  uint16_t sport;
};

// The BPF program's lb4_hash (bpf/lib/lb.h), same constants and order, for a
// TCP flow to vip:port.
uint32_t Lb4Hash(uint32_t saddr, uint32_t daddr, uint16_t sport, uint16_t dport) {
  uint64_t h = (static_cast<uint64_t>(saddr) << 32) | daddr;
  h ^= ((static_cast<uint64_t>(sport) << 16) | dport | (static_cast<uint64_t>(6) << 32)) *
       0x9e3779b97f4a7c15ULL;
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return static_cast<uint32_t>(h);
}

constexpr uint32_t kVip = 0x0a600001;  // 10.96.0.1, host order
constexpr uint32_t kMaxM = 16381;       // kpxd's default --maglev-table-size
constexpr uint16_t kPort = 80;

std::vector<Flow> MakeFlows(int n) {
  std::vector<Flow> flows;
  flows.reserve(n);
  uring::Rng rng(42);
  for (int i = 0; i < n; ++i) {
    // Clients across a /16 of pod addresses with ephemeral ports.
    uint32_t host = 0x0af40000u | static_cast<uint32_t>(rng.Uniform(65536));
    flows.push_back({htonl(host), htons(static_cast<uint16_t>(1024 + rng.Uniform(64511)))});
  }
  return flows;
}

controller::ServiceRule MakeRule(int n_backends) {
  controller::ServiceRule rule;
  rule.frontend.ip = Ipv4::FromHost(kVip);
  rule.frontend.port = kPort;
  for (int i = 0; i < n_backends; ++i) {
    controller::Backend b;
    b.ip = Ipv4::FromHost(0x0af40100u + static_cast<uint32_t>(i));
    b.port = 8080;
    rule.backends.push_back(b);
  }
  return rule;
}

// Backend index (into rule.backends) per flow, for one algorithm.
using Assign = std::vector<int>;

// Runs the proxy's PickBackend for every flow in order. Least-conn needs
// connections that stay open: each one lives for the next `hold` arrivals
// (a fixed-length sliding window), so active counts differ between backends.
Assign PickWithProxy(uring::LbAlgorithm alg, const controller::ServiceRule& rule,
                     const std::vector<Flow>& flows) {
  auto shared = std::make_shared<uring::FrontendShared>(rule.frontend);
  auto config = uring::BuildFrontendConfig(rule, alg, shared, nullptr);
  std::vector<uring::BackendEntry*> index;
  for (const auto& b : config->backends) index.push_back(b.get());
  uring::Rng rng(7);
  absl::Time now = absl::Now();
  constexpr size_t kHold = 64;
  std::vector<uring::BackendEntry*> open;
  Assign out;
  out.reserve(flows.size());
  for (const Flow& f : flows) {
    uring::BackendEntry* be = uring::PickBackend(*config, Ipv4::FromBe(f.saddr), now, {}, rng);
    be->active.fetch_add(1, std::memory_order_relaxed);
    open.push_back(be);
    if (open.size() > kHold) {
      open[open.size() - kHold - 1]->active.fetch_sub(1, std::memory_order_relaxed);
    }
    out.push_back(static_cast<int>(std::find(index.begin(), index.end(), be) - index.begin()));
  }
  return out;
}

// `current_m`: the table size the service had before this change (0: new
// service), so M follows the dataplane's hysteresis (ChooseMaglevSizeKeeping)
// exactly as XdpDataplane does; a new M would reshuffle the whole table.
Assign PickWithMaglev(const controller::ServiceRule& rule, const std::vector<Flow>& flows,
                      uint32_t current_m, uint32_t* m_out = nullptr) {
  std::vector<xdp::MaglevBackend> bes;
  for (size_t i = 0; i < rule.backends.size(); ++i) {
    bes.push_back({static_cast<uint32_t>(i), xdp::MaglevKey(rule.backends[i].ip, rule.backends[i].port)});
  }
  uint32_t m = xdp::ChooseMaglevSizeKeeping(bes.size(), current_m, kMaxM);
  if (m_out != nullptr) *m_out = m;
  std::vector<uint32_t> table = xdp::BuildMaglevTable(bes, m);
  Assign out;
  out.reserve(flows.size());
  for (const Flow& f : flows) {
    uint32_t h = Lb4Hash(f.saddr, htonl(kVip), f.sport, htons(kPort));
    out.push_back(static_cast<int>(table[h % m]));
  }
  return out;
}

// hash(flow) % N: what a stateless balancer without consistent hashing does.
Assign PickWithHashMod(const controller::ServiceRule& rule, const std::vector<Flow>& flows) {
  Assign out;
  out.reserve(flows.size());
  uint32_t n = static_cast<uint32_t>(rule.backends.size());
  for (const Flow& f : flows) {
    out.push_back(static_cast<int>(Lb4Hash(f.saddr, htonl(kVip), f.sport, htons(kPort)) % n));
  }
  return out;
}

// Re-keys an assignment made without backend `removed` to indices of the
// full rule, so flows can be compared with the full-set assignment.
void Reindex(Assign& a, int removed) {
  for (int& v : a) {
    if (v >= removed) ++v;
  }
}

struct Spread {
  double max_over_min;
  double cv;  // stddev / mean of the per-backend share
};

Spread SpreadOf(const Assign& a, int n) {
  std::vector<double> count(n, 0);
  for (int v : a) count[v] += 1;
  double mean = static_cast<double>(a.size()) / n;
  double var = 0;
  for (double c : count) var += (c - mean) * (c - mean);
  double mn = *std::min_element(count.begin(), count.end());
  double mx = *std::max_element(count.begin(), count.end());
  return {mn > 0 ? mx / mn : INFINITY, std::sqrt(var / n) / mean};
}

double MovedShare(const Assign& before, const Assign& after) {
  size_t moved = 0;
  for (size_t i = 0; i < before.size(); ++i) moved += before[i] != after[i];
  return static_cast<double>(moved) / static_cast<double>(before.size());
}

absl::Status RunLb(const LbOptions& opt, Context& ctx) {
  Report& r = *ctx.report;
  std::vector<int> sizes = ctx.quick ? std::vector<int>{4} : opt.backends;
  int n_flows = ctx.quick ? 2000 : opt.flows;
  int n_picks = ctx.quick ? 20000 : opt.picks;
  std::vector<Flow> flows = MakeFlows(n_flows);
  // `assign(rule, m_before, &m)`: m_before/m only matter to Maglev.
  struct Alg {
    std::string name;
    std::function<Assign(const controller::ServiceRule&, uint32_t, uint32_t*)> assign;
    bool per_flow;  // the backend is a function of the flow (hashing), so "moved" means something
  };
  std::vector<Alg> algs;
  for (auto a : {uring::LbAlgorithm::kRandom, uring::LbAlgorithm::kRoundRobin, uring::LbAlgorithm::kLeastConn}) {
    algs.push_back({uring::LbAlgorithmName(a),
                    [a, &flows](const controller::ServiceRule& rule, uint32_t, uint32_t*) {
                      return PickWithProxy(a, rule, flows);
                    },
                    false});
  }
  algs.push_back({"hash-mod",
                  [&flows](const controller::ServiceRule& rule, uint32_t, uint32_t*) {
                    return PickWithHashMod(rule, flows);
                  },
                  true});
  algs.push_back({"maglev",
                  [&flows](const controller::ServiceRule& rule, uint32_t m_before, uint32_t* m) {
                    return PickWithMaglev(rule, flows, m_before, m);
                  },
                  true});

  Progress progress("lb", static_cast<int>(sizes.size() * algs.size()));
  for (int n : sizes) {
    if (!ctx.TimeLeft()) break;
    controller::ServiceRule full = MakeRule(n);
    controller::ServiceRule minus = full;
    int removed = n / 2;
    minus.backends.erase(minus.backends.begin() + removed);
    controller::ServiceRule plus = full;
    plus.backends.push_back(MakeRule(n + 1).backends.back());
    std::map<std::string, std::string> params = {{"N", absl::StrCat(n)}, {"flows", absl::StrCat(n_flows)}};
    for (const Alg& alg : algs) {
      uint32_t m = 0;
      Assign base = alg.assign(full, 0, &m);
      Spread s = SpreadOf(base, n);

      auto add = [&](std::string name, std::string metric, double v, std::string unit, bool higher) {
        r.Add({.suite = "lb", .name = std::move(name), .subject = alg.name, .metric = std::move(metric),
               .value = v, .unit = std::move(unit), .higher_is_better = higher, .params = params});
      };
      add("spread", "max_over_min", s.max_over_min, "ratio", false);
      add("spread", "share_cv", s.cv, "ratio", false);
      if (alg.per_flow) {
        // Flows on the removed backend must move (1/N); ideally no other does.
        Assign after_remove = alg.assign(minus, m, nullptr);
        Reindex(after_remove, removed);
        Assign after_add = alg.assign(plus, m, nullptr);
        add("remove-one", "moved_share", MovedShare(base, after_remove), "share", false);
        add("add-one", "moved_share", MovedShare(base, after_add), "share", false);
        add("remove-one", "ideal_share", 1.0 / n, "share", false);
      }

      // Cost of one pick, over n_picks picks (flows reused cyclically).
      auto shared = std::make_shared<uring::FrontendShared>(full.frontend);
      uint64_t sink = 0;
      auto t0 = std::chrono::steady_clock::now();
      if (alg.name == "hash-mod") {
        for (int i = 0; i < n_picks; ++i) {
          const Flow& f = flows[static_cast<size_t>(i) % flows.size()];
          sink += Lb4Hash(f.saddr, htonl(kVip), f.sport, htons(kPort)) % static_cast<uint32_t>(n);
        }
      } else if (alg.name == "maglev") {
        std::vector<xdp::MaglevBackend> bes;
        for (size_t i = 0; i < full.backends.size(); ++i) {
          bes.push_back({static_cast<uint32_t>(i), xdp::MaglevKey(full.backends[i].ip, full.backends[i].port)});
        }
        std::vector<uint32_t> table = xdp::BuildMaglevTable(bes, m);
        t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < n_picks; ++i) {
          const Flow& f = flows[static_cast<size_t>(i) % flows.size()];
          sink += table[Lb4Hash(f.saddr, htonl(kVip), f.sport, htons(kPort)) % m];
        }
      } else {
        auto parsed = uring::ParseLbAlgorithm(alg.name);
        auto config = uring::BuildFrontendConfig(full, *parsed, shared, nullptr);
        uring::Rng rng(9);
        absl::Time now = absl::Now();
        t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < n_picks; ++i) {
          const Flow& f = flows[static_cast<size_t>(i) % flows.size()];
          sink += reinterpret_cast<uintptr_t>(uring::PickBackend(*config, Ipv4::FromBe(f.saddr), now, {}, rng));
        }
      }
      double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() / n_picks;
      Measurement cost{.suite = "lb", .name = "pick-cost", .subject = alg.name, .metric = "ns_per_pick",
                       .value = ns, .unit = "ns", .higher_is_better = false, .params = {{"N", absl::StrCat(n)}}};
      cost.extra["checksum"] = sink;  // keeps the loop from being optimised away
      r.Add(std::move(cost));
      progress.Step(absl::StrCat(alg.name, " N=", n));
    }
  }
  std::vector<std::string> subjects = {"random", "round-robin", "least-conn", "hash-mod", "maglev"};
  r.AddTable({.title = "Load balancing: spread (max/min backend share; 1.0 is perfectly even)",
              .suite = "lb", .metric = "max_over_min", .subjects = subjects});
  r.AddTable({.title = "Load balancing: spread (coefficient of variation of backend share)",
              .suite = "lb", .metric = "share_cv", .subjects = subjects});
  r.AddTable({.title = "Load balancing: share of flows mapped to another backend after one backend change",
              .suite = "lb", .metric = "moved_share", .subjects = {"hash-mod", "maglev"}, .baseline = "hash-mod",
              .note = "The minimum is 1/N (the removed backend's flows). Only hashing maps a flow to a "
                      "backend; the proxy's random/round-robin/least-conn choose per connection, and an "
                      "open connection (or an eBPF conntrack entry) never moves. Maglev's M follows "
                      "XdpDataplane's hysteresis (ChooseMaglevSizeKeeping)."});
  r.AddTable({.title = "Load balancing: cost of one pick", .suite = "lb", .metric = "ns_per_pick",
              .subjects = subjects, .baseline = "random"});
  r.AddChart({.file = "lb-moved.png", .title = "Share of flows moved by one backend change", .suite = "lb",
              .metric = "moved_share", .subjects = {"hash-mod", "maglev"}, .y_label = "share of flows"});
  return absl::OkStatus();
}

Subcommand MakeLbSubcommand() {
  auto opt = std::make_shared<LbOptions>();
  return {.name = "lb",
          .help = "load-balancing algorithms: spread, flows moved on backend change, pick cost",
          .order = 40,
          .add_options =
              [opt](CLI::App* cmd) {
                cmd->add_option("--backends", opt->backends, "backend counts to measure")->delimiter(',');
                cmd->add_option("--flows", opt->flows, "distinct client flows per case");
                cmd->add_option("--picks", opt->picks, "picks timed per case");
              },
          .run = [opt](Context& ctx) { return RunLb(*opt, ctx); }};
}

KPX_BENCH_SUBCOMMAND(MakeLbSubcommand);

}  // namespace
}  // namespace kpx::bench
