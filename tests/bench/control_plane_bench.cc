// kpxd's control plane without a kernel dataplane, stage by stage, at S
// Services x 10 endpoints (one manifest file per Service, as gen_rules.py and
// `kpx-bench control` write them): what kpxd's cold start and one change cost
// on our side of the Dataplane interface. A null dataplane takes the diffs.
//   control_plane_bench --benchmark_filter='/10000'      # one S
#include <fcntl.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "benchmark/benchmark.h"
#include "controller/manifest_parser.h"
#include "controller/reconciler.h"
#include "controller/source/manifest_dir_source.h"
#include "controller/source/manifest_files.h"
#include "dataplane/dataplane.h"
#include "dataplane/health/health_spec.h"
#include "glog/logging.h"
#include "nlohmann/json.hpp"
#include "tools/kpxd/daemon.h"

namespace kpx::bench {
namespace {

namespace fs = std::filesystem;
using controller::ObjectSet;
using controller::Reconciler;

constexpr int kEndpoints = 10;

// Takes diffs and keeps nothing but counts: the cost measured is ours.
class NullDataplane : public dataplane::Dataplane {
 public:
  std::string_view Name() const override { return "null"; }
  absl::Status Apply(const controller::TableDiff& diff) override {
    ops_ += diff.size();
    return absl::OkStatus();
  }
  dataplane::DataplaneStats Stats() const override { return {}; }
  uint64_t ops() const { return ops_; }

