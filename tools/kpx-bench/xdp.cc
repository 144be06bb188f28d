// `kpx-bench xdp`: the eBPF load balancer's per-packet cost per path (non-
// service pass, conntrack hit, new flow, reply, no-backend RST) for the XDP
// and tc programs, from BPF_PROG_TEST_RUN on batches of distinct packets,
// each next to a do-nothing program (kpx_floor) timed on the same packets;
// plus the frame rate through a veth pair with XDP attached (xdp_live.cc).
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "controller/service_table.h"
#include "dataplane/xdp/bpf_loader.h"
#include "dataplane/xdp/libbpf_maps.h"
#include "dataplane/xdp/map_writer.h"
#include "tests/bpf/packet_builder.h"
#include "tools/kpx-bench/subcommand.h"
#include "tools/kpx-bench/xdp_lab.h"

#ifdef KPX_BENCH_HAVE_BPF
#include "kpx_floor.skel.h"
#endif

namespace kpx::bench {
namespace {

using bpftest::Bytes;
using bpftest::TcpSpec;

struct XdpOptions {
  // Distinct packets per path per repetition, one row set per count: the
  // working set (conntrack entries, map buckets) is what the cost follows.
  std::vector<int> flows = {1000, 100000};
  int reps = 3;
  int services = 1000;
  int backends = 10;  // per service
  int repeat = 1000;  // kernel repeat for the same-packet variants
  bool live = true;
  double live_seconds = 3;
};

#ifdef KPX_BENCH_HAVE_BPF

// Addresses, network order. Services 10.96.x.y:80 (ids in order), backends
// 10.244.x.y:8080 behind a gateway on the bench netns' veth, the no-backend
// Service on its own VIP, clients 10.(100+k).x.y.
uint32_t Be(uint32_t host) { return htonl(host); }
uint32_t ServiceVip(int i) { return Be(0x0a600000u + 1 + static_cast<uint32_t>(i)); }
uint32_t BackendAddr(int i) { return Be(0x0af40000u + 2 + static_cast<uint32_t>(i)); }
const uint32_t kNoBackendVip = Be(0x0a61fffeu);   // 10.97.255.254
const uint32_t kSelfVip = Be(0x0a61fffdu);        // 10.97.255.253: backend = itself
const uint32_t kNonServiceNet = Be(0x0b000000u);  // 11.0.0.0/8: no Service there
constexpr uint16_t kSvcPort = 80;
constexpr uint16_t kBackendPort = 8080;

// Client (saddr, sport) of flow `i` in batch `batch`: distinct across batches.
void Client(int batch, int i, uint32_t* saddr, uint16_t* sport) {
  *saddr = Be((10u << 24) | ((100u + static_cast<uint32_t>(batch)) << 16) | (static_cast<uint32_t>(i) & 0xffff));
  *sport = static_cast<uint16_t>(10000 + (i >> 16));
}

Bytes Packet(uint32_t saddr, uint16_t sport, uint32_t daddr, uint16_t dport, uint8_t flags) {
  TcpSpec s;
  s.saddr = saddr;
  s.daddr = daddr;
  s.sport = sport;
  s.dport = dport;
  s.flags = flags;
  s.seq = 1000 + sport;
  s.ack = (flags & bpftest::kAck) ? 5000 : 0;
  return bpftest::BuildTcp(s);
}

// Removes a bpffs directory of pins (maps go away with the last reference).
void RemovePins(const std::string& dir) {
  if (DIR* d = opendir(dir.c_str())) {
    std::vector<std::string> names;
    while (dirent* e = readdir(d))
      if (e->d_name[0] != '.') names.push_back(e->d_name);
    closedir(d);
    for (const std::string& n : names) unlink((dir + "/" + n).c_str());
  }
  rmdir(dir.c_str());
}

// The load balancer loaded by kpxd's own loader with production map sizes,
// programmed by kpxd's MapWriter, plus the floor programs. Pins live in a
// private bpffs directory removed in the destructor.
class Bench {
 public:
  ~Bench() {
    writer_.reset();
    maps_.reset();
    progs_.reset();
    if (floor_ != nullptr) kpx_floor::destroy(floor_);
    if (!pin_dir_.empty()) RemovePins(pin_dir_);
  }

