// XDP link and tc filter management (see attach.h). Errors name the
// interface and what to do about a conflicting attachment.
#include "dataplane/xdp/attach.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <dirent.h>
#include <linux/bpf.h>
#include <linux/if_link.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "dataplane/xdp/unique_fd.h"
#include "glog/logging.h"

namespace kpx::xdp {
namespace {

constexpr char kLinkPrefix[] = "xdp_";

std::string LinksDir(const std::string& pin_dir) { return pin_dir + "/links"; }

absl::Status Err(int err, const std::string& what) {
  std::string msg = absl::StrCat(what, ": ", strerror(err));
  if (err == EPERM || err == EACCES) return absl::PermissionDeniedError(msg);
  if (err == ENOENT || err == ENODEV) return absl::NotFoundError(msg);
  return absl::InternalError(msg);
}

absl::StatusOr<UniqueFd> CreateLink(int prog_fd, const std::string& ifname, int ifindex, uint32_t flags) {
  LIBBPF_OPTS(bpf_link_create_opts, opts, .flags = flags);
  int fd = bpf_link_create(prog_fd, ifindex, BPF_XDP, &opts);
  if (fd >= 0) return UniqueFd(fd);
  const int err = -fd;
  if (err == EBUSY || err == EEXIST) {
    return absl::FailedPreconditionError(absl::StrCat(
        ifname, " already has an XDP program that kpx did not attach (remove it with `ip link set dev ", ifname,
        " xdp off`, or leave ", ifname, " out of --interfaces)"));
  }
  return Err(err, absl::StrCat("attaching XDP to ", ifname));
}

}  // namespace

absl::StatusOr<XdpMode> ParseXdpMode(const std::string& text) {
  if (text == "auto") return XdpMode::kAuto;
  if (text == "native") return XdpMode::kNative;
  if (text == "generic") return XdpMode::kGeneric;
  return absl::InvalidArgumentError(absl::StrCat("XDP mode \"", text, "\": want auto, native or generic"));
}

const char* XdpModeName(XdpMode mode) {
  switch (mode) {
    case XdpMode::kAuto:
      return "auto";
    case XdpMode::kNative:
      return "native";
    case XdpMode::kGeneric:
      return "generic";
  }
  return "?";
}

std::string XdpLinkPath(const std::string& pin_dir, const std::string& ifname) {
  return absl::StrCat(LinksDir(pin_dir), "/", kLinkPrefix, ifname);
}

absl::StatusOr<XdpAttachment> AttachXdp(int prog_fd, const std::string& pin_dir, const std::string& ifname,
                                        int ifindex, XdpMode mode) {
  XdpAttachment out{ifname, ifindex};
  const std::string path = XdpLinkPath(pin_dir, ifname);
  if (mkdir(LinksDir(pin_dir).c_str(), 0700) != 0 && errno != EEXIST) {
    return Err(errno, absl::StrCat("mkdir ", LinksDir(pin_dir)));
  }
  if (int fd = bpf_obj_get(path.c_str()); fd >= 0) {
    UniqueFd link(fd);
    bpf_link_info info{};
    uint32_t len = sizeof(info);
    const bool ours = bpf_obj_get_info_by_fd(fd, &info, &len) == 0 && info.type == BPF_LINK_TYPE_XDP;
    if (ours && static_cast<int>(info.xdp.ifindex) == ifindex) {
      // The hitless path: swap the program inside the live link.
      int err = bpf_link_update(fd, prog_fd, nullptr);
      if (err == 0) {
        out.updated = true;
        LIBBPF_OPTS(bpf_xdp_query_opts, q);
        out.generic = bpf_xdp_query(ifindex, 0, &q) == 0 && q.attach_mode == XDP_ATTACHED_SKB;
        if ((mode == XdpMode::kGeneric) != out.generic && mode != XdpMode::kAuto) {
          // Changing the mode means detaching: not on a restart.
          LOG(WARNING) << "xdp: " << ifname << " keeps its " << (out.generic ? "generic" : "native")
                       << "-mode link; --xdp-mode=" << XdpModeName(mode)
                       << " applies after kpxd --cleanup (which interrupts traffic)";
        }
        return out;
      }
      if (-err != ENOLINK) return Err(-err, absl::StrCat("updating the XDP link of ", ifname));
    } else if (ours && info.xdp.ifindex != 0) {
      // The name now belongs to another ifindex (interface recreated or
      // renamed): the old link is attached elsewhere; take it off.
      LOG(WARNING) << "xdp: " << path << " is attached to ifindex " << info.xdp.ifindex << ", not " << ifname
                   << " (ifindex " << ifindex << "); detaching it";
      if (int err = bpf_link_detach(fd); err < 0) LOG(WARNING) << "xdp: detach: " << strerror(-err);
    }
    if (unlink(path.c_str()) != 0 && errno != ENOENT) return Err(errno, absl::StrCat("unlink ", path));
  } else if (-fd != ENOENT) {
    return Err(-fd, absl::StrCat("opening ", path));
  }

  absl::StatusOr<UniqueFd> link = absl::InternalError("unreachable");
  if (mode == XdpMode::kGeneric) {
    link = CreateLink(prog_fd, ifname, ifindex, XDP_FLAGS_SKB_MODE);
    out.generic = true;
  } else {
    link = CreateLink(prog_fd, ifname, ifindex, XDP_FLAGS_DRV_MODE);
    if (!link.ok() && mode == XdpMode::kAuto && !absl::IsFailedPrecondition(link.status())) {
      LOG(WARNING) << "xdp: native XDP on " << ifname << " failed (" << link.status().message()
                   << "); using generic (skb) mode, which is slower";
      link = CreateLink(prog_fd, ifname, ifindex, XDP_FLAGS_SKB_MODE);
      out.generic = true;
    }
  }
  if (!link.ok()) return link.status();
  if (bpf_obj_pin(link->get(), path.c_str()) != 0) {
    const int err = errno;
    bpf_link_detach(link->get());
    return Err(err, absl::StrCat("pinning the XDP link of ", ifname, " at ", path));
  }
  return out;
}

absl::Status DetachXdp(const std::string& pin_dir, const std::string& ifname) {
  const std::string path = XdpLinkPath(pin_dir, ifname);
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0) {
    if (-fd == ENOENT) return absl::OkStatus();
    return Err(-fd, absl::StrCat("opening ", path));
  }
  UniqueFd link(fd);
  // ENOLINK/EINVAL: already detached (interface gone); just unpin.
  if (int err = bpf_link_detach(fd); err < 0 && -err != ENOLINK && -err != EINVAL) {
    return Err(-err, absl::StrCat("detaching XDP from ", ifname));
  }
  if (unlink(path.c_str()) != 0 && errno != ENOENT) return Err(errno, absl::StrCat("unlink ", path));
  return absl::OkStatus();
}

