// kpxd: the kpx node daemon. Flags follow kube-proxy's names where the meaning
// matches; `--flagfile` reads them from a file. The wiring lives in daemon.h.
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/statfs.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "gflags/gflags.h"
#include "glog/logging.h"
#include "dataplane/xdp/interfaces.h"
#include "kpx/abi.h"
#include "tools/kpxd/daemon.h"
#include "tools/kpxd/http_endpoints.h"

DEFINE_string(manifest_dir, "", "Directory of Service/EndpointSlice manifests to watch (inotify)");
DEFINE_string(kubeconfig, "",
              "kubeconfig of the cluster to watch (Services, EndpointSlices). With neither this, "
              "--master nor --manifest-dir, kpxd uses the in-cluster service account");
DEFINE_string(master, "", "Kubernetes API server URL (overrides the kubeconfig's server)");
DEFINE_string(hostname_override, "", "Name of this node (default: the hostname)");
DEFINE_string(node_zone, "", "Zone of this node, for topology-aware routing hints");
DEFINE_string(dataplane, "auto",
              "Dataplane: xdp (eBPF: XDP + tc), uring (io_uring proxy), or auto = xdp when it "
              "loads and attaches here, else uring (the log says why)");
DEFINE_string(interfaces, "",
              "Comma-separated interfaces for the XDP program (uplinks, where clients and "
              "NodePort traffic arrive). Default: every non-loopback interface with an IPv4 "
              "address except --bind-device");
DEFINE_string(tc_interfaces, "",
              "Comma-separated pod-facing interfaces for the tc ingress program (pods talking to "
              "Services, backend replies). Default: every non-loopback interface without an "
              "IPv4 address (pod veths) except --bind-device, and every veth that appears "
              "while kpxd runs (rtnetlink link events)");
DEFINE_string(xdp_mode, "auto", "XDP attach mode: auto (native, else generic)|native|generic");
DEFINE_int32(maglev_table_size, KPX_MAGLEV_M_DEFAULT,
             "Upper bound of a Service's Maglev lookup table (prime); each Service uses the "
             "smallest listed prime >= 100 x its backends, up to this");
// Map sizes apply when kpxd creates the maps; pinned maps keep theirs (a
// change needs `kpxd --cleanup`, which interrupts traffic).
DEFINE_uint32(bpf_max_frontends, 0, "kpx_services entries: Service frontends (0 = KPX_MAX_FRONTENDS)");
DEFINE_uint32(bpf_max_backends, 0, "kpx_backends slots: distinct backend ip:ports + 1 (0 = KPX_MAX_BACKENDS)");
DEFINE_uint32(bpf_max_services, 0, "kpx_svc_stats slots: frontends + 1 (0 = KPX_MAX_SERVICES)");
DEFINE_uint32(bpf_maglev_chunks, 0,
              "Maglev slot pool limit in chunks of 2^18 slots (2 MiB of kernel memory each, created as needed; "
              "0 = KPX_MAGLEV_CHUNKS = 1024); 10k Services of 10 endpoints use ~40");
DEFINE_uint32(bpf_conntrack_size, 0, "kpx_ct LRU entries: established flows, two per flow (0 = KPX_CT_MAX)");
DEFINE_uint32(bpf_conntrack_syn_size, 0,
              "kpx_ct_syn LRU entries: half-open flows (SYN seen, handshake not completed), one or two "
              "each; a SYN flood churns only this map (0 = KPX_CT_SYN_MAX)");
DEFINE_string(bpf_snat_port_range, "61000-65535",
              "Source ports of masqueraded eBPF flows, inclusive (MIN-MAX, 1024-65535); keep it outside "
              "the node's net.ipv4.ip_local_port_range");
DEFINE_uint32(bpf_affinity_size, 0, "kpx_affinity LRU entries (0 = KPX_AFFINITY_MAX)");
DEFINE_string(bpf_pin_dir, "", "Where kpx's BPF maps and links are pinned (default /sys/fs/bpf/kpx/v3, the ABI version; a kpxd refuses to start over another version's pins and names the --cleanup to run)");
DEFINE_bool(health_checks, true,
            "Probe backends and take failing ones out of rotation (EndpointSlice readiness "
            "always wins: health can only remove more)");