  absl::Status Load(const XdpOptions& opt) {
    pin_dir_ = absl::StrCat("/sys/fs/bpf/kpx-bench-", getpid());
    RemovePins(pin_dir_);
    // Production sizes, except kpx_ct_syn: every path's batch runs all its
    // handshakes before the next step of any, so up to max(flows) are in
    // flight at once; an LRU evicts well before it is full (100000 SYNs
    // kept ~33k of them in the default 65536 entries), and an evicted
    // handshake would leave its path. 4 x the largest batch keeps them all.
    int most = *std::max_element(opt.flows.begin(), opt.flows.end());
    xdp::MapSizes sizes;
    sizes.conntrack_syn = std::max<uint32_t>(KPX_CT_SYN_MAX, 4u * static_cast<uint32_t>(most));
    auto progs = xdp::BpfPrograms::Load(pin_dir_, sizes);
    if (!progs.ok()) return progs.status();
    progs_ = std::move(*progs);
    auto maps = xdp::LibbpfMaps::Open(pin_dir_);
    if (!maps.ok()) return maps.status();
    maps_ = std::move(*maps);
    auto writer = xdp::MapWriter::Create(maps_.get(), {});
    if (!writer.ok()) return writer.status();
    writer_ = std::move(*writer);
    floor_ = kpx_floor::open_and_load();
    if (floor_ == nullptr) return absl::InternalError(absl::StrCat("loading kpx_floor: ", strerror(errno)));

    // S Services x B backends (backends shared round-robin over a pool as
    // large as one Service's share, so every Service has B distinct ones).
    int pool = std::max(opt.backends, opt.services * opt.backends / 4);
    for (int i = 0; i < opt.services; ++i) {
      controller::ServiceRule rule = Rule(ServiceVip(i), absl::StrCat("svc-", i));
      for (int b = 0; b < opt.backends; ++b) {
        rule.backends.push_back(Backend(BackendAddr((i * opt.backends + b) % pool), kBackendPort));
      }
      if (absl::Status st = writer_->Upsert(rule); !st.ok()) return st;
    }
    // Service with no endpoints: SYNs are answered with a RST.
    if (absl::Status st = writer_->Upsert(Rule(kNoBackendVip, "no-backend")); !st.ok()) return st;
    // Service whose one backend is its own VIP:port, so a conntrack hit
    // rewrites the packet into itself: the only NAT path the kernel's
    // `repeat` can run on one packet without feeding it a different one.
    controller::ServiceRule self = Rule(kSelfVip, "self");
    self.backends.push_back(Backend(kSelfVip, kSvcPort));
    if (absl::Status st = writer_->Upsert(self); !st.ok()) return st;
    // BPF_PROG_TEST_RUN's XDP ingress device is the netns' loopback: list
    // it so the RST leaves with XDP_TX, as on a device kpxd lists.
    return maps_->UpdateTxPort(1);
  }

  // Lets NATed packets leave by redirect to `ifindex` (the bench netns' veth).
  absl::Status AllowRedirect(int ifindex) { return maps_->UpdateTxPort(ifindex); }

  int Prog(bool xdp) const { return xdp ? progs_->xdp_prog_fd() : progs_->tc_prog_fd(); }
  int Floor(bool xdp) const { return bpf_program__fd(xdp ? floor_->progs.kpx_floor_xdp : floor_->progs.kpx_floor_tc); }
  // Empties kpx_ct and kpx_ct_syn (between repetitions: each starts from
  // the same state, far below the LRUs' capacity, so no insert pays for an
  // eviction).
  absl::Status ClearConntrack() const {
    for (const char* name : {"kpx_ct", "kpx_ct_syn"}) {
      auto keys = Keys(name, /*reply_only=*/false);
      if (!keys.ok()) return keys.status();
      int fd = bpf_obj_get((pin_dir_ + "/" + name).c_str());
      for (const kpx_ct_key& k : *keys) bpf_map_delete_elem(fd, &k);
      close(fd);
    }
    return absl::OkStatus();
  }
  // Reverse (backend -> client) keys of conntrack map `name`.
  absl::StatusOr<std::vector<kpx_ct_key>> ReverseFlows(const char* name) const { return Keys(name, true); }
  int Sink() const { return bpf_program__fd(floor_->progs.kpx_floor_sink); }
  absl::StatusOr<std::vector<kpx_ct_key>> Keys(const char* name, bool reply_only) const {
    int fd = bpf_obj_get((pin_dir_ + "/" + name).c_str());
    if (fd < 0) return absl::InternalError(absl::StrCat("opening pinned ", name, ": ", strerror(errno)));
    kpx_ct_key key{}, next{};
    kpx_ct_entry e{};
    std::vector<kpx_ct_key> keys;
    const void* prev = nullptr;
    while (bpf_map_get_next_key(fd, prev, &next) == 0) {
      if (!reply_only || (bpf_map_lookup_elem(fd, &next, &e) == 0 && (e.flags & KPX_CT_F_REPLY))) keys.push_back(next);
      key = next;
      prev = &key;
    }
    close(fd);
    return keys;
  }
  absl::StatusOr<xdp::VerdictCounters> Verdicts() const { return maps_->ReadVerdictStats(); }
  // Frames kpx_floor_sink has counted (all CPUs).
  uint64_t SinkCount() const {
    std::vector<uint64_t> vals(libbpf_num_possible_cpus());
    uint32_t key = 0;
    if (bpf_map_lookup_elem(bpf_map__fd(floor_->maps.kpx_floor_count), &key, vals.data()) != 0) return 0;
    uint64_t sum = 0;
    for (uint64_t v : vals) sum += v;
    return sum;
  }

