// Table diffing: a merge walk over two frontend-ordered tables.
#include "controller/diff.h"

#include <utility>

namespace kpx::controller {

TableDiff Diff(const ServiceTable& desired, const ServiceTable& applied) {
  TableDiff diff;
  auto d = desired.begin();
  auto a = applied.begin();
  while (d != desired.end() || a != applied.end()) {
    if (a == applied.end() || (d != desired.end() && d->first < a->first)) {
      diff.upserts.push_back(d->second);
      ++d;
    } else if (d == desired.end() || a->first < d->first) {
      diff.removals.push_back(a->first);
      ++a;
    } else {
      if (!(d->second == a->second)) diff.upserts.push_back(d->second);
      ++d;
      ++a;
    }
  }
  return diff;
}

void ApplyDiff(const TableDiff& diff, ServiceTable* table) {
  for (const FrontendKey& key : diff.removals) table->erase(key);
  for (const ServiceRule& rule : diff.upserts) (*table)[rule.frontend] = rule;
}

void ApplyDiff(TableDiff&& diff, ServiceTable* table) {
  for (const FrontendKey& key : diff.removals) table->erase(key);
  for (ServiceRule& rule : diff.upserts) {
    const FrontendKey key = rule.frontend;
    (*table)[key] = std::move(rule);
  }
}

}  // namespace kpx::controller
