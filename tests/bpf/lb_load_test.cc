// Both load-balancer programs pass the verifier on this kernel, share every
// pinned map, and accept per-service Maglev tables of different sizes.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <sys/stat.h>

#include <cstdio>
#include <string>

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

TEST(LbLoad, MaglevInnerMapsMayDifferInSize) {
  if (std::string why = kpx::testing::MissingRootReason(); !why.empty()) GTEST_SKIP() << why;
  auto lb = BpfLb::Create();
  ASSERT_TRUE(lb.ok()) << lb.status();
  EXPECT_TRUE((*lb)->SetMaglev(1, std::vector<uint32_t>(7, 1)).ok());
  EXPECT_TRUE((*lb)->SetMaglev(2, std::vector<uint32_t>(KPX_MAGLEV_M_DEFAULT, 2)).ok());
  EXPECT_TRUE((*lb)->SetMaglev(3, std::vector<uint32_t>(KPX_MAGLEV_M_MAX, 3)).ok());
  // An inner map without BPF_F_INNER_MAP does not match the template.
  int fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "kpx_mgl_bad", 4, 4, 7, nullptr);
  ASSERT_GE(fd, 0);
  uint32_t key = 4;
  EXPECT_NE(bpf_map_update_elem((*lb)->maglev_fd(), &key, &fd, BPF_ANY), 0);
  close(fd);
}

}  // namespace
}  // namespace kpx::bpftest
