// XdpDataplane: load -> open maps -> adopt -> configure -> attach, and the
// Dataplane calls on top of MapWriter. See xdp_dataplane.h for lifetimes.
#include "dataplane/xdp/xdp_dataplane.h"

#include <arpa/inet.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "controller/base/status_macros.h"
#include "dataplane/xdp/libbpf_maps.h"
#include "dataplane/xdp/pin_layout.h"
#include "glog/logging.h"

namespace kpx::xdp {
namespace {

constexpr long kBpfFsMagic = 0xcafe4a11;

// Makes `have` equal to `want` with the fewest writes.
template <typename T, typename Add, typename Del>
absl::Status SyncSet(const std::vector<T>& have, const std::vector<T>& want, Add add, Del del) {
  for (const T& w : want) {
    if (std::find(have.begin(), have.end(), w) == have.end()) KPX_RETURN_IF_ERROR(add(w));
  }
  for (const T& h : have) {
    if (std::find(want.begin(), want.end(), h) == want.end()) KPX_RETURN_IF_ERROR(del(h));
  }
  return absl::OkStatus();
}

// An interface Create() already checked exists.
const NetInterface& Known(const std::vector<NetInterface>& ifaces, const std::string& name) {
  static const NetInterface kNone;
  for (const NetInterface& i : ifaces) {
    if (i.name == name) return i;
  }
  return kNone;
}

std::string Dirname(const std::string& path) {
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos || slash == 0 ? "/" : path.substr(0, slash);
}

}  // namespace

std::string DefaultPinDir() { return absl::StrCat(KPX_PIN_DIR, "/v", KPX_ABI_VERSION); }

absl::StatusOr<std::unique_ptr<XdpDataplane>> XdpDataplane::Create(XdpOptions options) {
  if (!BpfPrograms::Built()) return BpfPrograms::Load(options.pin_dir, {}).status();
  if (options.maglev_max_m < 2 || options.maglev_max_m > KPX_MAGLEV_M_MAX) {
    return absl::InvalidArgumentError(absl::StrCat("Maglev table size ", options.maglev_max_m,
                                                   " is out of range (2..", KPX_MAGLEV_M_MAX, ")"));
  }
  // Before anything is loaded: libbpf would otherwise fail on the first
  // pinned map of another layout with a less helpful message.
  KPX_RETURN_IF_ERROR(CheckPinnedLayout(options.pin_dir));
  KPX_ASSIGN_OR_RETURN(std::vector<NetInterface> ifaces, ListInterfaces());
  std::unique_ptr<XdpDataplane> dp(new XdpDataplane());
  if (options.xdp_interfaces.has_value()) {
    for (const std::string& name : *options.xdp_interfaces) {
      KPX_RETURN_IF_ERROR(FindInterface(ifaces, name).status());
      dp->xdp_ifnames_.push_back(name);
    }
  } else {
    for (const NetInterface& i : ifaces) {
      if (!i.loopback && !i.addrs.empty()) dp->xdp_ifnames_.push_back(i.name);
    }
    if (dp->xdp_ifnames_.empty()) {
      return absl::FailedPreconditionError(
          "no non-loopback interface with an IPv4 address to attach XDP to: name them with --interfaces");
    }
  }
  for (const std::string& name : options.tc_interfaces) KPX_RETURN_IF_ERROR(FindInterface(ifaces, name).status());
  for (const std::string& name : options.redirect_interfaces) {
    KPX_RETURN_IF_ERROR(FindInterface(ifaces, name).status());
  }

  KPX_ASSIGN_OR_RETURN(dp->programs_, BpfPrograms::Load(options.pin_dir, options.map_sizes));
  KPX_ASSIGN_OR_RETURN(std::unique_ptr<LibbpfMaps> maps, LibbpfMaps::Open(options.pin_dir));
  dp->maps_ = std::move(maps);
  dp->options_ = std::move(options);
  {
    MapWriterOptions wo;
    wo.maglev_max_m = dp->options_.maglev_max_m;
    wo.id_quarantine = dp->options_.id_quarantine;
    wo.maps_are_new = dp->programs_->created_maps();
    absl::MutexLock lock(&dp->mu_);
    KPX_ASSIGN_OR_RETURN(dp->writer_, MapWriter::Create(dp->maps_.get(), std::move(wo)));
    dp->adoption_ = dp->writer_->adoption();
  }
  KPX_RETURN_IF_ERROR(dp->Configure(ifaces));
  KPX_RETURN_IF_ERROR(dp->Attach(ifaces));
  if (dp->options_.watch_veths) {
    // Subscribes, then lists: a veth that appeared since ListInterfaces()
    // is reported too.
    KPX_ASSIGN_OR_RETURN(dp->watcher_, LinkWatcher::Start([p = dp.get()](const LinkEvent& ev) { p->OnLink(ev); }));
  }
  return dp;
}

absl::StatusOr<std::unique_ptr<XdpDataplane>> XdpDataplane::CreateOnMaps(std::unique_ptr<BpfMaps> maps,
                                                                          XdpOptions options) {
  std::unique_ptr<XdpDataplane> dp(new XdpDataplane());
  dp->maps_ = std::move(maps);
  dp->options_ = std::move(options);
  MapWriterOptions wo;
  wo.maglev_max_m = dp->options_.maglev_max_m;
  wo.id_quarantine = dp->options_.id_quarantine;
  absl::MutexLock lock(&dp->mu_);
  KPX_ASSIGN_OR_RETURN(dp->writer_, MapWriter::Create(dp->maps_.get(), std::move(wo)));
  dp->adoption_ = dp->writer_->adoption();
  return dp;
}

absl::Status XdpDataplane::Configure(const std::vector<NetInterface>& ifaces) {
  KPX_ASSIGN_OR_RETURN(kpx_config old, maps_->ReadConfig());
  if (old.abi_version != 0 && old.abi_version != KPX_ABI_VERSION) {
    return absl::FailedPreconditionError(absl::StrCat(options_.pin_dir, "/kpx_config says ABI v", old.abi_version,
                                                      ", this kpxd speaks v", KPX_ABI_VERSION,
                                                      ": run kpxd --cleanup first"));
  }
  if (options_.node_addresses.has_value()) {
    node_addresses_ = *options_.node_addresses;
  } else {
    for (const std::string& name : xdp_ifnames_) {
      for (Ipv4 ip : Known(ifaces, name).addrs) {
        if (std::find(node_addresses_.begin(), node_addresses_.end(), ip) == node_addresses_.end()) {
          node_addresses_.push_back(ip);
        }
      }
    }
  }
  if (node_addresses_.size() > KPX_MAX_IFACES) {
    return absl::InvalidArgumentError(absl::StrCat(node_addresses_.size(), " node addresses; kpx_node_addrs holds ",
                                                   KPX_MAX_IFACES));
  }
  KPX_ASSIGN_OR_RETURN(std::vector<Ipv4> have_addrs, maps_->ListNodeAddresses());
  KPX_RETURN_IF_ERROR(SyncSet<Ipv4>(
      have_addrs, node_addresses_, [&](Ipv4 a) { return maps_->UpdateNodeAddress(a); },
      [&](Ipv4 a) { return maps_->DeleteNodeAddress(a); }));

  kpx_config config{};
  config.abi_version = KPX_ABI_VERSION;
  Ipv4 snat = options_.snat_address.value_or(node_addresses_.empty() ? Ipv4() : node_addresses_.front());
  config.snat_addr = snat.be();
  const int prefix = options_.cluster_cidr.prefix;
  const uint32_t mask = htonl(Ipv4Cidr::HostMask(prefix));
  config.cluster_mask = mask;
  config.cluster_cidr = options_.cluster_cidr.addr.be() & mask;
  config.cluster_prefix = static_cast<uint32_t>(prefix);
  config.snat_port_min = options_.snat_port_min;
  config.snat_port_max = options_.snat_port_max;
  if (!SameBytes(old, config)) KPX_RETURN_IF_ERROR(maps_->WriteConfig(config));

  std::vector<int> want_ports;
  for (const std::string& name : options_.redirect_interfaces) {
    want_ports.push_back(Known(ifaces, name).ifindex);
  }
  KPX_ASSIGN_OR_RETURN(std::vector<int> have_ports, maps_->ListTxPorts());
  KPX_RETURN_IF_ERROR(SyncSet<int>(
      have_ports, want_ports, [&](int i) { return maps_->UpdateTxPort(i); },
      [&](int i) { return maps_->DeleteTxPort(i); }));
  return absl::OkStatus();
}

absl::Status XdpDataplane::Attach(const std::vector<NetInterface>& ifaces) {
  std::vector<std::string> created_xdp;
  std::vector<int> created_tc;
  auto rollback = [&] {
    for (const std::string& name : created_xdp) DetachXdp(options_.pin_dir, name).IgnoreError();
    for (int ifindex : created_tc) DetachTc(ifindex).IgnoreError();
  };
  for (const std::string& name : xdp_ifnames_) {
    const int ifindex = Known(ifaces, name).ifindex;
    absl::StatusOr<XdpAttachment> a =
        AttachXdp(programs_->xdp_prog_fd(), options_.pin_dir, name, ifindex, options_.xdp_mode);
    if (!a.ok()) {
      rollback();
      return a.status();
    }
    if (!a->updated) created_xdp.push_back(name);
    LOG(INFO) << "xdp: " << (a->updated ? "updated the pinned link on " : "attached to ") << name << " ("
              << (a->generic ? "generic" : "native/driver") << " mode)";
    xdp_attachments_.push_back(*a);
  }
  // tc also sits behind XDP on every XDP interface not listed in
  // kpx_tx_ports: there XDP may not XDP_TX a RST (a veth peer without XDP
  // drops it) and passes the packet on for tc to answer.
  std::vector<std::string> tc_names = options_.tc_interfaces;
  for (const std::string& name : xdp_ifnames_) {
    const bool tx_ok = std::find(options_.redirect_interfaces.begin(), options_.redirect_interfaces.end(), name) !=
                       options_.redirect_interfaces.end();
    if (!tx_ok && std::find(tc_names.begin(), tc_names.end(), name) == tc_names.end()) tc_names.push_back(name);
  }
  for (const std::string& name : tc_names) {
    const int ifindex = Known(ifaces, name).ifindex;
    const bool had = HasKpxTc(ifindex);
    if (absl::Status s = AttachTc(programs_->tc_prog_fd(), name, ifindex); !s.ok()) {
      rollback();
      return s;
    }
    if (!had) created_tc.push_back(ifindex);
    tc_at_start_.push_back(ifindex);
  }
  LOG(INFO) << "xdp: XDP on [" << absl::StrJoin(xdp_ifnames_, ", ") << "], tc on ["
            << absl::StrJoin(tc_names, ", ") << "], pinned under " << options_.pin_dir;
  return absl::OkStatus();
}

XdpDataplane::~XdpDataplane() = default;

SlotPoolUsage XdpDataplane::PoolUsage() const {
  absl::MutexLock lock(&mu_);
  return writer_ != nullptr ? writer_->pool_usage() : SlotPoolUsage{};
}

absl::Status XdpDataplane::Apply(const controller::TableDiff& diff) {
  absl::MutexLock lock(&mu_);
  return writer_->Apply(diff);
}

void XdpDataplane::Prepare(absl::Span<const controller::ServiceRule* const> rules, const std::atomic<bool>& stop) {
  absl::MutexLock lock(&mu_);
  writer_->Prepare(rules, stop);
}

absl::Status XdpDataplane::Prune(const controller::ServiceTable& desired) {
  absl::Status first;
  {
    absl::MutexLock lock(&mu_);
    first = writer_->Prune(desired);
  }
  if (programs_ != nullptr) {
    for (const std::string& name : PinnedXdpLinks(options_.pin_dir)) {
      if (std::find(xdp_ifnames_.begin(), xdp_ifnames_.end(), name) != xdp_ifnames_.end()) continue;
      LOG(INFO) << "xdp: detaching the XDP program from " << name << " (no longer in the interface list)";
      absl::Status s = DetachXdp(options_.pin_dir, name);
      if (!s.ok() && first.ok()) first = s;
    }
  }
  return first;
}

absl::StatusOr<ConntrackCensus> XdpDataplane::WalkConntrack() const {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);  // bpf_ktime_get_ns()'s clock
  const uint64_t now = static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + ts.tv_nsec;
  ConntrackCensus c;
  std::vector<kpx_ct_key> expired;
  KPX_RETURN_IF_ERROR(maps_->ForEachConntrack([&](const kpx_ct_key& k, const kpx_ct_entry& e) {
    ++c.entries;
    const bool closing = (e.flags & KPX_CT_F_RST) != 0 ||
                         (e.flags & (KPX_CT_F_FIN_FWD | KPX_CT_F_FIN_REPLY)) == (KPX_CT_F_FIN_FWD | KPX_CT_F_FIN_REPLY);
    if (closing && static_cast<int64_t>(now - e.last_seen_ns) > static_cast<int64_t>(KPX_CT_CLOSING_NS)) {
      if (expired.size() < kMaxCensusDeletes) expired.push_back(k);
      return true;
    }
    if (e.flags & KPX_CT_F_REPLY) return true;
    if (closing) {
      ++c.closing;
    } else {
      ++c.active[(uint64_t{e.svc_id} << 32) | e.backend_id];
    }
    return true;
  }));
  for (const kpx_ct_key& k : expired) {
    KPX_RETURN_IF_ERROR(maps_->DeleteConntrack(k));
    ++c.deleted;
  }
  return c;
}