 private:
  static controller::ServiceRule Rule(uint32_t vip, const std::string& name) {
    controller::ServiceRule r;
    r.service.service = {"bench", name};
    r.service.port = "http";
    r.frontend.ip = Ipv4::FromBe(vip);
    r.frontend.port = kSvcPort;
    return r;
  }
  static controller::Backend Backend(uint32_t addr, uint16_t port) {
    controller::Backend b;
    b.ip = Ipv4::FromBe(addr);
    b.port = port;
    return b;
  }

  std::string pin_dir_;
  std::unique_ptr<xdp::BpfPrograms> progs_;
  std::unique_ptr<xdp::LibbpfMaps> maps_;
  std::unique_ptr<xdp::MapWriter> writer_;
  kpx_floor* floor_ = nullptr;
};

struct RunOut {
  uint32_t retval = 0;
  uint32_t ns = 0;
};

absl::StatusOr<RunOut> TestRun(int fd, const Bytes& in, Bytes* out, int repeat = 1) {
  LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = in.data(), .data_size_in = static_cast<uint32_t>(in.size()),
              .repeat = repeat);
  if (out != nullptr) {
    out->resize(in.size() + 256);
    opts.data_out = out->data();
    opts.data_size_out = static_cast<uint32_t>(out->size());
  }
  if (bpf_prog_test_run_opts(fd, &opts) != 0) {
    return absl::InternalError(absl::StrCat("BPF_PROG_TEST_RUN: ", strerror(errno)));
  }
  if (out != nullptr) out->resize(opts.data_size_out);
  return RunOut{opts.retval, opts.duration};
}

// One path's batch: per-packet durations of the program and of the floor
// program, run alternately on the same packet (so both see the same cache
// and frequency conditions), and the verdict counters the batch moved.
struct Batch {
  std::vector<double> prog_ns, floor_ns;
  xdp::VerdictCounters delta{};
  std::vector<Bytes> out;  // output frames, when asked for
};

absl::StatusOr<Batch> RunBatch(const Bench& b, bool xdp, const std::vector<Bytes>& pkts, bool keep_out) {
  Batch r;
  r.prog_ns.reserve(pkts.size());
  r.floor_ns.reserve(pkts.size());
  auto before = b.Verdicts();
  if (!before.ok()) return before.status();
  Bytes out;
  for (const Bytes& p : pkts) {
    auto f = TestRun(b.Floor(xdp), p, nullptr);
    if (!f.ok()) return f.status();
    auto v = TestRun(b.Prog(xdp), p, keep_out ? &out : nullptr);
    if (!v.ok()) return v.status();
    r.floor_ns.push_back(f->ns);
    r.prog_ns.push_back(v->ns);
    if (keep_out) r.out.push_back(out);
  }
  auto after = b.Verdicts();
  if (!after.ok()) return after.status();
  for (size_t i = 0; i < r.delta.size(); ++i) r.delta[i] = (*after)[i] - (*before)[i];
  return r;
}

double Mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0 : s / static_cast<double>(v.size());
}

const char* const kVerdictNames[] = {"pass_non_service", "ct_hit",   "new_flow",   "reply",
                                     "no_backend",       "dead_backend", "redirect", "pass_stack",
                                     "malformed",        "fragment", "snat_no_port", "handshake"};
static_assert(sizeof(kVerdictNames) / sizeof(kVerdictNames[0]) == KPX_V_MAX);

// Per (hook, path): the batch means of every repetition.
struct PathResult {
  std::vector<double> prog_means, floor_means;
  std::vector<double> prog_all;  // every sample, for percentiles
  xdp::VerdictCounters verdicts{};
};

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Checks that the batch took the path it is named after: every packet got
// `want` (one of the decision verdicts).
absl::Status CheckPath(const std::string& path, const Batch& batch, uint32_t want, size_t n) {
  if (batch.delta[want] != n) {
    std::string got;
    for (size_t i = 0; i < batch.delta.size(); ++i)
      if (batch.delta[i]) absl::StrAppend(&got, " ", kVerdictNames[i], "=", batch.delta[i]);
    return absl::InternalError(absl::StrCat("path ", path, ": expected ", n, " x ", kVerdictNames[want],
                                            ", counters moved by", got.empty() ? " nothing" : got));
  }
  return absl::OkStatus();
}

// The paths in the order a connection takes them (handshake, then data),
// with the verdict each must produce; the no-backend SYN last.
const std::vector<std::string> kPaths = {"pass-non-service", "new-flow", "reply-first", "handshake",
                                         "ct-hit",           "reply",    "rst-no-backend"};
const uint32_t kPathVerdicts[] = {KPX_V_PASS_NON_SERVICE, KPX_V_NEW_FLOW, KPX_V_REPLY,     KPX_V_HANDSHAKE,
                                  KPX_V_CT_HIT,           KPX_V_REPLY,    KPX_V_NO_BACKEND};
enum PathIndex { kPass = 0, kNewFlow, kReplyFirst, kHandshake, kCtHit, kReply, kRstNoBackend };

