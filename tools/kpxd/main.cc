// kpxd: the kpx node daemon. Sources (manifest directory) -> Reconciler ->
// Dataplane (io_uring proxy; XDP once it lands). Flags follow kube-proxy's
// names where the meaning matches; `--flagfile` reads them from a file.
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "controller/reconciler.h"
#include "controller/source/manifest_dir_source.h"
#include "dataplane/uring/uring_proxy.h"
#include "gflags/gflags.h"
#include "glog/logging.h"

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

namespace {

using kpx::controller::Reconciler;
using kpx::controller::SourceUpdate;

absl::Duration DurationFlag(const char* name, const std::string& value) {
  absl::Duration d;
  if (!absl::ParseDuration(value, &d) || d < absl::ZeroDuration()) {
    LOG(QFATAL) << "--" << name << "=" << value << ": not a duration (e.g. 500ms, 2s, 1h)";
  }
  return d;
}

std::string NodeName() {
  if (!FLAGS_hostname_override.empty()) return FLAGS_hostname_override;
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  return host;
}

void ApplyUpdates(std::vector<SourceUpdate> updates, Reconciler* reconciler) {
  for (SourceUpdate& u : updates) {
    absl::Status s = u.kind == SourceUpdate::Kind::kReplace
                         ? reconciler->Update(u.source, std::move(u.objects))
                         : reconciler->RemoveSource(u.source);
    for (const std::string& w : reconciler->TakeWarnings()) LOG(WARNING) << w;
    if (!s.ok()) {
      LOG(ERROR) << "programming the dataplane failed: " << s.message() << " (will retry)";
      continue;
    }
    LOG(INFO) << (u.kind == SourceUpdate::Kind::kReplace ? "applied " : "removed ") << u.source
              << ": " << reconciler->stats().frontends << " frontends; file change -> dataplane "
              << absl::FormatDuration(absl::Now() - u.observed);
  }
}

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage("kpxd --manifest-dir DIR [flags]: the kpx node service proxy");
  gflags::SetVersionString("0.1.0");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);

  if (FLAGS_manifest_dir.empty()) LOG(QFATAL) << "--manifest-dir is required";
  if (FLAGS_dataplane != "auto" && FLAGS_dataplane != "uring") {
    LOG(QFATAL) << "--dataplane=" << FLAGS_dataplane
                << ": only 'uring' (and 'auto') are available in this build";
  }
  auto algorithm = kpx::uring::ParseLbAlgorithm(FLAGS_lb_algorithm);
  if (!algorithm.ok()) LOG(QFATAL) << "--lb-algorithm: " << algorithm.status().message();

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
  if (!proxy.ok()) LOG(QFATAL) << "io_uring dataplane: " << proxy.status().message();

  auto source = kpx::controller::ManifestDirSource::Create(FLAGS_manifest_dir);
  if (!source.ok()) LOG(QFATAL) << source.status().message();

  kpx::controller::NodeInfo node{NodeName(), FLAGS_node_zone};
  Reconciler reconciler(node, proxy->get());
  LOG(INFO) << "kpxd starting: node " << node.name << ", dataplane " << (*proxy)->Name()
            << ", manifests " << FLAGS_manifest_dir;
  ApplyUpdates((*source)->Rescan(), &reconciler);
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
  }
  (*proxy)->StopAccepting();
  bool idle = (*proxy)->WaitIdle(drain_timeout);
  LOG(INFO) << (idle ? "all connections finished" : "drain timeout reached; closing the rest");
  (*proxy)->Shutdown();
  LOG(INFO) << "kpxd stopped";
  return 0;
}
