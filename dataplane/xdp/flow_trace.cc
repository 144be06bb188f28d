// FlowTrace: a userspace replay of lb4_decide (bpf/lib/lb.h) over the maps.
// When lb.h changes, this file and tests/unit/xdp_flow_trace_test.cc change
// with it; the kpxd_xdp e2e test checks the replay against real flows.
#include "dataplane/xdp/flow_trace.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <netinet/in.h>
#include <time.h>

#include <cerrno>
#include <map>
#include <memory>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "dataplane/xdp/unique_fd.h"

namespace kpx::xdp {
namespace {

constexpr uint32_t kMaglevProbes = 4;  // KPX_MAGLEV_PROBES in lb.h
constexpr uint64_t kNsPerSec = 1000000000ull;

std::string Addr(uint32_t be_addr, uint16_t be_port) {
  return absl::StrCat(Ipv4::FromBe(be_addr).ToString(), ":", ntohs(be_port));
}

// A SYN of this tuple to tr->backend left its reverse entry in kpx_ct_syn
// (non-masqueraded handshakes): the SYN-ACK is still awaited.
void NoteSynSeen(const TraceLookups& maps, const FlowTuple& t, FlowTrace* tr) {
  if (!maps.conntrack_half_open || !tr->backend) return;
  kpx_ct_key rk{};
  rk.saddr = tr->backend->addr;
  rk.sport = tr->backend->port;
  rk.daddr = t.src.be();
  rk.dport = htons(t.sport);
  rk.proto = IPPROTO_TCP;
  std::optional<kpx_ct_entry> e = maps.conntrack_half_open(rk);
  if (!e || !(e->flags & KPX_CT_F_REPLY) || e->vip != t.dst.be() || e->vport != htons(t.dport)) return;
  tr->half_open = e;
  tr->steps.push_back(
      "conntrack: a SYN on this tuple went to that backend (kpx_ct_syn), no SYN-ACK yet: the handshake is half-open");
}

}  // namespace

uint32_t FlowHash(const FlowTuple& t) {
  // Same arithmetic as lb4_hash on the packet's network-order fields.
  uint64_t h = (uint64_t{t.src.be()} << 32) | t.dst.be();
  h ^= ((uint64_t{htons(t.sport)} << 16) | htons(t.dport) | (uint64_t{IPPROTO_TCP} << 32)) *
       0x9e3779b97f4a7c15ULL;
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return static_cast<uint32_t>(h);
}

uint64_t MonotonicNowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);  // kpx_now_ns(): bpf_ktime_get_coarse_ns
  return static_cast<uint64_t>(ts.tv_sec) * kNsPerSec + ts.tv_nsec;
}

const char* DecisionName(FlowTrace::Decision d) {
  switch (d) {
    case FlowTrace::Decision::kNoFrontend: return "no_frontend";
    case FlowTrace::Decision::kConntrack: return "conntrack";
    case FlowTrace::Decision::kHalfOpen: return "half_open";
    case FlowTrace::Decision::kDeadBackend: return "dead_backend";
    case FlowTrace::Decision::kAffinity: return "affinity";
    case FlowTrace::Decision::kMaglev: return "maglev";
    case FlowTrace::Decision::kNoBackend: return "no_backend";
    case FlowTrace::Decision::kNeedSourcePort: return "need_source_port";
  }
  return "?";
}