// Backend -> client packet (flags) answering `fwd`, the DNATed output frame
// of a client packet.
Bytes Answer(const Bytes& fwd, uint8_t flags) {
  bpftest::TcpView v = bpftest::ParseTcp(fwd);
  return Packet(v.daddr, v.dport, v.saddr, v.sport, flags);
}

absl::Status RunPerPacket(const XdpOptions& opt, Context& ctx, Bench& bench) {
  Report& r = *ctx.report;
  const std::vector<int> flow_counts = ctx.quick ? std::vector<int>{64} : opt.flows;
  const int reps = ctx.quick ? 1 : opt.reps;
  const int services = ctx.quick ? 4 : opt.services;
  const std::vector<std::string>& paths = kPaths;
  const uint32_t* want = kPathVerdicts;
  std::mt19937 rng(1);
  Progress progress("xdp", static_cast<int>(2 * reps * flow_counts.size()));
  for (size_t fi = 0; fi < flow_counts.size(); ++fi) {
    const int flows = flow_counts[fi];
    for (bool xdp : {true, false}) {
      const std::string hook = xdp ? "xdp" : "tc";
      std::vector<PathResult> res(paths.size());
      for (int rep = 0; rep < reps && ctx.TimeLeft(); ++rep) {
        const int batch_id = static_cast<int>(fi) * 30 + (xdp ? 0 : 10) + rep;
        std::vector<std::vector<Bytes>> pkts(paths.size());
        for (int i = 0; i < flows; ++i) {
          uint32_t saddr;
          uint16_t sport;
          Client(batch_id, i, &saddr, &sport);
          uint32_t vip = ServiceVip(i % services);
          pkts[kPass].push_back(
              Packet(saddr, sport, kNonServiceNet | Be(static_cast<uint32_t>(i)), kSvcPort, bpftest::kAck));
          pkts[kNewFlow].push_back(Packet(saddr, sport, vip, kSvcPort, bpftest::kSyn));
          pkts[kHandshake].push_back(Packet(saddr, sport, vip, kSvcPort, bpftest::kAck));
          pkts[kRstNoBackend].push_back(Packet(saddr, sport, kNoBackendVip, kSvcPort, bpftest::kSyn));
        }
        // Every later step in another order than the SYNs were inserted.
        std::shuffle(pkts[kHandshake].begin(), pkts[kHandshake].end(), rng);
        pkts[kCtHit] = pkts[kHandshake];
        std::shuffle(pkts[kCtHit].begin(), pkts[kCtHit].end(), rng);
        std::vector<Batch> batches(paths.size());
        for (size_t p = 0; p < paths.size(); ++p) {
          if (p == kReplyFirst || p == kReply) {
            // Backend -> client for each new flow (SYN-ACK, then a data
            // ACK), the backend read from the new-flow batch's output.
            for (const Bytes& o : batches[kNewFlow].out) {
              if (!bpftest::ParseTcp(o).ok) return absl::InternalError("new-flow output is not a TCP frame");
              pkts[p].push_back(Answer(o, p == kReplyFirst ? bpftest::kAck | bpftest::kSyn : bpftest::kAck));
            }
            std::shuffle(pkts[p].begin(), pkts[p].end(), rng);
          }
          auto batch = RunBatch(bench, xdp, pkts[p], /*keep_out=*/p == kNewFlow);
          if (!batch.ok()) return batch.status();
          if (absl::Status st = CheckPath(paths[p], *batch, want[p], pkts[p].size()); !st.ok()) return st;
          res[p].prog_means.push_back(Mean(batch->prog_ns));
          res[p].floor_means.push_back(Mean(batch->floor_ns));
          res[p].prog_all.insert(res[p].prog_all.end(), batch->prog_ns.begin(), batch->prog_ns.end());
          for (size_t v = 0; v < batch->delta.size(); ++v) res[p].verdicts[v] += batch->delta[v];
          batches[p] = std::move(*batch);
        }
        if (absl::Status st = bench.ClearConntrack(); !st.ok()) return st;
        progress.Step(absl::StrCat(hook, " rep ", rep + 1, "/", reps));
      }
      for (size_t p = 0; p < paths.size(); ++p) {
        const PathResult& pr = res[p];
        if (pr.prog_means.empty()) continue;
        std::map<std::string, std::string> params = {{"hook", hook}, {"flows", absl::StrCat(flows)}};
        double prog = Median(pr.prog_means), floor = Median(pr.floor_means);
        nlohmann::json extra;
        extra["method"] = "BPF_PROG_TEST_RUN repeat=1 per distinct packet; median over repetitions of the batch mean";
        extra["packets_per_rep"] = flows;
        extra["reps"] = pr.prog_means.size();
        extra["rep_means"] = pr.prog_means;
        extra["p50_ns"] = Percentile(pr.prog_all, 50);
        extra["p99_ns"] = Percentile(pr.prog_all, 99);
        extra["services"] = services;
        extra["backends_per_service"] = opt.backends;
        for (size_t v = 0; v < pr.verdicts.size(); ++v)
          if (pr.verdicts[v]) extra["verdicts"][kVerdictNames[v]] = pr.verdicts[v];
        nlohmann::json floor_extra = {{"rep_means", pr.floor_means}};
        const std::string floor_name = xdp ? "xdp-pass" : "tc-ok";
        r.Add({.suite = "xdp",
               .name = paths[p],
               .subject = floor_name,
               .metric = "ns_per_pkt",
               .value = floor,
               .unit = "ns",
               .params = params,
               .extra = floor_extra});
        r.Add({.suite = "xdp",
               .name = paths[p],
               .subject = "kpx",
               .metric = "ns_per_pkt",
               .value = prog,
               .unit = "ns",
               .params = params,
               .extra = extra});
        r.Add({.suite = "xdp",
               .name = paths[p],
               .subject = "kpx",
               .metric = "net_ns_per_pkt",
               .value = prog - floor,
               .unit = "ns",
               .params = params});
        // The chart: one bar per hook for each path, at the largest working set.
        if (fi + 1 == flow_counts.size()) {
          r.Add({.suite = "xdp",
                 .name = paths[p],
                 .subject = hook,
                 .metric = "chart_ns",
                 .value = prog,
                 .unit = "ns",
                 .params = {{"flows", absl::StrCat(flows)}}});
        }
      }
    }
  }

  // The kernel's own loop (`repeat`) on one packet, only where the program
  // leaves the packet as it found it: no per-run timer read, hot caches.
  for (bool xdp : {true, false}) {
    const std::string hook = xdp ? "xdp" : "tc";
    int n = ctx.quick ? 10 : opt.repeat;
    Bytes pass = Packet(Be(0x0a630001), 40000, kNonServiceNet | Be(7), kSvcPort, bpftest::kAck);
    Bytes syn = Packet(Be(0x0a630002), static_cast<uint16_t>(xdp ? 40001 : 40002), kSelfVip, kSvcPort, bpftest::kSyn);
    Bytes ack = syn;
    ack = Packet(Be(0x0a630002), static_cast<uint16_t>(xdp ? 40001 : 40002), kSelfVip, kSvcPort, bpftest::kAck);
    // The handshake (the backend is the VIP itself) makes the flow established.
    Bytes synack = Packet(kSelfVip, kSvcPort, Be(0x0a630002), static_cast<uint16_t>(xdp ? 40001 : 40002),
                          bpftest::kSyn | bpftest::kAck);
    for (const Bytes* hs : {&syn, &synack, &ack}) {
      if (auto st = TestRun(bench.Prog(xdp), *hs, nullptr); !st.ok()) return st.status();
    }
    struct Case {
      std::string name;
      const Bytes* pkt;
      uint32_t want;
    };
    for (const Case& c :
         {Case{"pass-non-service-repeat", &pass, KPX_V_PASS_NON_SERVICE}, Case{"ct-hit-repeat", &ack, KPX_V_CT_HIT}}) {
      auto before = bench.Verdicts();
      if (!before.ok()) return before.status();
      std::vector<double> prog, floor;
      for (int rep = 0; rep < std::max(reps, 3); ++rep) {
        auto f = TestRun(bench.Floor(xdp), *c.pkt, nullptr, n);
        if (!f.ok()) return f.status();
        auto v = TestRun(bench.Prog(xdp), *c.pkt, nullptr, n);
        if (!v.ok()) return v.status();
        floor.push_back(f->ns);
        prog.push_back(v->ns);
      }
      auto after = bench.Verdicts();
      if (!after.ok()) return after.status();
      uint64_t runs = static_cast<uint64_t>(n) * prog.size();
      if ((*after)[c.want] - (*before)[c.want] != runs) {
        std::string deltas;
        for (int v = 0; v < KPX_V_MAX; ++v) {
          if ((*after)[v] != (*before)[v]) absl::StrAppend(&deltas, " ", v, ":+", (*after)[v] - (*before)[v]);
        }
        return absl::InternalError(absl::StrCat(c.name, " (", hook, "): the same-packet loop left its path (",
                                                runs, " runs; verdict deltas", deltas, ")"));
      }
      std::map<std::string, std::string> params = {{"hook", hook}};
      nlohmann::json extra = {
          {"method", "BPF_PROG_TEST_RUN repeat=N on one packet (hot caches)"}, {"repeat", n}, {"rep_values", prog}};
      r.Add({.suite = "xdp",
             .name = c.name,
             .subject = xdp ? "xdp-pass" : "tc-ok",
             .metric = "ns_per_pkt",
             .value = Median(floor),
             .unit = "ns",
             .params = params});
      r.Add({.suite = "xdp",
             .name = c.name,
             .subject = "kpx",
             .metric = "ns_per_pkt",
             .value = Median(prog),
             .unit = "ns",
             .params = params,
             .extra = extra});
      r.Add({.suite = "xdp",
             .name = c.name,
             .subject = "kpx",
             .metric = "net_ns_per_pkt",
             .value = Median(prog) - Median(floor),
             .unit = "ns",
             .params = params});
    }
  }
  r.AddTable({.title = "eBPF per-packet cost (ns/packet, BPF_PROG_TEST_RUN)",
              .suite = "xdp",
              .metric = "ns_per_pkt",
              .subjects = {"xdp-pass", "tc-ok", "kpx"},
              .note = "xdp-pass / tc-ok: a program that only returns XDP_PASS / TC_ACT_OK, timed on the same "
                      "packets in the same run (the measurement's floor: the kernel's timer read and context "
                      "setup). Rows without -repeat: one run per distinct packet; -repeat rows: the kernel "
                      "loops N times on one packet (paths that leave the packet unchanged only)."});
  r.AddTable({.title = "eBPF per-packet cost above the floor (ns/packet)",
              .suite = "xdp",
              .metric = "net_ns_per_pkt",
              .subjects = {"kpx"}});
  r.AddChart({.file = "xdp-per-packet.png",
              .title = "eBPF per-packet cost by path",
              .suite = "xdp",
              .metric = "chart_ns",
              .subjects = {"xdp", "tc", "xdp-live"},
              .y_label = "ns per packet (distinct flows)"});
  return absl::OkStatus();
}

