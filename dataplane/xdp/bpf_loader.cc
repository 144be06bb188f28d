// Skeleton loading. libbpf reuses a pinned map only if its definition matches
// exactly (type, sizes, max_entries, flags), so before load every map whose
// pin exists takes the pinned map's max_entries and flags; that also covers
// the kernel adding BPF_F_RDONLY_PROG to devmaps (kpx_tx_ports), which
// libbpf 1.1 would otherwise call incompatible.
#include "dataplane/xdp/bpf_loader.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "dataplane/xdp/unique_fd.h"
#include "glog/logging.h"

#ifdef KPX_HAVE_BPF_SKELETONS
#include "kpx_tc.skel.h"
#include "kpx_xdp.skel.h"
#endif

namespace kpx::xdp {
namespace {

// libbpf's log goes to glog; while a load runs, its tail is also kept so the
// error can say why (verifier messages, missing kernel features).
absl::Mutex log_mu;
std::string* log_capture ABSL_GUARDED_BY(log_mu) = nullptr;
constexpr size_t kLogTail = 4096;

int LibbpfPrint(enum libbpf_print_level level, const char* format, va_list args) {
  char buf[1024];
  vsnprintf(buf, sizeof(buf), format, args);
  std::string line(buf);
  while (!line.empty() && line.back() == '\n') line.pop_back();
  {
    absl::MutexLock lock(&log_mu);
    if (log_capture != nullptr && level != LIBBPF_DEBUG) {
      absl::StrAppend(log_capture, line, "\n");
      if (log_capture->size() > 2 * kLogTail) log_capture->erase(0, log_capture->size() - kLogTail);
    }
  }
  // Netlink extack text ("Kernel error message: Parent Qdisc doesn't
  // exists") comes with every tc query of an interface without clsact; the
  // failures that matter reach the caller's Status with the captured tail.
  const bool chatter = line.find("Kernel error message") != std::string::npos;
  if (level == LIBBPF_WARN && !chatter) {
    LOG(WARNING) << line;
  } else if (level != LIBBPF_DEBUG) {
    VLOG(1) << line;
  }
  return 0;
}

class LogCapture {
 public:
  LogCapture() {
    static std::once_flag once;
    std::call_once(once, [] { libbpf_set_print(LibbpfPrint); });
    absl::MutexLock lock(&log_mu);
    log_capture = &text_;
  }
  ~LogCapture() {
    absl::MutexLock lock(&log_mu);
    log_capture = nullptr;
  }
  std::string Tail() {
    absl::MutexLock lock(&log_mu);
    return text_.size() > kLogTail ? text_.substr(text_.size() - kLogTail) : text_;
  }

 private:
  std::string text_;
};

absl::Status LoadError(const std::string& what, int err, LogCapture& log) {
  std::string msg = absl::StrCat(what, ": ", strerror(err));
  std::string tail = log.Tail();
  if (!tail.empty()) absl::StrAppend(&msg, "\nlibbpf log (tail):\n", tail);
  if (err == EPERM || err == EACCES) {
    return absl::PermissionDeniedError(absl::StrCat(msg, "\n(needs root or CAP_BPF + CAP_NET_ADMIN + CAP_PERFMON)"));
  }
  return absl::FailedPreconditionError(msg);
}

#ifdef KPX_HAVE_BPF_SKELETONS
// *found_pins counts the maps that were pinned already (reused as they are).
void PrepareMaps(bpf_object* obj, const MapSizes& sizes, bool pinned_load, int* found_pins) {
  bpf_map* map;
  bpf_object__for_each_map(map, obj) {
    const char* path = bpf_map__pin_path(map);
    if (path == nullptr) continue;  // internal maps (.rodata, .bss)
    if (!pinned_load) bpf_map__set_pin_path(map, nullptr);
    if (int fd = pinned_load ? bpf_obj_get(path) : -1; fd >= 0) {
      UniqueFd pinned(fd);
      if (found_pins != nullptr) ++*found_pins;
      bpf_map_info info{};
      uint32_t len = sizeof(info);
      if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0) {
        bpf_map__set_max_entries(map, info.max_entries);
        bpf_map__set_map_flags(map, info.map_flags);
      }
      continue;
    }
    const std::string name = bpf_map__name(map);
    uint32_t want = 0;
    if (name == "kpx_services") want = sizes.frontends;
    if (name == "kpx_backends") want = sizes.backends;
    if (name == "kpx_svc_stats") want = sizes.services;
    if (name == "kpx_maglev") want = sizes.maglev_chunks;
    if (name == "kpx_ct") want = sizes.conntrack;
    if (name == "kpx_ct_syn") want = sizes.conntrack_syn;
    if (name == "kpx_affinity") want = sizes.affinity;
    if (want != 0) bpf_map__set_max_entries(map, want);
  }
}

template <typename Skel>
absl::StatusOr<Skel*> OpenAndLoad(const char* name, const std::string& pin_dir, const MapSizes& sizes,
                                  LogCapture& log, int* found_pins = nullptr) {
  LIBBPF_OPTS(bpf_object_open_opts, opts, .pin_root_path = pin_dir.empty() ? nullptr : pin_dir.c_str());
  Skel* skel = Skel::open(&opts);
  if (skel == nullptr) return LoadError(absl::StrCat("opening BPF object ", name), errno, log);
  PrepareMaps(skel->obj, sizes, !pin_dir.empty(), found_pins);
  if (int err = Skel::load(skel); err != 0) {
    Skel::destroy(skel);
    return LoadError(absl::StrCat("loading BPF object ", name, pin_dir.empty() ? "" : " (maps pinned under ",
                                  pin_dir, pin_dir.empty() ? "" : ")"),
                     -err, log);
  }
  return skel;
}
#endif

}  // namespace

