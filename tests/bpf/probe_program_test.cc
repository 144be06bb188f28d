// Loads the kpx_probe skeleton (built by cmake/KpxBpf.cmake) and runs a packet
// through it with BPF_PROG_TEST_RUN: proves the BPF build + load toolchain.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/if_ether.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"
#include "kpx_probe.skel.h"
#include "tests/testlib/testlib.h"

namespace {

TEST(ProbeProgram, LoadsAndCountsPackets) {
  if (std::string why = kpx::testing::MissingRootReason(); !why.empty()) GTEST_SKIP() << why;
  kpx_probe* skel = kpx_probe::open_and_load();
  ASSERT_NE(skel, nullptr) << "kpx_probe failed to load: " << strerror(errno);

  std::array<uint8_t, 64> pkt{};
  pkt[12] = 0x08;  // EtherType IPv4 (content does not matter to this program)
  LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = pkt.data(), .data_size_in = pkt.size(),
              .repeat = 1);
  int prog_fd = bpf_program__fd(skel->progs.kpx_probe_xdp);
  ASSERT_EQ(bpf_prog_test_run_opts(prog_fd, &opts), 0) << strerror(errno);
  EXPECT_EQ(opts.retval, 2u /* XDP_PASS */);

  // Per-CPU value: the sum over CPUs is the number of runs.
  int ncpu = libbpf_num_possible_cpus();
  ASSERT_GT(ncpu, 0);
  std::vector<uint64_t> values(ncpu);
  uint32_t key = 0;
  ASSERT_EQ(bpf_map__lookup_elem(skel->maps.kpx_probe_packets, &key, sizeof(key), values.data(),
                                 values.size() * sizeof(uint64_t), 0),
            0);
  uint64_t sum = 0;
  for (uint64_t v : values) sum += v;
  EXPECT_EQ(sum, 1u);
  kpx_probe::destroy(skel);
}

}  // namespace
