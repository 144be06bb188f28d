// BpfLb: both load-balancer programs (kpx_xdp, kpx_tc) loaded for a test,
// sharing their maps through a private pin directory under /sys/fs/bpf that
// is removed again in the destructor, plus direct map access to set up
// services and read counters, and BPF_PROG_TEST_RUN of one packet.
#pragma once

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <dirent.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "kpx/abi.h"
#include "kpx_tc.skel.h"
#include "kpx_xdp.skel.h"
#include "tests/bpf/packet_builder.h"

namespace kpx::bpftest {

enum class Hook { kXdp, kTc };

inline const char* HookName(Hook h) { return h == Hook::kXdp ? "Xdp" : "Tc"; }

// What a program did with a packet, independent of the hook's return codes.
enum class Action { kPass, kRst, kRedirect, kDrop };

inline uint32_t RetvalFor(Hook h, Action a) {
  if (h == Hook::kXdp) {
    switch (a) {
      case Action::kPass:
        return 2;  // XDP_PASS
      case Action::kRst:
        return 3;  // XDP_TX
      case Action::kRedirect:
        return 4;  // XDP_REDIRECT
      case Action::kDrop:
        return 1;  // XDP_DROP
    }
  }
  switch (a) {
    case Action::kPass:
      return 0;  // TC_ACT_OK
    case Action::kRst:
      return 7;  // TC_ACT_REDIRECT (back out of the ingress device)
    case Action::kRedirect:
      return 7;  // TC_ACT_REDIRECT
    case Action::kDrop:
      return 2;  // TC_ACT_SHOT
  }
  return ~0u;
}

struct RunResult {
  uint32_t retval = 0;
  Bytes out;
};

// Before load: map sizes for tests are small, so each test's fresh maps cost
// nothing (both objects must agree or libbpf refuses to reuse the pinned
// maps), and the devmap workaround every kpx loader needs with libbpf 1.1:
// the kernel adds BPF_F_RDONLY_PROG to devmaps, so an existing pinned
// kpx_tx_ports only passes libbpf's reuse check if the definition says so
// too (while creating one with that flag is refused).
inline void PrepareForLoad(bpf_object* obj, const std::string& pin_dir) {
  struct stat st {};
  if (stat((pin_dir + "/kpx_tx_ports").c_str(), &st) == 0)
    bpf_map__set_map_flags(bpf_object__find_map_by_name(obj, "kpx_tx_ports"), BPF_F_RDONLY_PROG);
  struct {
    const char* name;
    uint32_t entries;
  } const sizes[] = {{"kpx_services", 1024}, {"kpx_backends", 1024}, {"kpx_maglev", 16},
                     {"kpx_ct", 4096},       {"kpx_ct_syn", 1024},   {"kpx_affinity", 1024},
                     {"kpx_svc_stats", 256}};
  for (const auto& s : sizes)
    bpf_map__set_max_entries(bpf_object__find_map_by_name(obj, s.name), s.entries);
}

// Where SetMaglev puts service svc_id's table: room for the largest table,
// four per chunk.
inline uint32_t TestMaglevOffset(uint32_t svc_id) { return svc_id * 65536u; }

inline uint64_t MonotonicNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + ts.tv_nsec;
}

class BpfLb {
 public:
  static absl::StatusOr<std::unique_ptr<BpfLb>> Create() {
    static std::atomic<int> seq{0};
    std::unique_ptr<BpfLb> lb(
        new BpfLb(absl::StrCat("/sys/fs/bpf/kpx-test-", getpid(), "-", seq.fetch_add(1))));
    LIBBPF_OPTS(bpf_object_open_opts, oo, .pin_root_path = lb->pin_dir_.c_str());
    lb->xdp_ = kpx_xdp::open(&oo);
    if (lb->xdp_ == nullptr)
      return absl::InternalError(absl::StrCat("open kpx_xdp: ", strerror(errno)));
    PrepareForLoad(lb->xdp_->obj, lb->pin_dir_);
    if (int err = kpx_xdp::load(lb->xdp_); err != 0)
      return absl::InternalError(absl::StrCat("load kpx_xdp: ", strerror(-err)));
    lb->tc_ = kpx_tc::open(&oo);
    if (lb->tc_ == nullptr)
      return absl::InternalError(absl::StrCat("open kpx_tc: ", strerror(errno)));
    PrepareForLoad(lb->tc_->obj, lb->pin_dir_);
    if (int err = kpx_tc::load(lb->tc_); err != 0)
      return absl::InternalError(absl::StrCat("load kpx_tc: ", strerror(-err)));
    return lb;
  }