absl::Status MakeDirs(const std::string& path) {
  for (size_t pos = 1; pos <= path.size(); ++pos) {
    if (pos != path.size() && path[pos] != '/') continue;
    std::string prefix = path.substr(0, pos);
    if (mkdir(prefix.c_str(), 0700) != 0 && errno != EEXIST) {
      return absl::InternalError(absl::StrCat("mkdir ", prefix, ": ", strerror(errno),
                                              errno == ENOENT || errno == EPERM
                                                  ? " (is bpffs mounted at /sys/fs/bpf?)"
                                                  : ""));
    }
  }
  return absl::OkStatus();
}

#ifdef KPX_HAVE_BPF_SKELETONS

bool BpfPrograms::Built() { return true; }

absl::StatusOr<std::unique_ptr<BpfPrograms>> BpfPrograms::Load(const std::string& pin_dir, const MapSizes& sizes) {
  if (pin_dir.empty() || pin_dir[0] != '/') {
    return absl::InvalidArgumentError(absl::StrCat("pin dir \"", pin_dir, "\" must be an absolute path on bpffs"));
  }
  if (absl::Status s = MakeDirs(pin_dir); !s.ok()) return s;
  LogCapture log;
  std::unique_ptr<BpfPrograms> p(new BpfPrograms());
  int found_pins = 0;
  absl::StatusOr<::kpx_xdp*> xdp = OpenAndLoad<::kpx_xdp>("kpx_xdp", pin_dir, sizes, log, &found_pins);
  if (!xdp.ok()) return xdp.status();
  p->xdp_ = *xdp;
  p->created_maps_ = found_pins == 0;
  // kpx_tc finds every map pinned by kpx_xdp a moment ago and reuses it.
  absl::StatusOr<::kpx_tc*> tc = OpenAndLoad<::kpx_tc>("kpx_tc", pin_dir, sizes, log);
  if (!tc.ok()) return tc.status();
  p->tc_ = *tc;
  return p;
}

absl::Status BpfPrograms::ProbeLoad(std::vector<std::pair<std::string, uint32_t>>* created) {
  LogCapture log;
  // Every sized map tiny: the probe only asks whether the programs verify
  // and load here. (Until this was applied, the probe created the maps at
  // their full sizes: a 524288-entry conntrack LRU and the per-CPU stats,
  // ~0.16 s of every eBPF start, thrown away at once.)
  const MapSizes tiny{.frontends = 16, .backends = 16, .services = 16, .maglev_chunks = 1,
                      .conntrack = 16, .conntrack_syn = 16, .affinity = 16};
  auto record = [created](bpf_object* obj) {
    if (created == nullptr) return;
    bpf_map* map;
    bpf_object__for_each_map(map, obj) {
      created->emplace_back(bpf_map__name(map), bpf_map__max_entries(map));
    }
  };
  // Unpinned: pin_root_path unset and every pin path cleared in PrepareMaps,
  // so the probe can never touch a running kpxd's maps.
  absl::StatusOr<::kpx_xdp*> xdp = OpenAndLoad<::kpx_xdp>("kpx_xdp", "", tiny, log);
  if (!xdp.ok()) return xdp.status();
  record((*xdp)->obj);
  ::kpx_xdp::destroy(*xdp);
  absl::StatusOr<::kpx_tc*> tc = OpenAndLoad<::kpx_tc>("kpx_tc", "", tiny, log);
  if (!tc.ok()) return tc.status();
  record((*tc)->obj);
  ::kpx_tc::destroy(*tc);
  return absl::OkStatus();
}

BpfPrograms::~BpfPrograms() {
  if (tc_ != nullptr) ::kpx_tc::destroy(tc_);
  if (xdp_ != nullptr) ::kpx_xdp::destroy(xdp_);
}

int BpfPrograms::xdp_prog_fd() const { return bpf_program__fd(xdp_->progs.kpx_xdp); }
int BpfPrograms::tc_prog_fd() const { return bpf_program__fd(tc_->progs.kpx_tc); }

#else  // !KPX_HAVE_BPF_SKELETONS

bool BpfPrograms::Built() { return false; }

absl::StatusOr<std::unique_ptr<BpfPrograms>> BpfPrograms::Load(const std::string&, const MapSizes&) {
  return absl::UnimplementedError("kpx was built without its BPF programs (KPX_BUILD_BPF=OFF): no XDP dataplane");
}

absl::Status BpfPrograms::ProbeLoad(std::vector<std::pair<std::string, uint32_t>>*) {
  return Load("", {}).status();
}

BpfPrograms::~BpfPrograms() = default;
int BpfPrograms::xdp_prog_fd() const { return -1; }
int BpfPrograms::tc_prog_fd() const { return -1; }

#endif

}  // namespace kpx::xdp
