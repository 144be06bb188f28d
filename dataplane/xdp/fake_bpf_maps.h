// FakeBpfMaps: an in-memory BpfMaps for unit tests. It behaves like the
// kernel maps (capacities, idempotent deletes, atomic table swaps), records
// every write as a short string ("UpdateBackend 3 10.0.0.1:80") so tests can
// assert exactly what an Apply touched, and can fail a chosen operation.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "dataplane/xdp/bpf_maps.h"

namespace kpx::xdp {

class FakeBpfMaps final : public BpfMaps {
 public:
  explicit FakeBpfMaps(MapCapacities caps = {}) : caps_(caps) {}

  MapCapacities capacities() const override { return caps_; }

  absl::Status UpdateService(const kpx_svc_key& key, const kpx_svc& value) override;
  absl::Status DeleteService(const kpx_svc_key& key) override;
  absl::StatusOr<std::vector<ServiceEntry>> ListServices() const override;
  absl::Status UpdateBackend(uint32_t id, const kpx_backend& value) override;
  absl::StatusOr<std::vector<BackendEntry>> ListBackends() const override;
  absl::StatusOr<std::vector<uint32_t>> ListMaglevChunks() const override;
  absl::Status AddMaglevChunks(absl::Span<const uint32_t> indexes) override;
  absl::StatusOr<uint32_t> WriteMaglevSlots(uint32_t offset, absl::Span<const uint32_t> table) override;
  absl::StatusOr<std::vector<uint32_t>> ReadMaglevSlots(uint32_t offset, uint32_t count) const override;
  using BpfMaps::ClearServiceStats;
  absl::Status UpdateNodeAddress(Ipv4 addr) override;
  absl::Status DeleteNodeAddress(Ipv4 addr) override;
  absl::StatusOr<std::vector<Ipv4>> ListNodeAddresses() const override;
  absl::Status UpdateTxPort(int ifindex) override;
  absl::Status DeleteTxPort(int ifindex) override;
  absl::StatusOr<std::vector<int>> ListTxPorts() const override;
  absl::Status WriteConfig(const kpx_config& config) override;
  absl::StatusOr<kpx_config> ReadConfig() const override;
  absl::StatusOr<kpx_svc_stats> ReadServiceStats(uint32_t svc_id) const override;
  absl::Status ClearServiceStats(uint32_t svc_id) override;
  absl::StatusOr<VerdictCounters> ReadVerdictStats() const override;
  absl::Status ForEachConntrack(
      absl::FunctionRef<bool(const kpx_ct_key&, const kpx_ct_entry&)> fn) const override;
  absl::Status DeleteConntrack(const kpx_ct_key& key) override;

  // Writes so far, oldest first, e.g. "UpdateService 10.96.0.1:80/6 id=1
  // n=2 m=251", "AddChunks 0", "WriteMaglev off=0 m=251 changed=251",
  // "UpdateBackend 3 10.0.0.1:80", "DeleteService ...", "ClearStats 1".
  std::vector<std::string> ops() const;
  void ClearOps();
  // The next write whose op string starts with `prefix` fails with `status`
  // and changes nothing.
  void FailNext(std::string prefix, absl::Status status);

  // Direct state access for tests (what the BPF programs would read/write).
  std::map<uint64_t, kpx_svc> services() const;  // key: SvcKeyPacked
  static uint64_t SvcKeyPacked(const kpx_svc_key& key);
  kpx_backend backend(uint32_t id) const;
  // The table kpx_services points service id `svc_id` at (empty if none).
  std::vector<uint32_t> maglev(uint32_t svc_id) const;
  void SetServiceStats(uint32_t svc_id, const kpx_svc_stats& stats);
  void SetVerdict(kpx_verdict verdict, uint64_t value);
  void AddConntrack(const kpx_ct_key& key, const kpx_ct_entry& entry);

 private:
  absl::Status Record(std::string op) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::vector<uint32_t>> ReadSlotsLocked(uint32_t offset, uint32_t count) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const MapCapacities caps_;
  mutable absl::Mutex mu_;
  std::map<uint64_t, ServiceEntry> services_ ABSL_GUARDED_BY(mu_);
  std::map<uint32_t, kpx_backend> backends_ ABSL_GUARDED_BY(mu_);
  std::map<uint32_t, std::vector<uint32_t>> chunks_ ABSL_GUARDED_BY(mu_);  // kpx_maglev
  std::set<uint32_t> node_addrs_ ABSL_GUARDED_BY(mu_);  // be
  std::set<int> tx_ports_ ABSL_GUARDED_BY(mu_);
  kpx_config config_ ABSL_GUARDED_BY(mu_){};
  std::map<uint32_t, kpx_svc_stats> svc_stats_ ABSL_GUARDED_BY(mu_);
  VerdictCounters verdicts_ ABSL_GUARDED_BY(mu_){};
  std::vector<std::pair<kpx_ct_key, kpx_ct_entry>> ct_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> ops_ ABSL_GUARDED_BY(mu_);
  std::string fail_prefix_ ABSL_GUARDED_BY(mu_);
  absl::Status fail_status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kpx::xdp