dataplane::DataplaneStats XdpDataplane::Stats() const { return StatsFor(std::nullopt); }

dataplane::DataplaneStats XdpDataplane::StatsOf(absl::Span<const controller::FrontendKey> frontends) const {
  return StatsFor(frontends);
}

dataplane::DataplaneStats XdpDataplane::StatsFor(
    std::optional<absl::Span<const controller::FrontendKey>> only) const {
  struct Snapshot {
    MapWriter::FrontendInfo info;
    std::vector<std::pair<Ipv4, uint16_t>> backends;
    std::vector<uint32_t> backend_ids;
  };
  std::vector<Snapshot> snap;
  {
    absl::MutexLock lock(&mu_);
    for (MapWriter::FrontendInfo& f : only ? writer_->FrontendsOf(*only) : writer_->Frontends()) {
      Snapshot s{std::move(f), {}};
      for (uint32_t id : s.info.backend_ids) {
        if (auto addr = writer_->BackendAddress(id)) {
          s.backends.push_back(*addr);
          s.backend_ids.push_back(id);
        }
      }
      snap.push_back(std::move(s));
    }
  }
  ConntrackCensus census;
  {
    absl::MutexLock lock(&census_mu_);
    if (absl::Now() - census_at_ >= kCensusInterval) {
      absl::StatusOr<ConntrackCensus> c = WalkConntrack();
      if (c.ok()) {
        census_ = std::move(*c);
      } else {
        LOG_EVERY_N(WARNING, 100) << "xdp: conntrack walk: " << c.status();
      }
      census_at_ = absl::Now();  // a failing walk is not retried on every call either
    }
    census = census_;
  }
  dataplane::DataplaneStats out;
  for (const Snapshot& s : snap) {
    dataplane::FrontendStats f;
    f.frontend = s.info.frontend;
    absl::StatusOr<kpx_svc_stats> st = maps_->ReadServiceStats(s.info.value.id);
    if (st.ok()) {
      f.total = st->new_flows;
      f.rejected = st->no_backend;
    } else {
      LOG_EVERY_N(WARNING, 100) << "xdp: stats of " << f.frontend.String() << ": " << st.status();
    }
    for (size_t i = 0; i < s.backends.size(); ++i) {
      dataplane::BackendStats b;
      b.ip = s.backends[i].first;
      b.port = s.backends[i].second;
      auto it = census.active.find((uint64_t{s.info.value.id} << 32) | s.backend_ids[i]);
      if (it != census.active.end()) b.active = it->second;
      f.active += b.active;
      f.backends.push_back(b);
    }
    out.frontends.push_back(std::move(f));
  }
  return out;
}