std::vector<std::string> PinnedXdpLinks(const std::string& pin_dir) {
  std::vector<std::string> out;
  DIR* dir = opendir(LinksDir(pin_dir).c_str());
  if (dir == nullptr) return out;
  while (dirent* e = readdir(dir)) {
    std::string name = e->d_name;
    if (absl::StartsWith(name, kLinkPrefix)) out.push_back(name.substr(sizeof(kLinkPrefix) - 1));
  }
  closedir(dir);
  return out;
}

absl::Status AttachTc(int prog_fd, const std::string& ifname, int ifindex) {
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = BPF_TC_INGRESS);
  if (int err = bpf_tc_hook_create(&hook); err < 0 && -err != EEXIST) {
    return Err(-err, absl::StrCat("creating the clsact qdisc on ", ifname));
  }
  LIBBPF_OPTS(bpf_tc_opts, opts, .prog_fd = prog_fd, .flags = BPF_TC_F_REPLACE, .handle = kTcHandle,
              .priority = kTcPriority);
  if (int err = bpf_tc_attach(&hook, &opts); err < 0) {
    if (-err == EINVAL || -err == EOPNOTSUPP) {
      return absl::FailedPreconditionError(absl::StrCat(
          "attaching tc ingress on ", ifname, ": ", strerror(-err),
          " (an \"ingress\" qdisc instead of clsact? `tc qdisc show dev ", ifname, "`)"));
    }
    return Err(-err, absl::StrCat("attaching tc ingress on ", ifname));
  }
  return absl::OkStatus();
}

namespace {

// The id of the program in kpx's filter slot on `ifindex`, 0 if none (or
// not kpx's, see DetachTc).
uint32_t KpxTcProgId(int ifindex, uint32_t owner_map_id) {
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = BPF_TC_INGRESS);
  LIBBPF_OPTS(bpf_tc_opts, query, .handle = kTcHandle, .priority = kTcPriority);
  if (bpf_tc_query(&hook, &query) != 0) return 0;
  int fd = bpf_prog_get_fd_by_id(query.prog_id);
  if (fd < 0) return 0;
  UniqueFd prog(fd);
  bpf_prog_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) return 0;
  if (!absl::StartsWith(info.name, "kpx_tc")) return 0;
  if (owner_map_id == 0) return query.prog_id;
  std::vector<uint32_t> map_ids(info.nr_map_ids);
  const uint32_t nr = info.nr_map_ids;
  info = {};
  info.nr_map_ids = nr;
  info.map_ids = reinterpret_cast<uint64_t>(map_ids.data());
  len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) return 0;
  for (uint32_t id : map_ids) {
    if (id == owner_map_id) return query.prog_id;
  }
  return 0;
}

}  // namespace

uint32_t PinnedMapId(const std::string& path) {
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0) return 0;
  UniqueFd map(fd);
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  return bpf_obj_get_info_by_fd(fd, &info, &len) == 0 ? info.id : 0;
}

bool HasKpxTc(int ifindex, uint32_t owner_map_id) { return KpxTcProgId(ifindex, owner_map_id) != 0; }

absl::StatusOr<bool> DetachTc(int ifindex, uint32_t owner_map_id) {
  if (KpxTcProgId(ifindex, owner_map_id) == 0) return false;
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = BPF_TC_INGRESS);
  LIBBPF_OPTS(bpf_tc_opts, opts, .handle = kTcHandle, .priority = kTcPriority);
  if (int err = bpf_tc_detach(&hook, &opts); err < 0 && -err != ENOENT) {
    return Err(-err, absl::StrCat("removing kpx's tc filter from ifindex ", ifindex));
  }
  return true;
}

}  // namespace kpx::xdp
