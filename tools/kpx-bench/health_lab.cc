// HealthLab, Child and the observers of `kpx-bench health` (see health_lab.h).
#include "tools/kpx-bench/health_lab.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include <httplib.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "nlohmann/json.hpp"

namespace kpx::bench {
namespace {

constexpr const char* kPodIps[] = {"10.244.1.2", "10.244.2.2", "10.244.3.2", "10.244.3.3"};

std::string Quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

// Nanoseconds on CPU of one task (/proc/<pid>/task/<tid>/schedstat, first
// field): exact, where stat's utime/stime count 10 ms ticks.
absl::StatusOr<double> SchedstatSeconds(const std::filesystem::path& path) {
  std::ifstream in(path);
  uint64_t ns = 0;
  if (!(in >> ns)) return absl::NotFoundError(absl::StrCat("cannot read ", path.string()));
  return static_cast<double>(ns) / 1e9;
}

}  // namespace

absl::Status Child::Start(const std::vector<std::string>& argv, const std::string& netns,
                          const std::filesystem::path& log) {
  Kill();
  int nsfd = -1;
  if (!netns.empty()) {
    nsfd = open(("/run/netns/" + netns).c_str(), O_RDONLY | O_CLOEXEC);
    if (nsfd < 0) return absl::NotFoundError(absl::StrCat("netns ", netns, ": ", std::strerror(errno)));
  }
  int logfd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (logfd < 0) {
    if (nsfd >= 0) close(nsfd);
    return absl::InternalError(absl::StrCat(log.string(), ": ", std::strerror(errno)));
  }
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    // Only async-signal-safe calls between fork and exec.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(125);
    if (nsfd >= 0 && setns(nsfd, CLONE_NEWNET) != 0) _exit(126);
    int devnull = open("/dev/null", O_RDONLY);
    dup2(devnull, 0);
    dup2(logfd, 1);
    dup2(logfd, 2);
    execv(args[0], args.data());
    _exit(127);
  }
  if (nsfd >= 0) close(nsfd);
  close(logfd);
  if (pid < 0) return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  pid_ = pid;
  return absl::OkStatus();
}

bool Child::Exited() {
  if (pid_ <= 0) return true;
  int status = 0;
  if (waitpid(pid_, &status, WNOHANG) == pid_) {
    pid_ = -1;
    return true;
  }
  return false;
}

void Child::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

void Child::Stop(absl::Duration grace) {
  if (pid_ <= 0) return;
  kill(pid_, SIGTERM);
  const absl::Time deadline = absl::Now() + grace;
  while (absl::Now() < deadline) {
    if (Exited()) return;
    absl::SleepFor(absl::Milliseconds(10));
  }
  Kill();
}

absl::StatusOr<double> ProcessCpuSeconds(pid_t pid) {
  std::error_code ec;
  double total = 0;
  int tasks = 0;
  for (const auto& e : std::filesystem::directory_iterator(absl::StrCat("/proc/", pid, "/task"), ec)) {
    absl::StatusOr<double> t = SchedstatSeconds(e.path() / "schedstat");
    if (t.ok()) {
      total += *t;
      ++tasks;
    }
  }
  if (tasks == 0) return absl::NotFoundError(absl::StrCat("no tasks readable for process ", pid));
  return total;
}

absl::StatusOr<double> ThreadCpuSeconds(pid_t pid, const std::string& comm) {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(absl::StrCat("/proc/", pid, "/task"), ec)) {
    std::ifstream in(e.path() / "comm");
    std::string name;
    std::getline(in, name);
    if (name == comm) return SchedstatSeconds(e.path() / "schedstat");
  }
  return absl::NotFoundError(absl::StrCat("no thread named ", comm, " in process ", pid));
}

int RunBounded(const std::string& cmd, absl::Duration limit, const std::filesystem::path& log) {
  std::string full = absl::StrCat("timeout -k 5 ", absl::ToInt64Seconds(limit), " bash -c ", Quote(cmd),
                                  " >>", Quote(log.string()), " 2>&1");
  // Not std::system(): it ignores SIGINT while the command runs, and a
  // Ctrl-C then would be lost instead of ending the run (and its cleanup).
  pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/bash", "bash", "-c", full.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  if (pid < 0) return -1;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string HealthLab::LabCmd(const std::string& args) const {
  return absl::StrCat("KPX_LAB_PREFIX=", kPrefix, " KPX_LAB_PODS=", kPods, " KPX_PODSERVER=",
                      Quote((build_dir_ / "tools/podserver/kpx-podserver").string()), " ",
                      Quote((source_dir_ / "tools/lab.sh").string()), " ", args);
}

