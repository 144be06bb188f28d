// kpxd end to end in the netns lab (tools/lab.sh, own prefix "kpxe2e-"): a real
// kpxd process in the node namespace, real pod servers, real TCP from the
// client namespace to the Service VIP. Needs root; skips with a reason otherwise.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <thread>

#include "absl/strings/str_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testlib/testlib.h"

namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kPrefix[] = "kpxe2e-";
constexpr char kVip[] = "10.96.4.197";
using Clock = std::chrono::steady_clock;

int Sh(const std::string& cmd) {
  int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

std::string ShOut(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  pclose(p);
  return out;
}

std::string LabCmd(const std::string& args) {
  return absl::StrFormat("KPX_LAB_PREFIX=%s KPX_PODSERVER=%s %s %s", kPrefix,
                         kpx::testing::BinaryPath("tools/podserver/kpx-podserver"),
                         kpx::testing::SourcePath("tools/lab.sh"), args);
}

// Runs `fn` on a thread inside the named network namespace.
void InNetns(const std::string& ns, const std::function<void()>& fn) {
  std::thread t([&] {
    int fd = open(("/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) {
      ADD_FAILURE() << "cannot enter netns " << ns;
      if (fd >= 0) close(fd);
      return;
    }
    close(fd);
    fn();
  });
  t.join();
}

// Connects with a deadline; returns the fd or -errno.
int ConnectTimeout(const char* ip, int port, int timeout_ms) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  inet_pton(AF_INET, ip, &sa.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 && errno != EINPROGRESS) {
    int e = errno;
    close(fd);
    return -e;
  }
  pollfd p{fd, POLLOUT, 0};
  if (poll(&p, 1, timeout_ms) != 1) {
    close(fd);
    return -ETIMEDOUT;
  }
  int err = 0;
  socklen_t len = sizeof(err);
  getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
  if (err != 0) {
    close(fd);
    return -err;
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  timeval tv{3, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  return fd;
}

bool SendAll(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w <= 0) return false;
    p += w;
    n -= w;
  }
  return true;
}

std::string ReadToEof(int fd) {
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t r = recv(fd, buf, sizeof(buf), 0);
    if (r <= 0) break;
    out.append(buf, r);
  }
  return out;
}

// One HTTP request with Connection: close; returns the body's first line
// (the pod name) or "" on any failure.
std::string HttpGet(const char* ip, int port) {
  int fd = ConnectTimeout(ip, port, 2000);
  if (fd < 0) return "";
  std::string req = "GET / HTTP/1.1\r\nHost: kpx\r\nConnection: close\r\n\r\n";
  std::string body;
  if (SendAll(fd, req.data(), req.size())) {
    std::string resp = ReadToEof(fd);
    size_t pos = resp.find("\r\n\r\n");
    if (resp.rfind("HTTP/1.1 200", 0) == 0 && pos != std::string::npos) {
      body = resp.substr(pos + 4);
      if (!body.empty() && body.back() == '\n') body.pop_back();
    }
  }
  close(fd);
  return body;
}

struct Spread {
  std::map<std::string, int> by_pod;
  int failed = 0;
};

class KpxdLabTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!kpx::testing::MissingRootReason().empty()) return;
    Sh(LabCmd("down") + " >/dev/null 2>&1");
    lab_up_ = Sh(LabCmd("up") + " >/dev/null 2>&1") == 0;
  }
  static void TearDownTestSuite() {
    if (!kpx::testing::MissingRootReason().empty()) return;
    Sh(LabCmd("down") + " >/dev/null 2>&1");
  }

  void SetUp() override {
    if (std::string why = kpx::testing::MissingRootReason(); !why.empty()) GTEST_SKIP() << why;
    ASSERT_TRUE(lab_up_) << "tools/lab.sh up failed";
    char tmpl[] = "/tmp/kpx-e2e-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    work_ = tmpl;
    fs::create_directory(work_ + "/m");
  }

  void TearDown() override {
    StopKpxd();
    for (int i = 1; i <= 4; ++i) Sh(LabCmd("pod-start " + std::to_string(i)) + " >/dev/null 2>&1");
    if (!work_.empty()) fs::remove_all(work_);
  }

  std::string ManifestDir() const { return work_ + "/m"; }

  // Writes a manifest atomically (temp file + rename), as a controller would.
  void WriteManifest(const std::string& name, const std::string& content) {
    std::string tmp = ManifestDir() + "/." + name + ".tmp";
    std::ofstream(tmp) << content;
    fs::rename(tmp, ManifestDir() + "/" + name);
  }
  void CopyExample(const std::string& name) {
    std::ifstream in(kpx::testing::SourcePath("config/examples/" + name));
    std::stringstream ss;
    ss << in.rdbuf();
    WriteManifest(name, ss.str());
  }

  void StartKpxd() {
    // A status file left by an earlier kpxd must not count as "ready".
    fs::remove(work_ + "/status.json");
    pid_ = fork();
    if (pid_ == 0) {
      std::string log = work_ + "/kpxd.log";
      int fd = open(log.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
      dup2(fd, 1);
      dup2(fd, 2);
      std::string kpxd = kpx::testing::BinaryPath("tools/kpxd");
      std::string ns = std::string(kPrefix) + "node";
      std::string mdir = ManifestDir();
      std::string status = work_ + "/status.json";
      execlp("ip", "ip", "netns", "exec", ns.c_str(), kpxd.c_str(), "--manifest-dir",
             mdir.c_str(), "--hostname-override", "a4-worker3", "--status-file", status.c_str(),
             "--dataplane", "uring", "--drain-timeout", "2s", "--admin-socket",
             (work_ + "/kpxd.sock").c_str(), "--state-dir", (work_ + "/state").c_str(),
             static_cast<char*>(nullptr));
      _exit(127);
    }
    ASSERT_GT(pid_, 0);
    // kpxd writes the status file once its initial sync is programmed.
    auto deadline = Clock::now() + std::chrono::seconds(5);
    while (Status().find("\"in_sync\":true") == std::string::npos && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_THAT(Status(), HasSubstr("\"in_sync\":true")) << Log();
  }

  // SIGTERM and wait (bounded); returns the exit code, or -1.
  int StopKpxd() {
    if (pid_ <= 0) return -1;
    kill(pid_, SIGTERM);
    int status = 0;
    for (int i = 0; i < 100; ++i) {
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    kill(pid_, SIGKILL);
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return -1;
  }

  std::string Status() const {
    std::ifstream in(work_ + "/status.json");
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  long StatusField(const std::string& field) const {
    std::smatch m;
    std::string s = Status();
    if (!std::regex_search(s, m, std::regex("\"" + field + "\":([0-9]+)"))) return -1;
    return std::stol(m[1]);
  }
  // Waits until kpxd applied more than `updates` source updates and is in sync.
  bool WaitUpdates(long updates) {
    auto deadline = Clock::now() + std::chrono::seconds(5);
    while (Clock::now() < deadline) {
      if (StatusField("updates") > updates && Status().find("\"in_sync\":true") != std::string::npos)
        return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }
  std::string Log() const {
    std::ifstream in(work_ + "/kpxd.log");
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  Spread Requests(int n, const char* ip = kVip, int port = 5000) {
    Spread s;
    InNetns(std::string(kPrefix) + "client", [&] {
      for (int i = 0; i < n; ++i) {
        std::string pod = HttpGet(ip, port);
        if (pod.empty()) {
          ++s.failed;
        } else {
          ++s.by_pod[pod];
        }
      }
    });
    return s;
  }

  static inline bool lab_up_ = false;
  std::string work_;
  pid_t pid_ = -1;
};

std::string FlaskWithEndpoints(int keep) {
  std::ifstream in(kpx::testing::SourcePath("config/examples/flask.yaml"));
  std::stringstream ss;
  ss << in.rdbuf();
  std::string src = ss.str();
  size_t eps = src.find("endpoints:\n");
  std::string out = src.substr(0, eps + 11);
  size_t pos = eps + 11;
  for (int i = 0; i < keep; ++i) {
    size_t next = src.find("- addresses", pos + 1);
    out += src.substr(pos, next == std::string::npos ? std::string::npos : next - pos);
    pos = next;
    if (next == std::string::npos) break;
  }
  return out;
}

TEST_F(KpxdLabTest, TrafficThroughTheVipReachesEveryPod) {
  CopyExample("flask.yaml");
  StartKpxd();
  Spread s = Requests(80);
  EXPECT_EQ(s.failed, 0);
  EXPECT_EQ(s.by_pod.size(), 4u) << "pods seen: " << s.by_pod.size();
  for (const char* pod : {"pod1", "pod2", "pod3", "pod4"}) EXPECT_GT(s.by_pod[pod], 0) << pod;
}

TEST_F(KpxdLabTest, EndpointEditsTakeEffect) {
  CopyExample("flask.yaml");
  StartKpxd();
  long before = StatusField("updates");
  WriteManifest("flask.yaml", FlaskWithEndpoints(2));
  ASSERT_TRUE(WaitUpdates(before)) << Log();
  Spread s = Requests(40);
  EXPECT_EQ(s.failed, 0);
  EXPECT_EQ(s.by_pod.count("pod3") + s.by_pod.count("pod4"), 0u);
  EXPECT_GT(s.by_pod["pod1"], 0);
  EXPECT_GT(s.by_pod["pod2"], 0);

  before = StatusField("updates");
  WriteManifest("flask.yaml", FlaskWithEndpoints(4));
  ASSERT_TRUE(WaitUpdates(before)) << Log();
  s = Requests(80);
  EXPECT_EQ(s.failed, 0);
  EXPECT_EQ(s.by_pod.size(), 4u);
}

TEST_F(KpxdLabTest, DeletedServiceFailsFastNotHang) {
  CopyExample("flask.yaml");
  StartKpxd();
  ASSERT_EQ(Requests(5).failed, 0);
  long before = StatusField("updates");
  fs::remove(ManifestDir() + "/flask.yaml");
  ASSERT_TRUE(WaitUpdates(before)) << Log();
  EXPECT_EQ(StatusField("frontends"), 0);
  int err = 0;
  auto start = Clock::now();
  InNetns(std::string(kPrefix) + "client", [&] {
    int fd = ConnectTimeout(kVip, 5000, 3000);
    if (fd >= 0) close(fd);
    err = fd < 0 ? -fd : 0;
  });
  auto took = Clock::now() - start;
  EXPECT_NE(err, 0) << "connect to a deleted Service succeeded";
  EXPECT_NE(err, ETIMEDOUT) << "connect to a deleted Service hung";
  EXPECT_LT(took, std::chrono::seconds(1));
}

TEST_F(KpxdLabTest, BrokenManifestKeepsPreviousRulesServing) {
  CopyExample("flask.yaml");
  StartKpxd();
  std::string broken = FlaskWithEndpoints(4);
  broken.replace(broken.find("port: 5000"), 10, "port: http");
  WriteManifest("flask.yaml", broken);
  auto deadline = Clock::now() + std::chrono::seconds(5);
  while (StatusField("parse_errors") < 1 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(StatusField("parse_errors"), 1) << Status();
  EXPECT_THAT(Status(), HasSubstr("is not a port number"));
  EXPECT_EQ(StatusField("frontends"), 1);
  Spread s = Requests(40);
  EXPECT_EQ(s.failed, 0);
  EXPECT_EQ(s.by_pod.size(), 4u);
  EXPECT_THAT(Log(), HasSubstr("keeping this file's previous objects"));
}

TEST_F(KpxdLabTest, KilledBackendIsRetriedWithZeroFailedRequests) {
  CopyExample("flask.yaml");
  StartKpxd();
  ASSERT_EQ(Sh(LabCmd("pod-stop 3") + " >/dev/null 2>&1"), 0);
  Spread s = Requests(100);
  EXPECT_EQ(s.failed, 0);
  EXPECT_EQ(s.by_pod.count("pod3"), 0u);
  EXPECT_EQ(s.by_pod.size(), 3u);
}

TEST_F(KpxdLabTest, SessionAffinityPinsTheClient) {
  CopyExample("session-affinity.yaml");
  StartKpxd();
  Spread s = Requests(30, "10.96.7.30", 5000);
  EXPECT_EQ(s.failed, 0);
  EXPECT_EQ(s.by_pod.size(), 1u) << "affinity broken: " << s.by_pod.size() << " pods answered";
}

TEST_F(KpxdLabTest, HalfCloseAndLargeTransferThroughTheProxy) {
  WriteManifest("tcp.yaml", R"(apiVersion: v1
kind: Service
metadata: {name: tcp, namespace: default}
spec:
  clusterIP: 10.96.9.9
  ports:
  - {name: echo, port: 5001}
  - {name: sink, port: 5002}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: tcp-1
  namespace: default
  labels: {kubernetes.io/service-name: tcp}
addressType: IPv4
ports:
- {name: echo, port: 5001}
- {name: sink, port: 5002}
endpoints:
- addresses: [10.244.1.2]
- addresses: [10.244.2.2]
)");
  StartKpxd();
  InNetns(std::string(kPrefix) + "client", [&] {
    // Half-close: the echo server sees our EOF only through the proxy's
    // shutdown(SHUT_WR), then sends the rest and closes.
    int fd = ConnectTimeout("10.96.9.9", 5001, 2000);
    ASSERT_GE(fd, 0) << strerror(-fd);
    std::string msg(100000, 'x');
    for (size_t i = 0; i < msg.size(); ++i) msg[i] = static_cast<char>('a' + i % 26);
    ASSERT_TRUE(SendAll(fd, msg.data(), msg.size()));
    shutdown(fd, SHUT_WR);
    EXPECT_EQ(ReadToEof(fd), msg);
    close(fd);

    // 64 MiB to the sink; it answers "<count> <fnv1a64>" after our EOF.
    fd = ConnectTimeout("10.96.9.9", 5002, 2000);
    ASSERT_GE(fd, 0) << strerror(-fd);
    constexpr size_t kTotal = 64u << 20;
    std::string chunk(1 << 20, 0);
    uint64_t hash = 0xcbf29ce484222325ull;  // FNV-1a 64 offset basis
    for (size_t sent = 0; sent < kTotal; sent += chunk.size()) {
      for (size_t i = 0; i < chunk.size(); ++i) chunk[i] = static_cast<char>((sent + i) * 7 + 3);
      for (unsigned char c : chunk) hash = (hash ^ c) * 0x100000001b3ull;
      ASSERT_TRUE(SendAll(fd, chunk.data(), chunk.size()));
    }
    shutdown(fd, SHUT_WR);
    EXPECT_EQ(ReadToEof(fd), absl::StrFormat("%d %016x\n", kTotal, hash));
    close(fd);
  });
}

std::string Kpxctl(const std::string& args) {
  return kpx::testing::BinaryPath("tools/kpxctl") + " " + args;
}

TEST_F(KpxdLabTest, AdminApiShowsRulesCountersAndErrors) {
  CopyExample("flask.yaml");
  StartKpxd();
  ASSERT_EQ(Requests(8).failed, 0);
  std::string sock = "--socket " + work_ + "/kpxd.sock ";
  std::string out = ShOut(Kpxctl(sock + "get services default/flask-svc -o json"));
  EXPECT_THAT(out, HasSubstr("\"programmed\": true"));
  EXPECT_THAT(out, HasSubstr("\"dataplane\": \"uring\""));
  EXPECT_THAT(out, HasSubstr("\"total\": 8")) << out;  // frontend connection counter
  out = ShOut(Kpxctl(sock + "get backends default/flask-svc"));
  EXPECT_THAT(out, HasSubstr("10.244.3.3:5000"));
  EXPECT_THAT(out, HasSubstr("HEALTHY"));
  // Unknown service: exit 1 and kpxd's error message; nothing changes.
  EXPECT_EQ(Sh(Kpxctl(sock + "get services default/nope >/dev/null 2>&1")), 1);
  EXPECT_THAT(ShOut(Kpxctl(sock + "get services default/nope 2>&1")), HasSubstr("not found"));
  // The socket is root-only: an unprivileged user cannot talk to kpxd.
  EXPECT_EQ(Sh("setpriv --reuid=65534 --regid=65534 --clear-groups " + Kpxctl(sock + "version") +
               " >/dev/null 2>&1"),
            3);
  EXPECT_EQ(Sh(Kpxctl(sock + "version >/dev/null")), 0);
}

TEST_F(KpxdLabTest, EndpointOverridesApplyValidateAndSurviveRestart) {
  CopyExample("flask.yaml");
  StartKpxd();
  std::string sock = "--socket " + work_ + "/kpxd.sock ";
  ASSERT_EQ(Sh(Kpxctl(sock + "endpoints set default/flask-svc 10.244.1.2:5000 >/dev/null")), 0);
  Spread s = Requests(20);
  EXPECT_EQ(s.failed, 0);
  EXPECT_EQ(s.by_pod["pod1"], 20);
  // Bad input: clear error, exit 1, nothing changed.
  EXPECT_THAT(ShOut(Kpxctl(sock + "endpoints add default/flask-svc 10.244.2.2:99999 2>&1")),
              HasSubstr("port must be 1..65535"));
  EXPECT_THAT(ShOut(Kpxctl(sock + "endpoints add default/nope 10.244.2.2:5000 2>&1")),
              HasSubstr("service default/nope not found"));
  EXPECT_EQ(Sh(Kpxctl(sock + "endpoints add default/flask-svc bogus >/dev/null 2>&1")), 1);
  EXPECT_EQ(Requests(10).by_pod["pod1"], 10);
  // The override is persisted: a restarted kpxd serves it again.
  ASSERT_EQ(StopKpxd(), 0);
  StartKpxd();
  EXPECT_EQ(Requests(10).by_pod["pod1"], 10);
  EXPECT_THAT(ShOut(Kpxctl(sock + "get services default/flask-svc -o json")),
              HasSubstr("\"overridden\": true"));
  ASSERT_EQ(Sh(Kpxctl(sock + "endpoints reset default/flask-svc >/dev/null")), 0);
  EXPECT_EQ(Requests(60).by_pod.size(), 4u);
}

TEST_F(KpxdLabTest, DrainStopsNewConnectionsToOneBackend) {
  CopyExample("flask.yaml");
  StartKpxd();
  std::string sock = "--socket " + work_ + "/kpxd.sock ";
  ASSERT_EQ(Sh(Kpxctl(sock + "drain default/flask-svc 10.244.2.2:5000 >/dev/null")), 0);
  Spread s = Requests(60);
  EXPECT_EQ(s.failed, 0);
  EXPECT_EQ(s.by_pod.count("pod2"), 0u);
  EXPECT_EQ(s.by_pod.size(), 3u);
  EXPECT_THAT(ShOut(Kpxctl(sock + "get services default/flask-svc -o json")),
              HasSubstr("\"draining\": true"));
  EXPECT_THAT(ShOut(Kpxctl(sock + "drain default/flask-svc 10.244.9.9:5000 2>&1")),
              HasSubstr("is not a backend of default/flask-svc"));
}

TEST_F(KpxdLabTest, ApplyAndDeletePushManifestsIntoTheRunningDaemon) {
  StartKpxd();
  std::string sock = "--socket " + work_ + "/kpxd.sock ";
  std::string example = kpx::testing::SourcePath("config/examples/session-affinity.yaml");
  ASSERT_EQ(Sh(Kpxctl(sock + "apply -f " + example + " >/dev/null")), 0);
  Spread s = Requests(5, "10.96.7.30", 5000);
  EXPECT_EQ(s.failed, 0);
  // A broken manifest is refused with the parser's message; nothing changes.
  std::string bad = work_ + "/bad.yaml";
  std::ofstream(bad) << "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  ports:\n  - port: http\n";
  EXPECT_THAT(ShOut(Kpxctl(sock + "apply -f " + bad + " 2>&1")), HasSubstr("is not a port number"));
  EXPECT_EQ(Requests(3, "10.96.7.30", 5000).failed, 0);
  ASSERT_EQ(Sh(Kpxctl(sock + "delete -f " + example + " >/dev/null")), 0);
  EXPECT_EQ(StatusField("frontends"), 0);
}

TEST_F(KpxdLabTest, SigtermExitsCleanlyAndRemovesVips) {
  CopyExample("flask.yaml");
  StartKpxd();
  std::string ns = std::string(kPrefix) + "node";
  EXPECT_THAT(ShOut("ip -n " + ns + " -4 addr show dev kpx0"), HasSubstr(kVip));
  EXPECT_EQ(StopKpxd(), 0) << Log();
  EXPECT_THAT(ShOut("ip -n " + ns + " -4 addr show dev kpx0 2>&1"), Not(HasSubstr(kVip)));
}

}  // namespace