 private:
  uint64_t ops_ = 0;
};

// The manifest of Service i, in gen_rules.py's layout; `variant` moves its
// last endpoint (one endpoint change).
std::string Manifest(int i, int variant = 0) {
  std::string y = absl::StrFormat(
      "apiVersion: v1\nkind: Service\nmetadata:\n  name: svc-%05d\n  namespace: bench\nspec:\n"
      "  type: ClusterIP\n  clusterIP: 10.%d.%d.%d\n  ports:\n  - name: http\n    protocol: TCP\n"
      "    port: 80\n    targetPort: 8080\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
      "metadata:\n  name: svc-%05d-http\n  namespace: bench\n  labels:\n"
      "    kubernetes.io/service-name: svc-%05d\naddressType: IPv4\nports:\n- name: http\n"
      "  protocol: TCP\n  port: 8080\nendpoints:\n",
      i, 100 + (i + 1) / 65536, ((i + 1) / 256) % 256, (i + 1) % 256, i, i);
  for (int e = 0; e < kEndpoints; ++e) {
    int n = i * kEndpoints + e + 1;
    if (e == kEndpoints - 1 && variant != 0) n = 8000000 + variant;
    absl::StrAppendFormat(&y, "- addresses: [\"10.%d.%d.%d\"]\n  conditions: {ready: true}\n",
                          200 + n / 65536 / 256, (n / 256) % 256, n % 256);
  }
  return y;
}

std::string FileName(int i) { return absl::StrFormat("bench_svc-%05d.yaml", i); }

void WriteFile(const fs::path& p, const std::string& s) {
  std::ofstream out(p, std::ios::trunc);
  out << s;
}

// One directory of S manifest files per S, made once per process.
const fs::path& ManifestDir(int services) {
  static auto* dirs = new std::map<int, fs::path>();
  auto it = dirs->find(services);
  if (it != dirs->end()) return it->second;
  fs::path dir = fs::temp_directory_path() / absl::StrCat("kpx-cpbench-", getpid(), "-", services);
  fs::remove_all(dir);
  fs::create_directories(dir);
  for (int i = 0; i < services; ++i) WriteFile(dir / FileName(i), Manifest(i));
  std::atexit([] {
    for (const auto& [s, d] : *dirs) fs::remove_all(d);
  });
  return dirs->emplace(services, dir).first->second;
}

std::string ReadWhole(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void Finish(benchmark::State& st, int services) {
  st.SetItemsProcessed(st.iterations() * services);
  st.counters["S"] = services;
}

// ---- cold start, one stage at a time.

void BM_ListFiles(benchmark::State& st) {
  const fs::path& dir = ManifestDir(st.range(0));
  for (auto _ : st) {
    auto files = controller::ListManifestFiles(dir.string());
    benchmark::DoNotOptimize(files);
  }
  Finish(st, st.range(0));
}

void BM_ReadFiles(benchmark::State& st) {
  const fs::path& dir = ManifestDir(st.range(0));
  std::vector<std::string> files = *controller::ListManifestFiles(dir.string());
  for (auto _ : st) {
    size_t bytes = 0;
    for (const std::string& f : files) bytes += ReadWhole(f).size();
    benchmark::DoNotOptimize(bytes);
  }
  Finish(st, st.range(0));
}

void BM_ParseFiles(benchmark::State& st) {
  const int services = st.range(0);
  std::vector<std::string> contents;
  for (int i = 0; i < services; ++i) contents.push_back(Manifest(i));
  for (auto _ : st) {
    for (int i = 0; i < services; ++i) {
      auto r = controller::ParseManifest(contents[i], FileName(i));
      if (!r.ok()) st.SkipWithError(std::string(r.status().message()).c_str());
      benchmark::DoNotOptimize(r);
    }
  }
  Finish(st, services);
}

std::vector<Reconciler::SourceChange> ParsedChanges(int services) {
  std::vector<Reconciler::SourceChange> changes;
  for (int i = 0; i < services; ++i) {
    changes.push_back({FileName(i), controller::ParseManifest(Manifest(i), FileName(i))->objects});
  }
  return changes;
}

// Object store + translate + diff + Apply (null) for every file at once, as
// kpxd's first sync does.
void BM_ReconcileAll(benchmark::State& st) {
  const int services = st.range(0);
  const std::vector<Reconciler::SourceChange> parsed = ParsedChanges(services);
  for (auto _ : st) {
    st.PauseTiming();
    std::vector<Reconciler::SourceChange> changes = parsed;
    NullDataplane dp;
    auto rec = std::make_unique<Reconciler>(controller::NodeInfo{"node", ""}, &dp);
    st.ResumeTiming();
    absl::Status s = rec->UpdateMany(std::move(changes));
    if (!s.ok() || rec->stats().frontends != static_cast<size_t>(services)) {
      st.SkipWithError("reconcile did not produce S frontends");
    }
    st.PauseTiming();
    rec.reset();  // destruction is not part of a start
    st.ResumeTiming();
  }
  Finish(st, services);
}

// The health checker's probe targets from the whole table (what kpxd builds
// after its first sync when health checks are on).
void BM_HealthTargets(benchmark::State& st) {
  const int services = st.range(0);
  NullDataplane dp;
  Reconciler rec(controller::NodeInfo{"node", ""}, &dp);
  (void)rec.UpdateMany(ParsedChanges(services));
  for (auto _ : st) {
    health::HealthTargets t = health::BuildTargets(rec.desired(), health::HealthSpec{});
    benchmark::DoNotOptimize(t);
  }
  Finish(st, services);
}

// Directory scan + read + parse + reconcile: kpxd's first sync minus the
// dataplane and the process around it.
void BM_InitialSync(benchmark::State& st) {
  const int services = st.range(0);
  const fs::path& dir = ManifestDir(services);
  for (auto _ : st) {
    NullDataplane dp;
    auto rec = std::make_unique<Reconciler>(controller::NodeInfo{"node", ""}, &dp);
    auto src = controller::ManifestDirSource::Create(dir.string());
    std::vector<controller::SourceUpdate> updates = (*src)->Rescan();
    std::vector<Reconciler::SourceChange> changes;
    for (auto& u : updates) changes.push_back({u.source, std::move(u.objects)});
    (void)rec->UpdateMany(std::move(changes));
    if (rec->stats().frontends != static_cast<size_t>(services)) st.SkipWithError("not S frontends");
    st.PauseTiming();
    rec.reset();
    src->reset();
    st.ResumeTiming();
  }
  Finish(st, services);
}

// ---- one change at scale: must not grow with S.

// A file rewritten (write + rename) -> inotify -> parse -> diff -> Apply.
void BM_OneFileChange(benchmark::State& st) {
  const int services = st.range(0);
  const fs::path& dir = ManifestDir(services);
  NullDataplane dp;
  Reconciler rec(controller::NodeInfo{"node", ""}, &dp);
  auto src = *controller::ManifestDirSource::Create(dir.string());
  {
    std::vector<Reconciler::SourceChange> changes;
    for (auto& u : src->Rescan()) changes.push_back({u.source, std::move(u.objects)});
    (void)rec.UpdateMany(std::move(changes));
  }
  const int victim = services / 2;
  const fs::path target = dir / FileName(victim);
  const fs::path tmp = dir / ("." + FileName(victim) + ".tmp");
  int k = 0;
  for (auto _ : st) {
    WriteFile(tmp, Manifest(victim, ++k));
    fs::rename(tmp, target);
    std::vector<controller::SourceUpdate> updates = src->ReadEvents();
    std::vector<Reconciler::SourceChange> changes;
    for (auto& u : updates) changes.push_back({u.source, std::move(u.objects)});
    if (changes.size() != 1) st.SkipWithError("expected one update");
    (void)rec.UpdateMany(std::move(changes));
  }
  WriteFile(target, Manifest(victim));
  Finish(st, services);
  st.SetItemsProcessed(st.iterations());
}

// kpxd's Daemon on the null dataplane, its reconcile loop on a thread: the
// admin API's POST /v1/endpoints handler (override -> programmed -> the
// Service's JSON), and one manifest rewrite until the status file counts it.
class DaemonWorld {
 public:
  explicit DaemonWorld(int services) {
    work_ = fs::temp_directory_path() / absl::StrCat("kpx-cpbench-d-", getpid(), "-", services);
    fs::remove_all(work_);
    fs::create_directories(work_ / "manifests");
    for (int i = 0; i < services; ++i) WriteFile(work_ / "manifests" / FileName(i), Manifest(i));
    kpxd::DaemonOptions o;
    o.manifest_dir = (work_ / "manifests").string();
    o.status_file = (work_ / "status.json").string();
    o.state_dir = (work_ / "state").string();
    o.node = {"node", ""};
    o.health = false;  // would probe S x 10 made-up addresses
    daemon_ = std::move(*kpxd::Daemon::Create(o, std::make_unique<NullDataplane>()));
    // Run() stops on a signalfd record saying SIGTERM: a pipe stands in.
    if (pipe2(stop_, O_NONBLOCK | O_CLOEXEC) != 0) std::abort();
    thread_ = std::thread([this] { daemon_->Run(stop_[0]); });
    // Wait for the initial sync (a loop closure runs after it).
    daemon_->loop().RunSync([] {}, absl::Minutes(10));
  }
  ~DaemonWorld() {
    signalfd_siginfo si{};
    si.ssi_signo = SIGTERM;
    if (write(stop_[1], &si, sizeof si) == sizeof si) thread_.join();
    else thread_.detach();
    daemon_.reset();
    close(stop_[0]);
    close(stop_[1]);
    fs::remove_all(work_);
  }
  kpxd::Daemon& daemon() { return *daemon_; }
  const fs::path& work() const { return work_; }

 private:
  fs::path work_;
  std::unique_ptr<kpxd::Daemon> daemon_;
  int stop_[2] = {-1, -1};
  std::thread thread_;
};

DaemonWorld& World(int services) {
  static auto* worlds = new std::map<int, std::unique_ptr<DaemonWorld>>();
  auto& w = (*worlds)[services];
  if (w == nullptr) {
    w = std::make_unique<DaemonWorld>(services);
    std::atexit([] { worlds->clear(); });
  }
  return *w;
}

void BM_DaemonApiEndpointsSet(benchmark::State& st) {
  const int services = st.range(0);
  DaemonWorld& w = World(services);
  const std::string service = absl::StrFormat("bench/svc-%05d", services / 2);
  int k = 0;
  for (auto _ : st) {
    nlohmann::json eps = nlohmann::json::array();
    for (int i = 0; i + 1 < kEndpoints; ++i) eps.push_back(absl::StrFormat("10.203.0.%d:8080", i + 1));
    ++k;
    eps.push_back(absl::StrFormat("10.204.%d.%d:8080", (k / 250) % 250, k % 250 + 1));
    nlohmann::json req = {{"op", "set"}, {"service", service}, {"endpoints", eps}};
    int code = 0;
    w.daemon().loop().RunSync([&] { code = w.daemon().HandleEndpoints(req).first; }, absl::Seconds(30));
    if (code != 200) st.SkipWithError("POST /v1/endpoints did not answer 200");
  }
  Finish(st, services);
  st.SetItemsProcessed(st.iterations());
}

void BM_DaemonServicesJsonOne(benchmark::State& st) {
  const int services = st.range(0);
  DaemonWorld& w = World(services);
  const std::string service = absl::StrFormat("bench/svc-%05d", services / 3);
  for (auto _ : st) {
    size_t n = 0;
    w.daemon().loop().RunSync([&] { n = w.daemon().ServicesJson(service).second["services"].size(); },
                              absl::Seconds(30));
    if (n != 1) st.SkipWithError("GET /v1/services?name= did not return the Service");
  }
  Finish(st, services);
  st.SetItemsProcessed(st.iterations());
}

// Reads the status file's "updates" counter.
int64_t StatusUpdates(const fs::path& status) {
  nlohmann::json j = nlohmann::json::parse(ReadWhole(status.string()), nullptr, false);
  return j.is_object() ? j.value("updates", int64_t{-1}) : -1;
}

void BM_DaemonFileChange(benchmark::State& st) {
  const int services = st.range(0);
  DaemonWorld& w = World(services);
  const int victim = services / 4;
  const fs::path dir = w.work() / "manifests";
  const fs::path status = w.work() / "status.json";
  int ino = inotify_init1(IN_CLOEXEC);
  inotify_add_watch(ino, w.work().c_str(), IN_MOVED_TO | IN_CLOSE_WRITE);
  int k = 0;
  char buf[4096];
  for (auto _ : st) {
    st.PauseTiming();
    int64_t before = StatusUpdates(status);
    WriteFile(dir / ("." + FileName(victim) + ".tmp"), Manifest(victim, ++k));
    st.ResumeTiming();
    fs::rename(dir / ("." + FileName(victim) + ".tmp"), dir / FileName(victim));
    // Bounded: a lost update fails the benchmark instead of hanging it.
    bool seen = false;
    for (int i = 0; i < 1000 && !seen; ++i) {
      seen = StatusUpdates(status) > before;
      if (!seen && read(ino, buf, sizeof buf) < 0) break;
    }
    if (!seen) st.SkipWithError("the status file never counted the update");
  }
  close(ino);
  Finish(st, services);
  st.SetItemsProcessed(st.iterations());
}

#define KPX_SIZES Arg(1000)->Arg(10000)->Arg(50000)
BENCHMARK(BM_ListFiles)->KPX_SIZES->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK(BM_ReadFiles)->KPX_SIZES->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK(BM_ParseFiles)->KPX_SIZES->Unit(benchmark::kMillisecond)->Iterations(2);
BENCHMARK(BM_ReconcileAll)->KPX_SIZES->Unit(benchmark::kMillisecond)->Iterations(2);
BENCHMARK(BM_HealthTargets)->KPX_SIZES->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK(BM_InitialSync)->KPX_SIZES->Unit(benchmark::kMillisecond)->Iterations(2);
BENCHMARK(BM_OneFileChange)->KPX_SIZES->Unit(benchmark::kMicrosecond)->Iterations(200);
BENCHMARK(BM_DaemonApiEndpointsSet)->KPX_SIZES->Unit(benchmark::kMicrosecond)->Iterations(200);
BENCHMARK(BM_DaemonServicesJsonOne)->KPX_SIZES->Unit(benchmark::kMicrosecond)->Iterations(200);
BENCHMARK(BM_DaemonFileChange)->KPX_SIZES->Unit(benchmark::kMicrosecond)->Iterations(200);

}  // namespace
}  // namespace kpx::bench

int main(int argc, char** argv) {
  FLAGS_minloglevel = 1;  // kpxd logs every applied change at INFO
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
