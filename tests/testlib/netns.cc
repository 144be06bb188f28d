// NetNs: `ip netns add/del` for lifetime, setns(2) for entering, and a small
// fork/exec runner with a deadline (so a stuck command cannot hang a test).
#include "tests/testlib/netns.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"

extern char** environ;

namespace kpx::testing {
namespace {

// Deletes <prefix><pid>-* namespaces whose process is gone (a crashed run).
void DeleteOrphans(const std::string& prefix) {
  DIR* dir = opendir("/run/netns");
  if (dir == nullptr) return;
  std::vector<std::string> orphans;
  while (dirent* e = readdir(dir)) {
    std::string name = e->d_name;
    if (name.rfind(prefix, 0) != 0) continue;
    std::vector<std::string> parts = absl::StrSplit(name.substr(prefix.size()), '-');
    int pid = 0;
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &pid) || pid <= 0) continue;
    if (kill(pid, 0) != 0 && errno == ESRCH) orphans.push_back(name);
  }
  closedir(dir);
  for (const std::string& name : orphans) RunCommand({"ip", "netns", "del", name}).IgnoreError();
}

}  // namespace

absl::StatusOr<std::string> RunCommand(const std::vector<std::string>& argv, int timeout_s) {
  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC) != 0) return absl::InternalError("pipe2 failed");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, pipefd[1], 1);
  posix_spawn_file_actions_adddup2(&actions, pipefd[1], 2);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  int err = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(pipefd[1]);
  if (err != 0) {
    close(pipefd[0]);
    return absl::InternalError(absl::StrCat("spawn ", argv[0], ": ", std::strerror(err)));
  }
  std::string output;
  const absl::Time deadline = absl::Now() + absl::Seconds(timeout_s);
  bool timed_out = false;
  char buf[4096];
  for (;;) {
    int left_ms = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    if (left_ms <= 0) {
      timed_out = true;
      kill(pid, SIGKILL);  // our own child, by pid
      break;
    }
    pollfd p{pipefd[0], POLLIN, 0};
    int r = poll(&p, 1, left_ms);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    ssize_t n = read(pipefd[0], buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    output.append(buf, static_cast<size_t>(n));
  }
  close(pipefd[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  const std::string cmd = absl::StrJoin(argv, " ");
  if (timed_out) {
    return absl::DeadlineExceededError(absl::StrCat("`", cmd, "` timed out after ", timeout_s, "s"));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(absl::StrCat("`", cmd, "` failed (status ", status, "): ", output));
  }
  return output;
}

absl::StatusOr<std::unique_ptr<NetNs>> NetNs::Create(const std::string& prefix) {
  static std::atomic<int> counter{0};
  static std::mutex mu;
  static std::vector<std::string> cleaned;
  {
    std::lock_guard<std::mutex> lock(mu);
    if (std::find(cleaned.begin(), cleaned.end(), prefix) == cleaned.end()) {
      cleaned.push_back(prefix);
      DeleteOrphans(prefix);
    }
  }
  std::string name = absl::StrCat(prefix, getpid(), "-", counter.fetch_add(1));
  absl::StatusOr<std::string> out = RunCommand({"ip", "netns", "add", name});
  if (!out.ok()) return out.status();
  std::unique_ptr<NetNs> ns(new NetNs(name));  // deletes it from here on
  out = RunCommand({"ip", "-n", name, "link", "set", "lo", "up"});
  if (!out.ok()) return out.status();
  return ns;
}

NetNs::~NetNs() {
  absl::StatusOr<std::string> out = RunCommand({"ip", "netns", "del", name_});
  if (!out.ok()) fprintf(stderr, "NetNs: deleting %s: %s\n", name_.c_str(), out.status().ToString().c_str());
}

absl::StatusOr<std::string> NetNs::Exec(const std::string& command) const {
  return RunCommand({"ip", "netns", "exec", name_, "/bin/sh", "-c", command});
}

absl::StatusOr<std::unique_ptr<NetNs::Scope>> NetNs::Enter() const {
  int original = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (original < 0) return absl::InternalError(absl::StrCat("open own netns: ", std::strerror(errno)));
  int target = open(path().c_str(), O_RDONLY | O_CLOEXEC);
  if (target < 0) {
    int err = errno;
    close(original);
    return absl::InternalError(absl::StrCat("open ", path(), ": ", std::strerror(err)));
  }
  int rc = setns(target, CLONE_NEWNET);
  int err = errno;
  close(target);
  if (rc != 0) {
    close(original);
    return absl::InternalError(absl::StrCat("setns ", name_, ": ", std::strerror(err)));
  }
  return std::unique_ptr<Scope>(new Scope(original));
}

NetNs::Scope::~Scope() {
  if (setns(original_, CLONE_NEWNET) != 0) {
    fprintf(stderr, "NetNs::Scope: returning to the original netns failed: %s\n", std::strerror(errno));
    abort();  // the rest of the test process would run in the wrong place
  }
  close(original_);
}

absl::Status NetNs::RunIn(std::function<void()> fn) const {
  absl::Status status;
  std::thread t([&] {
    absl::StatusOr<std::unique_ptr<Scope>> scope = Enter();
    if (!scope.ok()) {
      status = scope.status();
      return;
    }
    fn();
  });
  t.join();
  return status;
}

}  // namespace kpx::testing