FlowTrace TraceFlow(const TraceLookups& maps, const FlowTuple& t, uint64_t now_ns) {
  FlowTrace tr;
  kpx_svc_key key{};
  key.addr = t.dst.be();
  key.port = htons(t.dport);
  key.proto = IPPROTO_TCP;
  std::optional<kpx_svc> svc = maps.service(key);
  std::string dst = absl::StrCat(t.dst.ToString(), ":", t.dport);
  if (!svc) {
    if (!maps.is_node_address(t.dst)) {
      tr.steps.push_back(absl::StrCat("kpx_services has no entry for ", dst,
                                      "/TCP and it is not a node address: the packet passes"));
      return tr;
    }
    key.addr = 0;
    svc = maps.service(key);
    if (!svc) {
      tr.steps.push_back(absl::StrCat(t.dst.ToString(), " is a node address but no NodePort ",
                                      t.dport, " is programmed: the packet passes"));
      return tr;
    }
    tr.nodeport = true;
    tr.steps.push_back(absl::StrCat(t.dst.ToString(), " is a node address: NodePort *:", t.dport,
                                    " matched (service id ", svc->id, ")"));
  } else {
    tr.steps.push_back(absl::StrCat("frontend ", dst, "/TCP matched in kpx_services (service id ",
                                    svc->id, ", ", svc->backend_count, " backends, Maglev M=",
                                    svc->maglev_m, ")"));
  }
  tr.svc = *svc;

  if (t.sport != 0) {
    kpx_ct_key ck{};
    ck.saddr = t.src.be();
    ck.daddr = t.dst.be();
    ck.sport = htons(t.sport);
    ck.dport = htons(t.dport);
    ck.proto = IPPROTO_TCP;
    tr.conntrack = maps.conntrack(ck);
    // ct4_closing(): a RST or both FINs seen. The flow is over; a new SYN on
    // the tuple picks afresh (lb4_forward drops the entry).
    const bool closing =
        tr.conntrack && ((tr.conntrack->flags & KPX_CT_F_RST) ||
                         (tr.conntrack->flags & (KPX_CT_F_FIN_FWD | KPX_CT_F_FIN_REPLY)) ==
                             (KPX_CT_F_FIN_FWD | KPX_CT_F_FIN_REPLY));
    if (closing && !(tr.conntrack->flags & KPX_CT_F_REPLY)) {
      tr.steps.push_back(absl::StrCat("conntrack: the flow on this 5-tuple closed (",
                                      tr.conntrack->flags & KPX_CT_F_RST ? "RST" : "both FINs",
                                      " seen): a new SYN picks afresh"));
    } else if (tr.conntrack && !(tr.conntrack->flags & KPX_CT_F_REPLY)) {
      tr.backend_id = tr.conntrack->backend_id;
      tr.backend = maps.backend(tr.backend_id);
      uint64_t age = now_ns > tr.conntrack->last_seen_ns ? now_ns - tr.conntrack->last_seen_ns : 0;
      if (tr.backend) {
        tr.decision = FlowTrace::Decision::kConntrack;
        tr.steps.push_back(absl::StrFormat(
            "conntrack: established flow -> backend id %u = %s (last packet %.1fs ago%s%s)",
            tr.backend_id, Addr(tr.backend->addr, tr.backend->port), age / 1e9,
            tr.conntrack->flags & KPX_CT_F_SEEN_REPLY ? ", backend answered" : "",
            tr.conntrack->flags & KPX_CT_F_SNAT
                ? absl::StrCat(", masqueraded as ",
                               Addr(tr.conntrack->snat_addr, tr.conntrack->snat_port))
                : ""));
        return tr;
      }
      tr.steps.push_back(absl::StrCat("conntrack: entry names backend id ", tr.backend_id,
                                      ", which was removed: mid-flow packets get a RST; a new "
                                      "SYN on this tuple is picked afresh"));
    } else {
      tr.conntrack.reset();
      // lb4_handshake(): a backend answered this tuple's SYN.
      if (maps.conntrack_half_open) tr.half_open = maps.conntrack_half_open(ck);
      if (tr.half_open && (tr.half_open->flags & KPX_CT_F_REPLY)) tr.half_open.reset();
      if (tr.half_open) {
        tr.backend_id = tr.half_open->backend_id;
        tr.backend = maps.backend(tr.backend_id);
        if (tr.backend) {
          tr.decision = FlowTrace::Decision::kHalfOpen;
          tr.steps.push_back(absl::StrFormat(
              "conntrack: handshake in progress (kpx_ct_syn): backend id %u = %s answered the SYN%s; "
              "the client's ACK moves the flow to kpx_ct",
              tr.backend_id, Addr(tr.backend->addr, tr.backend->port),
              tr.half_open->flags & KPX_CT_F_SNAT
                  ? absl::StrCat(", masqueraded as ", Addr(tr.half_open->snat_addr, tr.half_open->snat_port))
                  : ""));
          return tr;
        }
        tr.steps.push_back(absl::StrCat("conntrack: half-open entry names backend id ", tr.backend_id,
                                        ", which was removed: the client's ACK gets a RST"));
        tr.half_open.reset();
      } else {
        tr.steps.push_back("conntrack: no entry for this 5-tuple: a SYN starts a new flow");
      }
    }
    if (closing) tr.conntrack.reset();
  } else {
    tr.steps.push_back("no source port given: conntrack not consulted");
  }

  if (svc->backend_count == 0) {
    tr.decision = FlowTrace::Decision::kNoBackend;
    tr.steps.push_back("no usable backend: the SYN is answered with a RST");
    return tr;
  }
  if (svc->flags & KPX_SVC_F_AFFINITY) {
    kpx_affinity_key ak{};
    ak.client = t.src.be();
    ak.svc_id = svc->id;
    tr.affinity = maps.affinity(ak);
    if (tr.affinity) {
      tr.affinity_age_ns = now_ns > tr.affinity->last_seen_ns ? now_ns - tr.affinity->last_seen_ns : 0;
      std::optional<kpx_backend> be = maps.backend(tr.affinity->backend_id);
      tr.affinity_fresh =
          tr.affinity_age_ns <= uint64_t{svc->affinity_timeout_s} * kNsPerSec && be.has_value();
      if (tr.affinity_fresh) {
        tr.decision = FlowTrace::Decision::kAffinity;
        tr.backend_id = tr.affinity->backend_id;
        tr.backend = be;
        tr.steps.push_back(absl::StrFormat(
            "ClientIP affinity: %s is pinned to backend id %u = %s (last used %.1fs ago, "
            "timeout %us)",
            t.src.ToString(), tr.backend_id, Addr(be->addr, be->port), tr.affinity_age_ns / 1e9,
            svc->affinity_timeout_s));
        if (t.sport != 0) NoteSynSeen(maps, t, &tr);
        return tr;
      }
      tr.steps.push_back(absl::StrFormat(
          "ClientIP affinity: pin to backend id %u is %s: re-picked with Maglev",
          tr.affinity->backend_id, be ? "expired" : "for a removed backend"));
    } else {
      tr.steps.push_back(absl::StrCat("ClientIP affinity: no pin for ", t.src.ToString(),
                                      " yet: Maglev picks, then the pick is pinned for ",
                                      svc->affinity_timeout_s, "s"));
    }
  }
  if (t.sport == 0) {
    tr.decision = FlowTrace::Decision::kNeedSourcePort;
    tr.steps.push_back("Maglev hashes the source port: give SRC_IP:PORT for the exact backend");
    return tr;
  }
  tr.hash = FlowHash(t);
  if (svc->maglev_m == 0) {
    tr.decision = FlowTrace::Decision::kNoBackend;
    tr.steps.push_back("service has no Maglev table: the SYN is answered with a RST");
    return tr;
  }
  if (svc->maglev_m > KPX_MAGLEV_CHUNK_SLOTS - (svc->maglev_off & KPX_MAGLEV_CHUNK_MASK)) {
    tr.decision = FlowTrace::Decision::kNoBackend;
    tr.steps.push_back(absl::StrFormat("Maglev table at pool slot %u (M %u) crosses its chunk: inconsistent, RST",
                                       svc->maglev_off, svc->maglev_m));
    return tr;
  }
  tr.slot = tr.hash % svc->maglev_m;
  uint32_t slot = tr.slot;
  for (uint32_t i = 0; i < kMaglevProbes; ++i) {
    ++tr.probes;
    std::optional<uint32_t> id = maps.maglev_slot(svc->maglev_off + slot);
    if (!id) break;
    std::optional<kpx_backend> be = *id ? maps.backend(*id) : std::nullopt;
    if (be) {
      tr.decision = FlowTrace::Decision::kMaglev;
      tr.backend_id = *id;
      tr.backend = be;
      tr.steps.push_back(absl::StrFormat(
          "Maglev: hash 0x%08x %% M %u = slot %u%s -> backend id %u = %s", tr.hash, svc->maglev_m,
          tr.slot, i > 0 ? absl::StrCat(" (+", i, ": removed backends skipped)") : "", *id,
          Addr(be->addr, be->port)));
      NoteSynSeen(maps, t, &tr);
      return tr;
    }
    if (++slot >= svc->maglev_m) slot = 0;
  }
  tr.decision = FlowTrace::Decision::kNoBackend;
  tr.steps.push_back(absl::StrFormat("Maglev: slot %u and the next %u name no live backend: RST",
                                     tr.slot, tr.probes - 1));
  return tr;
}