  ~BpfLb() {
    if (tc_ != nullptr) kpx_tc::destroy(tc_);
    if (xdp_ != nullptr) kpx_xdp::destroy(xdp_);
    // Unpin everything (the maps go away with the last reference).
    if (DIR* dir = opendir(pin_dir_.c_str())) {
      std::vector<std::string> names;
      while (dirent* e = readdir(dir))
        if (e->d_name[0] != '.') names.push_back(e->d_name);
      closedir(dir);
      for (const std::string& n : names) unlink((pin_dir_ + "/" + n).c_str());
    }
    rmdir(pin_dir_.c_str());
  }

  BpfLb(const BpfLb&) = delete;
  BpfLb& operator=(const BpfLb&) = delete;

  const std::string& pin_dir() const { return pin_dir_; }
  kpx_xdp* xdp() { return xdp_; }
  kpx_tc* tc() { return tc_; }
  int prog_fd(Hook h) const {
    return h == Hook::kXdp ? bpf_program__fd(xdp_->progs.kpx_xdp)
                           : bpf_program__fd(tc_->progs.kpx_tc);
  }
  // The maps, through the XDP object (the tc object holds the same ones).
  int map_fd(bpf_map* m) const { return bpf_map__fd(m); }
  int services_fd() const { return bpf_map__fd(xdp_->maps.kpx_services); }
  int backends_fd() const { return bpf_map__fd(xdp_->maps.kpx_backends); }
  int maglev_fd() const { return bpf_map__fd(xdp_->maps.kpx_maglev); }
  int ct_fd() const { return bpf_map__fd(xdp_->maps.kpx_ct); }
  int ct_syn_fd() const { return bpf_map__fd(xdp_->maps.kpx_ct_syn); }
  int affinity_fd() const { return bpf_map__fd(xdp_->maps.kpx_affinity); }
  int node_addrs_fd() const { return bpf_map__fd(xdp_->maps.kpx_node_addrs); }
  int tx_ports_fd() const { return bpf_map__fd(xdp_->maps.kpx_tx_ports); }

  // Frontend addr:port/TCP (addr 0 = NodePort) -> service.
  absl::Status AddService(uint32_t addr, uint16_t port, const kpx_svc& svc) {
    kpx_svc_key k{};
    k.addr = addr;
    k.port = htons(port);
    k.proto = 6;
    return Update(services_fd(), &k, &svc, "kpx_services");
  }

  absl::Status SetBackend(uint32_t id, uint32_t addr, uint16_t port) {
    kpx_backend b{};
    b.addr = addr;
    b.port = htons(port);
    return Update(backends_fd(), &id, &b, "kpx_backends");
  }