absl::StatusOr<std::unique_ptr<HealthLab>> HealthLab::Create(const std::filesystem::path& source_dir,
                                                             const std::filesystem::path& build_dir,
                                                             const std::filesystem::path& work_dir) {
  std::unique_ptr<HealthLab> lab(new HealthLab());
  lab->source_dir_ = source_dir;
  lab->build_dir_ = build_dir;
  lab->work_dir_ = work_dir;
  const std::filesystem::path log = work_dir / "lab.log";
  RunBounded(lab->LabCmd("down"), absl::Seconds(60), log);
  lab->up_ = true;  // from here on, ~HealthLab runs `down` whatever happens
  if (RunBounded(lab->LabCmd("up"), absl::Seconds(90), log) != 0) {
    return absl::InternalError(absl::StrCat("tools/lab.sh up (prefix ", kPrefix, ") failed; see ", log.string()));
  }
  for (int i = 1; i <= kPods; ++i) {
    if (RunBounded(lab->LabCmd(absl::StrCat("pod-stop ", i)), absl::Seconds(30), log) != 0) {
      return absl::InternalError(absl::StrCat("lab.sh pod-stop ", i, " failed; see ", log.string()));
    }
    lab->pods_.push_back({absl::StrCat("pod", i), absl::StrCat(kPrefix, "pod", i), kPodIps[i - 1],
                          std::make_unique<Child>()});
  }
  for (int i = 0; i < kPods; ++i) {
    if (absl::Status s = lab->StartPod(i); !s.ok()) return s;
  }
  return lab;
}

HealthLab::~HealthLab() {
  for (LabPod& p : pods_) p.server->Kill();
  if (up_) RunBounded(LabCmd("down"), absl::Seconds(60), work_dir_ / "lab.log");
}

absl::Status HealthLab::StartPod(int i) {
  LabPod& p = pods_[i];
  return p.server->Start({(build_dir_ / "tools/podserver/kpx-podserver").string(), "--name=" + p.name,
                          "--listen=0.0.0.0:5000", "--echo=0.0.0.0:5001"},
                         p.ns, work_dir_ / (p.name + ".log"));
}

absl::Time HealthLab::KillPod(int i) {
  const absl::Time at = absl::Now();
  pods_[i].server->Kill();
  return at;
}

absl::Status HealthLab::RouteRangeToPod(int i, const std::string& cidr) {
  const LabPod& p = pods_[i];
  std::string cmd = absl::StrCat("ip -n ", p.ns, " route replace local ", cidr, " dev lo && ip -n ", NodeNs(),
                                 " route replace ", cidr, " dev ", p.name, " scope link src 10.244.0.1");
  if (RunBounded(cmd, absl::Seconds(10), work_dir_ / "lab.log") != 0) {
    return absl::InternalError(absl::StrCat("routing ", cidr, " to ", p.ns, " failed; see lab.log"));
  }
  return absl::OkStatus();
}

namespace {

class KpxdObserver : public Observer {
 public:
  KpxdObserver(std::string subject, std::string socket, std::string service, std::vector<std::string> ips)
      : Observer(std::move(subject)), client_(socket), service_(std::move(service)), ips_(std::move(ips)) {
    client_.set_address_family(AF_UNIX);
    client_.set_connection_timeout(1, 0);
    client_.set_read_timeout(2, 0);
    client_.set_keep_alive(true);
  }

  absl::Duration poll_period() const override { return absl::Milliseconds(25); }

