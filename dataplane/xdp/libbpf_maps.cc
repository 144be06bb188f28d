// LibbpfMaps: bpf(2) map operations on kpx's pinned maps. Bulk reads use
// BPF_MAP_LOOKUP_BATCH (one syscall per few thousand entries: adoption reads
// up to 262k backend slots) and fall back to get_next_key where a kernel
// lacks batch ops for a map type. Nothing here runs per packet.
#include "dataplane/xdp/libbpf_maps.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>
#include <sys/mman.h>

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

// An ARRAY map stores each value in round_up(value_size, 8) bytes, and a
// BPF_F_MMAPABLE one maps that storage as is: slot i of a chunk is the low
// 4 bytes of the 8-byte element i.
constexpr size_t kSlotStride = 2;  // in u32 units
constexpr size_t kChunkBytes = size_t{KPX_MAGLEV_CHUNK_SLOTS} * 8;

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
  m->caps_.maglev_chunks = info.max_entries;
  // The pool's chunks (a previous kpxd made them): map each for plain stores.
  std::vector<std::pair<uint32_t, uint32_t>> chunk_ids;  // index, kernel map id
  KPX_RETURN_IF_ERROR(DumpMap(m->maglev_.get(), "kpx_maglev", 4, 4, info.max_entries, [&](const void* k, const void* v) {
    uint32_t index, id;
    memcpy(&index, k, 4);
    memcpy(&id, v, 4);
    chunk_ids.emplace_back(index, id);
    return true;
  }));
  for (const auto& [index, id] : chunk_ids) {
    int fd = bpf_map_get_fd_by_id(id);
    if (fd < 0) return Errno(-fd, absl::StrCat("opening kpx_maglev chunk ", index, " (map id ", id, ")"));
    KPX_ASSIGN_OR_RETURN(m->chunks_[index], MapChunk(UniqueFd(fd), index));
  }
  KPX_ASSIGN_OR_RETURN(m->svc_stats_, OpenPinned(pin_dir, {"kpx_svc_stats", BPF_MAP_TYPE_PERCPU_ARRAY, 4,
                                                           sizeof(kpx_svc_stats)}, &info));
  m->caps_.service_ids = info.max_entries;
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

absl::Status LibbpfMaps::UpdateServices(absl::Span<const ServiceEntry> entries, size_t* written) {
  *written = 0;
  if (entries.empty()) return absl::OkStatus();
  std::vector<kpx_svc_key> keys;
  std::vector<kpx_svc> values;
  keys.reserve(entries.size());
  values.reserve(entries.size());
  for (const ServiceEntry& e : entries) {
    keys.push_back(e.key);
    values.push_back(e.value);
  }
  uint32_t count = static_cast<uint32_t>(entries.size());
  LIBBPF_OPTS(bpf_map_batch_opts, opts, .elem_flags = BPF_ANY);
  int err = bpf_map_update_batch(services_.get(), keys.data(), values.data(), &count, &opts);
  if (err < 0 && count == 0 && BatchUnsupported(-err)) return BpfMaps::UpdateServices(entries, written);
  *written = std::min<size_t>(count, entries.size());
  if (err < 0) {
    if (-err == E2BIG || -err == ENOSPC) {
      return absl::ResourceExhaustedError(absl::StrCat("kpx_services is full (", caps_.services, " entries)"));
    }
    return Errno(-err, absl::StrCat("kpx_services batch update of ", entries.size(), " entries"));
  }
  return absl::OkStatus();
}

absl::Status LibbpfMaps::UpdateBackends(absl::Span<const BackendEntry> entries) {
  if (entries.empty()) return absl::OkStatus();
  std::vector<uint32_t> keys;
  std::vector<kpx_backend> values;
  keys.reserve(entries.size());
  values.reserve(entries.size());
  for (const BackendEntry& e : entries) {
    keys.push_back(e.id);
    values.push_back(e.value);
  }
  uint32_t count = static_cast<uint32_t>(entries.size());
  LIBBPF_OPTS(bpf_map_batch_opts, opts, .elem_flags = BPF_ANY);
  int err = bpf_map_update_batch(backends_.get(), keys.data(), values.data(), &count, &opts);
  if (err < 0 && count == 0 && BatchUnsupported(-err)) return BpfMaps::UpdateBackends(entries);
  if (err < 0) return Errno(-err, absl::StrCat("kpx_backends batch update of ", entries.size(), " slots"));
  return absl::OkStatus();
}

