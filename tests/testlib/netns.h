// NetNs: a network namespace a test creates for itself (kpx-t-<pid>-<n>) and
// always deletes, with helpers to run commands in it, run code on a thread
// inside it, or move the calling thread into it for a while (setns).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace kpx::testing {

class NetNs {
 public:
  // `ip netns add <prefix><pid>-<n>`, then brings its loopback up.
  // Namespaces with that prefix left behind by earlier test processes that
  // died are deleted first. Suites use their own prefix (kpxs- for SNAT).
  static absl::StatusOr<std::unique_ptr<NetNs>> Create(const std::string& prefix = "kpx-t-");
  // `ip netns del`: always, even when the test failed.
  ~NetNs();
  NetNs(const NetNs&) = delete;
  NetNs& operator=(const NetNs&) = delete;

  const std::string& name() const { return name_; }
  std::string path() const { return "/run/netns/" + name_; }

  // Runs `command` with /bin/sh inside the namespace; its output (stdout and
  // stderr) when it exits 0, an error with that output otherwise. Killed
  // after 20 s.
  absl::StatusOr<std::string> Exec(const std::string& command) const;

  // Runs `fn` on a new thread that entered the namespace; waits for it.
  absl::Status RunIn(std::function<void()> fn) const;

  // While alive, the thread that called Enter() is in the namespace (as are
  // threads it starts). Destroy it on that same thread.
  class Scope {
   public:
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    friend class NetNs;
    explicit Scope(int original) : original_(original) {}
    int original_;
  };
  absl::StatusOr<std::unique_ptr<Scope>> Enter() const;

 private:
  explicit NetNs(std::string name) : name_(std::move(name)) {}
  std::string name_;
};

// Runs argv (no shell) and returns its output, or an error naming the exit
// status and output. Killed after `timeout_s`.
absl::StatusOr<std::string> RunCommand(const std::vector<std::string>& argv, int timeout_s = 20);

}  // namespace kpx::testing
