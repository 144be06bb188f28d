// FakeDataplane: a real, in-memory Dataplane that records every diff it was
// given and keeps the table those diffs produce. For reconciler tests.
#pragma once

#include <mutex>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "dataplane/dataplane.h"

namespace kpx::dataplane {

class FakeDataplane : public Dataplane {
 public:
  std::string_view Name() const override { return "fake"; }
  absl::Status Apply(const controller::TableDiff& diff) override {
    std::lock_guard lock(mu_);
    diffs_.push_back(diff);
    events_.push_back("apply");
    if (!fail_next_.ok()) {
      absl::Status s = fail_next_;
      fail_next_ = absl::OkStatus();
      if (fail_after_applying_) controller::ApplyDiff(diff, &table_);
      return s;
    }
    controller::ApplyDiff(diff, &table_);
    return absl::OkStatus();
  }
  DataplaneStats Stats() const override { return {}; }
  // Copies every rule (a read of all of it, on the caller's helper thread)
  // and notes that Apply has not been called since it started.
  void Prepare(absl::Span<const controller::ServiceRule* const> rules, const std::atomic<bool>& stop) override {
    std::vector<controller::ServiceRule> copy;
    for (const controller::ServiceRule* r : rules) copy.push_back(*r);
    (void)stop;
    std::lock_guard lock(mu_);
    prepared_.push_back(std::move(copy));
    events_.push_back("prepare");
  }

  // The next Apply records its diff, changes nothing (or, with
  // `after_applying`, everything: a real dataplane may get part of a diff
  // done before an operation fails) and returns `s`.
  void FailNextApply(absl::Status s, bool after_applying = false) {
    std::lock_guard lock(mu_);
    fail_next_ = std::move(s);
    fail_after_applying_ = after_applying;
  }
  std::vector<controller::TableDiff> diffs() const { std::lock_guard lock(mu_); return diffs_; }
  controller::ServiceTable table() const { std::lock_guard lock(mu_); return table_; }
  void ClearDiffs() { std::lock_guard lock(mu_); diffs_.clear(); }
  // The rules each Prepare call was given, and the order of Prepare / Apply calls.
  std::vector<std::vector<controller::ServiceRule>> prepared() const { std::lock_guard lock(mu_); return prepared_; }
  std::vector<std::string> events() const { std::lock_guard lock(mu_); return events_; }

 private:
  mutable std::mutex mu_;
  std::vector<controller::TableDiff> diffs_;
  std::vector<std::vector<controller::ServiceRule>> prepared_;
  std::vector<std::string> events_;
  controller::ServiceTable table_;
  absl::Status fail_next_;
  bool fail_after_applying_ = false;
};

}  // namespace kpx::dataplane
