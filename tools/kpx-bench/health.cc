// `kpx-bench health`: how fast a dead pod leaves rotation and comes back.
// In a netns lab (prefix kpxh-) the pod servers are SIGKILLed by PID, one at
// a time, and each checker is timed from the kill to "out of rotation"
// (kpxd: the instant the dataplane was programmed, from its admin API;
// HAProxy: its stats socket polled every 5 ms), then from the restart to
// "back in rotation". kpxd runs with its defaults and an aggressive setting
// (two Services on the same pods), on each dataplane; HAProxy with
// `inter 1s fall 3 rise 2` and `inter 100 fall 2 rise 2`. Then the probe
// CPU per 1k backends (kpxd's checker thread and HAProxy at equal rates).
#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "tools/kpx-bench/health_lab.h"
#include "tools/kpx-bench/subcommand.h"

namespace kpx::bench {
namespace {

namespace fs = std::filesystem;

struct HealthBenchOptions {
  int kills = 30;
  std::vector<std::string> dataplanes = {"uring", "xdp"};
  bool haproxy = true;
  int cpu_backends = 1000;
  double cpu_seconds = 10;
  std::string aggr_interval = "100ms";
  std::string aggr_timeout = "50ms";
  int aggr_fall = 2;
};

constexpr absl::Duration kTick = absl::Milliseconds(1);
constexpr absl::Duration kWaitLimit = absl::Seconds(20);  // one transition, any checker

volatile sig_atomic_t g_interrupted = 0;
void OnSignal(int) { g_interrupted = 1; }

// SIGINT/SIGTERM end the run between steps, so the destructors tear the lab down.
class InterruptGuard {
 public:
  InterruptGuard() {
    g_interrupted = 0;
    struct sigaction sa {};
    sa.sa_handler = OnSignal;
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
  }
  ~InterruptGuard() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }

 private:
  struct sigaction old_int_ {}, old_term_ {};
};

bool Stopping(const Context& ctx) { return g_interrupted != 0 || !ctx.TimeLeft(); }

void WriteFile(const fs::path& p, const std::string& content) {
  fs::path tmp = p;
  tmp += ".tmp";
  std::ofstream(tmp) << content;
  fs::rename(tmp, p);
}

std::string ServiceYaml(const std::string& name, const std::string& vip, int port,
                        const std::vector<std::string>& annotations, const std::vector<std::string>& ips) {
  std::string y = absl::StrCat("apiVersion: v1\nkind: Service\nmetadata:\n  name: ", name,
                               "\n  namespace: default\n");
  if (!annotations.empty()) {
    y += "  annotations:\n";
    for (const std::string& a : annotations) y += "    " + a + "\n";
  }
  absl::StrAppend(&y, "spec:\n  clusterIP: ", vip, "\n  ports:\n  - {name: p, protocol: TCP, port: ", port, "}\n");
  // EndpointSlices of at most 1000 endpoints, as the API server caps them.
  for (size_t first = 0, slice = 0; first < ips.size(); first += 1000, ++slice) {
    absl::StrAppend(&y, "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: ", name, "-",
                    slice, "\n  namespace: default\n  labels: {kubernetes.io/service-name: ", name,
                    "}\naddressType: IPv4\nports:\n- {name: p, protocol: TCP, port: ", port, "}\nendpoints:\n");
    for (size_t i = first; i < std::min(ips.size(), first + 1000); ++i) {
      absl::StrAppend(&y, "- addresses: [", ips[i], "]\n  conditions: {ready: true, serving: true, terminating: false}\n");
    }
  }
  return y;
}

// kpxd in the node namespace with its own manifest dir, admin socket and (eBPF) pin dir.
class KpxdRun {
 public:
  KpxdRun(HealthLab& lab, std::string dataplane, const std::string& tag)
      : lab_(lab), dataplane_(std::move(dataplane)), dir_(lab.work_dir() / ("kpxd-" + tag)) {
    fs::create_directories(dir_ / "m");
    pin_dir_ = absl::StrCat("/sys/fs/bpf/kpxh-", getpid(), "-", tag);
  }
  ~KpxdRun() {
    proc_.Stop(absl::Seconds(3));
    if (dataplane_ == "xdp") {
      RunBounded(absl::StrCat((lab_.build_dir() / "tools/kpxd").string(), " --netns=", lab_.NodeNs(),
                              " --cleanup --bpf-pin-dir=", pin_dir_),
                 absl::Seconds(30), dir_ / "kpxd.log");
      std::error_code ec;
      fs::remove_all(pin_dir_, ec);
    }
  }
  fs::path manifest_dir() const { return dir_ / "m"; }
  std::string admin_socket() const { return (dir_ / "kpxd.sock").string(); }
  pid_t pid() const { return proc_.pid(); }