DEFINE_string(health_check, "tcp", "Default check: tcp (connect) | http (GET --health-path, 2xx/3xx)");
DEFINE_string(health_path, "/", "Default HTTP check path");
DEFINE_string(health_interval, "300ms", "Default probe interval (jittered +-20%)");
DEFINE_string(health_timeout, "200ms", "Default probe timeout");
DEFINE_int32(health_rise, 2, "Consecutive successes that bring a backend back");
DEFINE_int32(health_fall, 2, "Consecutive failures that take a backend out");
DEFINE_string(health_suspect_interval, "100ms",
              "Gap before the confirming probe after a failure (HAProxy's fastinter), and between "
              "probes of a Down backend that answered again");
DEFINE_string(health_down_backoff, "500ms",
              "First probe gap once a backend is Down; doubles per failed probe (HAProxy's downinter)");
DEFINE_string(health_down_backoff_max, "5s",
              "Cap of the Down back-off: a pod that comes back is in rotation at most this + rise x "
              "--health-suspect-interval later");
DEFINE_string(netns, "",
              "Enter network namespace /run/netns/NAME before anything else (labs and tests; "
              "unlike `ip netns exec` it keeps the host's mount namespace, so /sys/fs/bpf pins "
              "outlive the process and a restart is hitless)");
DEFINE_bool(cleanup, false,
            "Detach kpx's XDP/tc programs, unpin its maps, remove --bind-device, and exit");
DEFINE_string(bind_device, "kpx0", "Device that holds the Service VIPs (io_uring dataplane)");
DEFINE_string(vip_local_routes, "",
              "io_uring dataplane: comma-separated IPv4 prefixes (e.g. the cluster's Service CIDR "
              "10.96.0.0/12) made local with one `local` route each on --bind-device instead of one "
              "/32 address per VIP; VIPs outside them still get an address. Thousands of addresses on "
              "one link cost the kernel a walk of all of them per add; a route costs nothing per VIP. "
              "Every address in the prefixes then answers locally (unserved ports: RST)");
DEFINE_string(cluster_cidr, "",
              "Pod CIDR of the cluster. eBPF dataplane: clients outside it are masqueraded to "
              "the node address for ClusterIPs, and for NodePort/externalIP/LoadBalancer "
              "frontends with externalTrafficPolicy Cluster (all clients of those when unset), "
              "like kube-proxy; informational for uring");
DEFINE_int32(workers, 0, "Datapath worker threads (0 = number of CPUs)");
DEFINE_string(lb_algorithm, "random", "Backend choice: random|round-robin|least-conn");
DEFINE_string(relay, "splice",
              "How the io_uring dataplane moves bytes: copy (recv/send through user-space "
              "buffers) or splice (the same, but a direction that has carried --splice-after "
              "bytes switches to splice(2): no copy through user space for bulk flows)");
DEFINE_int64(splice_after, 1 << 20, "Bytes a direction carries before --relay=splice switches it");
DEFINE_int32(splice_pipe_size, 1 << 20, "Pipe capacity per spliced direction (bytes)");
DEFINE_string(worker_slice, "3ms",
              "Scheduler time slice asked for each io_uring worker thread (EEVDF; 0 = the "
              "kernel's default): a worker is less often preempted mid-batch by the peers it "
              "wakes, which cuts tail latency (docs/BENCHMARKS.md)");
DEFINE_string(connect_timeout, "1s", "Backend connect timeout before retrying another backend");
DEFINE_string(idle_timeout, "1h", "Close relayed connections idle this long (0 = never)");
DEFINE_string(drain_timeout, "30s", "On SIGTERM, wait this long for connections to finish");
DEFINE_int32(max_connections, 65536, "Maximum relayed connections (beyond: reset)");
DEFINE_string(admin_socket, "/run/kpx/kpxd.sock",
              "Unix socket of the admin API (kpxctl talks to it); \"\" disables it");