absl::StatusOr<std::vector<FrontendCounters>> XdpDataplane::Counters() const {
  std::vector<MapWriter::FrontendInfo> frontends;
  {
    absl::MutexLock lock(&mu_);
    frontends = writer_->Frontends();
  }
  std::vector<FrontendCounters> out;
  for (const MapWriter::FrontendInfo& f : frontends) {
    KPX_ASSIGN_OR_RETURN(kpx_svc_stats st, maps_->ReadServiceStats(f.value.id));
    out.push_back(FrontendCounters{f.frontend, f.value.id, st});
  }
  return out;
}

absl::StatusOr<VerdictCounters> XdpDataplane::VerdictStats() const { return maps_->ReadVerdictStats(); }

const char* XdpDataplane::VerdictName(int verdict) {
  switch (verdict) {
    case KPX_V_PASS_NON_SERVICE:
      return "pass_non_service";
    case KPX_V_CT_HIT:
      return "ct_hit";
    case KPX_V_NEW_FLOW:
      return "new_flow";
    case KPX_V_REPLY:
      return "reply";
    case KPX_V_NO_BACKEND:
      return "no_backend";
    case KPX_V_DEAD_BACKEND:
      return "dead_backend";
    case KPX_V_REDIRECT:
      return "redirect";
    case KPX_V_PASS_STACK:
      return "pass_stack";
    case KPX_V_MALFORMED:
      return "malformed";
    case KPX_V_FRAGMENT:
      return "fragment";
    case KPX_V_SNAT_NO_PORT:
      return "snat_no_port";
    case KPX_V_HANDSHAKE:
      return "handshake";
    default:
      return "unknown";
  }
}

