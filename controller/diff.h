// Diff(desired, applied): the minimal set of dataplane operations that turns
// the applied table into the desired one. One endpoint change yields one
// upsert of one frontend's rule: O(1) dataplane work, never a full rewrite.
#pragma once

#include <cstddef>
#include <vector>

#include "controller/service_table.h"

namespace kpx::controller {

struct TableDiff {
  // New frontends, or frontends whose rule changed (backends, affinity,
  // policy...). Each carries the complete new rule for that one frontend.
  std::vector<ServiceRule> upserts;
  std::vector<FrontendKey> removals;
  bool empty() const { return upserts.empty() && removals.empty(); }
  size_t size() const { return upserts.size() + removals.size(); }
};

TableDiff Diff(const ServiceTable& desired, const ServiceTable& applied);

// Applies `diff` to `table` (what a dataplane's view becomes after Apply).
void ApplyDiff(const TableDiff& diff, ServiceTable* table);
// Same, moving the upserted rules out of `diff`.
void ApplyDiff(TableDiff&& diff, ServiceTable* table);

}  // namespace kpx::controller
