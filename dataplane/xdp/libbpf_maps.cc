// LibbpfMaps: bpf(2) map operations on kpx's pinned maps. Bulk reads use
// BPF_MAP_LOOKUP_BATCH (one syscall per few thousand entries: adoption reads
// up to 262k backend slots) and fall back to get_next_key where a kernel
// lacks batch ops for a map type. Nothing here runs per packet.
#include "dataplane/xdp/libbpf_maps.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "controller/base/status_macros.h"
#include "dataplane/xdp/abi_convert.h"

namespace kpx::xdp {
namespace {

constexpr int kEnotsupp = 524;  // kernel-internal ENOTSUPP, leaks out of bpf(2)

absl::Status Errno(int err, const std::string& what) {
  std::string msg = absl::StrCat(what, ": ", strerror(err));
  switch (err) {
    case ENOENT:
      return absl::NotFoundError(msg);
    case E2BIG:
    case ENOSPC:
    case ENOMEM:
      return absl::ResourceExhaustedError(msg);
    case EPERM:
    case EACCES:
      return absl::PermissionDeniedError(absl::StrCat(msg, " (needs CAP_BPF/CAP_SYS_ADMIN)"));
    case EINVAL:
      return absl::InvalidArgumentError(msg);
    default:
      return absl::InternalError(msg);
  }
}

bool BatchUnsupported(int err) { return err == EINVAL || err == EOPNOTSUPP || err == kEnotsupp || err == ENOSYS; }

// Calls fn(key, value) for every entry; fn returns false to stop.
absl::Status DumpMap(int fd, const char* name, uint32_t key_size, uint32_t value_size, uint32_t max_entries,
                     absl::FunctionRef<bool(const void*, const void*)> fn) {
  uint32_t chunk = std::clamp<uint32_t>(max_entries, 1, 8192);
  std::vector<uint8_t> keys(static_cast<size_t>(chunk) * key_size);
  std::vector<uint8_t> values(static_cast<size_t>(chunk) * value_size);
  std::vector<uint8_t> in_tok(std::max<uint32_t>(key_size, 8)), out_tok(in_tok.size());
  LIBBPF_OPTS(bpf_map_batch_opts, opts);
  bool first = true;
  for (uint64_t round = 0; round <= static_cast<uint64_t>(max_entries) + 1; ++round) {
    uint32_t count = chunk;
    int err = bpf_map_lookup_batch(fd, first ? nullptr : in_tok.data(), out_tok.data(), keys.data(),
                                   values.data(), &count, &opts);
    const int e = err < 0 ? -err : 0;
    if (e != 0 && e != ENOENT) {
      if (first && BatchUnsupported(e)) break;  // fall back below
      if (e == ENOSPC && chunk < max_entries) {  // a hash bucket larger than the chunk
        chunk = std::min<uint32_t>(max_entries, chunk * 4);
        keys.resize(static_cast<size_t>(chunk) * key_size);
        values.resize(static_cast<size_t>(chunk) * value_size);
        continue;
      }
      return Errno(e, absl::StrCat("reading ", name));
    }
    for (uint32_t i = 0; i < count; ++i) {
      if (!fn(keys.data() + static_cast<size_t>(i) * key_size, values.data() + static_cast<size_t>(i) * value_size)) {
        return absl::OkStatus();
      }
    }
    if (e == ENOENT) return absl::OkStatus();
    in_tok = out_tok;
    first = false;
  }
  if (!first) return absl::InternalError(absl::StrCat("reading ", name, ": batch lookup did not terminate"));

  std::vector<uint8_t> key(key_size), next(key_size), value(value_size);
  int err = bpf_map_get_next_key(fd, nullptr, next.data());
  for (uint64_t i = 0; err == 0 && i <= max_entries; ++i) {
    if (bpf_map_lookup_elem(fd, next.data(), value.data()) == 0 && !fn(next.data(), value.data())) {
      return absl::OkStatus();
    }
    key = next;
    err = bpf_map_get_next_key(fd, key.data(), next.data());
  }
  if (err < 0 && -err != ENOENT) return Errno(-err, absl::StrCat("iterating ", name));
  return absl::OkStatus();
}

struct Expected {
  const char* name;
  bpf_map_type type;
  uint32_t key_size;
  uint32_t value_size;  // 0: checked by the caller
};

absl::StatusOr<UniqueFd> OpenPinned(const std::string& pin_dir, const Expected& want, bpf_map_info* info) {
  const std::string path = absl::StrCat(pin_dir, "/", want.name);
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0) {
    absl::Status s = Errno(-fd, absl::StrCat("opening pinned map ", path));
    if (absl::IsNotFound(s)) {
      return absl::NotFoundError(absl::StrCat(s.message(), " (maps are pinned when kpxd loads the XDP dataplane)"));
    }
    return s;
  }
  UniqueFd owned(fd);
  *info = {};
  uint32_t len = sizeof(*info);
  if (int err = bpf_obj_get_info_by_fd(fd, info, &len); err < 0) {
    return Errno(-err, absl::StrCat("bpf_obj_get_info_by_fd ", path));
  }
  if (info->type != static_cast<uint32_t>(want.type) || info->key_size != want.key_size ||
      (want.value_size != 0 && info->value_size != want.value_size)) {
    return absl::FailedPreconditionError(absl::StrCat(
        path, " has type ", info->type, ", key ", info->key_size, " B, value ", info->value_size,
        " B; kpx ABI v", KPX_ABI_VERSION, " expects type ", want.type, ", key ", want.key_size, " B, value ",
        want.value_size, " B. Another kpx version pinned it: run kpxd --cleanup"));
  }
  return owned;
}

}  // namespace

