// Both load-balancer programs pass the verifier on this kernel, share every
// pinned map, and accept per-service Maglev tables of different sizes.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "dataplane/xdp/bpf_loader.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/bpf/lb_fixture.h"
#include "tests/testlib/testlib.h"

namespace kpx::bpftest {
namespace {

constexpr const char* kMapNames[] = {"kpx_services", "kpx_backends",  "kpx_maglev",
                                     "kpx_ct",       "kpx_ct_syn",    "kpx_affinity",  "kpx_node_addrs",
                                     "kpx_tx_ports", "kpx_svc_stats", "kpx_verdict_stats",
                                     "kpx_config"};

uint32_t MapId(bpf_object* obj, const char* name) {
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  bpf_map* m = bpf_object__find_map_by_name(obj, name);
  if (m == nullptr || bpf_obj_get_info_by_fd(bpf_map__fd(m), &info, &len) != 0) return 0;
  return info.id;
}

// kpxd's --dataplane=auto|xdp probe loads both objects and throws them away:
// its maps must be tiny (a full-size probe cost ~0.16 s of every start in
// map preallocation) and never pinned.
TEST(LbLoad, ProbeLoadUsesTinyUnpinnedMaps) {
  if (std::string why = kpx::testing::MissingRootReason(); !why.empty()) GTEST_SKIP() << why;
  std::vector<std::pair<std::string, uint32_t>> created;
  ASSERT_TRUE(xdp::BpfPrograms::ProbeLoad(&created).ok());
  int sized = 0;
  for (const auto& [name, entries] : created) {
    if (name == "kpx_maglev") {
      EXPECT_LE(entries, 1u) << name;
      ++sized;
    } else if (name == "kpx_services" || name == "kpx_backends" || name == "kpx_svc_stats" ||
               name == "kpx_ct" || name == "kpx_ct_syn" || name == "kpx_affinity") {
      EXPECT_LE(entries, 16u) << name;
      ++sized;
    }
  }
  EXPECT_EQ(sized, 14) << "7 sized maps in each of the two objects";
}

// A load into an empty pin directory creates every map (kpxd then skips
// reading them back); a second load reuses the pins and says so.
TEST(LbLoad, CreatedMapsOnlyWhenNothingWasPinned) {
  if (std::string why = kpx::testing::MissingRootReason(); !why.empty()) GTEST_SKIP() << why;
  const std::string dir = "/sys/fs/bpf/kpx-test-created-" + std::to_string(getpid());
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      for (const char* name : kMapNames) unlink((dir + "/" + name).c_str());
      rmdir(dir.c_str());
    }
  } cleanup{dir};
  const xdp::MapSizes tiny{.frontends = 16, .backends = 16, .services = 16, .maglev_chunks = 1,
                           .conntrack = 16, .conntrack_syn = 16, .affinity = 16};
  auto first = xdp::BpfPrograms::Load(dir, tiny);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE((*first)->created_maps());
  auto second = xdp::BpfPrograms::Load(dir, tiny);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_FALSE((*second)->created_maps());
}

TEST(LbLoad, BothProgramsVerifyAndReportInstructionCounts) {
  if (std::string why = kpx::testing::MissingRootReason(); !why.empty()) GTEST_SKIP() << why;
  auto lb = BpfLb::Create();
  ASSERT_TRUE(lb.ok()) << lb.status();
  for (Hook h : {Hook::kXdp, Hook::kTc}) {
    bpf_prog_info info{};
    uint32_t len = sizeof(info);
    ASSERT_EQ(bpf_obj_get_info_by_fd((*lb)->prog_fd(h), &info, &len), 0);
    uint32_t xlated = info.xlated_prog_len / 8;
    EXPECT_GT(xlated, 100u) << HookName(h);
    EXPECT_GT(info.verified_insns, 0u) << HookName(h);
    std::printf("%s: %u xlated instructions, %u verifier-processed\n", HookName(h), xlated,
                info.verified_insns);
    ::testing::Test::RecordProperty(std::string(HookName(h)) + "_xlated_insns", xlated);
    ::testing::Test::RecordProperty(std::string(HookName(h)) + "_verified_insns",
                                    info.verified_insns);
  }
}

