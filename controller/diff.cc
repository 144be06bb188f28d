// Table diffing: a merge walk over two frontend-ordered tables.
#include "controller/diff.h"

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

}  // namespace kpx::controller