absl::StatusOr<std::unique_ptr<LibbpfMaps>> LibbpfMaps::Open(const std::string& pin_dir) {
  std::unique_ptr<LibbpfMaps> m(new LibbpfMaps());
  int ncpus = libbpf_num_possible_cpus();
  if (ncpus <= 0) return Errno(-ncpus, "libbpf_num_possible_cpus");
  m->ncpus_ = ncpus;
  bpf_map_info info{};
  KPX_ASSIGN_OR_RETURN(m->services_, OpenPinned(pin_dir, {"kpx_services", BPF_MAP_TYPE_HASH, sizeof(kpx_svc_key),
                                                          sizeof(kpx_svc)}, &info));
  m->caps_.services = info.max_entries;
  KPX_ASSIGN_OR_RETURN(m->backends_, OpenPinned(pin_dir, {"kpx_backends", BPF_MAP_TYPE_ARRAY, 4,
                                                          sizeof(kpx_backend)}, &info));
  m->caps_.backends = info.max_entries;
  KPX_ASSIGN_OR_RETURN(m->maglev_, OpenPinned(pin_dir, {"kpx_maglev", BPF_MAP_TYPE_ARRAY_OF_MAPS, 4, 4}, &info));
  m->caps_.service_ids = info.max_entries;
  KPX_ASSIGN_OR_RETURN(m->svc_stats_, OpenPinned(pin_dir, {"kpx_svc_stats", BPF_MAP_TYPE_PERCPU_ARRAY, 4,
                                                           sizeof(kpx_svc_stats)}, &info));
  m->caps_.service_ids = std::min(m->caps_.service_ids, info.max_entries);
  KPX_ASSIGN_OR_RETURN(m->ct_, OpenPinned(pin_dir, {"kpx_ct", BPF_MAP_TYPE_LRU_HASH, sizeof(kpx_ct_key),
                                                    sizeof(kpx_ct_entry)}, &info));
  KPX_ASSIGN_OR_RETURN(m->node_addrs_, OpenPinned(pin_dir, {"kpx_node_addrs", BPF_MAP_TYPE_HASH, 4, 1}, &info));
  KPX_ASSIGN_OR_RETURN(m->tx_ports_, OpenPinned(pin_dir, {"kpx_tx_ports", BPF_MAP_TYPE_DEVMAP_HASH, 4, 0}, &info));
  if (info.value_size != 4 && info.value_size != 8) {  // ifindex, or struct bpf_devmap_val
    return absl::FailedPreconditionError(
        absl::StrCat(pin_dir, "/kpx_tx_ports has values of ", info.value_size, " B, expected 4 or 8"));
  }
  m->tx_value_size_ = info.value_size;
  KPX_ASSIGN_OR_RETURN(m->verdict_stats_, OpenPinned(pin_dir, {"kpx_verdict_stats", BPF_MAP_TYPE_PERCPU_ARRAY, 4,
                                                               sizeof(uint64_t)}, &info));
  if (info.max_entries < KPX_V_MAX) {
    return absl::FailedPreconditionError(absl::StrCat(pin_dir, "/kpx_verdict_stats has ", info.max_entries,
                                                      " entries, ABI has ", KPX_V_MAX, " verdicts"));
  }
  KPX_ASSIGN_OR_RETURN(m->config_, OpenPinned(pin_dir, {"kpx_config", BPF_MAP_TYPE_ARRAY, 4, sizeof(kpx_config)},
                                              &info));
  return m;
}