TEST(LbLoad, ObjectsShareEveryPinnedMap) {
  if (std::string why = kpx::testing::MissingRootReason(); !why.empty()) GTEST_SKIP() << why;
  auto lb = BpfLb::Create();
  ASSERT_TRUE(lb.ok()) << lb.status();
  for (const char* name : kMapNames) {
    uint32_t xdp_id = MapId((*lb)->xdp()->obj, name);
    EXPECT_NE(xdp_id, 0u) << name;
    EXPECT_EQ(xdp_id, MapId((*lb)->tc()->obj, name)) << name << " is not shared";
    struct stat st {};
    EXPECT_EQ(stat(((*lb)->pin_dir() + "/" + name).c_str(), &st), 0) << name << " not pinned";
  }
}

TEST(LbLoad, PinDirectoryIsRemovedOnDestruction) {
  if (std::string why = kpx::testing::MissingRootReason(); !why.empty()) GTEST_SKIP() << why;
  std::string dir;
  {
    auto lb = BpfLb::Create();
    ASSERT_TRUE(lb.ok()) << lb.status();
    dir = (*lb)->pin_dir();
  }
  struct stat st {};
  EXPECT_NE(stat(dir.c_str(), &st), 0) << dir << " left behind";
}

TEST(LbLoad, MaglevPoolTakesOnlyChunksOfTheTemplate) {
  if (std::string why = kpx::testing::MissingRootReason(); !why.empty()) GTEST_SKIP() << why;
  auto lb = BpfLb::Create();
  ASSERT_TRUE(lb.ok()) << lb.status();
  // Tables of any size up to KPX_MAGLEV_M_MAX fit one chunk.
  EXPECT_TRUE((*lb)->SetMaglev(1, std::vector<uint32_t>(7, 1)).ok());
  EXPECT_TRUE((*lb)->SetMaglev(2, std::vector<uint32_t>(KPX_MAGLEV_M_DEFAULT, 2)).ok());
  EXPECT_TRUE((*lb)->SetMaglev(3, std::vector<uint32_t>(KPX_MAGLEV_M_MAX, 3)).ok());
  uint32_t key = 5;
  // Not mmapable, or another size: refused by the outer map.
  int plain = bpf_map_create(BPF_MAP_TYPE_ARRAY, "kpx_mgl_bad", 4, 4, KPX_MAGLEV_CHUNK_SLOTS, nullptr);
  ASSERT_GE(plain, 0);
  EXPECT_NE(bpf_map_update_elem((*lb)->maglev_fd(), &key, &plain, BPF_ANY), 0);
  close(plain);
  LIBBPF_OPTS(bpf_map_create_opts, mo, .map_flags = BPF_F_MMAPABLE);
  int small = bpf_map_create(BPF_MAP_TYPE_ARRAY, "kpx_mgl_bad", 4, 4, 1024, &mo);
  ASSERT_GE(small, 0);
  EXPECT_NE(bpf_map_update_elem((*lb)->maglev_fd(), &key, &small, BPF_ANY), 0);
  close(small);
  // Several chunks in one batched update (what kpxd does at cold start).
  int fds[2];
  uint32_t keys[2] = {6, 7};
  for (int& fd : fds) {
    fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "kpx_mg_chunk", 4, 4, KPX_MAGLEV_CHUNK_SLOTS, &mo);
    ASSERT_GE(fd, 0);
  }
  uint32_t count = 2;
  LIBBPF_OPTS(bpf_map_batch_opts, bo);
  EXPECT_EQ(bpf_map_update_batch((*lb)->maglev_fd(), keys, fds, &count, &bo), 0) << strerror(errno);
  EXPECT_EQ(count, 2u);
  for (int fd : fds) close(fd);
  uint32_t id = 0;
  EXPECT_EQ(bpf_map_lookup_elem((*lb)->maglev_fd(), &keys[1], &id), 0);
  EXPECT_NE(id, 0u);
}

}  // namespace
}  // namespace kpx::bpftest
