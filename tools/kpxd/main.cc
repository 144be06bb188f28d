// kpxd: the kpx node daemon. Sources (manifest directory) -> Reconciler ->
// Dataplane (io_uring proxy; XDP once it lands). Flags follow kube-proxy's
// names where the meaning matches; `--flagfile` reads them from a file.
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "controller/reconciler.h"
#include "controller/source/manifest_dir_source.h"
#include "dataplane/uring/uring_proxy.h"
#include "gflags/gflags.h"
#include "glog/logging.h"
#include "nlohmann/json.hpp"

DEFINE_string(manifest_dir, "", "Directory of Service/EndpointSlice manifests to watch (inotify)");
DEFINE_string(hostname_override, "", "Name of this node (default: the hostname)");
DEFINE_string(node_zone, "", "Zone of this node, for topology-aware routing hints");
DEFINE_string(dataplane, "auto", "Dataplane: auto|xdp|uring (auto = uring until XDP lands)");
DEFINE_string(bind_device, "kpx0", "Device that holds the Service VIPs (io_uring dataplane)");
DEFINE_string(cluster_cidr, "", "Pod CIDR of the cluster (masquerade decisions; informational for uring)");
DEFINE_int32(workers, 0, "Datapath worker threads (0 = number of CPUs)");
DEFINE_string(lb_algorithm, "random", "Backend choice: random|round-robin|least-conn");
DEFINE_string(connect_timeout, "1s", "Backend connect timeout before retrying another backend");
DEFINE_string(idle_timeout, "1h", "Close relayed connections idle this long (0 = never)");
DEFINE_string(drain_timeout, "30s", "On SIGTERM, wait this long for connections to finish");
DEFINE_int32(max_connections, 65536, "Maximum relayed connections (beyond: reset)");
DEFINE_string(status_file, "",
              "If set, kpxd rewrites this JSON file (atomically) after every sync: frontends, "
              "services, in_sync, per-file parse errors. Scripts wait on it.");

namespace {

using kpx::controller::Reconciler;

// Configuration errors: one clear line on stderr and exit 2, no stack trace
// (glog's FATAL is for bugs, not for operators' typos).
class Fail {
 public:
  ~Fail() {
    std::cerr << "kpxd: " << ss_.str() << std::endl;
    std::exit(2);
  }
  template <typename T>
  Fail& operator<<(const T& v) {
    ss_ << v;
    return *this;
  }

