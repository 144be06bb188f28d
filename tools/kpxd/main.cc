// kpxd: the kpx node daemon. Flags follow kube-proxy's names where the meaning
// matches; `--flagfile` reads them from a file. The wiring lives in daemon.h.
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <sstream>
#include <string>

#include "absl/time/time.h"
#include "gflags/gflags.h"
#include "glog/logging.h"
#include "tools/kpxd/daemon.h"

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
DEFINE_string(admin_socket, "/run/kpx/kpxd.sock",
              "Unix socket of the admin API (kpxctl talks to it); \"\" disables it");
DEFINE_string(state_dir, "/var/lib/kpx",
              "Operator state kept across restarts: endpoint overrides and manifests pushed "
              "with kpxctl apply; \"\" keeps nothing");
DEFINE_string(status_file, "",
              "If set, kpxd rewrites this JSON file (atomically) after every sync: frontends, "
              "services, in_sync, per-file parse errors. Scripts wait on it.");

namespace {

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

}  // namespace

int main(int argc, char** argv) {
  gflags::SetUsageMessage("kpxd --manifest-dir DIR [flags]: the kpx node service proxy");
  gflags::SetVersionString("0.1.0");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);

  if (FLAGS_manifest_dir.empty()) KPXD_FAIL << "--manifest-dir is required";
  auto algorithm = kpx::uring::ParseLbAlgorithm(FLAGS_lb_algorithm);
  if (!algorithm.ok()) KPXD_FAIL << "--lb-algorithm: " << algorithm.status().message();

  kpx::kpxd::DaemonOptions opts;
  opts.manifest_dir = FLAGS_manifest_dir;
  opts.node = {NodeName(), FLAGS_node_zone};
  opts.dataplane = FLAGS_dataplane;
  opts.uring.bind_device = FLAGS_bind_device;
  opts.uring.workers = FLAGS_workers;
  opts.uring.algorithm = *algorithm;
  opts.uring.connect_timeout = DurationFlag("connect-timeout", FLAGS_connect_timeout);
  opts.uring.idle_timeout = DurationFlag("idle-timeout", FLAGS_idle_timeout);
  opts.uring.max_connections = FLAGS_max_connections;
  opts.drain_timeout = DurationFlag("drain-timeout", FLAGS_drain_timeout);
  opts.status_file = FLAGS_status_file;
  opts.admin_socket = FLAGS_admin_socket;
  opts.state_dir = FLAGS_state_dir;

  // Signals are read through a signalfd in the loop, never in a handler; they
  // are blocked before any thread starts so every thread inherits the mask.
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &mask, nullptr);
  signal(SIGPIPE, SIG_IGN);
  int sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
  PCHECK(sigfd >= 0) << "signalfd";

  auto daemon = kpx::kpxd::Daemon::Create(std::move(opts));
  if (!daemon.ok()) KPXD_FAIL << daemon.status().message();
  return (*daemon)->Run(sigfd);
}
