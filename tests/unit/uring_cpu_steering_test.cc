// CpuSteering: a connection whose SYN is handled on CPU cpus[i] is accepted
// on listener i of its reuseport group, with the shared eBPF program (as
// root) and with the classic BPF fallback. Loopback only: the SYN is
// handled on the connecting thread's CPU.
#include "dataplane/uring/cpu_steering.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testlib/testlib.h"

namespace kpx::uring {
namespace {

std::vector<int> TwoAllowedCpus() {
  cpu_set_t set;
  std::vector<int> cpus;
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return cpus;
  for (int c = 0; c < CPU_SETSIZE && cpus.size() < 2; ++c) {
    if (CPU_ISSET(c, &set)) cpus.push_back(c);
  }
  return cpus;
}

int Listener(uint16_t* port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(*port);
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || listen(fd, 64) != 0) {
    close(fd);
    return -1;
  }
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  *port = ntohs(a.sin_port);
  return fd;
}

// Connects from a thread pinned to `cpu`; the connection stays open until
// the caller has looked at the listeners.
int ConnectFrom(int cpu, uint16_t port) {
  int fd = -1;
  std::thread t([&] {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set) != 0) return;
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
      close(fd);
      fd = -1;
    }
  });
  t.join();
  return fd;
}

// Which of the listeners has the connection waiting (-1: none, -2: both).
int AcceptedOn(const std::vector<int>& listeners) {
  int found = -1;
  for (size_t i = 0; i < listeners.size(); ++i) {
    int c = accept4(listeners[i], nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (c < 0) continue;
    close(c);
    found = found == -1 ? static_cast<int>(i) : -2;
  }
  return found;
}

void ExpectSteered(const CpuSteering& steering, const std::vector<int>& cpus) {
  uint16_t port = 0;
  std::vector<int> listeners;
  for (size_t i = 0; i < cpus.size(); ++i) {
    int fd = Listener(&port);
    ASSERT_GE(fd, 0) << "listener on 127.0.0.1:" << port << ": " << strerror(errno);
    listeners.push_back(fd);
  }
  for (int fd : listeners) {
    int nb = 1;
    ASSERT_EQ(ioctl(fd, FIONBIO, &nb), 0);
  }
  ASSERT_TRUE(steering.Attach(listeners.back()).ok());
  for (int round = 0; round < 10; ++round) {
    for (size_t i = 0; i < cpus.size(); ++i) {
      int c = ConnectFrom(cpus[i], port);
      ASSERT_GE(c, 0) << "connect from CPU " << cpus[i];
      EXPECT_EQ(AcceptedOn(listeners), static_cast<int>(i)) << "SYN on CPU " << cpus[i] << ", round " << round;
      close(c);
    }
  }
  for (int fd : listeners) close(fd);
}

TEST(CpuSteering, SharedEbpfProgramSteersToTheWorkerOnTheSynsCpu) {
  std::vector<int> cpus = TwoAllowedCpus();
  if (cpus.size() < 2) GTEST_SKIP() << "needs 2 CPUs";
  if (std::string why = kpx::testing::MissingRootReason(); !why.empty()) GTEST_SKIP() << why;
  CpuSteering steering(cpus);
  ASSERT_TRUE(steering.shared_program()) << steering.fallback_reason();
  ExpectSteered(steering, cpus);
}

TEST(CpuSteering, ClassicBpfFallbackSteersTheSame) {
  std::vector<int> cpus = TwoAllowedCpus();
  if (cpus.size() < 2) GTEST_SKIP() << "needs 2 CPUs";
  CpuSteering steering(cpus, /*allow_ebpf=*/false);
  EXPECT_FALSE(steering.shared_program());
  ExpectSteered(steering, cpus);
}

// A CPU no worker runs on: past the end of the group, the kernel's hash
// decides (the connection is accepted on exactly one listener).
TEST(CpuSteering, UnknownCpuFallsBackToTheKernelsHash) {
  std::vector<int> cpus = TwoAllowedCpus();
  if (cpus.size() < 2) GTEST_SKIP() << "needs 2 CPUs";
  CpuSteering steering({cpus[0], 4095});  // worker 1 "runs" on a CPU that does not exist
  uint16_t port = 0;
  std::vector<int> listeners = {Listener(&port), Listener(&port)};
  ASSERT_GE(listeners[0], 0);
  ASSERT_GE(listeners[1], 0);
  for (int fd : listeners) {
    int nb = 1;
    ASSERT_EQ(ioctl(fd, FIONBIO, &nb), 0);
  }
  ASSERT_TRUE(steering.Attach(listeners.back()).ok());
  for (int round = 0; round < 10; ++round) {
    int c = ConnectFrom(cpus[0], port);
    ASSERT_GE(c, 0);
    EXPECT_EQ(AcceptedOn(listeners), 0);
    close(c);
    c = ConnectFrom(cpus[1], port);
    ASSERT_GE(c, 0);
    EXPECT_GE(AcceptedOn(listeners), 0);
    close(c);
  }
  for (int fd : listeners) close(fd);
}

}  // namespace
}  // namespace kpx::uring
