// Attaching kpx's programs so they outlive kpxd: XDP through bpf_links
// pinned at <pin dir>/links/xdp_<ifname> (a restart swaps the program inside
// the link, never detaching), tc as a cls_bpf direct-action filter with a
// fixed handle/priority on the clsact ingress hook (re-attaching replaces it
// in place). Both keep running without any process.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace kpx::xdp {

enum class XdpMode {
  kAuto,     // native (driver) mode, else generic (skb) mode with a warning
  kNative,
  kGeneric,
};
absl::StatusOr<XdpMode> ParseXdpMode(const std::string& text);  // "auto|native|generic"
const char* XdpModeName(XdpMode mode);

// kpx's tc filter: priority and handle no other tool is likely to use.
inline constexpr uint32_t kTcPriority = 0x4b50;  // "KP"
inline constexpr uint32_t kTcHandle = 0x4b5058;  // "KPX"

struct XdpAttachment {
  std::string ifname;
  int ifindex = 0;
  bool updated = false;  // an existing pinned link got the new program
  bool generic = false;  // attached in generic (skb) mode
};

std::string XdpLinkPath(const std::string& pin_dir, const std::string& ifname);

// Attaches `prog_fd` to `ifindex` via the link pinned at XdpLinkPath, creating
// and pinning the link if there is none (or if the pinned one belongs to a
// vanished interface).
absl::StatusOr<XdpAttachment> AttachXdp(int prog_fd, const std::string& pin_dir, const std::string& ifname,
                                        int ifindex, XdpMode mode);
// Detaches the pinned link's program from its interface and unpins it.
// Missing link: OK.
absl::Status DetachXdp(const std::string& pin_dir, const std::string& ifname);
// Interface names with a pinned kpx XDP link under pin_dir.
std::vector<std::string> PinnedXdpLinks(const std::string& pin_dir);

// Creates the clsact qdisc if needed and installs/replaces kpx's ingress
// filter on `ifindex`.
absl::Status AttachTc(int prog_fd, const std::string& ifname, int ifindex);
// Removes kpx's ingress filter: only if the program in kpx's slot is kpx_tc
// and, when owner_map_id is not 0, uses that map (the kpx_services of one
// pin dir: another kpx instance's filter is left alone). Returns whether one
// was removed.
absl::StatusOr<bool> DetachTc(int ifindex, uint32_t owner_map_id = 0);
// True when kpx's filter (as above) is on `ifindex`'s ingress.
bool HasKpxTc(int ifindex, uint32_t owner_map_id = 0);
// The kernel id of the map pinned at `path`, 0 if none.
uint32_t PinnedMapId(const std::string& path);

}  // namespace kpx::xdp
