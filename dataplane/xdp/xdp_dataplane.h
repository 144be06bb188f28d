// XdpDataplane: kpx's eBPF fast path. Loads kpx_xdp (uplinks: NodePorts,
// external IPs, off-node clients) and kpx_tc (pod veths), keeps their pinned
// maps in step with the ServiceTable through MapWriter, and survives kpxd
// restarts: programs stay attached through pinned links / tc filters, maps
// stay pinned, and a new process adopts what it finds.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "dataplane/dataplane.h"
#include "dataplane/xdp/attach.h"
#include "dataplane/xdp/bpf_loader.h"
#include "dataplane/xdp/bpf_maps.h"
#include "dataplane/xdp/interfaces.h"
#include "dataplane/xdp/link_watcher.h"
#include "dataplane/xdp/map_writer.h"

namespace kpx::xdp {

// KPX_PIN_DIR "/v" KPX_ABI_VERSION: maps of another ABI version never mix.
std::string DefaultPinDir();

struct XdpOptions {
  std::string pin_dir = DefaultPinDir();
  // Interfaces that get the XDP program (--interfaces). nullopt: every
  // non-loopback interface with an IPv4 address.
  std::optional<std::vector<std::string>> xdp_interfaces;
  // Interfaces that get the tc ingress program (pod-facing veths). tc is
  // also attached behind XDP on every XDP interface not in
  // redirect_interfaces: XDP hands it the RSTs it may not send itself.
  std::vector<std::string> tc_interfaces;
  // Also attach tc to every veth that appears while running (pod veths),
  // following rtnetlink link events; veths in xdp_interfaces are left out.
  // kpxd turns this on when --tc-interfaces is not given.
  bool watch_veths = false;
  // kpx_tx_ports: interfaces a NATed packet may be XDP_REDIRECTed into, and
  // XDP interfaces where a RST may leave with XDP_TX. Empty (default): every
  // packet goes back to the stack after NAT and tc sends the RSTs. A veth
  // belongs here only if its peer runs XDP (or, for redirects, has GRO on);
  // otherwise the kernel drops those frames silently.
  std::vector<std::string> redirect_interfaces;
  XdpMode xdp_mode = XdpMode::kAuto;
  // Upper bound of a service's Maglev table (--maglev-table-size).
  uint32_t maglev_max_m = KPX_MAGLEV_M_DEFAULT;
  // Where NodePorts answer. nullopt: the IPv4 addresses of the XDP interfaces.
  std::optional<std::vector<Ipv4>> node_addresses;
  // Masquerade address for external clients. nullopt: the first node
  // address; 0.0.0.0: never masquerade.
  std::optional<Ipv4> snat_address;
  // Pod CIDR: sources outside it are external (masquerade candidates; the
  // rules are in bpf/include/kpx/abi.h at struct kpx_config).
  Ipv4Cidr cluster_cidr;
  // Source ports of masqueraded flows (inclusive), kept out of the node's
  // own ip_local_port_range.
  uint16_t snat_port_min = KPX_SNAT_PORT_MIN_DEFAULT;
  uint16_t snat_port_max = KPX_SNAT_PORT_MAX_DEFAULT;
  absl::Duration id_quarantine = absl::Minutes(10);
  // Sizes of maps created by this process (pinned maps keep theirs).
  MapSizes map_sizes;
};

// One walk over kpx_ct (XdpDataplane::WalkConntrack).
struct ConntrackCensus {
  // Open flows (forward entries neither closing nor expired) per
  // (svc_id << 32 | backend_id).
  absl::flat_hash_map<uint64_t, uint64_t> active;
  uint64_t entries = 0;  // both directions
  uint64_t closing = 0;  // forward entries after a RST or both FINs
  uint64_t deleted = 0;  // expired closing entries removed by this walk
};

// Counters of one frontend, from kpx_svc_stats (summed over CPUs).
struct FrontendCounters {
  controller::FrontendKey frontend;
  uint32_t svc_id = 0;
  kpx_svc_stats stats{};
};

class XdpDataplane final : public dataplane::Dataplane {
 public:
  // Loads the programs (reusing pinned maps), adopts pinned state, writes
  // node addresses / config / redirect ports, attaches XDP (pinned links:
  // an existing link gets the new program, never a detach) and tc. Acts on
  // the calling thread's network namespace. On failure, links this call
  // created are detached again; adopted ones are left alone.
  static absl::StatusOr<std::unique_ptr<XdpDataplane>> Create(XdpOptions options);

  // A dataplane over already opened maps that loads and attaches nothing
  // (reading a running node's maps, or tests with FakeBpfMaps).
  static absl::StatusOr<std::unique_ptr<XdpDataplane>> CreateOnMaps(std::unique_ptr<BpfMaps> maps,
                                                                    XdpOptions options);

  // Whether this host can run the XDP dataplane: loads both programs with
  // tiny unpinned maps (never touching a running kpxd's) and checks bpffs.
  // The error says why not (privileges, kernel, verifier log, build).
  static absl::Status Probe();

