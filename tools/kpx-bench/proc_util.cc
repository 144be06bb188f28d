// Child processes for kpx-bench: bounded runs, daemons by PID, netns, memory.
#include "tools/kpx-bench/proc_util.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace kpx::bench {
namespace {

constexpr size_t kMaxOutput = 64 * 1024;

int DecodeWait(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

}  // namespace

CmdResult RunCmd(const std::vector<std::string>& argv, const CmdOptions& opts) {
  CmdResult r;
  if (argv.empty()) return r;
  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC) != 0) {
    r.output = absl::StrCat("pipe: ", std::strerror(errno));
    return r;
  }
  int nsfd = -1;
  if (!opts.netns.empty()) {
    nsfd = open(("/run/netns/" + opts.netns).c_str(), O_RDONLY | O_CLOEXEC);
    if (nsfd < 0) {
      close(pipefd[0]);
      close(pipefd[1]);
      r.output = absl::StrCat("netns ", opts.netns, ": ", std::strerror(errno));
      return r;
    }
  }
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::string in = opts.stdin_path.empty() ? "/dev/null" : opts.stdin_path;

  absl::Time start = absl::Now();
  pid_t pid = fork();
  if (pid == 0) {
    int infd = open(in.c_str(), O_RDONLY);
    int outfd = opts.inherit_output ? 2 : pipefd[1];
    if (infd < 0 || dup2(infd, 0) < 0 || dup2(outfd, 1) < 0 || dup2(outfd, 2) < 0) _exit(126);
    if (nsfd >= 0 && setns(nsfd, CLONE_NEWNET) != 0) _exit(125);
    execvp(args[0], args.data());
    _exit(127);
  }
  close(pipefd[1]);
  if (nsfd >= 0) close(nsfd);
  if (pid < 0) {
    close(pipefd[0]);
    r.output = absl::StrCat("fork: ", std::strerror(errno));
    return r;
  }
  absl::Time deadline = start + opts.timeout;
  bool eof = false;
  char buf[8192];
  while (!eof) {
    int wait_ms = static_cast<int>(std::max<int64_t>(0, absl::ToInt64Milliseconds(deadline - absl::Now())));
    pollfd p{pipefd[0], POLLIN, 0};
    int n = poll(&p, 1, std::min(wait_ms, 1000));
    if (n < 0 && errno != EINTR) break;
    if (n > 0) {
      ssize_t got = read(pipefd[0], buf, sizeof buf);
      if (got <= 0) {
        eof = true;
      } else if (r.output.size() < kMaxOutput) {
        r.output.append(buf, std::min<size_t>(got, kMaxOutput - r.output.size()));
      }
    }
    if (!eof && absl::Now() >= deadline) {
      kill(pid, SIGKILL);
      r.timed_out = true;
      break;
    }
  }
  close(pipefd[0]);
  int status = 0;
  // EOF comes at exit, or at once when the child inherited our stderr: the
  // wait is bounded by the same deadline.
  while (true) {
    pid_t w = waitpid(pid, &status, r.timed_out ? 0 : WNOHANG);
    if (w == pid || (w < 0 && errno != EINTR)) break;
    if (w == 0 && absl::Now() >= deadline) {
      kill(pid, SIGKILL);
      r.timed_out = true;
    } else if (w == 0) {
      absl::SleepFor(absl::Microseconds(50));  // <= 50 us added to `seconds`
    }
  }
  r.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  r.rc = DecodeWait(status);
  return r;
}

CmdResult Sh(const std::string& cmd, absl::Duration timeout) {
  return RunCmd({"/bin/sh", "-c", cmd}, {.timeout = timeout});
}

pid_t Spawn(const std::vector<std::string>& argv, const std::string& log) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    int fd = open(log.c_str(), O_CREAT | O_WRONLY | O_APPEND, 0644);
    int devnull = open("/dev/null", O_RDONLY);
    if (fd < 0 || devnull < 0 || dup2(devnull, 0) < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0) _exit(126);
    execv(args[0], args.data());
    _exit(127);
  }
  return pid;
}

bool Alive(pid_t pid) {
  if (pid <= 0) return false;
  int status = 0;
  return waitpid(pid, &status, WNOHANG) == 0;
}

void StopPid(pid_t pid, absl::Duration grace) {
  if (pid <= 0) return;
  kill(pid, SIGTERM);
  absl::Time deadline = absl::Now() + grace;
  while (absl::Now() < deadline) {
    int status = 0;
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid || (r < 0 && errno == ECHILD)) return;
    absl::SleepFor(absl::Milliseconds(10));
  }
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
}

absl::StatusOr<std::unique_ptr<ScopedNetns>> ScopedNetns::Create(const std::string& name) {
  Sh("ip netns del " + name + " 2>/dev/null", absl::Seconds(10));  // a leftover of a killed run
  CmdResult r = Sh("ip netns add " + name + " && ip -n " + name + " link set lo up", absl::Seconds(10));
  if (r.rc != 0) {
    return absl::InternalError(absl::StrCat("creating netns ", name, ": ", r.output));
  }
  return std::unique_ptr<ScopedNetns>(new ScopedNetns(name));
}

ScopedNetns::~ScopedNetns() { Sh("ip netns del " + name_ + " 2>/dev/null", absl::Seconds(30)); }

double RssBytes(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::strtod(line.c_str() + 6, nullptr) * 1024;
  }
  return 0;
}

MapMemory BpfMapBytes(pid_t pid) {
  MapMemory out;
  std::set<std::string> seen;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(absl::StrCat("/proc/", pid, "/fdinfo"), ec)) {
    std::ifstream in(e.path());
    std::string line;
    bool is_map = false;
    double memlock = 0;
    std::string id;
    while (std::getline(in, line)) {
      if (line.rfind("map_type:", 0) == 0) is_map = true;
      if (line.rfind("map_id:", 0) == 0) id = line.substr(7);
      if (line.rfind("memlock:", 0) == 0) memlock = std::strtod(line.c_str() + 8, nullptr);
    }
    // A map held through two fds counts once.
    if (is_map && seen.insert(id).second) {
      out.bytes += memlock;
      ++out.maps;
    }
  }
  return out;
}

}  // namespace kpx::bench
