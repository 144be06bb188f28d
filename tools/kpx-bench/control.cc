// `kpx-bench control`: the control plane at S Services x E endpoints -- time
// to program the whole table from a cold start, time from one endpoint change
// (manifest file write, admin API call) to the dataplane programmed, memory --
// for kpxd (eBPF and io_uring dataplanes, each in a netns of its own) next to
// kube-proxy's iptables-legacy / iptables-nft / nftables rules at the same S
// (../shared/peers/gen_rules.py), loaded the way kube-proxy loads them.
#include <poll.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "httplib.h"
#include "kpx/abi.h"
#include "tools/kpx-bench/proc_util.h"
#include "tools/kpx-bench/subcommand.h"

namespace kpx::bench {
namespace {

namespace fs = std::filesystem;

struct ControlOptions {
  std::vector<int> services = {1000, 10000, 50000};
  int endpoints = 10;
  int changes = 100;
  std::vector<std::string> dataplanes = {"xdp", "uring"};
  std::vector<std::string> peers = {"iptables-legacy", "iptables-nft", "nftables"};
  double peer_timeout_s = 300;  // one full restore; past it the peer is skipped at larger S
  int peer_changes = 100;
  double peer_change_budget_s = 60;  // per (peer, S): fewer changes when each is slow
};

const std::vector<std::string> kSubjects = {"kpx-xdp", "kpx-uring", "iptables-legacy", "iptables-nft",
                                            "nftables"};
const std::vector<std::string> kChangeSubjects = {"kpx-xdp",         "kpx-xdp-api",  "kpx-uring",
                                                  "kpx-uring-api",   "iptables-legacy", "iptables-nft",
                                                  "nftables"};
constexpr char kBaseline[] = "iptables-legacy";

std::string ReadFile(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string Tail(const std::string& s, size_t n = 1500) { return s.size() > n ? s.substr(s.size() - n) : s; }

// Reads kpxd's --status-file and waits on it with inotify (kpxd writes it
// with rename after every loop turn), so "programmed" is seen within
// microseconds of kpxd saying so, without polling at a fixed period.
class StatusWatch {
 public:
  explicit StatusWatch(fs::path file) : file_(std::move(file)) {
    fd_ = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd_ >= 0) inotify_add_watch(fd_, file_.parent_path().c_str(), IN_MOVED_TO | IN_CLOSE_WRITE);
  }
  ~StatusWatch() {
    if (fd_ >= 0) close(fd_);
  }
  nlohmann::json Read() const {
    nlohmann::json j = nlohmann::json::parse(ReadFile(file_), nullptr, /*allow_exceptions=*/false);
    return j.is_object() ? j : nlohmann::json::object();
  }
  // Waits until pred(status) holds; the time it was seen, or nullopt at the
  // deadline or when `alive` says the writer is gone.
  template <typename Pred>
  std::optional<absl::Time> WaitFor(Pred pred, absl::Time deadline, pid_t writer) {
    while (true) {
      Drain();
      nlohmann::json s = Read();
      if (pred(s)) return absl::Now();
      if (absl::Now() >= deadline || !Alive(writer)) return std::nullopt;
      pollfd p{fd_, POLLIN, 0};
      poll(&p, 1, 100);  // 100 ms cap: a dead writer is noticed
    }
  }

 private:
  void Drain() {
    char buf[4096];
    while (fd_ >= 0 && read(fd_, buf, sizeof buf) > 0) {
    }
  }
  fs::path file_;
  int fd_ = -1;
};

int64_t Field(const nlohmann::json& s, const char* key) {
  auto it = s.find(key);
  return it != s.end() && it->is_number() ? it->get<int64_t>() : -1;
}

struct Scenario {
  fs::path dir;            // gen_rules.py output
  std::string changed_ns;  // the Service the changes rewrite
  std::string changed_name;
  fs::path changed_file;   // its manifest under k8s/
};

absl::StatusOr<Scenario> Generate(const Context& ctx, const fs::path& work, int services, int endpoints) {
  Scenario sc;
  sc.dir = work / absl::StrCat("gen-", services);
  fs::remove_all(sc.dir);
  fs::path gen = ctx.peers_dir / "gen_rules.py";
  if (!fs::exists(gen)) return absl::NotFoundError(absl::StrCat(gen.string(), " not found (--peers-dir)"));
  CmdResult r = RunCmd({"python3", gen.string(), "--outdir", sc.dir.string(), "--pods", "10.244.1.2,10.244.2.2",
                        "--services", absl::StrCat(services), "--fake-eps", absl::StrCat(endpoints),
                        "--manifests"},
                       {.timeout = absl::Minutes(20)});
  if (r.rc != 0) return absl::InternalError(absl::StrCat("gen_rules.py failed: ", Tail(r.output)));
  nlohmann::json scenario =
      nlohmann::json::parse(ReadFile(sc.dir / "scenario.json"), nullptr, /*allow_exceptions=*/false);
  if (!scenario.is_object() || !scenario.contains("changed")) {
    return absl::InternalError(absl::StrCat(sc.dir.string(), "/scenario.json has no \"changed\" service"));
  }
  // "bench/svc-00499:http" -> bench, svc-00499, k8s/bench_svc-00499.yaml
  std::string spn = scenario["changed"]["spn"];
  std::vector<std::string> parts = absl::StrSplit(spn, absl::ByAnyChar("/:"));
  if (parts.size() < 2) return absl::InternalError(absl::StrCat("unexpected changed service ", spn));
  sc.changed_ns = parts[0];
  sc.changed_name = parts[1];
  sc.changed_file = sc.dir / "k8s" / absl::StrCat(parts[0], "_", parts[1], ".yaml");
  if (!fs::exists(sc.changed_file)) return absl::NotFoundError(sc.changed_file.string() + " not generated");
  return sc;
}

// Change k: the last endpoint of the Service moves to a fresh address.
std::string ChangedIp(int k) { return absl::StrFormat("10.202.%d.%d", (k / 250) % 250, k % 250 + 1); }

absl::StatusOr<std::string> RewriteLastEndpoint(const std::string& yaml, int k) {
  size_t at = yaml.rfind("- addresses: [\"");
  if (at == std::string::npos) return absl::InternalError("no endpoint address in the changed manifest");
  size_t start = at + std::string("- addresses: [\"").size();
  size_t end = yaml.find('"', start);
  return absl::StrCat(yaml.substr(0, start), ChangedIp(k), yaml.substr(end));
}

void AddChangeStats(Context& ctx, const std::string& subject, int services, int endpoints,
                    const std::vector<double>& ms, nlohmann::json extra) {
  std::map<std::string, std::string> params = {{"S", absl::StrCat(services)}, {"E", absl::StrCat(endpoints)}};
  double sum = 0;
  for (double v : ms) sum += v;
  extra["changes"] = ms.size();
  extra["mean_ms"] = ms.empty() ? 0 : sum / ms.size();
  extra["max_ms"] = Percentile(ms, 100);
  ctx.report->Add({.suite = "control", .name = "endpoint-change", .subject = subject,
                   .metric = "change_median_ms", .value = Percentile(ms, 50), .unit = "ms",
                   .params = params, .extra = extra});
  ctx.report->Add({.suite = "control", .name = "endpoint-change", .subject = subject,
                   .metric = "change_p99_ms", .value = Percentile(ms, 99), .unit = "ms",
                   .params = params, .extra = extra});
}

// kpxd in a netns of its own with a veth pair (up0: uplink with an address,
// XDP; pod0: pod side, tc), loading S manifest files.
absl::Status MeasureKpx(Context& ctx, const ControlOptions& o, const fs::path& work, const Scenario& sc,
                        int services, const std::string& dp, bool* timed_out) {
  std::string subject = "kpx-" + dp;
  if (dp == "uring") {
    // kpxd's io_uring proxy opens a listener per Service port and worker
    // until half of RLIMIT_NOFILE, then one shared listener per port. Past
    // the file limit it can only keep failing with EMFILE: say so instead of
    // waiting out --peer-timeout.
    rlimit files{};
    getrlimit(RLIMIT_NOFILE, &files);
    const uint64_t workers = std::max(1u, std::thread::hardware_concurrency());
    const uint64_t budget = files.rlim_cur / 2;
    const uint64_t per_worker = std::min<uint64_t>(services, budget / workers);
    const uint64_t need = per_worker * workers + (services - per_worker) + 1024;
    if (files.rlim_cur != RLIM_INFINITY && need > files.rlim_cur) {
      *timed_out = true;
      ctx.report->AddNote(absl::StrFormat(
          "control: kpx-uring not run at S=%d: it needs ~%d descriptors (listeners) and "
          "RLIMIT_NOFILE is %d here; not measured at this or larger S",
          services, need, files.rlim_cur));
      return absl::OkStatus();
    }
  }
  std::string ns_name = absl::StrCat("kpxbc", getpid(), "-k");
  auto ns = ScopedNetns::Create(ns_name);
  if (!ns.ok()) return ns.status();
  CmdResult r = Sh(absl::StrCat("ip -n ", ns_name, " link add up0 type veth peer name pod0 && ip -n ", ns_name,
                                " addr add 10.244.0.1/24 dev up0 && ip -n ", ns_name, " link set up0 up && ip -n ",
                                ns_name, " link set pod0 up"));
  if (r.rc != 0) return absl::InternalError(absl::StrCat("veth in ", ns_name, ": ", r.output));

  fs::path dir = work / absl::StrCat(subject, "-", services);
  fs::remove_all(dir);
  fs::create_directories(dir / "manifests");
  for (const auto& e : fs::directory_iterator(sc.dir / "k8s")) {
    fs::copy_file(e.path(), dir / "manifests" / e.path().filename());
  }
  fs::path status_file = dir / "status.json";
  fs::path sock = dir / "kpxd.sock";
  std::string pin_dir = absl::StrCat("/sys/fs/bpf/kpxbc-", getpid());
  std::string kpxd = (ctx.build_dir / "tools" / "kpxd").string();
  std::vector<std::string> args = {kpxd,
                                   "--netns=" + ns_name,
                                   "--manifest-dir=" + (dir / "manifests").string(),
                                   "--hostname-override=node",
                                   "--cluster-cidr=10.244.0.0/16",
                                   "--dataplane=" + dp,
                                   "--status-file=" + status_file.string(),
                                   "--admin-socket=" + sock.string(),
                                   "--state-dir=" + (dir / "state").string(),
                                   // 500k fake endpoints must not be probed: the
                                   // control plane is measured, not the checker.
                                   "--health_checks=false",
                                   "--drain-timeout=1s"};
  if (dp == "uring") {
    // The generator's Service CIDR held by one local route instead of S
    // addresses on kpx0, as an operator at this scale would run it.
    args.push_back("--vip-local-routes=10.96.0.0/12");
  }
  if (dp == "xdp") {
    args.push_back("--interfaces=up0");
    args.push_back("--tc-interfaces=pod0");
    args.push_back("--bpf-pin-dir=" + pin_dir);
    // S x E distinct endpoints: past the ABI's default backend capacity
    // (KPX_MAX_BACKENDS) the maps are sized for them, as an operator with
    // that many pods would (--bpf-max-backends).
    const uint64_t backends = static_cast<uint64_t>(services) * o.endpoints + services;
    if (backends > KPX_MAX_BACKENDS) args.push_back(absl::StrCat("--bpf-max-backends=", backends));
  }
  auto cleanup = [&](pid_t pid) {
    StopPid(pid, absl::Seconds(10));
    if (dp == "xdp") {
      RunCmd({kpxd, "--netns=" + ns_name, "--cleanup", "--bpf-pin-dir=" + pin_dir}, {.timeout = absl::Seconds(30)});
      fs::remove_all(pin_dir);
    }
  };
  StatusWatch watch(status_file);
  std::string log = (dir / "kpxd.log").string();
  absl::Time t0 = absl::Now();
  pid_t pid = Spawn(args, log);
  if (pid < 0) return absl::InternalError("fork kpxd failed");
  auto programmed = watch.WaitFor(
      [&](const nlohmann::json& s) {
        return s.value("in_sync", false) && Field(s, "files") == services && Field(s, "frontends") >= services;
      },
      t0 + absl::Seconds(o.peer_timeout_s), pid);
  if (!programmed && Alive(pid)) {
    // A result, like a peer's timeout: recorded, and larger S are skipped.
    *timed_out = true;
    nlohmann::json st = watch.Read();
    std::string state = st.empty() ? "no status yet: the initial sync was still running"
                                   : absl::StrFormat("%d of %d files loaded, in_sync=%s, sync_errors=%d",
                                                     Field(st, "files"), services,
                                                     st.value("in_sync", false) ? "true" : "false",
                                                     Field(st, "sync_errors"));
    ctx.report->AddNote(absl::StrFormat("control: kpx-%s did not program S=%d within %.0f s (--peer-timeout; %s); "
                                        "not measured at this or larger S",
                                        dp, services, o.peer_timeout_s, state));
    cleanup(pid);
    return absl::OkStatus();
  }
  if (!programmed) {
    cleanup(pid);
    return absl::InternalError(absl::StrCat("kpxd (", dp, ", S=", services, ") exited; log tail:\n",
                                            Tail(ReadFile(log))));
  }
  nlohmann::json st = watch.Read();
  std::map<std::string, std::string> params = {{"S", absl::StrCat(services)}, {"E", absl::StrCat(o.endpoints)}};
  ctx.report->Add({.suite = "control", .name = "full-program", .subject = subject, .metric = "full_s",
                   .value = absl::ToDoubleSeconds(*programmed - t0), .unit = "s", .params = params,
                   .extra = {{"frontends", Field(st, "frontends")}, {"what", "exec kpxd -> status file in sync"}}});
  // kpxd's own split of its first sync (scan+read+parse, store+translate+
  // diff, the dataplane's Apply, prune, health targets), in microseconds.
  nlohmann::json stages = st.value("initial_sync", nlohmann::json::object());
  ctx.report->Add({.suite = "control", .name = "full-program", .subject = subject, .metric = "program_s",
                   .value = Field(st, "last_programming_latency_us") / 1e6, .unit = "s", .params = params,
                   .extra = {{"what", "kpxd: first file read -> every frontend programmed"},
                             {"initial_sync_us", stages}}});
  for (const auto& [stage, metric] : {std::pair{"scan_parse_us", "sync_parse_s"},
                                      std::pair{"reconcile_us", "sync_reconcile_s"},
                                      std::pair{"apply_us", "sync_apply_s"}}) {
    if (!stages.contains(stage) || !stages[stage].is_number()) continue;
    ctx.report->Add({.suite = "control", .name = "full-program", .subject = subject, .metric = metric,
                     .value = stages[stage].get<double>() / 1e6, .unit = "s", .params = params});
  }
  MapMemory maps = BpfMapBytes(pid);
  ctx.report->Add({.suite = "control", .name = "memory", .subject = subject, .metric = "rss_mib",
                   .value = RssBytes(pid) / (1 << 20), .unit = "MiB", .params = params});
  ctx.report->Add({.suite = "control", .name = "memory", .subject = subject, .metric = "bpf_map_mib",
                   .value = maps.bytes / (1 << 20), .unit = "MiB", .params = params,
                   .extra = {{"maps", maps.maps}}});

  // One endpoint change by file: write + rename in the manifest dir, as a
  // controller would; programmed = kpxd's status counts the update.
  std::string base = ReadFile(sc.changed_file);
  fs::path target = dir / "manifests" / sc.changed_file.filename();
  fs::path tmp = dir / "manifests" / ("." + sc.changed_file.filename().string() + ".tmp");
  std::vector<double> file_ms, internal_ms;
  for (int k = 0; k < o.changes && ctx.TimeLeft(); ++k) {
    auto yaml = RewriteLastEndpoint(base, k);
    if (!yaml.ok()) {
      cleanup(pid);
      return yaml.status();
    }
    int64_t before = Field(watch.Read(), "updates");
    {
      std::ofstream out(tmp, std::ios::trunc);
      out << *yaml;
    }
    absl::Time c0 = absl::Now();
    fs::rename(tmp, target);
    auto done = watch.WaitFor([&](const nlohmann::json& s) { return Field(s, "updates") > before; },
                              c0 + absl::Seconds(30), pid);
    if (!done) {
      cleanup(pid);
      return absl::InternalError(absl::StrCat("kpxd (", dp, ", S=", services, ") did not apply change ", k,
                                              " within 30 s; log tail:\n", Tail(ReadFile(log))));
    }
    file_ms.push_back(absl::ToDoubleMilliseconds(*done - c0));
    internal_ms.push_back(Field(watch.Read(), "last_programming_latency_us") / 1e3);
  }
  AddChangeStats(ctx, subject, services, o.endpoints, file_ms,
                 {{"via", "manifest file write+rename -> status file shows the update programmed"},
                  {"kpxd_internal_median_ms", Percentile(internal_ms, 50)}});

  // The same change through the admin API (unix socket): the response comes
  // after the override is programmed, so the round trip is the latency.
  httplib::Client client(sock.string());
  client.set_address_family(AF_UNIX);
  client.set_connection_timeout(2, 0);
  client.set_read_timeout(30, 0);
  std::vector<double> api_ms;
  std::string service = sc.changed_ns + "/" + sc.changed_name;
  for (int k = 0; k < o.changes && ctx.TimeLeft(); ++k) {
    nlohmann::json eps = nlohmann::json::array();
    for (int i = 0; i + 1 < o.endpoints; ++i) eps.push_back(absl::StrFormat("10.203.0.%d:8080", i + 1));
    eps.push_back(ChangedIp(k + 1000) + ":8080");
    std::string body = nlohmann::json{{"op", "set"}, {"service", service}, {"endpoints", eps}}.dump();
    absl::Time c0 = absl::Now();
    auto res = client.Post("/v1/endpoints", body, "application/json");
    absl::Time c1 = absl::Now();
    nlohmann::json reply = res ? nlohmann::json::parse(res->body, nullptr, false) : nlohmann::json();
    bool ok = res && res->status == 200 && reply.is_object() && reply.contains("services") &&
              !reply["services"].empty() && reply["services"][0].value("programmed", false);
    if (!ok) {
      std::string detail = res ? absl::StrCat(res->status, " ", Tail(res->body, 300))
                               : httplib::to_string(res.error());
      cleanup(pid);
      return absl::InternalError(absl::StrCat("admin API change ", k, " (", dp, ", S=", services,
                                              ") failed: ", detail));
    }
    api_ms.push_back(absl::ToDoubleMilliseconds(c1 - c0));
  }
  AddChangeStats(ctx, subject + "-api", services, o.endpoints, api_ms,
                 {{"via", "POST /v1/endpoints op=set over the admin unix socket (returns once programmed)"}});
  cleanup(pid);
  return absl::OkStatus();
}

// kube-proxy's rules for one backend in a fresh netns: the full restore as
// kube-proxy does it at startup, then its partial sync for one endpoint
// change, alternating the two generated changes.
absl::Status MeasurePeer(Context& ctx, const ControlOptions& o, const Scenario& sc, int services,
                         const std::string& peer, bool* timed_out) {
  std::string ns_name = absl::StrCat("kpxbc", getpid(), "-p");
  auto ns = ScopedNetns::Create(ns_name);
  if (!ns.ok()) return ns.status();
  std::vector<std::string> full_cmd, change_cmd;
  std::string full_file, change_files[2];
  if (peer == "nftables") {
    full_cmd = change_cmd = {"nft", "-f", "-"};
    full_file = "nft-full.nft";
    change_files[0] = "nft-change1.nft";
    change_files[1] = "nft-change2.nft";
  } else {
    std::string bin = peer == "iptables-legacy" ? "iptables-legacy-restore" : "iptables-nft-restore";
    CmdResult boot = RunCmd({bin, "--noflush"}, {.netns = ns_name,
                                                 .stdin_path = (sc.dir / "ipt-bootstrap.rules").string()});
    if (boot.rc != 0) return absl::InternalError(absl::StrCat(peer, " bootstrap rules: ", Tail(boot.output)));
    full_cmd = change_cmd = {bin, "--noflush", "--counters"};
    full_file = "ipt-full.rules";
    change_files[0] = "ipt-change1.rules";
    change_files[1] = "ipt-change2.rules";
  }
  std::map<std::string, std::string> params = {{"S", absl::StrCat(services)}, {"E", absl::StrCat(o.endpoints)}};
  CmdResult full = RunCmd(full_cmd, {.netns = ns_name, .stdin_path = (sc.dir / full_file).string(),
                                     .timeout = absl::Seconds(o.peer_timeout_s)});
  if (full.timed_out) {
    *timed_out = true;
    ctx.report->AddNote(absl::StrFormat("control: %s full restore at S=%d did not finish within %.0f s "
                                        "(--peer-timeout); not measured at this or larger S",
                                        peer, services, o.peer_timeout_s));
    return absl::OkStatus();
  }
  if (full.rc != 0) return absl::InternalError(absl::StrCat(peer, " full restore: ", Tail(full.output)));
  ctx.report->Add({.suite = "control", .name = "full-program", .subject = peer, .metric = "full_s",
                   .value = full.seconds, .unit = "s", .params = params,
                   .extra = {{"what", absl::StrCat(absl::StrJoin(full_cmd, " "), " < ", full_file)}}});
  std::vector<double> ms;
  absl::Time budget = absl::Now() + absl::Seconds(o.peer_change_budget_s);
  for (int k = 0; k < o.peer_changes && absl::Now() < budget && ctx.TimeLeft(); ++k) {
    const std::string& f = change_files[k % 2];
    CmdResult c = RunCmd(change_cmd, {.netns = ns_name, .stdin_path = (sc.dir / f).string(),
                                      .timeout = absl::Seconds(o.peer_timeout_s)});
    if (c.rc != 0) {
      return absl::InternalError(absl::StrCat(peer, " change ", k, " (", f, "): ", Tail(c.output)));
    }
    ms.push_back(c.seconds * 1e3);
  }
  AddChangeStats(ctx, peer, services, o.endpoints, ms,
                 {{"via", absl::StrCat(absl::StrJoin(change_cmd, " "), " < ", change_files[0], " / ",
                                       change_files[1], " alternately (kube-proxy's partial sync)")}});
  return absl::OkStatus();
}

// What an interrupted run (kpx-bench killed) left: its kpxbc<pid>-* netns
// with kpxd still inside, pins under /sys/fs/bpf/kpxbc-<pid>, its work dir.
// Only names of this subcommand whose kpx-bench is gone are touched.
void RemoveStale(Context& ctx) {
  CmdResult list = Sh("ip netns list | awk '{print $1}'", absl::Seconds(10));
  for (absl::string_view ns : absl::StrSplit(list.output, '\n', absl::SkipEmpty())) {
    int pid = 0;
    char tag = 0;
    if (std::sscanf(std::string(ns).c_str(), "kpxbc%d-%c", &pid, &tag) != 2 || pid <= 0) continue;
    if (fs::exists(absl::StrCat("/proc/", pid))) continue;  // a live run
    Sh(absl::StrCat("for p in $(ip netns pids ", ns, "); do kill -9 $p; done; ip netns del ", ns),
       absl::Seconds(30));
    fs::remove_all(absl::StrCat("/sys/fs/bpf/kpxbc-", pid));
    fs::remove_all(fs::temp_directory_path() / absl::StrCat("kpxbc-", pid));
    ctx.report->AddNote(absl::StrCat("control: removed ", ns, " left by an interrupted run"));
  }
}

absl::Status RunControl(Context& ctx, const ControlOptions& opts) {
  if (geteuid() != 0) return absl::FailedPreconditionError("control needs root (netns, BPF, iptables)");
  ControlOptions o = opts;
  if (ctx.quick) {
    o.services = {100};
    o.changes = 10;
    o.peer_changes = 4;
  }
  // The io_uring dataplane holds a listening socket per Service port and
  // worker: at S=10k that is past this machine's default 20000 files. A node
  // daemon gets a large LimitNOFILE from its unit; kpxd inherits this one.
  rlimit files{1 << 20, 1 << 20};
  if (setrlimit(RLIMIT_NOFILE, &files) != 0) {
    ctx.report->AddNote("control: could not raise RLIMIT_NOFILE to 1048576; kpx-uring may fail at large S");
  }
  RemoveStale(ctx);
  fs::path work = fs::temp_directory_path() / absl::StrCat("kpxbc-", getpid());
  fs::create_directories(work);
  Progress progress("control", static_cast<int>(o.services.size() * (o.dataplanes.size() + o.peers.size())));
  std::set<std::string> gave_up;  // subjects that timed out at a smaller S
  absl::Status result = absl::OkStatus();
  for (int s : o.services) {
    if (!ctx.TimeLeft()) {
      ctx.report->AddNote(absl::StrCat("control: S=", s, " skipped, --max-minutes reached"));
      continue;
    }
    std::fprintf(stderr, "[control] generating S=%d x E=%d (gen_rules.py)\n", s, o.endpoints);
    auto sc = Generate(ctx, work, s, o.endpoints);
    if (!sc.ok()) {
      result = sc.status();
      break;
    }
    for (const std::string& dp : o.dataplanes) {
      std::string subject = "kpx-" + dp;
      if (gave_up.count(subject) == 0 && ctx.TimeLeft()) {
        bool timed_out = false;
        if (absl::Status st = MeasureKpx(ctx, o, work, *sc, s, dp, &timed_out); !st.ok()) {
          ctx.report->AddNote(absl::StrCat("control: ", subject, " at S=", s, ": ", st.message()));
          result = st;
        }
        if (timed_out) gave_up.insert(subject);
      }
      progress.Step(absl::StrCat(subject, " S=", s));
    }
    for (const std::string& peer : o.peers) {
      if (gave_up.count(peer) == 0 && ctx.TimeLeft()) {
        bool timed_out = false;
        if (absl::Status st = MeasurePeer(ctx, o, *sc, s, peer, &timed_out); !st.ok()) {
          ctx.report->AddNote(absl::StrCat("control: ", peer, " at S=", s, ": ", st.message()));
          result = st;
        }
        if (timed_out) gave_up.insert(peer);
      }
      progress.Step(absl::StrCat(peer, " S=", s));
    }
    fs::remove_all(sc->dir);
  }
  fs::remove_all(work);

  ctx.report->AddTable({.title = "Control plane: full table from cold start (s)", .suite = "control",
                        .metric = "full_s", .subjects = kSubjects, .baseline = kBaseline,
                        .note = "kpx: exec kpxd -> its status file says every Service is programmed (process "
                                "start, BPF load/attach or listener setup, parsing S files, programming). "
                                "Peers: one `iptables-*-restore --noflush --counters` / `nft -f` of kube-proxy's "
                                "full sync, timed fork -> exit."});
  ctx.report->AddTable({.title = "kpxd's own measure of the initial sync (s)", .suite = "control",
                        .metric = "program_s", .subjects = {"kpx-xdp", "kpx-uring"},
                        .note = "First manifest read -> every frontend programmed (kpxd's "
                                "last_programming_latency_us); excludes process start and dataplane setup."});
  ctx.report->AddTable({.title = "kpxd's initial sync: scan + read + parse of the S files (s)", .suite = "control",
                        .metric = "sync_parse_s", .subjects = {"kpx-xdp", "kpx-uring"},
                        .note = "kpxd's status file, initial_sync.scan_parse_us (files parsed on every CPU)."});
  ctx.report->AddTable({.title = "kpxd's initial sync: object store + translate + diff (s)", .suite = "control",
                        .metric = "sync_reconcile_s", .subjects = {"kpx-xdp", "kpx-uring"}});
  ctx.report->AddTable({.title = "kpxd's initial sync: the dataplane's Apply of the whole table (s)",
                        .suite = "control", .metric = "sync_apply_s", .subjects = {"kpx-xdp", "kpx-uring"}});
  ctx.report->AddTable({.title = "One endpoint change -> dataplane programmed, median (ms)", .suite = "control",
                        .metric = "change_median_ms", .subjects = kChangeSubjects, .baseline = kBaseline,
                        .note = "kpx-<dp>: manifest file rewrite (write + rename) -> kpxd's status shows it "
                                "programmed; kpx-<dp>-api: POST /v1/endpoints round trip (answers once "
                                "programmed). Peers: kube-proxy's partial sync for the change, fork -> exit."});
  ctx.report->AddTable({.title = "One endpoint change, p99 (ms)", .suite = "control", .metric = "change_p99_ms",
                        .subjects = kChangeSubjects, .baseline = kBaseline});
  ctx.report->AddTable({.title = "kpxd resident memory (MiB)", .suite = "control", .metric = "rss_mib",
                        .subjects = {"kpx-xdp", "kpx-uring"}});
  ctx.report->AddTable({.title = "kpxd BPF map memory (MiB, memlock of the maps it holds)", .suite = "control",
                        .metric = "bpf_map_mib", .subjects = {"kpx-xdp", "kpx-uring"}});
  ctx.report->AddChart({.file = "control-full.png", .title = "Full table programmed from cold start",
                        .suite = "control", .metric = "full_s", .subjects = kSubjects, .x_param = "S",
                        .log_x = true, .log_y = true, .y_label = "seconds"});
  ctx.report->AddChart({.file = "control-change.png", .title = "One endpoint change -> programmed (median)",
                        .suite = "control", .metric = "change_median_ms", .subjects = kChangeSubjects,
                        .x_param = "S", .log_x = true, .log_y = true, .y_label = "ms"});
  return result;
}

Subcommand MakeControlSubcommand() {
  auto opts = std::make_shared<ControlOptions>();
  Subcommand s;
  s.name = "control";
  s.help = "control plane: full program, one-change latency and memory at S Services x E endpoints, vs "
           "kube-proxy's iptables/nftables rules";
  s.order = 20;
  s.add_options = [opts](CLI::App* cmd) {
    cmd->add_option("--services", opts->services, "S values (Services)")->delimiter(',');
    cmd->add_option("--endpoints", opts->endpoints, "E: endpoints per Service")->check(CLI::PositiveNumber);
    cmd->add_option("--changes", opts->changes, "endpoint changes timed per (dataplane, S, way)")
        ->check(CLI::PositiveNumber);
    cmd->add_option("--dataplanes", opts->dataplanes, "kpxd dataplanes: xdp,uring")->delimiter(',');
    cmd->add_option("--peers", opts->peers, "iptables-legacy,iptables-nft,nftables")->delimiter(',');
    cmd->add_option("--peer-timeout", opts->peer_timeout_s, "bound (s) for one full program")
        ->check(CLI::PositiveNumber);
    cmd->add_option("--peer-changes", opts->peer_changes, "endpoint changes timed per peer and S");
  };
  s.run = [opts](Context& ctx) { return RunControl(ctx, *opts); };
  return s;
}

KPX_BENCH_SUBCOMMAND(MakeControlSubcommand);

}  // namespace
}  // namespace kpx::bench