LibbpfMaps::~LibbpfMaps() {
  for (auto& [index, chunk] : chunks_) {
    if (chunk.slots != nullptr) munmap(chunk.slots, kChunkBytes);
  }
}

absl::StatusOr<LibbpfMaps::Chunk> LibbpfMaps::MapChunk(UniqueFd fd, uint32_t index) {
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  if (int err = bpf_obj_get_info_by_fd(fd.get(), &info, &len); err < 0) {
    return Errno(-err, absl::StrCat("kpx_maglev chunk ", index, " info"));
  }
  if (info.type != BPF_MAP_TYPE_ARRAY || info.key_size != 4 || info.value_size != 4 ||
      info.max_entries != KPX_MAGLEV_CHUNK_SLOTS || !(info.map_flags & BPF_F_MMAPABLE)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "kpx_maglev chunk ", index, " is not a mmapable ", KPX_MAGLEV_CHUNK_SLOTS,
        "-slot u32 array (another kpx version pinned it: run kpxd --cleanup)"));
  }
  void* mem = mmap(nullptr, kChunkBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (mem == MAP_FAILED) return Errno(errno, absl::StrCat("mmap of kpx_maglev chunk ", index));
  Chunk c;
  c.fd = std::move(fd);
  c.slots = static_cast<uint32_t*>(mem);
  return c;
}

const LibbpfMaps::Chunk* LibbpfMaps::FindChunk(uint32_t offset, size_t count) const {
  auto it = chunks_.find(offset >> KPX_MAGLEV_CHUNK_SHIFT);
  if (it == chunks_.end() || count > KPX_MAGLEV_CHUNK_SLOTS - (offset & KPX_MAGLEV_CHUNK_MASK)) return nullptr;
  return &it->second;
}

absl::StatusOr<std::vector<uint32_t>> LibbpfMaps::ListMaglevChunks() const {
  std::vector<uint32_t> out;
  for (const auto& [index, chunk] : chunks_) out.push_back(index);
  return out;
}

absl::Status LibbpfMaps::AddMaglevChunks(absl::Span<const uint32_t> indexes) {
  if (indexes.empty()) return absl::OkStatus();
  std::vector<std::pair<uint32_t, Chunk>> fresh;
  std::vector<uint32_t> keys;
  std::vector<uint32_t> fds;
  auto unmap_fresh = [&] {
    for (auto& [index, c] : fresh) munmap(c.slots, kChunkBytes);
  };
  for (uint32_t index : indexes) {
    absl::Status s;
    if (index >= caps_.maglev_chunks || chunks_.contains(index)) {
      s = absl::InvalidArgumentError(absl::StrCat("kpx_maglev chunk ", index, " is out of range or present"));
    }
    LIBBPF_OPTS(bpf_map_create_opts, create_opts, .map_flags = BPF_F_MMAPABLE);
    int fd = s.ok() ? bpf_map_create(BPF_MAP_TYPE_ARRAY, "kpx_mg_chunk", 4, 4, KPX_MAGLEV_CHUNK_SLOTS, &create_opts)
                    : -EINVAL;
    if (s.ok() && fd < 0) {
      s = Errno(-fd, absl::StrCat("creating Maglev pool chunk ", index, " (", kChunkBytes / 1024,
                                  " KiB of kernel memory)"));
    }
    absl::StatusOr<Chunk> c = s.ok() ? MapChunk(UniqueFd(fd), index) : absl::StatusOr<Chunk>(s);
    if (!c.ok()) {
      unmap_fresh();
      return c.status();
    }
    keys.push_back(index);
    fds.push_back(static_cast<uint32_t>(c->fd.get()));
    fresh.emplace_back(index, std::move(*c));
  }
  // One BPF_MAP_UPDATE_BATCH: the kernel waits for an RCU grace period
  // once per call on a map-in-map update, so a cold start that needs 40
  // chunks pays one wait, not 40.
  uint32_t count = static_cast<uint32_t>(keys.size());
  LIBBPF_OPTS(bpf_map_batch_opts, opts, .elem_flags = BPF_ANY);
  int err = bpf_map_update_batch(maglev_.get(), keys.data(), fds.data(), &count, &opts);
  if (err < 0 && count == 0 && BatchUnsupported(-err)) {
    err = 0;
    for (count = 0; count < keys.size(); ++count) {
      if (err = bpf_map_update_elem(maglev_.get(), &keys[count], &fds[count], BPF_ANY); err < 0) break;
    }
  }
  // The ones installed are live whatever happened after them.
  for (uint32_t i = 0; i < count && i < fresh.size(); ++i) chunks_[fresh[i].first] = std::move(fresh[i].second);
  for (uint32_t i = count; i < fresh.size(); ++i) munmap(fresh[i].second.slots, kChunkBytes);
  if (err < 0) {
    if (-err == EINVAL) {
      return absl::FailedPreconditionError(absl::StrCat(
          "kpx_maglev rejected a pool chunk: not compatible with the outer map's template (mmapable ARRAY of ",
          KPX_MAGLEV_CHUNK_SLOTS, " u32 expected)"));
    }
    return Errno(-err, "kpx_maglev chunk install");
  }
  return absl::OkStatus();
}

