// BpfPrograms: loads kpx's two BPF objects (kpx_xdp for uplinks, kpx_tc for
// pod veths) from their embedded skeletons with pin_root_path = the pin dir,
// so both share one set of pinned maps and a restarted kpxd reuses the maps
// the previous one left. Attaching is attach.h's job.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

struct kpx_xdp;
struct kpx_tc;

namespace kpx::xdp {

// max_entries for maps this load creates; 0 keeps the compiled default
// (abi.h). Maps that are already pinned keep their size.
struct MapSizes {
  uint32_t frontends = 0;  // kpx_services
  uint32_t backends = 0;   // kpx_backends (backend ids + 1)
  uint32_t services = 0;   // kpx_svc_stats (service ids + 1)
  uint32_t maglev_chunks = 0;  // kpx_maglev: Maglev slot pool limit, in chunks of KPX_MAGLEV_CHUNK_SLOTS
  uint32_t conntrack = 0;  // kpx_ct
  uint32_t conntrack_syn = 0;  // kpx_ct_syn (half-open flows)
  uint32_t affinity = 0;   // kpx_affinity
};

class BpfPrograms {
 public:
  // False when kpx was built without the BPF objects (KPX_BUILD_BPF=OFF).
  static bool Built();

  // Creates `pin_dir` if needed, opens, sizes and loads both objects. A
  // failure carries the tail of the verifier/libbpf log.
  static absl::StatusOr<std::unique_ptr<BpfPrograms>> Load(const std::string& pin_dir, const MapSizes& sizes);

  // Loads both objects with tiny, unpinned maps and unloads them: whether
  // this kernel, these privileges and this build can run the XDP dataplane.
  // `created` (tests) receives each map's name and max_entries.
  static absl::Status ProbeLoad(std::vector<std::pair<std::string, uint32_t>>* created = nullptr);

  // Closes our references only: pinned maps and attached programs stay.
  ~BpfPrograms();
  BpfPrograms(const BpfPrograms&) = delete;
  BpfPrograms& operator=(const BpfPrograms&) = delete;

  int xdp_prog_fd() const;
  int tc_prog_fd() const;
  // True when no map was pinned before this load: every map is new and
  // empty, so there is nothing to adopt from a previous kpxd.
  bool created_maps() const { return created_maps_; }

 private:
  BpfPrograms() = default;
  ::kpx_xdp* xdp_ = nullptr;
  ::kpx_tc* tc_ = nullptr;
  bool created_maps_ = false;
};

// mkdir -p.
absl::Status MakeDirs(const std::string& path);

}  // namespace kpx::xdp