DEFINE_string(state_dir, "/var/lib/kpx",
              "Operator state kept across restarts: endpoint overrides and manifests pushed "
              "with kpxctl apply; \"\" keeps nothing");
DEFINE_string(metrics_bind_address, "127.0.0.1:10249",
              "HOST:PORT of the Prometheus /metrics endpoint (kube-proxy's flag and default); "
              "\"\" disables it; port 0 = any free port (logged and in --status-file)");
DEFINE_string(healthz_bind_address, "0.0.0.0:10256",
              "HOST:PORT of /healthz and /livez (kube-proxy's flag and default); \"\" disables");
DEFINE_string(healthz_timeout, "60s",
              "/healthz and /livez answer 503 once a change has waited this long to be "
              "programmed (kube-proxy: 2 x its sync period)");
DEFINE_string(status_file, "",
              "If set, kpxd rewrites this JSON file (atomically) after every sync: frontends, "
              "services, in_sync, per-file parse errors. Scripts wait on it.");

#ifdef KPX_WITH_JEMALLOC
// jemalloc's options, read at its start. It keeps freed pages for reuse and,
// without a background thread, gives them back only when the process
// allocates again: after a cold start's transient data (~60 MB at 10k
// Services: parsed trees, prebuilt tables) an idle kpxd kept them all
// (285 MiB RSS where glibc's malloc left 235). A purge thread and a 1 s
// decay return them (223 MiB 15 s after the start).
extern "C" {
extern const char* malloc_conf;
const char* malloc_conf = "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0";
}
#endif

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

void EnterNetns(const std::string& name) {
  std::string path = "/run/netns/" + name;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) {
    KPXD_FAIL << "--netns=" << name << ": cannot enter " << path << ": " << strerror(errno);
  }
  close(fd);
}

// bpffs must be mounted for pinned maps. Under `ip netns exec` (a private
// mount namespace with a fresh /sys) it is not: mount one there, and say that
// its pins die with that namespace.
void EnsureBpffs() {
  struct statfs st;
  if (statfs("/sys/fs/bpf", &st) == 0 && static_cast<uint32_t>(st.f_type) == 0xcafe4a11u) return;
  if (mount("bpf", "/sys/fs/bpf", "bpf", 0, "mode=0700") != 0) {
    LOG(WARNING) << "/sys/fs/bpf is not a bpffs and mounting one failed: " << strerror(errno);
    return;
  }
  LOG(WARNING) << "mounted a bpffs at /sys/fs/bpf in this mount namespace; pins made here "
                  "disappear with it (run kpxd in the host mount namespace, or use --netns, "
                  "for hitless restarts)";
}