absl::StatusOr<TraceLookups> PinnedTraceLookups(const std::string& pin_dir) {
  struct Fds {
    UniqueFd services, node_addrs, backends, maglev, ct, ct_syn, affinity;
  };
  auto fds = std::make_shared<Fds>();
  auto open = [&](const char* name, UniqueFd* out) -> absl::Status {
    std::string path = absl::StrCat(pin_dir, "/", name);
    int fd = bpf_obj_get(path.c_str());
    if (fd < 0) {
      return absl::UnavailableError(absl::StrCat("opening ", path, ": ", strerror(errno)));
    }
    out->reset(fd);
    return absl::OkStatus();
  };
  for (auto [name, fd] : {std::pair{"kpx_services", &fds->services},
                          std::pair{"kpx_node_addrs", &fds->node_addrs},
                          std::pair{"kpx_backends", &fds->backends},
                          std::pair{"kpx_maglev", &fds->maglev}, std::pair{"kpx_ct", &fds->ct},
                          std::pair{"kpx_ct_syn", &fds->ct_syn},
                          std::pair{"kpx_affinity", &fds->affinity}}) {
    if (absl::Status s = open(name, fd); !s.ok()) return s;
  }
  TraceLookups l;
  l.service = [fds](const kpx_svc_key& k) -> std::optional<kpx_svc> {
    kpx_svc v{};
    if (bpf_map_lookup_elem(fds->services.get(), &k, &v) != 0) return std::nullopt;
    return v;
  };
  l.is_node_address = [fds](Ipv4 a) {
    uint32_t k = a.be();
    uint8_t v = 0;
    return bpf_map_lookup_elem(fds->node_addrs.get(), &k, &v) == 0;
  };
  l.backend = [fds](uint32_t id) -> std::optional<kpx_backend> {
    kpx_backend v{};
    if (id == 0 || bpf_map_lookup_elem(fds->backends.get(), &id, &v) != 0 || v.addr == 0) {
      return std::nullopt;
    }
    return v;
  };
  // Chunk fds by index, opened on first use (the trace is one-shot).
  auto chunks = std::make_shared<std::map<uint32_t, UniqueFd>>();
  l.maglev_slot = [fds, chunks](uint32_t index) -> std::optional<uint32_t> {
    const uint32_t c = index >> KPX_MAGLEV_CHUNK_SHIFT;
    auto it = chunks->find(c);
    if (it == chunks->end()) {
      uint32_t chunk_id = 0;
      if (bpf_map_lookup_elem(fds->maglev.get(), &c, &chunk_id) != 0) return std::nullopt;
      it = chunks->emplace(c, UniqueFd(bpf_map_get_fd_by_id(chunk_id))).first;
    }
    uint32_t slot = index & KPX_MAGLEV_CHUNK_MASK, be = 0;
    if (!it->second.valid() || bpf_map_lookup_elem(it->second.get(), &slot, &be) != 0) return std::nullopt;
    return be;
  };
  l.conntrack = [fds](const kpx_ct_key& k) -> std::optional<kpx_ct_entry> {
    kpx_ct_entry v{};
    if (bpf_map_lookup_elem(fds->ct.get(), &k, &v) != 0) return std::nullopt;
    return v;
  };
  l.conntrack_half_open = [fds](const kpx_ct_key& k) -> std::optional<kpx_ct_entry> {
    kpx_ct_entry v{};
    if (bpf_map_lookup_elem(fds->ct_syn.get(), &k, &v) != 0) return std::nullopt;
    return v;
  };
  l.affinity = [fds](const kpx_affinity_key& k) -> std::optional<kpx_affinity_val> {
    kpx_affinity_val v{};
    if (bpf_map_lookup_elem(fds->affinity.get(), &k, &v) != 0) return std::nullopt;
    return v;
  };
  return l;
}

}  // namespace kpx::xdp
