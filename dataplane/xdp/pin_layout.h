// Upgrades between kpx ABI versions: a kpxd refuses to start over pinned
// state of another layout (maps it would misread, links holding the
// interfaces) and says which `kpxd --cleanup` removes it.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace kpx::xdp {

// OK when pin_dir holds nothing pinned or maps of this build's layout
// (KPX_ABI_VERSION), and no sibling "v<N>" directory of another version
// holds kpx state. Otherwise FailedPrecondition naming the directory and the
// --cleanup command to run.
absl::Status CheckPinnedLayout(const std::string& pin_dir);

}  // namespace kpx::xdp
