// In-memory maps with the kernel's observable behaviour for what kpx uses:
// capacity errors, array bounds, idempotent deletes.
#include "dataplane/xdp/fake_bpf_maps.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "dataplane/xdp/abi_convert.h"

namespace kpx::xdp {

absl::Status FakeBpfMaps::Record(std::string op) {
  if (!fail_prefix_.empty() && absl::StartsWith(op, fail_prefix_)) {
    fail_prefix_.clear();
    return fail_status_;
  }
  ops_.push_back(std::move(op));
  return absl::OkStatus();
}

uint64_t FakeBpfMaps::SvcKeyPacked(const kpx_svc_key& key) {
  return (static_cast<uint64_t>(key.addr) << 32) | (static_cast<uint64_t>(key.port) << 8) | key.proto;
}

absl::Status FakeBpfMaps::UpdateService(const kpx_svc_key& key, const kpx_svc& value) {
  absl::MutexLock lock(&mu_);
  const uint64_t k = SvcKeyPacked(key);
  if (!services_.contains(k) && services_.size() >= caps_.services) {
    return absl::ResourceExhaustedError(
        absl::StrCat("kpx_services is full (", caps_.services, " entries)"));
  }
  if (absl::Status s = Record(absl::StrCat("UpdateService ", SvcKeyString(key), " id=", value.id,
                                           " n=", value.backend_count, " m=", value.maglev_m));
      !s.ok()) {
    return s;
  }
  services_[k] = ServiceEntry{key, value};
  return absl::OkStatus();
}

absl::Status FakeBpfMaps::DeleteService(const kpx_svc_key& key) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Record(absl::StrCat("DeleteService ", SvcKeyString(key))); !s.ok()) return s;
  services_.erase(SvcKeyPacked(key));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<ServiceEntry>> FakeBpfMaps::ListServices() const {
  absl::MutexLock lock(&mu_);
  std::vector<ServiceEntry> out;
  for (const auto& [k, e] : services_) out.push_back(e);
  return out;
}

absl::Status FakeBpfMaps::UpdateBackend(uint32_t id, const kpx_backend& value) {
  absl::MutexLock lock(&mu_);
  if (id >= caps_.backends) return absl::OutOfRangeError(absl::StrCat("kpx_backends index ", id));
  if (absl::Status s = Record(absl::StrCat("UpdateBackend ", id, " ", BackendString(value))); !s.ok()) {
    return s;
  }
  if (value.addr == 0 && value.port == 0) {
    backends_.erase(id);
  } else {
    backends_[id] = value;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<BackendEntry>> FakeBpfMaps::ListBackends() const {
  absl::MutexLock lock(&mu_);
  std::vector<BackendEntry> out;
  for (const auto& [id, v] : backends_) {
    if (v.addr != 0) out.push_back({id, v});
  }
  return out;
}

absl::StatusOr<std::vector<uint32_t>> FakeBpfMaps::ListMaglevChunks() const {
  absl::MutexLock lock(&mu_);
  std::vector<uint32_t> out;
  for (const auto& [index, slots] : chunks_) out.push_back(index);
  return out;
}

absl::Status FakeBpfMaps::AddMaglevChunks(absl::Span<const uint32_t> indexes) {
  absl::MutexLock lock(&mu_);
  for (uint32_t i : indexes) {
    if (i >= caps_.maglev_chunks) return absl::OutOfRangeError(absl::StrCat("kpx_maglev index ", i));
  }
  if (absl::Status s = Record(absl::StrCat("AddChunks ", absl::StrJoin(indexes, ","))); !s.ok()) return s;
  for (uint32_t i : indexes) chunks_[i].assign(KPX_MAGLEV_CHUNK_SLOTS, 0);
  return absl::OkStatus();
}

absl::StatusOr<uint32_t> FakeBpfMaps::WriteMaglevSlots(uint32_t offset, absl::Span<const uint32_t> table) {
  absl::MutexLock lock(&mu_);
  const uint32_t start = offset & KPX_MAGLEV_CHUNK_MASK;
  auto it = chunks_.find(offset >> KPX_MAGLEV_CHUNK_SHIFT);
  if (it == chunks_.end() || table.size() > KPX_MAGLEV_CHUNK_SLOTS - start) {
    return absl::OutOfRangeError(absl::StrCat("Maglev slots ", offset, "+", table.size(), " outside the pool"));
  }
  uint32_t changed = 0;
  for (size_t i = 0; i < table.size(); ++i) changed += it->second[start + i] != table[i];
  if (absl::Status s = Record(absl::StrCat("WriteMaglev off=", offset, " m=", table.size(), " changed=", changed));
      !s.ok()) {
    return s;
  }
  std::copy(table.begin(), table.end(), it->second.begin() + start);
  return changed;
}

absl::StatusOr<std::vector<uint32_t>> FakeBpfMaps::ReadMaglevSlots(uint32_t offset, uint32_t count) const {
  absl::MutexLock lock(&mu_);
  return ReadSlotsLocked(offset, count);
}

absl::StatusOr<std::vector<uint32_t>> FakeBpfMaps::ReadSlotsLocked(uint32_t offset, uint32_t count) const {
  const uint32_t start = offset & KPX_MAGLEV_CHUNK_MASK;
  auto it = chunks_.find(offset >> KPX_MAGLEV_CHUNK_SHIFT);
  if (it == chunks_.end() || count > KPX_MAGLEV_CHUNK_SLOTS - start) {
    return absl::OutOfRangeError(absl::StrCat("Maglev slots ", offset, "+", count, " outside the pool"));
  }
  return std::vector<uint32_t>(it->second.begin() + start, it->second.begin() + start + count);
}

absl::Status FakeBpfMaps::UpdateNodeAddress(Ipv4 addr) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Record(absl::StrCat("UpdateNodeAddress ", addr.ToString())); !s.ok()) return s;
  node_addrs_.insert(addr.be());
  return absl::OkStatus();
}