// The kernel's own per-program statistics (BPF_ENABLE_STATS): run count and
// summed run time, timed around each run wherever the program runs.
struct ProgStats {
  uint64_t cnt = 0, ns = 0;
};
ProgStats StatsOf(int prog_fd) {
  bpf_prog_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(prog_fd, &info, &len) != 0) return {};
  return {info.run_cnt, info.run_time_ns};
}

// What the verifier saw and the JIT made of each program: the instruction
// counts profiles are read against (bpftool prog dump xlated shows them).
void AddProgramSizes(Context& ctx, const Bench& bench) {
  for (bool xdp : {true, false}) {
    bpf_prog_info info{};
    uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(bench.Prog(xdp), &info, &len) != 0) continue;
    std::map<std::string, std::string> params = {{"hook", xdp ? "xdp" : "tc"}};
    ctx.report->Add({.suite = "xdp",
                     .name = "program",
                     .subject = "kpx",
                     .metric = "xlated_insns",
                     .value = info.xlated_prog_len / 8.0,
                     .unit = "insns",
                     .params = params});
    ctx.report->Add({.suite = "xdp",
                     .name = "program",
                     .subject = "kpx",
                     .metric = "jited_bytes",
                     .value = static_cast<double>(info.jited_prog_len),
                     .unit = "bytes",
                     .params = params});
    ctx.report->Add({.suite = "xdp",
                     .name = "program",
                     .subject = "kpx",
                     .metric = "verified_insns",
                     .value = static_cast<double>(info.verified_insns),
                     .unit = "insns",
                     .params = params});
  }
}