  absl::StatusOr<std::vector<PodView>> Poll() override {
    auto res = client_.Get(("/v1/services?name=" + httplib::detail::encode_query_param(service_)).c_str());
    if (!res) return absl::UnavailableError(absl::StrCat("kpxd admin API: ", httplib::to_string(res.error())));
    if (res->status != 200) return absl::UnavailableError(absl::StrCat("kpxd admin API: HTTP ", res->status));
    nlohmann::json j = nlohmann::json::parse(res->body, nullptr, false);
    std::vector<PodView> out(ips_.size());
    if (!j.is_object() || !j.contains("services")) return absl::InternalError("kpxd admin API: no services");
    for (const auto& s : j["services"]) {
      for (const auto& b : s.value("backends", nlohmann::json::array())) {
        for (size_t i = 0; i < ips_.size(); ++i) {
          if (b.value("ip", "") != ips_[i]) continue;
          out[i].known = true;
          out[i].up = b.value("healthy", true);
          if (b.contains("health_change") && b["health_change"].value("healthy", true) == out[i].up) {
            out[i].changed_at = absl::FromUnixMicros(b["health_change"].value("programmed_unix_us", int64_t{0}));
            out[i].decided_at = absl::FromUnixMicros(b["health_change"].value("decided_unix_us", int64_t{0}));
          }
        }
      }
    }
    return out;
  }

 private:
  httplib::Client client_;
  std::string service_;
  std::vector<std::string> ips_;
};

class HaproxyObserver : public Observer {
 public:
  HaproxyObserver(std::string subject, std::string socket, std::string proxy, std::vector<std::string> names)
      : Observer(std::move(subject)), socket_(std::move(socket)), proxy_(std::move(proxy)), names_(std::move(names)) {}

  absl::Duration poll_period() const override { return absl::Milliseconds(5); }

  absl::StatusOr<std::vector<PodView>> Poll() override {
    absl::StatusOr<std::string> csv = Command("show stat\n");
    if (!csv.ok()) return csv.status();
    std::vector<PodView> out(names_.size());
    std::istringstream in(*csv);
    std::string line;
    int px = -1, sv = -1, status = -1;
    while (std::getline(in, line)) {
      if (line.rfind("# ", 0) == 0) {
        std::vector<std::string> h = absl::StrSplit(line.substr(2), ',');
        for (size_t i = 0; i < h.size(); ++i) {
          if (h[i] == "pxname") px = static_cast<int>(i);
          if (h[i] == "svname") sv = static_cast<int>(i);
          if (h[i] == "status") status = static_cast<int>(i);
        }
        continue;
      }
      if (px < 0 || sv < 0 || status < 0) continue;
      std::vector<std::string> f = absl::StrSplit(line, ',');
      if (static_cast<int>(f.size()) <= status || f[px] != proxy_) continue;
      for (size_t i = 0; i < names_.size(); ++i) {
        if (f[sv] != names_[i]) continue;
        out[i].known = true;
        // "UP", "UP 1/3" (failing, still in rotation), "DOWN", "DOWN 1/2" (rising).
        out[i].up = f[status].rfind("UP", 0) == 0;
      }
    }
    return out;
  }

 private:
  absl::StatusOr<std::string> Command(const std::string& cmd) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return absl::InternalError(std::strerror(errno));
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", socket_.c_str());
    timeval tv{2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 ||
        send(fd, cmd.data(), cmd.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(cmd.size())) {
      int e = errno;
      close(fd);
      return absl::UnavailableError(absl::StrCat("haproxy stats socket ", socket_, ": ", std::strerror(e)));
    }
    std::string out;
    char buf[16384];
    for (;;) {
      ssize_t n = recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
    close(fd);
    return out;
  }

  std::string socket_;
  std::string proxy_;
  std::vector<std::string> names_;
};

}  // namespace

std::unique_ptr<Observer> MakeKpxdObserver(std::string subject, std::string admin_socket, std::string service,
                                           std::vector<std::string> pod_ips) {
  return std::make_unique<KpxdObserver>(std::move(subject), std::move(admin_socket), std::move(service),
                                        std::move(pod_ips));
}

std::unique_ptr<Observer> MakeHaproxyObserver(std::string subject, std::string stats_socket, std::string proxy,
                                              std::vector<std::string> pod_names) {
  return std::make_unique<HaproxyObserver>(std::move(subject), std::move(stats_socket), std::move(proxy),
                                           std::move(pod_names));
}

}  // namespace kpx::bench
