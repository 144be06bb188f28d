// BpfMaps' batch operations as loops of single ones: what a fake or a
// kernel without BPF_MAP_UPDATE_BATCH gets; LibbpfMaps overrides them.
#include "dataplane/xdp/bpf_maps.h"

namespace kpx::xdp {

absl::Status BpfMaps::UpdateServices(absl::Span<const ServiceEntry> entries, size_t* written) {
  *written = 0;
  for (const ServiceEntry& e : entries) {
    if (absl::Status s = UpdateService(e.key, e.value); !s.ok()) return s;
    ++*written;
  }
  return absl::OkStatus();
}

absl::Status BpfMaps::UpdateBackends(absl::Span<const BackendEntry> entries) {
  for (const BackendEntry& e : entries) {
    if (absl::Status s = UpdateBackend(e.id, e.value); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status BpfMaps::ClearServiceStats(absl::Span<const uint32_t> svc_ids) {
  for (uint32_t id : svc_ids) {
    if (absl::Status s = ClearServiceStats(id); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace kpx::xdp