absl::Status FakeBpfMaps::DeleteNodeAddress(Ipv4 addr) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Record(absl::StrCat("DeleteNodeAddress ", addr.ToString())); !s.ok()) return s;
  node_addrs_.erase(addr.be());
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Ipv4>> FakeBpfMaps::ListNodeAddresses() const {
  absl::MutexLock lock(&mu_);
  std::vector<Ipv4> out;
  for (uint32_t be : node_addrs_) out.push_back(Ipv4::FromBe(be));
  return out;
}

absl::Status FakeBpfMaps::UpdateTxPort(int ifindex) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Record(absl::StrCat("UpdateTxPort ", ifindex)); !s.ok()) return s;
  tx_ports_.insert(ifindex);
  return absl::OkStatus();
}

absl::Status FakeBpfMaps::DeleteTxPort(int ifindex) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Record(absl::StrCat("DeleteTxPort ", ifindex)); !s.ok()) return s;
  tx_ports_.erase(ifindex);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int>> FakeBpfMaps::ListTxPorts() const {
  absl::MutexLock lock(&mu_);
  return std::vector<int>(tx_ports_.begin(), tx_ports_.end());
}

absl::Status FakeBpfMaps::WriteConfig(const kpx_config& config) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Record("WriteConfig"); !s.ok()) return s;
  config_ = config;
  return absl::OkStatus();
}

absl::StatusOr<kpx_config> FakeBpfMaps::ReadConfig() const {
  absl::MutexLock lock(&mu_);
  return config_;
}

absl::StatusOr<kpx_svc_stats> FakeBpfMaps::ReadServiceStats(uint32_t svc_id) const {
  absl::MutexLock lock(&mu_);
  auto it = svc_stats_.find(svc_id);
  return it == svc_stats_.end() ? kpx_svc_stats{} : it->second;
}

absl::Status FakeBpfMaps::ClearServiceStats(uint32_t svc_id) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = Record(absl::StrCat("ClearStats ", svc_id)); !s.ok()) return s;
  svc_stats_.erase(svc_id);
  return absl::OkStatus();
}

absl::StatusOr<VerdictCounters> FakeBpfMaps::ReadVerdictStats() const {
  absl::MutexLock lock(&mu_);
  return verdicts_;
}

absl::Status FakeBpfMaps::ForEachConntrack(
    absl::FunctionRef<bool(const kpx_ct_key&, const kpx_ct_entry&)> fn) const {
  absl::MutexLock lock(&mu_);
  for (const auto& [k, e] : ct_) {
    if (!fn(k, e)) break;
  }
  return absl::OkStatus();
}

std::vector<std::string> FakeBpfMaps::ops() const {
  absl::MutexLock lock(&mu_);
  return ops_;
}

void FakeBpfMaps::ClearOps() {
  absl::MutexLock lock(&mu_);
  ops_.clear();
}

void FakeBpfMaps::FailNext(std::string prefix, absl::Status status) {
  absl::MutexLock lock(&mu_);
  fail_prefix_ = std::move(prefix);
  fail_status_ = std::move(status);
}

std::map<uint64_t, kpx_svc> FakeBpfMaps::services() const {
  absl::MutexLock lock(&mu_);
  std::map<uint64_t, kpx_svc> out;
  for (const auto& [k, e] : services_) out[k] = e.value;
  return out;
}

kpx_backend FakeBpfMaps::backend(uint32_t id) const {
  absl::MutexLock lock(&mu_);
  auto it = backends_.find(id);
  return it == backends_.end() ? kpx_backend{} : it->second;
}

std::vector<uint32_t> FakeBpfMaps::maglev(uint32_t svc_id) const {
  absl::MutexLock lock(&mu_);
  for (const auto& [k, e] : services_) {
    if (e.value.id != svc_id || e.value.maglev_m == 0) continue;
    absl::StatusOr<std::vector<uint32_t>> t = ReadSlotsLocked(e.value.maglev_off, e.value.maglev_m);
    return t.ok() ? *t : std::vector<uint32_t>();
  }
  return {};
}

void FakeBpfMaps::SetServiceStats(uint32_t svc_id, const kpx_svc_stats& stats) {
  absl::MutexLock lock(&mu_);
  svc_stats_[svc_id] = stats;
}

void FakeBpfMaps::SetVerdict(kpx_verdict verdict, uint64_t value) {
  absl::MutexLock lock(&mu_);
  verdicts_[verdict] = value;
}

absl::Status FakeBpfMaps::DeleteConntrack(const kpx_ct_key& key) {
  absl::MutexLock lock(&mu_);
  std::erase_if(ct_, [&](const auto& kv) { return SameBytes(kv.first, key); });
  return absl::OkStatus();
}

void FakeBpfMaps::AddConntrack(const kpx_ct_key& key, const kpx_ct_entry& entry) {
  absl::MutexLock lock(&mu_);
  ct_.emplace_back(key, entry);
}

}  // namespace kpx::xdp