  absl::Status Start() {
    std::vector<std::string> args = {(lab_.build_dir() / "tools/kpxd").string(),
                                     "--netns=" + lab_.NodeNs(),
                                     "--manifest-dir=" + manifest_dir().string(),
                                     "--hostname-override=a4-worker3",
                                     "--status-file=" + (dir_ / "status.json").string(),
                                     "--drain-timeout=1s",
                                     "--admin-socket=" + admin_socket(),
                                     "--state-dir=" + (dir_ / "state").string(),
                                     "--dataplane=" + dataplane_};
    if (dataplane_ == "xdp") {
      args.push_back("--bpf-pin-dir=" + pin_dir_);
      args.push_back("--cluster-cidr=10.244.0.0/16");
    }
    if (absl::Status s = proc_.Start(args, "", dir_ / "kpxd.log"); !s.ok()) return s;
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (absl::Now() < deadline) {
      std::ifstream in(dir_ / "status.json");
      std::string status((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      if (status.find("\"in_sync\":true") != std::string::npos) return absl::OkStatus();
      if (proc_.Exited()) break;
      absl::SleepFor(absl::Milliseconds(20));
    }
    std::ifstream log(dir_ / "kpxd.log");
    std::string tail, line;
    while (std::getline(log, line)) tail = line;
    return absl::UnavailableError(absl::StrCat("kpxd --dataplane=", dataplane_, " did not come up in sync: ", tail));
  }

 private:
  HealthLab& lab_;
  std::string dataplane_;
  fs::path dir_;
  std::string pin_dir_;
  Child proc_;
};

// HAProxy in the node namespace, one thread (kpxd's checker is one thread too).
class HaproxyRun {
 public:
  HaproxyRun(HealthLab& lab, const std::string& tag) : lab_(lab), dir_(lab.work_dir() / ("haproxy-" + tag)) {
    fs::create_directories(dir_);
  }
  ~HaproxyRun() { proc_.Stop(absl::Seconds(3)); }
  std::string stats_socket() const { return (dir_ / "stats.sock").string(); }
  pid_t pid() const { return proc_.pid(); }

  // `listens`: (name, "check ..." options, servers as name -> ip:port).
  struct Listen {
    std::string name;
    int port;
    std::string check;
    std::vector<std::pair<std::string, std::string>> servers;
  };
  absl::Status Start(const std::vector<Listen>& listens) {
    std::string cfg = absl::StrCat("global\n    nbthread 1\n    maxconn 4000\n    stats socket ", stats_socket(),
                                   " mode 600 level admin\n",
                                   "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 10s\n"
                                   "    timeout server 10s\n");
    for (const Listen& l : listens) {
      absl::StrAppend(&cfg, "listen ", l.name, "\n    bind 127.0.0.1:", l.port, "\n    default-server ", l.check, "\n");
      for (const auto& [name, addr] : l.servers) absl::StrAppend(&cfg, "    server ", name, " ", addr, "\n");
    }
    WriteFile(dir_ / "haproxy.cfg", cfg);
    if (RunBounded(absl::StrCat("haproxy -c -q -f ", (dir_ / "haproxy.cfg").string()), absl::Seconds(30),
                   dir_ / "haproxy.log") != 0) {
      return absl::InvalidArgumentError(absl::StrCat("haproxy -c rejected ", (dir_ / "haproxy.cfg").string()));
    }
    const std::string bin = RunBounded("test -x /usr/sbin/haproxy", absl::Seconds(5), dir_ / "haproxy.log") == 0
                                ? "/usr/sbin/haproxy"
                                : "/usr/bin/haproxy";
    if (absl::Status s = proc_.Start({bin, "-db", "-f", (dir_ / "haproxy.cfg").string()}, lab_.NodeNs(),
                                     dir_ / "haproxy.log");
        !s.ok()) {
      return s;
    }
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (absl::Now() < deadline && !fs::exists(stats_socket())) {
      if (proc_.Exited()) break;
      absl::SleepFor(absl::Milliseconds(20));
    }
    if (!fs::exists(stats_socket())) {
      return absl::UnavailableError(absl::StrCat("haproxy did not start; see ", (dir_ / "haproxy.log").string()));
    }
    return absl::OkStatus();
  }

 private:
  HealthLab& lab_;
  fs::path dir_;
  Child proc_;
};

struct SubjectSamples {
  std::vector<double> detect_ms, recover_ms, programming_ms;
  int detect_missed = 0, recover_missed = 0, poll_errors = 0;
  std::vector<double> loadavg;  // 1-minute load average at each kill: how busy the machine was
};

double LoadAverage1() {
  std::ifstream in("/proc/loadavg");
  double v = -1;
  in >> v;
  return v;
}

// Waits until every observer sees pod `pod` with up == `want`; records the
// time from `since` per observer into `out` (nullopt: not within kWaitLimit).
std::vector<std::optional<double>> WaitTransition(std::vector<std::unique_ptr<Observer>>& obs, size_t pod,
                                                  bool want, absl::Time since,
                                                  std::map<std::string, SubjectSamples>& samples) {
  std::vector<std::optional<double>> took(obs.size());
  std::vector<absl::Time> next_poll(obs.size(), since);
  size_t pending = obs.size();
  const absl::Time deadline = since + kWaitLimit;
  while (pending > 0 && absl::Now() < deadline && g_interrupted == 0) {
    for (size_t o = 0; o < obs.size(); ++o) {
      if (took[o].has_value() || absl::Now() < next_poll[o]) continue;
      next_poll[o] = absl::Now() + obs[o]->poll_period();
      absl::StatusOr<std::vector<PodView>> v = obs[o]->Poll();
      const absl::Time polled = absl::Now();
      if (!v.ok()) {
        ++samples[obs[o]->subject()].poll_errors;
        continue;
      }
      const PodView& pv = (*v)[pod];
      if (!pv.known || pv.up != want) continue;
      absl::Time at = polled;
      if (pv.changed_at.has_value() && *pv.changed_at >= since && *pv.changed_at <= polled) {
        at = *pv.changed_at;
        if (!want && pv.decided_at.has_value()) {
          samples[obs[o]->subject()].programming_ms.push_back(absl::ToDoubleMilliseconds(at - *pv.decided_at));
        }
      }
      took[o] = absl::ToDoubleMilliseconds(at - since);
      --pending;
    }
    absl::SleepFor(kTick);
  }
  return took;
}

// Bounded wait for every observer to have every pod in rotation.
absl::Status WaitAllUp(std::vector<std::unique_ptr<Observer>>& obs, size_t pods, absl::Duration limit) {
  const absl::Time deadline = absl::Now() + limit;
  std::string last = "no poll";
  while (absl::Now() < deadline && g_interrupted == 0) {
    bool all = true;
    for (auto& o : obs) {
      absl::StatusOr<std::vector<PodView>> v = o->Poll();
      if (!v.ok()) {
        last = absl::StrCat(o->subject(), ": ", v.status().message());
        all = false;
        break;
      }
      for (size_t p = 0; p < pods; ++p) {
        if (!(*v)[p].known || !(*v)[p].up) {
          last = absl::StrCat(o->subject(), ": pod ", p + 1, (*v)[p].known ? " out of rotation" : " not listed");
          all = false;
        }
      }
    }
    if (all) return absl::OkStatus();
    absl::SleepFor(absl::Milliseconds(20));
  }
  return absl::DeadlineExceededError(absl::StrCat("not every pod in rotation within ", absl::FormatDuration(limit),
                                                  " (", last, ")"));
}

// The kill loop: pods in turn, a random pause first (so kills land at
// random phases of the probe schedules), SIGKILL, wait until every observer
// took the pod out, restart at once, wait until every observer has it back.
absl::Status KillLoop(Context& ctx, HealthLab& lab, std::vector<std::unique_ptr<Observer>>& obs, int kills,
                      uint32_t seed, std::map<std::string, SubjectSamples>& samples, Progress& progress) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> pause_ms(0, 500);
  const size_t pods = lab.pods().size();
  if (absl::Status s = WaitAllUp(obs, pods, absl::Seconds(15)); !s.ok()) return s;
  for (int k = 0; k < kills; ++k) {
    if (Stopping(ctx)) {
      ctx.report->AddNote(absl::StrCat("health: kill loop of ", obs[0]->subject(), " stopped after ", k, " of ",
                                       kills, " kills (time bound or signal)"));
      break;
    }
    const size_t pod = static_cast<size_t>(k) % pods;
    absl::SleepFor(absl::Milliseconds(pause_ms(rng)));
    if (absl::Status s = WaitAllUp(obs, pods, absl::Seconds(30)); !s.ok()) return s;
    const double load = LoadAverage1();
    const absl::Time killed = lab.KillPod(static_cast<int>(pod));
    std::vector<std::optional<double>> down = WaitTransition(obs, pod, false, killed, samples);
    const absl::Time restarted = absl::Now();
    if (absl::Status s = lab.StartPod(static_cast<int>(pod)); !s.ok()) return s;
    std::vector<std::optional<double>> up = WaitTransition(obs, pod, true, restarted, samples);
    std::vector<std::string> line;
    for (size_t o = 0; o < obs.size(); ++o) {
      SubjectSamples& s = samples[obs[o]->subject()];
      s.loadavg.push_back(load);
      if (down[o]) {
        s.detect_ms.push_back(*down[o]);
      } else {
        ++s.detect_missed;
      }
      if (up[o]) {
        s.recover_ms.push_back(*up[o]);
      } else {
        ++s.recover_missed;
      }
      line.push_back(absl::StrCat(obs[o]->subject(), " ", down[o] ? absl::StrCat(static_cast<int>(*down[o])) : "-",
                                  "/", up[o] ? absl::StrCat(static_cast<int>(*up[o])) : "-", " ms"));
    }
    progress.Step(absl::StrCat("kill ", lab.pods()[pod].name, ": ", absl::StrJoin(line, ", ")));
  }
  return absl::OkStatus();
}

void AddLatencies(Report& r, const std::string& subject, const SubjectSamples& s, const std::string& settings,
                  int kills) {
  auto add = [&](const std::string& name, const std::vector<double>& v, int missed) {
    if (v.empty()) return;
    for (auto [metric, pct] : {std::pair<const char*, double>{"p50_ms", 50}, {"p99_ms", 99}}) {
      Measurement m{.suite = "health", .name = name, .subject = subject, .metric = metric,
                    .value = Percentile(v, pct), .unit = "ms", .higher_is_better = false};
      m.extra["samples_ms"] = v;
      m.extra["n"] = v.size();
      m.extra["missed"] = missed;
      m.extra["kills"] = kills;
      m.extra["settings"] = settings;
      m.extra["min_ms"] = Percentile(v, 0);
      m.extra["max_ms"] = Percentile(v, 100);
      m.extra["loadavg_1m_min"] = Percentile(s.loadavg, 0);
      m.extra["loadavg_1m_max"] = Percentile(s.loadavg, 100);
      if (name == "detection" && !s.programming_ms.empty()) {
        m.extra["verdict_to_programmed_p50_ms"] = Percentile(s.programming_ms, 50);
        m.extra["verdict_to_programmed_max_ms"] = Percentile(s.programming_ms, 100);
      }
      r.Add(std::move(m));
    }
    if (missed > 0) {
      r.AddNote(absl::StrCat("health: ", subject, " ", name, " not seen within ", absl::FormatDuration(kWaitLimit),
                             " for ", missed, " of ", kills, " kills"));
    }
  };
  add("detection", s.detect_ms, s.detect_missed);
  add("recovery", s.recover_ms, s.recover_missed);
  if (!s.loadavg.empty()) {
    r.AddNote(absl::StrCat("health: ", subject, ": 1-minute load average ", Percentile(s.loadavg, 0), "..",
                           Percentile(s.loadavg, 100), " during its kills (", sysconf(_SC_NPROCESSORS_ONLN),
                           " CPUs)"));
  }
}

std::vector<std::string> PodIps(HealthLab& lab) {
  std::vector<std::string> out;
  for (const LabPod& p : lab.pods()) out.push_back(p.ip);
  return out;
}

std::vector<std::string> PodNames(HealthLab& lab) {
  std::vector<std::string> out;
  for (const LabPod& p : lab.pods()) out.push_back(p.name);
  return out;
}

std::string KpxAggrSettings(const HealthBenchOptions& opt) {
  return absl::StrCat("interval ", opt.aggr_interval, " +-20%, timeout ", opt.aggr_timeout, ", fall ", opt.aggr_fall,
                      ", rise 2 (per-Service annotations)");
}

// kpxd on `dataplane`: Service hc-default (pods:5000, kpxd's defaults) and
// hc-aggr (pods:5001, aggressive annotations) measured in one kill loop.
absl::Status MeasureKpxd(Context& ctx, HealthLab& lab, const HealthBenchOptions& opt, const std::string& dataplane,
                         int kills, Progress& progress) {
  KpxdRun kpxd(lab, dataplane, dataplane);
  const std::vector<std::string> ips = PodIps(lab);
  WriteFile(kpxd.manifest_dir() / "hc-default.yaml", ServiceYaml("hc-default", "10.96.70.1", 5000, {}, ips));
  WriteFile(kpxd.manifest_dir() / "hc-aggr.yaml",
            ServiceYaml("hc-aggr", "10.96.70.2", 5001,
                        {absl::StrCat("kpx.io/health-interval: \"", opt.aggr_interval, "\""),
                         absl::StrCat("kpx.io/health-timeout: \"", opt.aggr_timeout, "\""),
                         absl::StrCat("kpx.io/health-fall: \"", opt.aggr_fall, "\""), "kpx.io/health-rise: \"2\""},
                        ips));
  if (absl::Status s = kpxd.Start(); !s.ok()) return s;
  const std::string subject = "kpx-" + dataplane;
  std::vector<std::unique_ptr<Observer>> obs;
  obs.push_back(MakeKpxdObserver(subject, kpxd.admin_socket(), "default/hc-default", ips));
  obs.push_back(MakeKpxdObserver(subject + "-aggr", kpxd.admin_socket(), "default/hc-aggr", ips));
  std::map<std::string, SubjectSamples> samples;
  absl::Status st = KillLoop(ctx, lab, obs, kills, dataplane == "xdp" ? 2 : 1, samples, progress);
  AddLatencies(*ctx.report, subject, samples[subject],
               "kpxd defaults: interval 300ms +-20%, timeout 200ms, fall 2, rise 2", kills);
  AddLatencies(*ctx.report, subject + "-aggr", samples[subject + "-aggr"], KpxAggrSettings(opt), kills);
  return st;
}

absl::Status MeasureHaproxy(Context& ctx, HealthLab& lab, int kills, Progress& progress) {
  HaproxyRun haproxy(lab, "latency");
  std::vector<std::pair<std::string, std::string>> http, echo;
  for (const LabPod& p : lab.pods()) {
    http.emplace_back(p.name, p.ip + ":5000");
    echo.emplace_back(p.name, p.ip + ":5001");
  }
  const std::string def = "check inter 1s fall 3 rise 2", aggr = "check inter 100 fall 2 rise 2";
  if (absl::Status s = haproxy.Start({{"hc_default", 15000, def, http}, {"hc_aggr", 15001, aggr, echo}}); !s.ok()) {
    return s;
  }
  std::vector<std::unique_ptr<Observer>> obs;
  obs.push_back(MakeHaproxyObserver("haproxy", haproxy.stats_socket(), "hc_default", PodNames(lab)));
  obs.push_back(MakeHaproxyObserver("haproxy-aggr", haproxy.stats_socket(), "hc_aggr", PodNames(lab)));
  std::map<std::string, SubjectSamples> samples;
  absl::Status st = KillLoop(ctx, lab, obs, kills, 3, samples, progress);
  AddLatencies(*ctx.report, "haproxy", samples["haproxy"], def, kills);
  AddLatencies(*ctx.report, "haproxy-aggr", samples["haproxy-aggr"], aggr, kills);
  return st;
}

// Counts the backends of `service` kpxd has in rotation.
int KpxdHealthyCount(const std::string& socket, const std::string& service, const std::vector<std::string>& ips) {
  auto obs = MakeKpxdObserver("kpx", socket, service, ips);
  absl::StatusOr<std::vector<PodView>> v = obs->Poll();
  if (!v.ok()) return -1;
  int n = 0;
  for (const PodView& p : *v) n += p.known && p.up;
  return n;
}

int HaproxyUpCount(const std::string& socket, const std::string& proxy, const std::vector<std::string>& names) {
  auto obs = MakeHaproxyObserver("haproxy", socket, proxy, names);
  absl::StatusOr<std::vector<PodView>> v = obs->Poll();
  if (!v.ok()) return -1;
  int n = 0;
  for (const PodView& p : *v) n += p.known && p.up;
  return n;
}

// Probe CPU: N backends (AnyIP addresses of pod 1) at kpxd's default
// interval, CPU of its checker thread and whole process over a window; then
// HAProxy with the same servers at the same rate (inter 300ms).
absl::Status MeasureCpu(Context& ctx, HealthLab& lab, const HealthBenchOptions& opt, int n, absl::Duration window,
                        bool with_haproxy) {
  Report& r = *ctx.report;
  if (absl::Status s = lab.RouteRangeToPod(0, "10.245.0.0/16"); !s.ok()) return s;
  std::vector<std::string> ips, names;
  for (int i = 0; i < n; ++i) {
    ips.push_back(absl::StrCat("10.245.", i / 250, ".", i % 250 + 1));
    names.push_back(absl::StrCat("b", i));
  }
  const std::map<std::string, std::string> params = {{"backends", absl::StrCat(n)}, {"interval", "300ms"}};
  const absl::Duration settle = absl::Seconds(2);  // first probes spread over one interval
  auto per_1k = [&](double cpu_s, absl::Duration took) {
    return 100.0 * cpu_s / absl::ToDoubleSeconds(took) / (n / 1000.0);
  };
  {
    KpxdRun kpxd(lab, opt.dataplanes.empty() ? "uring" : opt.dataplanes.front(), "cpu");
    WriteFile(kpxd.manifest_dir() / "hc-scale.yaml", ServiceYaml("hc-scale", "10.96.70.3", 5000, {}, ips));
    if (absl::Status s = kpxd.Start(); !s.ok()) return s;
    absl::SleepFor(settle);
    absl::StatusOr<double> t0 = ThreadCpuSeconds(kpxd.pid(), "kpx-health");
    absl::StatusOr<double> p0 = ProcessCpuSeconds(kpxd.pid());
    const absl::Time start = absl::Now();
    absl::SleepFor(window);
    absl::StatusOr<double> t1 = ThreadCpuSeconds(kpxd.pid(), "kpx-health");
    absl::StatusOr<double> p1 = ProcessCpuSeconds(kpxd.pid());
    const absl::Duration took = absl::Now() - start;
    if (!t0.ok() || !t1.ok() || !p0.ok() || !p1.ok()) {
      return absl::InternalError(absl::StrCat("reading kpxd's CPU time: ", (!t0.ok() ? t0 : t1).status().message()));
    }
    // Probes to dead backends back off (fewer probes): the number is only
    // meaningful when every backend answered.
    const int healthy = KpxdHealthyCount(kpxd.admin_socket(), "default/hc-scale", ips);
    if (healthy != n) {
      return absl::InternalError(absl::StrCat("probe CPU: kpxd has ", healthy, " of ", n, " backends in rotation"));
    }
    Measurement m{.suite = "health", .name = "probe CPU", .subject = "kpx-checker", .metric = "cpu_pct_per_1k",
                  .value = per_1k(*t1 - *t0, took), .unit = "% core", .higher_is_better = false, .params = params};
    m.extra["cpu_s"] = *t1 - *t0;
    m.extra["window_s"] = absl::ToDoubleSeconds(took);
    m.extra["probes_per_s_nominal"] = n / 0.3;
    r.Add(m);
    m.subject = "kpxd";
    m.value = per_1k(*p1 - *p0, took);
    m.extra["cpu_s"] = *p1 - *p0;
    r.Add(std::move(m));
  }
  if (!with_haproxy || Stopping(ctx)) return absl::OkStatus();
  HaproxyRun haproxy(lab, "cpu");
  std::vector<std::pair<std::string, std::string>> servers;
  for (int i = 0; i < n; ++i) servers.emplace_back(names[i], ips[i] + ":5000");
  if (absl::Status s = haproxy.Start({{"hc_scale", 15002, "check inter 300ms fall 2 rise 2", servers}}); !s.ok()) {
    return s;
  }
  absl::SleepFor(settle);
  absl::StatusOr<double> c0 = ProcessCpuSeconds(haproxy.pid());
  const absl::Time start = absl::Now();
  absl::SleepFor(window);
  absl::StatusOr<double> c1 = ProcessCpuSeconds(haproxy.pid());
  const absl::Duration took = absl::Now() - start;
  if (!c0.ok() || !c1.ok()) return absl::InternalError("reading haproxy's CPU time failed");
  const int up = HaproxyUpCount(haproxy.stats_socket(), "hc_scale", names);
  if (up != n) return absl::InternalError(absl::StrCat("probe CPU: haproxy has ", up, " of ", n, " servers UP"));
  Measurement m{.suite = "health", .name = "probe CPU", .subject = "haproxy", .metric = "cpu_pct_per_1k",
                .value = per_1k(*c1 - *c0, took), .unit = "% core", .higher_is_better = false, .params = params};
  m.extra["cpu_s"] = *c1 - *c0;
  m.extra["window_s"] = absl::ToDoubleSeconds(took);
  m.extra["settings"] = "check inter 300ms fall 2 rise 2, nbthread 1";
  r.Add(std::move(m));
  return absl::OkStatus();
}

absl::Status RunHealth(const HealthBenchOptions& opt, Context& ctx) {
  if (geteuid() != 0) return absl::PermissionDeniedError("health: needs root (network namespaces, kpxd)");
  Report& r = *ctx.report;
  InterruptGuard guard;
  const int kills = ctx.quick ? 3 : opt.kills;
  const int cpu_n = ctx.quick ? 100 : opt.cpu_backends;
  const absl::Duration window = ctx.quick ? absl::Seconds(2) : absl::Seconds(opt.cpu_seconds);
  // kpxd's status file and logs, HAProxy's socket: on tmpfs (/run), where a
  // write never waits for writeback; on a disk busy with other writers a
  // stalled status write held kpxd's reconcile loop (and so the programming
  // of health changes) for seconds. Copied next to the results at the end.
  const fs::path work = absl::StrCat("/run/kpxh-bench-", getpid());
  fs::remove_all(work);
  fs::create_directories(work);
  struct KeepLogs {
    fs::path from, to;
    ~KeepLogs() {
      std::error_code ec;
      // Regular files only (configs, logs, status): sockets cannot be copied.
      for (auto it = fs::recursive_directory_iterator(from, ec); !ec && it != fs::recursive_directory_iterator();
           it.increment(ec)) {
        if (!it->is_regular_file()) continue;
        fs::path dest = to / fs::relative(it->path(), from);
        fs::create_directories(dest.parent_path(), ec);
        fs::copy_file(it->path(), dest, fs::copy_options::overwrite_existing, ec);
      }
      fs::remove_all(from, ec);
    }
  } keep_logs{work, r.dir() / "health-lab"};
  bool haproxy = opt.haproxy;
  if (haproxy && RunBounded("command -v haproxy", absl::Seconds(5), work / "lab.log") != 0) {
    r.AddNote("health: haproxy is not installed (tools/setup.sh installs it): no peer numbers");
    haproxy = false;
  }
  absl::StatusOr<std::unique_ptr<HealthLab>> lab = HealthLab::Create(ctx.source_dir, ctx.build_dir, work);
  if (!lab.ok()) return lab.status();

  Progress progress("health", kills * static_cast<int>(opt.dataplanes.size() + (haproxy ? 1 : 0)));
  absl::Status result = absl::OkStatus();
  for (const std::string& dp : opt.dataplanes) {
    if (Stopping(ctx) || kills == 0) break;
    if (absl::Status s = MeasureKpxd(ctx, **lab, opt, dp, kills, progress); !s.ok()) {
      // One dataplane failing (e.g. no XDP here) still leaves the others.
      r.AddNote(absl::StrCat("health: kpxd --dataplane=", dp, ": ", s.message()));
      if (result.ok()) result = s;
    }
  }
  if (haproxy && kills > 0 && !Stopping(ctx)) {
    if (absl::Status s = MeasureHaproxy(ctx, **lab, kills, progress); !s.ok()) {
      r.AddNote(absl::StrCat("health: haproxy: ", s.message()));
      if (result.ok()) result = s;
    }
  }
  if (!Stopping(ctx)) {
    if (absl::Status s = MeasureCpu(ctx, **lab, opt, cpu_n, window, haproxy); !s.ok()) {
      r.AddNote(absl::StrCat("health: probe CPU: ", s.message()));
      if (result.ok()) result = s;
    }
  }
  if (g_interrupted != 0) result = absl::CancelledError("health: interrupted");

  std::vector<std::string> subjects;
  for (const std::string& dp : opt.dataplanes) {
    subjects.push_back("kpx-" + dp);
    subjects.push_back("kpx-" + dp + "-aggr");
  }
  subjects.push_back("haproxy");
  subjects.push_back("haproxy-aggr");
  const std::string settings =
      absl::StrCat("kpx-*: kpxd defaults (interval 300 ms +-20%, timeout 200 ms, fall 2, rise 2); kpx-*-aggr: ",
                   KpxAggrSettings(opt),
                   "; haproxy: check inter 1s fall 3 rise 2; haproxy-aggr: check inter 100 fall 2 rise 2. "
                   "Detection: SIGKILL of the pod's server -> out of rotation (kpxd: the instant the dataplane "
                   "was programmed, its admin API's health_change, polled every 25 ms; HAProxy: stats socket "
                   "polled every 5 ms). Recovery: "
                   "server restarted as soon as every checker took it out -> back in rotation. ",
                   kills, " kills; with 30 samples p99 is the maximum.");
  r.AddTable({.title = "Health: p50 latency (ms): kill -> out of rotation (detection), restart -> back in (recovery)",
              .suite = "health", .metric = "p50_ms", .subjects = subjects, .baseline = "haproxy", .note = settings});
  r.AddTable({.title = "Health: p99 latency (ms)", .suite = "health", .metric = "p99_ms", .subjects = subjects,
              .baseline = "haproxy"});
  r.AddTable({.title = "Health: probe CPU per 1k backends (% of one core) at a 300 ms interval",
              .suite = "health", .metric = "cpu_pct_per_1k", .subjects = {"kpx-checker", "kpxd", "haproxy"},
              .baseline = "haproxy",
              .note = "kpx-checker: kpxd's checker thread (kpx-health) alone; kpxd: the whole process; "
                      "haproxy: the whole process (nbthread 1, check inter 300ms, same probe rate). Backends are "
                      "AnyIP addresses of one pod, so the pod side of every handshake is also on this machine."});
  r.AddChart({.file = "health-latency-p99.png", .title = "Health checks: p99 latency (lower is better)",
              .suite = "health", .metric = "p99_ms", .subjects = subjects, .y_label = "ms"});
  return result;
}

Subcommand MakeHealthSubcommand() {
  auto opt = std::make_shared<HealthBenchOptions>();
  return {.name = "health",
          .help = "health checks: kill -> out of rotation and restart -> back, kpxd vs HAProxy; probe CPU",
          .order = 50,
          .add_options =
              [opt](CLI::App* cmd) {
                cmd->add_option("--kills", opt->kills, "pod kills per checker group (0: probe CPU only)")
                    ->check(CLI::Range(0, 1000));
                cmd->add_option("--dataplanes", opt->dataplanes, "kpxd dataplanes to measure (uring,xdp)")
                    ->delimiter(',')
                    ->check(CLI::IsMember({"uring", "xdp"}));
                cmd->add_flag("!--no-haproxy", opt->haproxy, "skip the HAProxy peer");
                cmd->add_option("--cpu-backends", opt->cpu_backends, "backends for the probe CPU measurement")
                    ->check(CLI::Range(10, 20000));
                cmd->add_option("--cpu-seconds", opt->cpu_seconds, "CPU measurement window")
                    ->check(CLI::PositiveNumber);
                cmd->add_option("--aggr-interval", opt->aggr_interval, "aggressive kpx setting: interval");
                cmd->add_option("--aggr-timeout", opt->aggr_timeout, "aggressive kpx setting: timeout");
                cmd->add_option("--aggr-fall", opt->aggr_fall, "aggressive kpx setting: fall")->check(CLI::Range(1, 10));
              },
          .run = [opt](Context& ctx) { return RunHealth(*opt, ctx); }};
}

KPX_BENCH_SUBCOMMAND(MakeHealthSubcommand);

}  // namespace
}  // namespace kpx::bench
