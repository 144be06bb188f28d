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

 private:
  mutable std::mutex mu_;
  std::vector<controller::TableDiff> diffs_;
  controller::ServiceTable table_;
  absl::Status fail_next_;
  bool fail_after_applying_ = false;
};

}  // namespace kpx::dataplane