  // `kpxd --cleanup`: detaches kpx's XDP links pinned under pin_dir, removes
  // kpx's tc filters from every interface of this namespace, unpins every
  // map and removes the pin directory. Idempotent.
  static absl::Status Cleanup(const std::string& pin_dir);

  // Leaves programs attached and maps pinned: that is what makes a restart
  // hitless. Use Cleanup() to remove them.
  ~XdpDataplane() override;

  std::string_view Name() const override { return "xdp"; }
  // Thread-safe. Idempotent per operation; see MapWriter::Apply.
  absl::Status Apply(const controller::TableDiff& diff) override;
  // The Maglev pool grown and the new frontends' tables built ahead
  // (MapWriter::Prepare).
  void Prepare(absl::Span<const controller::ServiceRule* const> rules, const std::atomic<bool>& stop) override;
  // Per frontend: total = new flows, rejected = SYNs answered with RST;
  // active (per frontend and per backend) = open flows, from a conntrack
  // walk at most every kCensusInterval (cached in between).
  dataplane::DataplaneStats Stats() const override;
  // One map read per frontend asked (the admin API's per-Service answer).
  dataplane::DataplaneStats StatsOf(absl::Span<const controller::FrontendKey> frontends) const override;
  static constexpr absl::Duration kCensusInterval = absl::Seconds(1);
  // Walks kpx_ct once (batched reads): counts open flows and deletes closing
  // entries past KPX_CT_CLOSING_NS (at most kMaxCensusDeletes per walk), so
  // closed flows do not hold LRU slots until evicted.
  absl::StatusOr<ConntrackCensus> WalkConntrack() const;
  static constexpr uint64_t kMaxCensusDeletes = 65536;
  // Removes adopted frontends/backends/tables not in `desired`, and detaches
  // XDP links pinned for interfaces no longer in the XDP interface list.
  absl::Status Prune(const controller::ServiceTable& desired) override;

  // Packets, bytes, new flows, resets per frontend.
  absl::StatusOr<std::vector<FrontendCounters>> Counters() const;
  // Per-verdict packet counts (kpx_verdict_stats), indexed by kpx_verdict.
  absl::StatusOr<VerdictCounters> VerdictStats() const;
  static const char* VerdictName(int verdict);  // "ct_hit", "new_flow", ...
  // Forward conntrack entries per frontend (a full kpx_ct scan: for
  // inspection, not for every metrics scrape).
  absl::StatusOr<std::vector<std::pair<controller::FrontendKey, uint64_t>>> ActiveFlows() const;

  // Pod veths come and go: attach/detach the tc program at run time.
  absl::Status AttachTcInterface(const std::string& ifname);
  absl::Status DetachTcInterface(const std::string& ifname);

  // Veths the watcher attached tc to and that still exist (watch_veths).
  std::vector<std::string> WatchedVeths() const;

  const std::vector<XdpAttachment>& xdp_attachments() const { return xdp_attachments_; }
  const std::vector<Ipv4>& node_addresses() const { return node_addresses_; }
  // What Create() found in the pinned maps.
  const AdoptionSummary& adoption() const { return adoption_; }
  // The Maglev slot pool's occupancy (thread-safe).
  SlotPoolUsage PoolUsage() const;
  const std::string& pin_dir() const { return options_.pin_dir; }
  BpfMaps* maps() const { return maps_.get(); }

 private:
  // Stats() (every frontend) or StatsOf(*only).
  dataplane::DataplaneStats StatsFor(std::optional<absl::Span<const controller::FrontendKey>> only) const;
  XdpDataplane() = default;
  absl::Status Configure(const std::vector<NetInterface>& ifaces);
  absl::Status Attach(const std::vector<NetInterface>& ifaces);
  void OnLink(const LinkEvent& ev);

  XdpOptions options_;
  std::unique_ptr<BpfPrograms> programs_;  // null for CreateOnMaps
  std::unique_ptr<BpfMaps> maps_;
  std::vector<std::string> xdp_ifnames_;
  std::vector<XdpAttachment> xdp_attachments_;
  std::vector<int> tc_at_start_;  // ifindexes Attach() gave tc (read-only afterwards)
  std::vector<Ipv4> node_addresses_;
  AdoptionSummary adoption_;

  mutable absl::Mutex mu_;
  std::unique_ptr<MapWriter> writer_ ABSL_GUARDED_BY(mu_);

  mutable absl::Mutex census_mu_;  // never held with mu_
  mutable ConntrackCensus census_ ABSL_GUARDED_BY(census_mu_);
  mutable absl::Time census_at_ ABSL_GUARDED_BY(census_mu_) = absl::InfinitePast();

  mutable absl::Mutex veths_mu_;
  absl::flat_hash_map<int, std::string> veths_ ABSL_GUARDED_BY(veths_mu_);  // ifindex -> name
  // Last member: destroyed (its thread joined) before anything OnLink uses.
  std::unique_ptr<LinkWatcher> watcher_;
};

}  // namespace kpx::xdp