absl::StatusOr<uint32_t> LibbpfMaps::WriteMaglevSlots(uint32_t offset, absl::Span<const uint32_t> table) {
  const Chunk* c = FindChunk(offset, table.size());
  if (c == nullptr) {
    return absl::OutOfRangeError(absl::StrCat("Maglev slots ", offset, "+", table.size(), " are outside the pool"));
  }
  uint32_t* slots = c->slots + (offset & KPX_MAGLEV_CHUNK_MASK) * kSlotStride;
  uint32_t changed = 0;
  for (size_t i = 0; i < table.size(); ++i) {
    // Relaxed atomics: single aligned 4-byte loads/stores the compiler may
    // not split or merge; the programs read each slot once per probe.
    uint32_t* slot = &slots[i * kSlotStride];
    if (__atomic_load_n(slot, __ATOMIC_RELAXED) != table[i]) {
      __atomic_store_n(slot, table[i], __ATOMIC_RELAXED);
      ++changed;
    }
  }
  // The kpx_services update that may follow (a syscall) orders these stores
  // before the programs can see the new (offset, m). ThreadSanitizer has no
  // model of fences (GCC refuses them under -fsanitize=thread) and cannot see
  // the BPF side anyway: there a compiler barrier keeps the same code order.
#if defined(__SANITIZE_THREAD__)
  __atomic_signal_fence(__ATOMIC_RELEASE);
#else
  __atomic_thread_fence(__ATOMIC_RELEASE);
#endif
  return changed;
}

absl::StatusOr<std::vector<uint32_t>> LibbpfMaps::ReadMaglevSlots(uint32_t offset, uint32_t count) const {
  const Chunk* c = FindChunk(offset, count);
  if (c == nullptr) {
    return absl::OutOfRangeError(absl::StrCat("Maglev slots ", offset, "+", count, " are outside the pool"));
  }
  std::vector<uint32_t> out(count);
  const uint32_t* slots = c->slots + (offset & KPX_MAGLEV_CHUNK_MASK) * kSlotStride;
  for (uint32_t i = 0; i < count; ++i) out[i] = __atomic_load_n(&slots[i * kSlotStride], __ATOMIC_RELAXED);
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

absl::Status LibbpfMaps::ClearServiceStats(absl::Span<const uint32_t> svc_ids) {
  if (svc_ids.empty()) return absl::OkStatus();
  std::vector<uint32_t> keys(svc_ids.begin(), svc_ids.end());
  std::vector<kpx_svc_stats> zero(static_cast<size_t>(ncpus_) * keys.size());
  uint32_t count = static_cast<uint32_t>(keys.size());
  LIBBPF_OPTS(bpf_map_batch_opts, opts, .elem_flags = BPF_ANY);
  int err = bpf_map_update_batch(svc_stats_.get(), keys.data(), zero.data(), &count, &opts);
  if (err < 0 && count == 0 && BatchUnsupported(-err)) return BpfMaps::ClearServiceStats(svc_ids);
  if (err < 0) return Errno(-err, absl::StrCat("kpx_svc_stats batch clear of ", keys.size(), " ids"));
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