 private:
  std::ostringstream ss_;
};
#define KPXD_FAIL Fail()
using kpx::controller::SourceUpdate;

absl::Duration DurationFlag(const char* name, const std::string& value) {
  absl::Duration d;
  if (!absl::ParseDuration(value, &d) || d < absl::ZeroDuration()) {
    KPXD_FAIL << "--" << name << "=" << value << ": not a duration (e.g. 500ms, 2s, 1h)";
  }
  return d;
}

std::string NodeName() {
  if (!FLAGS_hostname_override.empty()) return FLAGS_hostname_override;
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  return host;
}

// Time from the oldest file change of the last batch being seen to the
// dataplane being programmed (kube-proxy's network programming latency, as
// far as this node can see it).
absl::Duration g_last_programming_latency;

// Programs a batch of file updates as one diff and reports how long each
// file change took to reach the dataplane.
void ApplyUpdates(std::vector<SourceUpdate> updates, Reconciler* reconciler) {
  if (updates.empty()) return;
  absl::Time oldest = updates.front().observed;
  std::vector<Reconciler::SourceChange> changes;
  changes.reserve(updates.size());
  for (SourceUpdate& u : updates) {
    oldest = std::min(oldest, u.observed);
    if (u.kind == SourceUpdate::Kind::kReplace) {
      changes.push_back({u.source, std::move(u.objects)});
    } else {
      changes.push_back({u.source, std::nullopt});
    }
  }
  absl::Status s = reconciler->UpdateMany(std::move(changes));
  for (const std::string& w : reconciler->TakeWarnings()) LOG(WARNING) << w;
  if (!s.ok()) {
    LOG(ERROR) << "programming the dataplane failed: " << s.message() << " (will retry)";
    return;
  }
  g_last_programming_latency = absl::Now() - oldest;
  LOG(INFO) << "applied " << updates.size() << " file change(s): "
            << reconciler->stats().frontends << " frontends; file change -> dataplane programmed in "
            << absl::FormatDuration(g_last_programming_latency);
}

void WriteStatus(const Reconciler& reconciler, const kpx::controller::ManifestDirSource& source) {
  if (FLAGS_status_file.empty()) return;
  nlohmann::json errors = nlohmann::json::object();
  for (const auto& [file, error] : source.stats().file_errors) {
    if (!error.empty()) errors[file] = error;
  }
  const auto& st = reconciler.stats();
  nlohmann::json status = {
      {"in_sync", reconciler.in_sync()},
      {"frontends", st.frontends},
      {"services", st.services},
      {"syncs", st.syncs},
      {"sync_errors", st.sync_errors},
      {"endpoint_changes", st.endpoint_changes},
      {"last_sync_duration_us", absl::ToInt64Microseconds(st.last_sync_duration)},
      {"last_programming_latency_us", absl::ToInt64Microseconds(g_last_programming_latency)},
      {"parse_errors", source.stats().parse_errors},
      {"files", source.loaded_files()},
      {"updates", source.stats().updates},
      {"file_errors", std::move(errors)},
  };
  std::string tmp = FLAGS_status_file + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << status.dump() << "\n";
  }
  if (std::rename(tmp.c_str(), FLAGS_status_file.c_str()) != 0) {
    PLOG(WARNING) << "cannot write --status-file " << FLAGS_status_file;
  }
}

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage("kpxd --manifest-dir DIR [flags]: the kpx node service proxy");
  gflags::SetVersionString("0.1.0");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);

  if (FLAGS_manifest_dir.empty()) KPXD_FAIL << "--manifest-dir is required";
  if (FLAGS_dataplane != "auto" && FLAGS_dataplane != "uring") {
    KPXD_FAIL << "--dataplane=" << FLAGS_dataplane
                << ": only 'uring' (and 'auto') are available in this build";
  }
  auto algorithm = kpx::uring::ParseLbAlgorithm(FLAGS_lb_algorithm);
  if (!algorithm.ok()) KPXD_FAIL << "--lb-algorithm: " << algorithm.status().message();

  // Signals are read through a signalfd in the main loop, never in a handler.
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &mask, nullptr);  // before any thread starts
  signal(SIGPIPE, SIG_IGN);
  int sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
  PCHECK(sigfd >= 0) << "signalfd";

  kpx::uring::UringProxyOptions opts;
  opts.bind_device = FLAGS_bind_device;
  opts.workers = FLAGS_workers;
  opts.algorithm = *algorithm;
  opts.connect_timeout = DurationFlag("connect-timeout", FLAGS_connect_timeout);
  opts.idle_timeout = DurationFlag("idle-timeout", FLAGS_idle_timeout);
  opts.max_connections = FLAGS_max_connections;
  absl::Duration drain_timeout = DurationFlag("drain-timeout", FLAGS_drain_timeout);
  auto proxy = kpx::uring::UringProxy::Create(opts);
  if (!proxy.ok()) KPXD_FAIL << "io_uring dataplane: " << proxy.status().message();

  auto source = kpx::controller::ManifestDirSource::Create(FLAGS_manifest_dir);
  if (!source.ok()) KPXD_FAIL << source.status().message();

  kpx::controller::NodeInfo node{NodeName(), FLAGS_node_zone};
  Reconciler reconciler(node, proxy->get());
  LOG(INFO) << "kpxd starting: node " << node.name << ", dataplane " << (*proxy)->Name()
            << ", manifests " << FLAGS_manifest_dir;
  ApplyUpdates((*source)->Rescan(), &reconciler);
  WriteStatus(reconciler, **source);
  LOG(INFO) << "initial sync done: " << reconciler.stats().frontends << " frontends, "
            << reconciler.stats().services << " services";

  bool running = true;
  while (running) {
    pollfd fds[2] = {{(*source)->fd(), POLLIN, 0}, {sigfd, POLLIN, 0}};
    int n = poll(fds, 2, reconciler.in_sync() ? -1 : 1000);
    if (n < 0 && errno != EINTR) PLOG(FATAL) << "poll";
    if (!reconciler.in_sync()) {
      if (absl::Status s = reconciler.Resync(); !s.ok()) LOG(ERROR) << "resync: " << s.message();
    }
    if (n > 0 && (fds[0].revents & POLLIN)) ApplyUpdates((*source)->ReadEvents(), &reconciler);
    if (n > 0 && (fds[1].revents & POLLIN)) {
      signalfd_siginfo si;
      while (read(sigfd, &si, sizeof(si)) == sizeof(si)) {
        if (si.ssi_signo == SIGHUP) {
          LOG(INFO) << "SIGHUP: rescanning " << FLAGS_manifest_dir;
          ApplyUpdates((*source)->Rescan(), &reconciler);
        } else {
          LOG(INFO) << "signal " << si.ssi_signo << ": draining (up to "
                    << absl::FormatDuration(drain_timeout) << ")";
          running = false;
        }
      }
    }
    WriteStatus(reconciler, **source);
  }
  (*proxy)->StopAccepting();
  bool idle = (*proxy)->WaitIdle(drain_timeout);
  LOG(INFO) << (idle ? "all connections finished" : "drain timeout reached; closing the rest");
  (*proxy)->Shutdown();
  LOG(INFO) << "kpxd stopped";
  return 0;
}
