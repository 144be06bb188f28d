// LibbpfMaps: BpfMaps over the real kernel maps pinned by the kpx_xdp /
// kpx_tc objects (bpf(2) through libbpf's low-level API). Opening checks each
// map's type, key and value size against abi.h, so a map of another ABI
// version is refused with a message instead of being misread.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "dataplane/xdp/bpf_maps.h"
#include "dataplane/xdp/unique_fd.h"

namespace kpx::xdp {

// The names of abi.h's maps, as pinned under the pin directory.
inline constexpr const char* kMapNames[] = {
    "kpx_services",   "kpx_backends", "kpx_maglev",    "kpx_ct",            "kpx_ct_syn", "kpx_affinity",
    "kpx_node_addrs", "kpx_tx_ports", "kpx_svc_stats", "kpx_verdict_stats", "kpx_config"};

class LibbpfMaps final : public BpfMaps {
 public:
  // Opens the maps pinned under `pin_dir` (e.g. /sys/fs/bpf/kpx/v1).
  static absl::StatusOr<std::unique_ptr<LibbpfMaps>> Open(const std::string& pin_dir);

  MapCapacities capacities() const override { return caps_; }
  absl::Status UpdateService(const kpx_svc_key& key, const kpx_svc& value) override;
  absl::Status DeleteService(const kpx_svc_key& key) override;
  absl::StatusOr<std::vector<ServiceEntry>> ListServices() const override;
  absl::Status UpdateBackend(uint32_t id, const kpx_backend& value) override;
  absl::StatusOr<std::vector<BackendEntry>> ListBackends() const override;
  absl::Status UpdateServices(absl::Span<const ServiceEntry> entries, size_t* written) override;
  absl::Status UpdateBackends(absl::Span<const BackendEntry> entries) override;
  absl::StatusOr<std::vector<uint32_t>> ListMaglevChunks() const override;
  absl::Status AddMaglevChunks(absl::Span<const uint32_t> indexes) override;
  absl::StatusOr<uint32_t> WriteMaglevSlots(uint32_t offset, absl::Span<const uint32_t> table) override;
  absl::StatusOr<std::vector<uint32_t>> ReadMaglevSlots(uint32_t offset, uint32_t count) const override;
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
  absl::Status ClearServiceStats(absl::Span<const uint32_t> svc_ids) override;
  absl::StatusOr<VerdictCounters> ReadVerdictStats() const override;
  absl::Status ForEachConntrack(
      absl::FunctionRef<bool(const kpx_ct_key&, const kpx_ct_entry&)> fn) const override;
  absl::Status DeleteConntrack(const kpx_ct_key& key) override;

 private:
  LibbpfMaps() = default;
  // One chunk of the Maglev pool, mapped into our address space.
  struct Chunk {
    UniqueFd fd;
    uint32_t* slots = nullptr;  // MAP_SHARED; slot i at slots[2 * i] (8-byte array elements)
  };
  static absl::StatusOr<Chunk> MapChunk(UniqueFd fd, uint32_t index);
  const Chunk* FindChunk(uint32_t offset, size_t count) const;

 public:
  ~LibbpfMaps() override;

 private:

  MapCapacities caps_;
  int ncpus_ = 1;
  uint32_t tx_value_size_ = sizeof(uint32_t);
  UniqueFd services_, backends_, maglev_, ct_, node_addrs_, tx_ports_, svc_stats_, verdict_stats_,
      config_;
  std::map<uint32_t, Chunk> chunks_;  // by chunk index
};

}  // namespace kpx::xdp