// Live frames: the client netns' raw socket sends through c0 -> n0, where
// XDP runs in veth's NAPI poll, up to 64 distinct frames per poll with no
// system call between them. Per path, the floor program (XDP_PASS) and then
// kpx run on n0 over the same frames; the kernel's run-time statistics give
// ns/packet for each. NATed frames are redirected to be0 and counted (then
// dropped) by kpx_floor_sink on be1: the delivered rate.
absl::Status RunLive(const XdpOptions& opt, Context& ctx, XdpLab& lab, Bench& bench) {
  Report& r = *ctx.report;
  const absl::Duration bound = absl::Seconds(ctx.quick ? 1 : opt.live_seconds);
  const int services = ctx.quick ? 4 : opt.services;
  const int flows = ctx.quick ? 512 : opt.flows.back();
  const int reps = ctx.quick ? 1 : opt.reps;
  int stats_fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
  if (stats_fd < 0) return absl::InternalError(absl::StrCat("BPF_ENABLE_STATS: ", strerror(errno)));
  absl::Status st = lab.SetXdp(lab.sink_ifindex(), bench.Sink());
  // RSTs leave through n0 with XDP_TX (c0 drops them: no XDP there).
  if (st.ok()) st = bench.AllowRedirect(lab.ingress_ifindex());
  const std::vector<std::string>& paths = kPaths;
  const uint32_t* want = kPathVerdicts;
  std::vector<std::vector<double>> kpx_ns(paths.size()), floor_ns(paths.size()), mpps(paths.size());
  std::vector<nlohmann::json> verdicts(paths.size(), nlohmann::json::object());
  std::mt19937 rng(2);
  Progress progress("xdp live", reps);
  for (int rep = 0; rep < reps && st.ok() && ctx.TimeLeft(); ++rep) {
    std::vector<std::vector<Bytes>> pkts(paths.size());
    for (int i = 0; i < flows; ++i) {
      uint32_t saddr;
      uint16_t sport;
      Client(100 + rep, i, &saddr, &sport);
      uint32_t vip = ServiceVip(i % services);
      pkts[kPass].push_back(Packet(saddr, sport, kNonServiceNet | Be(static_cast<uint32_t>(i)), kSvcPort, bpftest::kAck));
      pkts[kNewFlow].push_back(Packet(saddr, sport, vip, kSvcPort, bpftest::kSyn));
      pkts[kHandshake].push_back(Packet(saddr, sport, vip, kSvcPort, bpftest::kAck));
      pkts[kRstNoBackend].push_back(Packet(saddr, sport, kNoBackendVip, kSvcPort, bpftest::kSyn));
    }
    std::shuffle(pkts[kHandshake].begin(), pkts[kHandshake].end(), rng);
    pkts[kCtHit] = pkts[kHandshake];
    std::shuffle(pkts[kCtHit].begin(), pkts[kCtHit].end(), rng);
    for (size_t p = 0; p < paths.size() && st.ok(); ++p) {
      if (p == kReplyFirst) {
        // SYN-ACKs: one per half-open reverse entry the new-flow pass made.
        auto reverse = bench.ReverseFlows("kpx_ct_syn");
        if (!reverse.ok()) {
          st = reverse.status();
          break;
        }
        for (const kpx_ct_key& k : *reverse) {
          pkts[p].push_back(Packet(k.saddr, ntohs(k.sport), k.daddr, ntohs(k.dport), bpftest::kAck | bpftest::kSyn));
          pkts[kReply].push_back(Packet(k.saddr, ntohs(k.sport), k.daddr, ntohs(k.dport), bpftest::kAck));
        }
        std::shuffle(pkts[p].begin(), pkts[p].end(), rng);
        std::shuffle(pkts[kReply].begin(), pkts[kReply].end(), rng);
      }
      // Each frame once (new flows and first replies must not repeat):
      // bounded by count; the time bound only cuts a slow sender short.
      const uint64_t count = pkts[p].size();
      for (bool floor : {true, false}) {
        if (floor && (p == kNewFlow || p == kReplyFirst || p == kHandshake)) continue;  // the floor would not leave them new
        const int fd = floor ? bench.Floor(true) : bench.Prog(true);
        if (st = lab.SetXdp(lab.ingress_ifindex(), fd); !st.ok()) break;
        auto before_v = bench.Verdicts();
        ProgStats before = StatsOf(fd);
        uint64_t sink_before = bench.SinkCount();
        auto sent = lab.Send(pkts[p], count, bound);
        if (!sent.ok()) {
          st = sent.status();
          break;
        }
        ProgStats after = StatsOf(fd);
        uint64_t runs = after.cnt - before.cnt;
        // Frames still in veth's ring when the sender returned.
        for (absl::Time end = absl::Now() + absl::Seconds(2); runs < sent->frames && absl::Now() < end;) {
          absl::SleepFor(absl::Milliseconds(10));
          after = StatsOf(fd);
          runs = after.cnt - before.cnt;
        }
        if (runs == 0) {
          st = absl::InternalError(absl::StrCat("live ", paths[p], ": the program never ran on n0"));
          break;
        }
        double ns = static_cast<double>(after.ns - before.ns) / static_cast<double>(runs);
        (floor ? floor_ns : kpx_ns)[p].push_back(ns);
        if (!floor) {
          auto after_v = bench.Verdicts();
          if (before_v.ok() && after_v.ok()) {
            uint64_t got = (*after_v)[want[p]] - (*before_v)[want[p]];
            // Live frames share the maps with the kernel's own timing: a CI
            // run once saw 514 of 516 first replies take the path (its
            // half-open entries are in an LRU). Up to 1% elsewhere is kept
            // and said (the verdict counts are in the results); more means
            // the path measured is not the one named.
            if (got < runs && (runs - got) * 100 > runs) {
              st = absl::InternalError(
                  absl::StrCat("live ", paths[p], ": ", runs, " runs but only ", got, " x ", kVerdictNames[want[p]]));
              break;
            }
            if (got < runs) {
              ctx.report->AddNote(absl::StrCat("xdp live ", paths[p], ": ", runs - got, " of ", runs,
                                               " frames took another verdict than ", kVerdictNames[want[p]],
                                               " (extra.verdicts has the counts)"));
            }
            for (size_t v = 0; v < before_v->size(); ++v) {
              uint64_t d = (*after_v)[v] - (*before_v)[v];
              if (d) verdicts[p][kVerdictNames[v]] = verdicts[p].value(kVerdictNames[v], uint64_t{0}) + d;
            }
          }
          uint64_t delivered = bench.SinkCount() - sink_before;
          double secs = absl::ToDoubleSeconds(sent->elapsed);
          if (delivered > 0 && secs > 0) mpps[p].push_back(static_cast<double>(delivered) / secs / 1e6);
        }
      }
    }
    if (st.ok()) st = bench.ClearConntrack();
    progress.Step(absl::StrCat("rep ", rep + 1, "/", reps));
  }
  (void)lab.SetXdp(lab.ingress_ifindex(), -1);
  (void)lab.SetXdp(lab.sink_ifindex(), -1);
  close(stats_fd);
  if (!st.ok()) return st;
  for (size_t p = 0; p < paths.size(); ++p) {
    if (kpx_ns[p].empty()) continue;
    std::map<std::string, std::string> params = {{"hook", "xdp-live"}};
    double k = Median(kpx_ns[p]);
    // New flows and first replies cannot be replayed through the floor
    // program first; they are read against the pass path's floor.
    double f = Median(floor_ns[p].empty() ? floor_ns[0] : floor_ns[p]);
    nlohmann::json extra = {{"method", "veth live frames, XDP native, kernel run-time stats (BPF_ENABLE_STATS)"},
                            {"packets_per_rep", flows},
                            {"rep_values", kpx_ns[p]},
                            {"verdicts", verdicts[p]}};
    r.Add({.suite = "xdp",
           .name = paths[p],
           .subject = "xdp-pass",
           .metric = "ns_per_pkt",
           .value = f,
           .unit = "ns",
           .params = params,
           .extra = {{"rep_values", floor_ns[p]}}});
    r.Add({.suite = "xdp",
           .name = paths[p],
           .subject = "kpx",
           .metric = "ns_per_pkt",
           .value = k,
           .unit = "ns",
           .params = params,
           .extra = extra});
    r.Add({.suite = "xdp",
           .name = paths[p],
           .subject = "kpx",
           .metric = "net_ns_per_pkt",
           .value = k - f,
           .unit = "ns",
           .params = params});
    r.Add({.suite = "xdp",
           .name = paths[p],
           .subject = "xdp-live",
           .metric = "chart_ns",
           .value = k,
           .unit = "ns",
           .params = {{"flows", absl::StrCat(flows)}}});
    if (!mpps[p].empty()) {
      r.Add({.suite = "xdp",
             .name = paths[p],
             .subject = "kpx",
             .metric = "live_mpps",
             .value = Median(mpps[p]),
             .unit = "Mpps",
             .higher_is_better = true,
             .params = params});
    }
  }
  r.AddTable({.title = "eBPF live frames: NATed frames delivered through a second veth (Mpps, one sender core)",
              .suite = "xdp",
              .metric = "live_mpps",
              .subjects = {"kpx"},
              .note = "The AF_PACKET sender and veth are most of this: a rate of the lab, not of the program."});
  return absl::OkStatus();
}