  // Writes `table` (slot -> backend id) at TestMaglevOffset(svc_id) of the
  // Maglev pool, creating the chunk (as kpxd does: mmapable, the template's
  // size) on first use. Services built with Svc() point there.
  absl::Status SetMaglev(uint32_t svc_id, const std::vector<uint32_t>& table) {
    return SetMaglevAt(TestMaglevOffset(svc_id), table);
  }
  absl::Status SetMaglevAt(uint32_t off, const std::vector<uint32_t>& table) {
    uint32_t chunk = off >> KPX_MAGLEV_CHUNK_SHIFT;
    uint32_t chunk_id = 0;
    int fd = -1;
    if (bpf_map_lookup_elem(maglev_fd(), &chunk, &chunk_id) == 0) {
      fd = bpf_map_get_fd_by_id(chunk_id);
    } else {
      LIBBPF_OPTS(bpf_map_create_opts, mo, .map_flags = BPF_F_MMAPABLE);
      fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "kpx_mg_test", 4, 4, KPX_MAGLEV_CHUNK_SLOTS, &mo);
      if (fd >= 0) {
        absl::Status st = Update(maglev_fd(), &chunk, &fd, "kpx_maglev");
        if (!st.ok()) {
          close(fd);
          return st;
        }
      }
    }
    if (fd < 0) return absl::InternalError(absl::StrCat("Maglev chunk ", chunk, ": ", strerror(errno)));
    absl::Status st;
    for (uint32_t i = 0; i < table.size() && st.ok(); ++i) {
      uint32_t slot = (off & KPX_MAGLEV_CHUNK_MASK) + i;
      st = Update(fd, &slot, &table[i], "Maglev chunk");
    }
    close(fd);  // the outer map holds the chunk
    return st;
  }

  absl::Status SetConfig(const kpx_config& config) {
    uint32_t zero = 0;
    return Update(bpf_map__fd(xdp_->maps.kpx_config), &zero, &config, "kpx_config");
  }

  // Lists ifindex in kpx_tx_ports (resolved in the caller's namespace).
  absl::Status AddTxPort(uint32_t ifindex) {
    return Update(tx_ports_fd(), &ifindex, &ifindex, "kpx_tx_ports");
  }

  absl::Status AddNodeAddr(uint32_t addr) {
    uint8_t one = 1;
    return Update(node_addrs_fd(), &addr, &one, "kpx_node_addrs");
  }

  // Sum over CPUs of a verdict counter.
  uint64_t Verdict(uint32_t v) const {
    int ncpu = libbpf_num_possible_cpus();
    std::vector<uint64_t> vals(ncpu);
    if (bpf_map_lookup_elem(bpf_map__fd(xdp_->maps.kpx_verdict_stats), &v, vals.data()) != 0)
      return ~0ull;
    uint64_t sum = 0;
    for (uint64_t x : vals) sum += x;
    return sum;
  }
  std::vector<uint64_t> Verdicts() const {
    std::vector<uint64_t> all;
    for (uint32_t v = 0; v < KPX_V_MAX; ++v) all.push_back(Verdict(v));
    return all;
  }

  kpx_svc_stats SvcStats(uint32_t id) const {
    int ncpu = libbpf_num_possible_cpus();
    std::vector<kpx_svc_stats> vals(ncpu);
    kpx_svc_stats sum{};
    if (bpf_map_lookup_elem(bpf_map__fd(xdp_->maps.kpx_svc_stats), &id, vals.data()) != 0)
      return sum;
    for (const kpx_svc_stats& s : vals) {
      sum.packets += s.packets;
      sum.bytes += s.bytes;
      sum.new_flows += s.new_flows;
      sum.no_backend += s.no_backend;
    }
    return sum;
  }

  // One BPF_PROG_TEST_RUN with repeat = 1 (a rewritten packet must not be
  // fed back in).
  absl::StatusOr<RunResult> Run(Hook hook, const Bytes& in) const {
    RunResult r;
    r.out.resize(in.size() + 256);
    LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = in.data(), .data_out = r.out.data(),
                .data_size_in = uint32_t(in.size()), .data_size_out = uint32_t(r.out.size()),
                .repeat = 1);
    if (bpf_prog_test_run_opts(prog_fd(hook), &opts) != 0)
      return absl::InternalError(
          absl::StrCat("BPF_PROG_TEST_RUN ", HookName(hook), ": ", strerror(errno)));
    r.retval = opts.retval;
    r.out.resize(opts.data_size_out);
    return r;
  }

 private:
  explicit BpfLb(std::string pin_dir) : pin_dir_(std::move(pin_dir)) {}

  static absl::Status Update(int fd, const void* key, const void* value, const char* what) {
    if (bpf_map_update_elem(fd, key, value, BPF_ANY) != 0)
      return absl::InternalError(absl::StrCat("update ", what, ": ", strerror(errno)));
    return absl::OkStatus();
  }

  std::string pin_dir_;
  kpx_xdp* xdp_ = nullptr;
  kpx_tc* tc_ = nullptr;
};

}  // namespace kpx::bpftest