std::vector<std::string> SplitList(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

// The default XDP (with IPv4) and tc (without: pod veths) interface lists.
void DefaultInterfaces(kpx::xdp::XdpOptions* x) {
  auto ifaces = kpx::xdp::ListInterfaces();
  if (!ifaces.ok()) KPXD_FAIL << "listing interfaces: " << ifaces.status().message();
  bool want_xdp = FLAGS_interfaces.empty(), want_tc = FLAGS_tc_interfaces.empty();
  std::vector<std::string> xdp_list, tc_list;
  for (const auto& i : *ifaces) {
    if (i.loopback || i.name == FLAGS_bind_device) continue;
    (i.addrs.empty() ? tc_list : xdp_list).push_back(i.name);
  }
  x->xdp_interfaces = want_xdp ? xdp_list : SplitList(FLAGS_interfaces);
  x->tc_interfaces = want_tc ? tc_list : SplitList(FLAGS_tc_interfaces);
  // Pods started later get their veth then: follow link events.
  x->watch_veths = want_tc;
  // The tc program also runs behind XDP on the uplinks: XDP passes it the
  // packets it must answer with a RST where XDP_TX is unsafe (veth peers).
  for (const std::string& name : *x->xdp_interfaces) {
    if (std::find(x->tc_interfaces.begin(), x->tc_interfaces.end(), name) ==
        x->tc_interfaces.end()) {
      x->tc_interfaces.push_back(name);
    }
  }
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

  if (!FLAGS_netns.empty()) EnterNetns(FLAGS_netns);
  if (FLAGS_dataplane != "uring" || FLAGS_cleanup) EnsureBpffs();
  std::string pin_dir = FLAGS_bpf_pin_dir.empty() ? kpx::xdp::DefaultPinDir() : FLAGS_bpf_pin_dir;
  if (FLAGS_cleanup) {
    absl::Status s = kpx::xdp::XdpDataplane::Cleanup(pin_dir);
    if (!s.ok()) KPXD_FAIL << "--cleanup: " << s.message();
    // The io_uring dataplane's VIP device: remove it only if kpx made it.
    std::string cmd = "ip link del " + FLAGS_bind_device + " 2>/dev/null";
    if (!FLAGS_bind_device.empty() && FLAGS_bind_device.rfind("kpx", 0) == 0) {
      (void)!std::system(cmd.c_str());
    }
    std::cerr << "kpxd: cleaned up " << pin_dir << " and " << FLAGS_bind_device << std::endl;
    return 0;
  }
  bool use_api = !FLAGS_kubeconfig.empty() || !FLAGS_master.empty() || FLAGS_manifest_dir.empty();
  auto algorithm = kpx::uring::ParseLbAlgorithm(FLAGS_lb_algorithm);
  if (!algorithm.ok()) KPXD_FAIL << "--lb-algorithm: " << algorithm.status().message();

  kpx::kpxd::DaemonOptions opts;
  opts.manifest_dir = FLAGS_manifest_dir;
  opts.use_api = use_api;
  opts.kubeconfig = FLAGS_kubeconfig;
  opts.master = FLAGS_master;
  opts.node = {NodeName(), FLAGS_node_zone};
  opts.dataplane = FLAGS_dataplane;
  opts.uring.bind_device = FLAGS_bind_device;
  for (absl::string_view part : absl::StrSplit(FLAGS_vip_local_routes, ',', absl::SkipWhitespace())) {
    auto cidr = kpx::xdp::ParseIpv4Cidr(std::string(absl::StripAsciiWhitespace(part)));
    if (!cidr.ok()) KPXD_FAIL << "--vip-local-routes: " << cidr.status().message();
    opts.uring.vip_local_routes.push_back(*cidr);
  }
  opts.uring.workers = FLAGS_workers;
  opts.uring.algorithm = *algorithm;
  opts.uring.connect_timeout = DurationFlag("connect-timeout", FLAGS_connect_timeout);
  opts.uring.idle_timeout = DurationFlag("idle-timeout", FLAGS_idle_timeout);
  opts.uring.max_connections = FLAGS_max_connections;
  if (FLAGS_relay == "copy") {
    opts.uring.relay = kpx::uring::RelayMode::kCopy;
  } else if (FLAGS_relay == "splice") {
    opts.uring.relay = kpx::uring::RelayMode::kSplice;
  } else {
    KPXD_FAIL << "--relay=" << FLAGS_relay << ": must be copy or splice";
  }
  if (FLAGS_splice_after < 0) KPXD_FAIL << "--splice-after: must be >= 0";
  opts.uring.splice_after_bytes = FLAGS_splice_after;
  opts.uring.pipe_size = FLAGS_splice_pipe_size;
  opts.uring.worker_slice = DurationFlag("worker-slice", FLAGS_worker_slice);
  opts.drain_timeout = DurationFlag("drain-timeout", FLAGS_drain_timeout);
  opts.xdp.pin_dir = pin_dir;
  auto xdp_mode = kpx::xdp::ParseXdpMode(FLAGS_xdp_mode);
  if (!xdp_mode.ok()) KPXD_FAIL << "--xdp-mode: " << xdp_mode.status().message();
  opts.xdp.xdp_mode = *xdp_mode;
  if (FLAGS_maglev_table_size < 3 || FLAGS_maglev_table_size > KPX_MAGLEV_M_MAX) {
    KPXD_FAIL << "--maglev-table-size=" << FLAGS_maglev_table_size << ": must be 3.."
              << KPX_MAGLEV_M_MAX;
  }
  opts.xdp.maglev_max_m = FLAGS_maglev_table_size;
  if (FLAGS_bpf_maglev_chunks > (1u << (32 - KPX_MAGLEV_CHUNK_SHIFT))) {
    KPXD_FAIL << "--bpf-maglev-chunks=" << FLAGS_bpf_maglev_chunks << ": at most "
              << (1u << (32 - KPX_MAGLEV_CHUNK_SHIFT)) << " (pool offsets are 32-bit)";
  }
  opts.xdp.map_sizes = {.frontends = FLAGS_bpf_max_frontends,
                        .backends = FLAGS_bpf_max_backends,
                        .services = FLAGS_bpf_max_services,
                        .maglev_chunks = FLAGS_bpf_maglev_chunks,
                        .conntrack = FLAGS_bpf_conntrack_size,
                        .conntrack_syn = FLAGS_bpf_conntrack_syn_size,
                        .affinity = FLAGS_bpf_affinity_size};
  auto snat_ports = kpx::xdp::ParsePortRange(FLAGS_bpf_snat_port_range);
  if (!snat_ports.ok()) KPXD_FAIL << "--bpf-snat-port-range: " << snat_ports.status().message();
  opts.xdp.snat_port_min = snat_ports->min;
  opts.xdp.snat_port_max = snat_ports->max;
  if (!FLAGS_cluster_cidr.empty()) {
    auto cidr = kpx::xdp::ParseIpv4Cidr(FLAGS_cluster_cidr);
    if (!cidr.ok()) KPXD_FAIL << "--cluster-cidr: " << cidr.status().message();
    opts.xdp.cluster_cidr = *cidr;
  }
  if (FLAGS_dataplane != "uring") DefaultInterfaces(&opts.xdp);
  opts.health = FLAGS_health_checks;
  if (FLAGS_health_check != "tcp" && FLAGS_health_check != "http") {
    KPXD_FAIL << "--health-check=" << FLAGS_health_check << ": must be tcp or http";
  }
  opts.health_defaults.type =
      FLAGS_health_check == "http" ? kpx::health::CheckType::kHttp : kpx::health::CheckType::kTcp;
  opts.health_defaults.path = FLAGS_health_path;
  opts.health_defaults.interval = DurationFlag("health-interval", FLAGS_health_interval);
  opts.health_defaults.timeout = DurationFlag("health-timeout", FLAGS_health_timeout);
  if (FLAGS_health_rise < 1 || FLAGS_health_fall < 1) KPXD_FAIL << "--health-rise/--health-fall must be >= 1";
  opts.health_defaults.rise = FLAGS_health_rise;
  opts.health_defaults.fall = FLAGS_health_fall;
  opts.health_defaults.suspect_interval = DurationFlag("health-suspect-interval", FLAGS_health_suspect_interval);
  opts.health_defaults.down_backoff = DurationFlag("health-down-backoff", FLAGS_health_down_backoff);
  opts.health_defaults.down_backoff_max = DurationFlag("health-down-backoff-max", FLAGS_health_down_backoff_max);
  if (opts.health_defaults.down_backoff_max < opts.health_defaults.down_backoff) {
    KPXD_FAIL << "--health-down-backoff-max=" << FLAGS_health_down_backoff_max << " is below --health-down-backoff="
              << FLAGS_health_down_backoff;
  }
  opts.status_file = FLAGS_status_file;
  opts.admin_socket = FLAGS_admin_socket;
  opts.state_dir = FLAGS_state_dir;
  opts.metrics_bind_address = FLAGS_metrics_bind_address;
  opts.healthz_bind_address = FLAGS_healthz_bind_address;
  opts.healthz_timeout = DurationFlag("healthz-timeout", FLAGS_healthz_timeout);
  for (auto [flag, value] : {std::pair{"metrics-bind-address", FLAGS_metrics_bind_address},
                             std::pair{"healthz-bind-address", FLAGS_healthz_bind_address}}) {
    if (value.empty()) continue;
    if (auto hp = kpx::kpxd::ParseBindAddress(flag, value); !hp.ok()) KPXD_FAIL << hp.status().message();
  }

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