absl::Status RunXdp(const XdpOptions& opt, Context& ctx) {
  if (geteuid() != 0) return absl::FailedPreconditionError("xdp: needs root (BPF programs, network namespaces)");
  // Everything runs in a network namespace of our own: the FIB lookups the
  // programs make after NAT see a route to the backends (via a veth with a
  // static neighbour), as on a node, and the live-frame test's devices
  // never touch the host's.
  auto lab = XdpLab::Create();
  if (!lab.ok()) return lab.status();
  Bench bench;
  absl::Status st = (*lab)->RunInside([&]() -> absl::Status {
    if (absl::Status s = bench.Load(opt); !s.ok()) return s;
    if (absl::Status s = bench.AllowRedirect((*lab)->backend_ifindex()); !s.ok()) return s;
    AddProgramSizes(ctx, bench);
    return RunPerPacket(opt, ctx, bench);
  });
  if (!st.ok()) return st;
  if (opt.live && ctx.TimeLeft()) return RunLive(opt, ctx, **lab, bench);
  return absl::OkStatus();
}

#else  // !KPX_BENCH_HAVE_BPF

absl::Status RunXdp(const XdpOptions&, Context&) {
  return absl::FailedPreconditionError("xdp: kpx was built without BPF (KPX_BUILD_BPF=OFF)");
}

