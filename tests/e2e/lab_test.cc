// End-to-end check of the netns lab (tools/lab.sh) and kpx-podserver: the lab
// comes up, every pod answers from the client namespace over the node's
// routes (HTTP, echo with half-close, checksum sink), the pod controls work,
// and `down` leaves no namespace and no server behind.
//
// Uses its own prefix (kpxt-) so it can run while a kpx- demo lab is up.
#include <fcntl.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/testlib/testlib.h"

namespace kpx {
namespace {

constexpr char kPrefix[] = "kpxt-";
constexpr char kState[] = "/run/kpxt-lab";
const char* const kPodIps[] = {"10.244.1.2", "10.244.2.2", "10.244.3.2", "10.244.3.3"};

// Runs a shell command (bounded by timeout(1)); returns its exit code and
// stdout+stderr.
int Sh(const std::string& cmd, std::string* out = nullptr) {
  std::string full = absl::StrCat("timeout 60 ", cmd, " 2>&1");
  FILE* f = popen(full.c_str(), "r");
  if (f == nullptr) return -1;
  std::string buf;
  char chunk[4096];
  size_t n;
  while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) buf.append(chunk, n);
  int status = pclose(f);
  if (out != nullptr) *out = buf;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string Lab(const std::string& args) {
  return absl::StrCat("env KPX_LAB_PODS=4 KPX_LAB_STATE=", kState, " KPX_LAB_PREFIX=", kPrefix,
                      " KPX_PODSERVER=", testing::BinaryPath("tools/podserver/kpx-podserver"),
                      " ", testing::SourcePath("tools/lab.sh"), " ", args);
}

// Runs fn on a thread that has joined the lab namespace `ns` (setns only
// moves the calling thread, so the test process stays where it is).
void InNetns(const std::string& ns, const std::function<void()>& fn) {
  std::thread t([&] {
    int fd = open(absl::StrCat("/run/netns/", kPrefix, ns).c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0) << "no namespace " << kPrefix << ns;
    ASSERT_EQ(setns(fd, CLONE_NEWNET), 0) << strerror(errno);
    close(fd);
    fn();
  });
  t.join();
}

int Connect(const std::string& ip, int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  timeval tv{5, 0};  // bounds every blocking call below
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, ip.c_str(), &sa.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

bool SendAll(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

// Reads to EOF; false on error or timeout.
bool ReadAll(int fd, std::string* out) {
  char buf[65536];
  while (true) {
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n == 0) return true;
    if (n < 0) return false;
    out->append(buf, static_cast<size_t>(n));
  }
}

std::string RandomBytes(size_t n) {
  std::mt19937_64 rng(42);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

uint64_t Fnv1a64(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ULL;
  return h;
}

// "" when the file cannot be read.
std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<int> RecordedPids() {
  std::vector<int> pids;
  for (int i = 1; i <= 4; ++i) {
    std::string text = ReadFile(absl::StrCat(kState, "/pod", i, ".pid"));
    std::vector<std::string> parts = absl::StrSplit(text, ' ');
    int pid = 0;
    if (!parts.empty() && absl::SimpleAtoi(parts[0], &pid)) pids.push_back(pid);
  }
  return pids;
}

bool ProcessRunning(int pid) {
  std::string text = ReadFile(absl::StrCat("/proc/", pid, "/stat"));
  size_t paren = text.rfind(") ");
  return paren != std::string::npos && text.substr(paren + 2, 1) != "Z";
}

std::string LabNamespaces() {
  std::string out;
  Sh("ip netns list | awk '{print $1}' | grep -E '^kpxt-' || true", &out);
  return out;
}

class LabTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string reason = testing::MissingRootReason();
    if (!reason.empty()) GTEST_SKIP() << reason;
    ASSERT_EQ(access(testing::BinaryPath("tools/podserver/kpx-podserver").c_str(), X_OK), 0)
        << "build target kpx-podserver first";
    std::string out;
    Sh(Lab("down"), &out);  // leftovers of an earlier, killed run of this test
    up_ = true;
    ASSERT_EQ(Sh(Lab("up"), &out), 0) << out;
  }
  // Teardown also when an assertion failed half-way.
  ~LabTest() override {
    if (up_) Sh(Lab("down"));
  }

  bool up_ = false;
};

TEST_F(LabTest, EveryPodAnswersFromTheClientAndDownCleansUp) {
  // HTTP through the node's per-pod /32 routes (pods 3 and 4 share a /24).
  for (int i = 0; i < 4; ++i) {
    std::string body;
    EXPECT_EQ(Sh(Lab(absl::StrCat("exec client curl -sS --max-time 3 http://", kPodIps[i],
                                   ":5000/")),
                 &body),
              0);
    EXPECT_EQ(body, absl::StrCat("pod", i + 1, "\n")) << kPodIps[i];
  }
  std::string code;
  Sh(Lab("exec client curl -s -o /dev/null -w '%{http_code}' --max-time 3 "
         "http://10.244.2.2:5000/fail"),
     &code);
  EXPECT_EQ(code, "500");

  InNetns("client", [] {
    for (const char* ip : kPodIps) {
      // /bytes/N: N deterministic bytes after the head.
      int fd = Connect(ip, 5000);
      ASSERT_GE(fd, 0) << ip;
      ASSERT_TRUE(SendAll(fd, "GET /bytes/100000 HTTP/1.1\r\nConnection: close\r\n\r\n"));
      std::string resp;
      EXPECT_TRUE(ReadAll(fd, &resp));
      close(fd);
      size_t head = resp.find("\r\n\r\n");
      ASSERT_NE(head, std::string::npos) << ip;
      std::string body = resp.substr(head + 4);
      ASSERT_EQ(body.size(), 100000u) << ip;
      for (size_t i = 0; i < body.size(); ++i) {
        ASSERT_EQ(static_cast<unsigned char>(body[i]), (i * 31 + 7) & 0xff) << ip << " byte " << i;
      }

      // Echo: everything comes back, then the server's FIN after ours.
      std::string data = RandomBytes(1 << 20);
      fd = Connect(ip, 5001);
      ASSERT_GE(fd, 0) << ip;
      std::string echoed;
      bool read_ok = false;
      std::thread reader([&] { read_ok = ReadAll(fd, &echoed); });
      bool sent = SendAll(fd, data) && shutdown(fd, SHUT_WR) == 0;
      reader.join();
      close(fd);
      EXPECT_TRUE(sent && read_ok) << ip;
      EXPECT_TRUE(echoed == data) << ip << ": echoed " << echoed.size() << " bytes";

      // Sink: "<count> <fnv1a64>" after our EOF.
      data = RandomBytes(4 << 20);
      fd = Connect(ip, 5002);
      ASSERT_GE(fd, 0) << ip;
      ASSERT_TRUE(SendAll(fd, data));
      ASSERT_EQ(shutdown(fd, SHUT_WR), 0);
      std::string reply;
      EXPECT_TRUE(ReadAll(fd, &reply));
      close(fd);
      EXPECT_EQ(reply, absl::StrFormat("%d %016x\n", data.size(), Fnv1a64(data))) << ip;
    }
  });

  // Failure controls: a stopped pod refuses, a restarted one answers again;
  // pod-health flips /healthz.
  std::string out;
  ASSERT_EQ(Sh(Lab("pod-stop 2"), &out), 0) << out;
  EXPECT_NE(Sh(Lab("exec client curl -s --max-time 3 http://10.244.2.2:5000/"), &out), 0);
  ASSERT_EQ(Sh(Lab("pod-start 2"), &out), 0) << out;
  EXPECT_EQ(Sh(Lab("exec client curl -s --max-time 3 http://10.244.2.2:5000/"), &out), 0);
  EXPECT_EQ(out, "pod2\n");
  ASSERT_EQ(Sh(Lab("pod-health 3 fail"), &out), 0) << out;
  Sh(Lab("exec client curl -s -o /dev/null -w '%{http_code}' --max-time 3 "
         "http://10.244.3.2:5000/healthz"),
     &code);
  EXPECT_EQ(code, "503");
  ASSERT_EQ(Sh(Lab("pod-health 3 ok"), &out), 0) << out;
  Sh(Lab("exec client curl -s -o /dev/null -w '%{http_code}' --max-time 3 "
         "http://10.244.3.2:5000/healthz"),
     &code);
  EXPECT_EQ(code, "200");

  // No route out of the lab: the client cannot reach beyond the cluster CIDRs.
  EXPECT_NE(Sh(Lab("exec client ip route get 192.0.2.1"), &out), 0) << out;

  std::vector<int> pids = RecordedPids();
  ASSERT_EQ(pids.size(), 4u);
  for (int pid : pids) EXPECT_TRUE(ProcessRunning(pid)) << pid;
  ASSERT_EQ(Sh(Lab("down"), &out), 0) << out;
  up_ = false;
  EXPECT_EQ(LabNamespaces(), "");
  for (int pid : pids) EXPECT_FALSE(ProcessRunning(pid)) << "pod server " << pid << " survived down";
  EXPECT_NE(access(kState, F_OK), 0) << kState << " left behind";
  // Idempotent.
  EXPECT_EQ(Sh(Lab("down"), &out), 0) << out;
}

}  // namespace
}  // namespace kpx
