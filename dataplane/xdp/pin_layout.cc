// CheckPinnedLayout: reads kpx_config of the pin dir (value size, then
// abi_version) and looks for v<N> siblings; no maps are changed.
#include "dataplane/xdp/pin_layout.h"

#include <bpf/bpf.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "kpx/abi.h"

namespace kpx::xdp {
namespace {

absl::Status Refuse(const std::string& dir, const std::string& what) {
  return absl::FailedPreconditionError(absl::StrCat(
      dir, " holds ", what, ", and this kpxd speaks kpx ABI v", KPX_ABI_VERSION,
      " (pinned maps of another layout would be misread, and its programs may still hold the interfaces): "
      "run `kpxd --cleanup --bpf-pin-dir=",
      dir, "` (this binary can clean up older layouts; traffic on the eBPF path stops until kpxd starts again)"));
}

bool Exists(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0;
}

// "v<N>" -> N, else -1.
int VersionOf(const std::string& name) {
  int v = -1;
  if (name.size() < 2 || name[0] != 'v' || !absl::SimpleAtoi(name.substr(1), &v)) return -1;
  return v;
}

}  // namespace

absl::Status CheckPinnedLayout(const std::string& pin_dir) {
  const std::string config_path = pin_dir + "/kpx_config";
  if (Exists(config_path)) {
    int fd = bpf_obj_get(config_path.c_str());
    if (fd < 0) return absl::InternalError(absl::StrCat("open ", config_path, ": ", strerror(errno)));
    bpf_map_info info{};
    uint32_t len = sizeof(info);
    int err = bpf_obj_get_info_by_fd(fd, &info, &len);
    kpx_config config{};
    uint32_t zero = 0;
    if (err == 0 && info.value_size == sizeof(kpx_config)) err = bpf_map_lookup_elem(fd, &zero, &config);
    close(fd);
    if (err != 0) return absl::InternalError(absl::StrCat("read ", config_path, ": ", strerror(errno)));
    if (info.value_size != sizeof(kpx_config)) {
      return Refuse(pin_dir, absl::StrCat("maps of an older kpx layout (kpx_config values of ", info.value_size,
                                          " bytes, not ", sizeof(kpx_config), ")"));
    }
    if (config.abi_version != 0 && config.abi_version != KPX_ABI_VERSION) {
      return Refuse(pin_dir, absl::StrCat("maps of kpx ABI v", config.abi_version));
    }
  }
  // Siblings: /sys/fs/bpf/kpx/v2 next to /sys/fs/bpf/kpx/v3.
  const size_t slash = pin_dir.find_last_of('/');
  if (slash == std::string::npos || VersionOf(pin_dir.substr(slash + 1)) < 0) return absl::OkStatus();
  const std::string parent = pin_dir.substr(0, slash);
  DIR* dir = opendir(parent.c_str());
  if (dir == nullptr) return absl::OkStatus();
  std::string other;
  while (dirent* e = readdir(dir)) {
    const int v = VersionOf(e->d_name);
    if (v < 0 || v == KPX_ABI_VERSION) continue;
    const std::string path = parent + "/" + e->d_name;
    if (Exists(path + "/kpx_config") || Exists(path + "/links")) {
      other = path;
      break;
    }
  }
  closedir(dir);
  if (!other.empty()) return Refuse(other, "the state of another kpx version");
  return absl::OkStatus();
}

}  // namespace kpx::xdp
