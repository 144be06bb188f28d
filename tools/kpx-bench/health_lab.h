// The netns lab of `kpx-bench health`: tools/lab.sh's namespaces (prefix
// kpxh-) with pod servers that kpx-bench starts and SIGKILLs itself (so the
// kill instant is known to the microsecond), kpxd and HAProxy in the node
// namespace, and observers that say when each checker took a pod out.
// Every process is a child killed by PID; the lab goes down in ~HealthLab.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace kpx::bench {

// A child process, optionally inside a network namespace; SIGKILLed and
// reaped by PID when destroyed (and by the kernel if kpx-bench dies first:
// PR_SET_PDEATHSIG).
class Child {
 public:
  Child() = default;
  ~Child() { Kill(); }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  // `netns` "" = this namespace. stdout/stderr are appended to `log`.
  absl::Status Start(const std::vector<std::string>& argv, const std::string& netns,
                     const std::filesystem::path& log);
  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0; }
  // Whether it has exited (reaps it then).
  bool Exited();
  void Kill();  // SIGKILL + waitpid; no-op when not running
  // SIGTERM, wait up to `grace`, then SIGKILL.
  void Stop(absl::Duration grace);

 private:
  pid_t pid_ = -1;
};

// CPU time of a process (its live threads), or of one of its threads found
// by name (/proc/<pid>/task/*/comm), in seconds, from schedstat (exact).
absl::StatusOr<double> ProcessCpuSeconds(pid_t pid);
absl::StatusOr<double> ThreadCpuSeconds(pid_t pid, const std::string& comm);

// One pod of the lab: its server answers HTTP on :5000, echo on :5001.
struct LabPod {
  std::string name;  // pod1
  std::string ns;    // kpxh-pod1
  std::string ip;    // 10.244.1.2
  std::unique_ptr<Child> server;
};

class HealthLab {
 public:
  static constexpr char kPrefix[] = "kpxh-";
  static constexpr int kPods = 4;

  // lab.sh down (a leftover of a killed run) + up, then the lab's own pod
  // servers are replaced by children of this process.
  static absl::StatusOr<std::unique_ptr<HealthLab>> Create(const std::filesystem::path& source_dir,
                                                           const std::filesystem::path& build_dir,
                                                           const std::filesystem::path& work_dir);
  ~HealthLab();

  std::string NodeNs() const { return std::string(kPrefix) + "node"; }
  std::vector<LabPod>& pods() { return pods_; }
  const std::filesystem::path& work_dir() const { return work_dir_; }
  const std::filesystem::path& build_dir() const { return build_dir_; }

  absl::Status StartPod(int i);
  // SIGKILL pod i's server; returns the wall-clock instant just before kill().
  absl::Time KillPod(int i);

  // Makes `cidr` (e.g. 10.245.0.0/20) local to pod i (AnyIP: its server on
  // 0.0.0.0 answers every address in it) and routed to it from the node: a
  // thousand backends from one server, for the probe CPU measurement.
  absl::Status RouteRangeToPod(int i, const std::string& cidr);

 private:
  HealthLab() = default;
  std::string LabCmd(const std::string& args) const;

  std::filesystem::path source_dir_, build_dir_, work_dir_;
  std::vector<LabPod> pods_;
  bool up_ = false;
};

// What one checker currently says about each lab pod.
struct PodView {
  bool known = false;  // the checker lists this pod at all
  bool up = false;     // in rotation
  // When the checker's last transition for the pod took effect, where it
  // says so itself (kpxd: programmed into the dataplane); else unset and the
  // caller uses the time it polled.
  std::optional<absl::Time> changed_at;
  std::optional<absl::Time> decided_at;  // kpxd: the checker's verdict, before programming
};

class Observer {
 public:
  virtual ~Observer() = default;
  const std::string& subject() const { return subject_; }
  // How often the kill loop asks: often where the poll time is the
  // measurement (HAProxy), seldom where the checker stamps its own changes
  // (kpxd), so observing disturbs less.
  virtual absl::Duration poll_period() const = 0;
  // One view per lab pod, in HealthLab::pods() order.
  virtual absl::StatusOr<std::vector<PodView>> Poll() = 0;

 protected:
  explicit Observer(std::string subject) : subject_(std::move(subject)) {}

 private:
  std::string subject_;
};

// kpxd's admin API: the backends of Service `service` ("ns/name") matched by
// pod IP; `health_change.programmed_unix_us` gives the instant.
std::unique_ptr<Observer> MakeKpxdObserver(std::string subject, std::string admin_socket,
                                           std::string service, std::vector<std::string> pod_ips);
// HAProxy's stats socket (`show stat`): servers named after the pods in
// proxy `proxy`; UP* is in rotation, DOWN* is not.
std::unique_ptr<Observer> MakeHaproxyObserver(std::string subject, std::string stats_socket,
                                              std::string proxy, std::vector<std::string> pod_names);

// Runs a shell command with a time bound; returns its exit code (124 on
// timeout) and appends its output to `log`.
int RunBounded(const std::string& cmd, absl::Duration limit, const std::filesystem::path& log);

}  // namespace kpx::bench