#endif

Subcommand MakeXdpSubcommand() {
  auto opt = std::make_shared<XdpOptions>();
  return {.name = "xdp",
          .help = "eBPF per-packet cost per path (BPF_PROG_TEST_RUN) next to XDP_PASS, and live frames over veth",
          .order = 10,
          .add_options =
              [opt](CLI::App* cmd) {
                cmd->add_option("--flows", opt->flows, "distinct packets per path per repetition (list, up to 3)")
                    ->delimiter(',')
                    ->expected(1, 3)
                    ->check(CLI::Range(1, 200000));
                cmd->add_option("--reps", opt->reps, "repetitions (the median is reported)")->check(CLI::Range(1, 10));
                cmd->add_option("--services", opt->services, "Services loaded")->check(CLI::PositiveNumber);
                cmd->add_option("--backends", opt->backends, "backends per Service")->check(CLI::PositiveNumber);
                cmd->add_option("--repeat", opt->repeat, "kernel repeat count for the same-packet rows")
                    ->check(CLI::PositiveNumber);
                cmd->add_flag("!--no-live", opt->live, "skip the live-frame (veth) measurement");
                cmd->add_option("--live-seconds", opt->live_seconds, "seconds per live-frame case");
              },
          .run = [opt](Context& ctx) { return RunXdp(*opt, ctx); }};
}

KPX_BENCH_SUBCOMMAND(MakeXdpSubcommand);

}  // namespace
}  // namespace kpx::bench
