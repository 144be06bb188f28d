// Child processes for kpx-bench: bounded command runs (optionally inside a
// network namespace, stdin from a file, timed around fork..exit) and
// long-running daemons stopped by PID. Everything is bounded in time.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace kpx::bench {

struct CmdResult {
  int rc = -1;             // exit status; 128+N when killed by signal N
  bool timed_out = false;  // killed at the timeout
  double seconds = 0;      // fork -> exit, as kube-proxy would see its restore take
  std::string output;      // stdout+stderr, first 64 KiB
};

struct CmdOptions {
  std::string netns;       // run inside /run/netns/<netns> (setns in the child)
  std::string stdin_path;  // stdin from this file (default /dev/null)
  absl::Duration timeout = absl::Seconds(60);
  bool inherit_output = false;  // child writes to our stderr (progress of long runs); output stays empty
};

// Runs argv[0] (PATH lookup) and waits, killing it (SIGKILL) at the timeout.
CmdResult RunCmd(const std::vector<std::string>& argv, const CmdOptions& opts = {});
// `sh -c cmd`, for setup steps; output captured.
CmdResult Sh(const std::string& cmd, absl::Duration timeout = absl::Seconds(60));

// Starts a daemon with stdout/stderr appended to `log`; returns its PID or -1.
pid_t Spawn(const std::vector<std::string>& argv, const std::string& log);
// SIGTERM, wait up to `grace`, then SIGKILL and reap. Only for PIDs we spawned.
void StopPid(pid_t pid, absl::Duration grace);
// True while `pid` (our child) has not exited; reaps it when it has.
bool Alive(pid_t pid);

// A network namespace named "<prefix><pid>-<tag>" created for the run and
// deleted by the destructor (with everything in it).
class ScopedNetns {
 public:
  static absl::StatusOr<std::unique_ptr<ScopedNetns>> Create(const std::string& name);
  ~ScopedNetns();
  const std::string& name() const { return name_; }

 private:
  explicit ScopedNetns(std::string name) : name_(std::move(name)) {}
  std::string name_;
};

// Resident set size of `pid` in bytes (VmRSS), 0 when unreadable.
double RssBytes(pid_t pid);
// Sum of `memlock` over the BPF maps `pid` holds open (/proc/<pid>/fdinfo),
// and how many maps that is.
struct MapMemory {
  double bytes = 0;
  int maps = 0;
};
MapMemory BpfMapBytes(pid_t pid);

}  // namespace kpx::bench