absl::StatusOr<std::vector<std::pair<controller::FrontendKey, uint64_t>>> XdpDataplane::ActiveFlows() const {
  absl::flat_hash_map<uint32_t, controller::FrontendKey> by_id;
  {
    absl::MutexLock lock(&mu_);
    for (const MapWriter::FrontendInfo& f : writer_->Frontends()) by_id[f.value.id] = f.frontend;
  }
  absl::flat_hash_map<uint32_t, uint64_t> counts;
  KPX_RETURN_IF_ERROR(maps_->ForEachConntrack([&](const kpx_ct_key&, const kpx_ct_entry& e) {
    const bool closing = (e.flags & KPX_CT_F_RST) != 0 ||
                         (e.flags & (KPX_CT_F_FIN_FWD | KPX_CT_F_FIN_REPLY)) == (KPX_CT_F_FIN_FWD | KPX_CT_F_FIN_REPLY);
    if ((e.flags & KPX_CT_F_REPLY) == 0 && !closing) ++counts[e.svc_id];
    return true;
  }));
  std::vector<std::pair<controller::FrontendKey, uint64_t>> out;
  for (const auto& [id, fk] : by_id) {
    auto it = counts.find(id);
    out.emplace_back(fk, it == counts.end() ? 0 : it->second);
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  return out;
}

void XdpDataplane::OnLink(const LinkEvent& ev) {
  if (ev.kind != "veth") return;
  if (std::find(xdp_ifnames_.begin(), xdp_ifnames_.end(), ev.name) != xdp_ifnames_.end()) return;
  absl::MutexLock lock(&veths_mu_);
  if (!ev.added) {
    if (veths_.erase(ev.ifindex) > 0) LOG(INFO) << "xdp: veth " << ev.name << " is gone (its tc filter with it)";
    return;
  }
  auto it = veths_.find(ev.ifindex);
  if (it != veths_.end() && it->second == ev.name) return;  // a state change of a known veth
  if (std::find(tc_at_start_.begin(), tc_at_start_.end(), ev.ifindex) != tc_at_start_.end()) {
    veths_[ev.ifindex] = ev.name;  // Attach() did it (the start-up dump reports it again)
    return;
  }
  if (absl::Status s = AttachTc(programs_->tc_prog_fd(), ev.name, ev.ifindex); !s.ok()) {
    // The veth may already be gone again (pod deleted at once).
    LOG(WARNING) << "xdp: attaching tc to new veth " << ev.name << ": " << s;
    return;
  }
  veths_[ev.ifindex] = ev.name;
  LOG(INFO) << "xdp: tc attached to new veth " << ev.name << " (ifindex " << ev.ifindex << ")";
}

std::vector<std::string> XdpDataplane::WatchedVeths() const {
  absl::MutexLock lock(&veths_mu_);
  std::vector<std::string> out;
  for (const auto& [ifindex, name] : veths_) out.push_back(name);
  std::sort(out.begin(), out.end());
  return out;
}

absl::Status XdpDataplane::AttachTcInterface(const std::string& ifname) {
  if (programs_ == nullptr) return absl::FailedPreconditionError("this XdpDataplane loaded no programs");
  KPX_ASSIGN_OR_RETURN(std::vector<NetInterface> ifaces, ListInterfaces());
  KPX_ASSIGN_OR_RETURN(NetInterface i, FindInterface(ifaces, ifname));
  return AttachTc(programs_->tc_prog_fd(), ifname, i.ifindex);
}

absl::Status XdpDataplane::DetachTcInterface(const std::string& ifname) {
  KPX_ASSIGN_OR_RETURN(std::vector<NetInterface> ifaces, ListInterfaces());
  absl::StatusOr<NetInterface> i = FindInterface(ifaces, ifname);
  if (!i.ok()) return absl::OkStatus();  // the veth is gone, and its filter with it
  return DetachTc(i->ifindex, PinnedMapId(options_.pin_dir + "/kpx_services")).status();
}

absl::Status XdpDataplane::Probe() {
  if (!BpfPrograms::Built()) return BpfPrograms::ProbeLoad();
  struct statfs fs {};
  if (statfs(KPX_PIN_DIR, &fs) != 0 && statfs("/sys/fs/bpf", &fs) != 0) {
    return absl::FailedPreconditionError(absl::StrCat("/sys/fs/bpf: ", strerror(errno),
                                                      " (mount bpffs: mount -t bpf bpf /sys/fs/bpf)"));
  }
  if (static_cast<long>(fs.f_type) != kBpfFsMagic) {
    return absl::FailedPreconditionError("/sys/fs/bpf is not a bpffs mount (mount -t bpf bpf /sys/fs/bpf)");
  }
  return BpfPrograms::ProbeLoad();
}

absl::Status XdpDataplane::Cleanup(const std::string& pin_dir) {
  absl::Status first;
  auto keep_first = [&first](absl::Status s) {
    if (!s.ok() && first.ok()) first = std::move(s);
  };
  std::vector<std::string> links = PinnedXdpLinks(pin_dir);
  for (const std::string& name : links) keep_first(DetachXdp(pin_dir, name));
  if (rmdir((pin_dir + "/links").c_str()) != 0 && errno != ENOENT) {
    keep_first(absl::InternalError(absl::StrCat("rmdir ", pin_dir, "/links: ", strerror(errno))));
  }
  // tc filters of this pin dir's programs (identified by their kpx_services
  // map; if that is already unpinned, any kpx_tc filter in this namespace).
  const uint32_t owner = PinnedMapId(pin_dir + "/kpx_services");
  int tc_removed = 0;
  absl::StatusOr<std::vector<NetInterface>> ifaces = ListInterfaces();
  if (ifaces.ok()) {
    for (const NetInterface& i : *ifaces) {
      absl::StatusOr<bool> removed = DetachTc(i.ifindex, owner);
      if (removed.ok()) {
        tc_removed += *removed;
      } else {
        keep_first(removed.status());
      }
    }
  } else {
    keep_first(ifaces.status());
  }
  int unpinned = 0;
  for (const char* name : kMapNames) {
    const std::string path = absl::StrCat(pin_dir, "/", name);
    if (unlink(path.c_str()) == 0) {
      ++unpinned;
    } else if (errno != ENOENT) {
      keep_first(absl::InternalError(absl::StrCat("unlink ", path, ": ", strerror(errno))));
    }
  }
  if (rmdir(pin_dir.c_str()) != 0 && errno != ENOENT) {
    keep_first(absl::FailedPreconditionError(
        absl::StrCat("rmdir ", pin_dir, ": ", strerror(errno), " (files kpx does not know are left there)")));
  }
  if (Dirname(pin_dir) == KPX_PIN_DIR) rmdir(KPX_PIN_DIR);  // only if empty; other versions may live there
  LOG(INFO) << "xdp cleanup: detached " << links.size() << " XDP links, removed " << tc_removed
            << " tc filters, unpinned " << unpinned << " maps under " << pin_dir;
  return first;
}

}  // namespace kpx::xdp