absl::Status LibbpfMaps::UpdateService(const kpx_svc_key& key, const kpx_svc& value) {
  if (int err = bpf_map_update_elem(services_.get(), &key, &value, BPF_ANY); err < 0) {
    if (-err == E2BIG) {
      return absl::ResourceExhaustedError(absl::StrCat("kpx_services is full (", caps_.services, " entries)"));
    }
    return Errno(-err, absl::StrCat("kpx_services update ", SvcKeyString(key)));
  }
  return absl::OkStatus();
}

absl::Status LibbpfMaps::DeleteService(const kpx_svc_key& key) {
  if (int err = bpf_map_delete_elem(services_.get(), &key); err < 0 && -err != ENOENT) {
    return Errno(-err, "kpx_services delete");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<ServiceEntry>> LibbpfMaps::ListServices() const {
  std::vector<ServiceEntry> out;
  KPX_RETURN_IF_ERROR(DumpMap(services_.get(), "kpx_services", sizeof(kpx_svc_key), sizeof(kpx_svc),
                              caps_.services, [&](const void* k, const void* v) {
                                ServiceEntry e;
                                memcpy(&e.key, k, sizeof(e.key));
                                memcpy(&e.value, v, sizeof(e.value));
                                out.push_back(e);
                                return true;
                              }));
  return out;
}

absl::Status LibbpfMaps::UpdateBackend(uint32_t id, const kpx_backend& value) {
  if (int err = bpf_map_update_elem(backends_.get(), &id, &value, BPF_ANY); err < 0) {
    return Errno(-err, absl::StrCat("kpx_backends[", id, "] update"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<BackendEntry>> LibbpfMaps::ListBackends() const {
  std::vector<BackendEntry> out;
  KPX_RETURN_IF_ERROR(DumpMap(backends_.get(), "kpx_backends", 4, sizeof(kpx_backend), caps_.backends,
                              [&](const void* k, const void* v) {
                                BackendEntry e;
                                memcpy(&e.id, k, sizeof(e.id));
                                memcpy(&e.value, v, sizeof(e.value));
                                if (e.value.addr != 0) out.push_back(e);
                                return true;
                              }));
  return out;
}

absl::Status LibbpfMaps::ReplaceMaglevTable(uint32_t svc_id, absl::Span<const uint32_t> table) {
  if (table.empty()) return absl::InvalidArgumentError("empty Maglev table");
  const std::string name = absl::StrCat("kpx_mg_", svc_id);  // BPF_OBJ_NAME_LEN 16
  LIBBPF_OPTS(bpf_map_create_opts, create_opts, .map_flags = BPF_F_INNER_MAP);
  int fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, name.c_str(), 4, 4, static_cast<uint32_t>(table.size()), &create_opts);
  if (fd < 0) return Errno(-fd, absl::StrCat("creating a ", table.size(), "-slot Maglev table"));
  UniqueFd inner(fd);
  std::vector<uint32_t> keys(table.size());
  std::iota(keys.begin(), keys.end(), 0u);
  uint32_t count = static_cast<uint32_t>(table.size());
  LIBBPF_OPTS(bpf_map_batch_opts, batch_opts);
  int err = bpf_map_update_batch(inner.get(), keys.data(), table.data(), &count, &batch_opts);
  if (err < 0 && BatchUnsupported(-err)) {
    err = 0;
    for (uint32_t i = 0; i < table.size() && err == 0; ++i) err = bpf_map_update_elem(inner.get(), &i, &table[i], BPF_ANY);
  }
  if (err < 0) return Errno(-err, "filling a Maglev table");
  int inner_fd = inner.get();
  if (err = bpf_map_update_elem(maglev_.get(), &svc_id, &inner_fd, BPF_ANY); err < 0) {
    if (-err == EINVAL) {
      return absl::FailedPreconditionError(absl::StrCat(
          "kpx_maglev[", svc_id, "] rejected the table: not compatible with the outer map's inner template "
          "(ARRAY u32->u32 with BPF_F_INNER_MAP expected)"));
    }
    return Errno(-err, absl::StrCat("kpx_maglev[", svc_id, "] update"));
  }
  return absl::OkStatus();  // the outer map holds the table now; our fd closes
}

absl::Status LibbpfMaps::DeleteMaglevTable(uint32_t svc_id) {
  if (int err = bpf_map_delete_elem(maglev_.get(), &svc_id); err < 0 && -err != ENOENT) {
    return Errno(-err, absl::StrCat("kpx_maglev[", svc_id, "] delete"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint32_t>> LibbpfMaps::ReadMaglevTable(uint32_t svc_id) const {
  uint32_t inner_id = 0;
  if (int err = bpf_map_lookup_elem(maglev_.get(), &svc_id, &inner_id); err < 0) {
    if (-err == ENOENT) return std::vector<uint32_t>();
    return Errno(-err, absl::StrCat("kpx_maglev[", svc_id, "] lookup"));
  }
  int fd = bpf_map_get_fd_by_id(inner_id);
  if (fd < 0) {
    if (-fd == ENOENT) return std::vector<uint32_t>();  // replaced meanwhile
    return Errno(-fd, absl::StrCat("opening Maglev table of service ", svc_id));
  }
  UniqueFd inner(fd);
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  if (int err = bpf_obj_get_info_by_fd(fd, &info, &len); err < 0) return Errno(-err, "Maglev table info");
  std::vector<uint32_t> table(info.max_entries);
  KPX_RETURN_IF_ERROR(DumpMap(fd, "a Maglev table", 4, 4, info.max_entries, [&](const void* k, const void* v) {
    uint32_t slot;
    memcpy(&slot, k, 4);
    if (slot < table.size()) memcpy(&table[slot], v, 4);
    return true;
  }));
  return table;
}

absl::StatusOr<std::vector<uint32_t>> LibbpfMaps::ListMaglevIds() const {
  std::vector<uint32_t> out;
  for (uint32_t id = 0; id < caps_.service_ids; ++id) {
    uint32_t inner_id = 0;
    int err = bpf_map_lookup_elem(maglev_.get(), &id, &inner_id);
    if (err == 0) {
      out.push_back(id);
    } else if (-err != ENOENT) {
      return Errno(-err, absl::StrCat("kpx_maglev[", id, "] lookup"));
    }
  }
  return out;
}

absl::Status LibbpfMaps::UpdateNodeAddress(Ipv4 addr) {
  uint32_t key = addr.be();
  uint8_t one = 1;
  if (int err = bpf_map_update_elem(node_addrs_.get(), &key, &one, BPF_ANY); err < 0) {
    return Errno(-err, absl::StrCat("kpx_node_addrs update ", addr.ToString()));
  }
  return absl::OkStatus();
}

absl::Status LibbpfMaps::DeleteNodeAddress(Ipv4 addr) {
  uint32_t key = addr.be();
  if (int err = bpf_map_delete_elem(node_addrs_.get(), &key); err < 0 && -err != ENOENT) {
    return Errno(-err, absl::StrCat("kpx_node_addrs delete ", addr.ToString()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Ipv4>> LibbpfMaps::ListNodeAddresses() const {
  std::vector<Ipv4> out;
  KPX_RETURN_IF_ERROR(DumpMap(node_addrs_.get(), "kpx_node_addrs", 4, 1, KPX_MAX_IFACES, [&](const void* k, const void*) {
    uint32_t be;
    memcpy(&be, k, 4);
    out.push_back(Ipv4::FromBe(be));
    return true;
  }));
  return out;
}

absl::Status LibbpfMaps::UpdateTxPort(int ifindex) {
  uint32_t key = static_cast<uint32_t>(ifindex);
  uint64_t value = key;  // ifindex first; bpf_devmap_val.bpf_prog.fd = 0 (none)
  if (int err = bpf_map_update_elem(tx_ports_.get(), &key, &value, BPF_ANY); err < 0) {
    return Errno(-err, absl::StrCat("kpx_tx_ports update ifindex ", ifindex));
  }
  return absl::OkStatus();
}

absl::Status LibbpfMaps::DeleteTxPort(int ifindex) {
  uint32_t key = static_cast<uint32_t>(ifindex);
  if (int err = bpf_map_delete_elem(tx_ports_.get(), &key); err < 0 && -err != ENOENT) {
    return Errno(-err, absl::StrCat("kpx_tx_ports delete ifindex ", ifindex));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int>> LibbpfMaps::ListTxPorts() const {
  // Devmaps cannot be read from userspace with lookup_batch on every kernel;
  // keys alone are enough.
  std::vector<int> out;
  uint32_t key = 0, next = 0;
  int err = bpf_map_get_next_key(tx_ports_.get(), nullptr, &next);
  for (int i = 0; err == 0 && i <= KPX_MAX_IFACES; ++i) {
    out.push_back(static_cast<int>(next));
    key = next;
    err = bpf_map_get_next_key(tx_ports_.get(), &key, &next);
  }
  if (err < 0 && -err != ENOENT) return Errno(-err, "iterating kpx_tx_ports");
  return out;
}

absl::Status LibbpfMaps::WriteConfig(const kpx_config& config) {
  uint32_t key = 0;
  if (int err = bpf_map_update_elem(config_.get(), &key, &config, BPF_ANY); err < 0) {
    return Errno(-err, "kpx_config update");
  }
  return absl::OkStatus();
}

absl::StatusOr<kpx_config> LibbpfMaps::ReadConfig() const {
  uint32_t key = 0;
  kpx_config config{};
  if (int err = bpf_map_lookup_elem(config_.get(), &key, &config); err < 0) return Errno(-err, "kpx_config lookup");
  return config;
}

absl::StatusOr<kpx_svc_stats> LibbpfMaps::ReadServiceStats(uint32_t svc_id) const {
  static_assert(sizeof(kpx_svc_stats) % 8 == 0, "per-CPU values are 8-byte aligned");
  std::vector<kpx_svc_stats> per_cpu(ncpus_);
  if (int err = bpf_map_lookup_elem(svc_stats_.get(), &svc_id, per_cpu.data()); err < 0) {
    return Errno(-err, absl::StrCat("kpx_svc_stats[", svc_id, "] lookup"));
  }
  kpx_svc_stats sum{};
  for (const kpx_svc_stats& s : per_cpu) {
    sum.packets += s.packets;
    sum.bytes += s.bytes;
    sum.new_flows += s.new_flows;
    sum.no_backend += s.no_backend;
  }
  return sum;
}

absl::Status LibbpfMaps::ClearServiceStats(uint32_t svc_id) {
  std::vector<kpx_svc_stats> zero(ncpus_);
  if (int err = bpf_map_update_elem(svc_stats_.get(), &svc_id, zero.data(), BPF_ANY); err < 0) {
    return Errno(-err, absl::StrCat("kpx_svc_stats[", svc_id, "] clear"));
  }
  return absl::OkStatus();
}

absl::StatusOr<VerdictCounters> LibbpfMaps::ReadVerdictStats() const {
  VerdictCounters out{};
  std::vector<uint64_t> per_cpu(ncpus_);
  for (uint32_t v = 0; v < KPX_V_MAX; ++v) {
    if (int err = bpf_map_lookup_elem(verdict_stats_.get(), &v, per_cpu.data()); err < 0) {
      return Errno(-err, absl::StrCat("kpx_verdict_stats[", v, "] lookup"));
    }
    for (uint64_t c : per_cpu) out[v] += c;
  }
  return out;
}

absl::Status LibbpfMaps::ForEachConntrack(
    absl::FunctionRef<bool(const kpx_ct_key&, const kpx_ct_entry&)> fn) const {
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  if (int err = bpf_obj_get_info_by_fd(ct_.get(), &info, &len); err < 0) return Errno(-err, "kpx_ct info");
  return DumpMap(ct_.get(), "kpx_ct", sizeof(kpx_ct_key), sizeof(kpx_ct_entry), info.max_entries,
                 [&](const void* k, const void* v) {
                   kpx_ct_key key;
                   kpx_ct_entry entry;
                   memcpy(&key, k, sizeof(key));
                   memcpy(&entry, v, sizeof(entry));
                   return fn(key, entry);
                 });
}

absl::Status LibbpfMaps::DeleteConntrack(const kpx_ct_key& key) {
  if (int err = bpf_map_delete_elem(ct_.get(), &key); err < 0 && -err != ENOENT) {
    return Errno(-err, "deleting from kpx_ct");
  }
  return absl::OkStatus();
}

}  // namespace kpx::xdp
