// Incremental reconciliation: affected Services -> their frontends -> a diff.
#include "controller/reconciler.h"

#include <algorithm>
#include <atomic>
#include <thread>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "controller/base/parallel.h"
#include "controller/translate.h"
#include "glog/logging.h"

namespace kpx::controller {
namespace {

// Services per Sync from which translation runs on worker threads.
constexpr size_t kParallelTranslateMin = 256;

}  // namespace

Reconciler::Reconciler(NodeInfo node, dataplane::Dataplane* dataplane)
    : node_(std::move(node)), dataplane_(dataplane) {}

absl::Status Reconciler::Update(const std::string& source, ObjectSet objects) {
  ObjectStore::ServiceSet affected = store_.Replace(source, std::move(objects));
  stats_.service_changes += affected.size();
  return Sync(affected);
}

absl::Status Reconciler::RemoveSource(const std::string& source) {
  ObjectStore::ServiceSet affected = store_.Remove(source);
  stats_.service_changes += affected.size();
  return Sync(affected);
}

absl::Status Reconciler::UpdateMany(std::vector<SourceChange> changes) {
  ObjectStore::ServiceSet affected;
  for (SourceChange& c : changes) {
    ObjectStore::ServiceSet s = c.objects ? store_.Replace(c.source, std::move(*c.objects))
                                          : store_.Remove(c.source);
    affected.insert(s.begin(), s.end());
  }
  stats_.service_changes += affected.size();
  return Sync(affected);
}

absl::Status Reconciler::SetBackendHealth(BackendAddr backend, bool healthy) {
  bool changed = healthy ? unhealthy_.erase(backend) > 0 : unhealthy_.insert(backend).second;
  if (!changed) return absl::OkStatus();
  ObjectStore::ServiceSet services;
  if (auto it = services_by_backend_.find(backend); it != services_by_backend_.end()) {
    services.insert(it->second.begin(), it->second.end());
  }
  return Sync(services);
}

absl::Status Reconciler::SetOverride(const NamespacedName& service,
                                     std::optional<EndpointOverride> o) {
  if (!o || o->empty()) {
    if (overrides_.erase(service) == 0) return absl::OkStatus();
  } else {
    auto it = overrides_.find(service);
    if (it != overrides_.end() && it->second == *o) return absl::OkStatus();
    overrides_[service] = std::move(*o);
  }
  return Sync({service});
}

void Reconciler::ApplyOverride(const EndpointOverride& o, ServiceRule* rule) const {
  auto find = [rule](const BackendAddr& a) {
    return std::find_if(rule->backends.begin(), rule->backends.end(),
                        [&a](const Backend& b) { return b.ip == a.ip && b.port == a.port; });
  };
  auto add = [&](const BackendAddr& a) {
    if (find(a) != rule->backends.end()) return;
    Backend b;
    b.ip = a.ip;
    b.port = a.port;
    b.node = "override";
    rule->backends.push_back(b);
  };
  if (o.set) {
    rule->backends.clear();
    for (const BackendAddr& a : *o.set) add(a);
  }
  for (const BackendAddr& a : o.add) add(a);
  for (const BackendAddr& a : o.remove) {
    if (auto it = find(a); it != rule->backends.end()) rule->backends.erase(it);
  }
  std::sort(rule->backends.begin(), rule->backends.end(), [](const Backend& x, const Backend& y) {
    return std::tuple(x.ip.host(), x.port) < std::tuple(y.ip.host(), y.port);
  });
}

void Reconciler::ApplyHealth(ServiceRule* rule) const {
  if (unhealthy_.empty()) return;
  for (Backend& b : rule->backends) b.healthy = !unhealthy_.contains(BackendAddr{b.ip, b.port});
}

std::optional<std::vector<ServiceRule>> Reconciler::ComputeRules(const NamespacedName& service,
                                                                 std::vector<std::string>* warnings) const {
  auto svc = store_.state().services.find(service);
  if (svc == store_.state().services.end() || ShouldSkip(*svc->second) != SkipReason::kNone) return std::nullopt;
  std::vector<ServiceRule> rules = TranslateService(*svc->second, store_.EndpointsFor(service), node_, warnings);
  auto override_it = overrides_.find(service);
  for (ServiceRule& rule : rules) {
    if (override_it != overrides_.end()) ApplyOverride(override_it->second, &rule);
    ApplyHealth(&rule);
    if (override_it != overrides_.end()) {
      // Drained backends take no new connections; their flows finish. The
      // dataplanes read that from the same flag as health.
      for (Backend& b : rule.backends) {
        for (const BackendAddr& d : override_it->second.drain) {
          if (b.ip == d.ip && b.port == d.port) b.healthy = false;
        }
      }
    }
  }
  return rules;
}

void Reconciler::AddName(NameSet* set, const NamespacedName& name) {
  auto it = std::lower_bound(set->begin(), set->end(), name);
  if (it == set->end() || *it != name) set->insert(it, name);
}

void Reconciler::RemoveName(NameSet* set, const NamespacedName& name) {
  auto it = std::lower_bound(set->begin(), set->end(), name);
  if (it != set->end() && *it == name) set->erase(it);
}

void Reconciler::RetranslateService(const NamespacedName& service, std::optional<std::vector<ServiceRule>> rules,
                                    absl::btree_set<FrontendKey>* touched) {
  // Withdraw the service's previous rules and backend index entries.
  if (auto old = rules_by_service_.find(service); old != rules_by_service_.end()) {
    for (const ServiceRule& rule : old->second) {
      touched->insert(rule.frontend);
      auto claim = claims_.find(rule.frontend);
      if (claim != claims_.end()) {
        RemoveName(&claim->second, service);
        if (claim->second.empty()) claims_.erase(claim);
      }
      for (const Backend& b : rule.backends) {
        auto idx = services_by_backend_.find(BackendAddr{b.ip, b.port});
        if (idx == services_by_backend_.end()) continue;
        RemoveName(&idx->second, service);
        if (idx->second.empty()) services_by_backend_.erase(idx);
      }
    }
    rules_by_service_.erase(old);
  }
  if (!rules) return;
  for (const ServiceRule& rule : *rules) {
    touched->insert(rule.frontend);
    AddName(&claims_[rule.frontend], service);
    for (const Backend& b : rule.backends) AddName(&services_by_backend_[BackendAddr{b.ip, b.port}], service);
  }
  if (!rules->empty()) rules_by_service_[service] = std::move(*rules);
}

absl::Status Reconciler::Sync(const ObjectStore::ServiceSet& services) {
  absl::Time start = absl::Now();
  for (auto& w : store_.TakeWarnings()) warnings_.push_back(std::move(w));
  absl::btree_set<FrontendKey> touched;
  // Translation reads the store only: a big set (a cold start, a resync of
  // the API source) is translated on every CPU, the bookkeeping stays here.
  // Warnings keep the services' order.
  const std::vector<NamespacedName> order(services.begin(), services.end());
  std::vector<std::optional<std::vector<ServiceRule>>> computed(order.size());
  std::vector<std::vector<std::string>> warned(order.size());
  const bool big = order.size() >= kParallelTranslateMin;
  ParallelRanges(order.size(), big ? 0 : 1, [&](size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; ++i) computed[i] = ComputeRules(order[i], &warned[i]);
  });
  // While this thread does the bookkeeping below (one CPU, tens of ms at a
  // cold start), the dataplane starts on what Apply will need. The rules
  // stay put: vectors moved into rules_by_service_ keep their elements.
  std::atomic<bool> stop_prepare{false};
  std::thread preparer;
  if (big) {
    std::vector<const ServiceRule*> rules;
    for (const auto& c : computed) {
      if (!c) continue;
      for (const ServiceRule& r : *c) rules.push_back(&r);
    }
    preparer = std::thread([this, rules = std::move(rules), &stop_prepare] { dataplane_->Prepare(rules, stop_prepare); });
  }
  auto end_prepare = [&] {
    stop_prepare.store(true, std::memory_order_relaxed);
    if (preparer.joinable()) preparer.join();
  };
  for (size_t i = 0; i < order.size(); ++i) {
    for (std::string& w : warned[i]) warnings_.push_back(std::move(w));
    RetranslateService(order[i], std::move(computed[i]), &touched);
  }

  // Resolve each touched frontend to its owner's rule and diff against applied.
  TableDiff diff;
  for (const FrontendKey& key : touched) {
    const ServiceRule* winner = nullptr;
    if (auto claim = claims_.find(key); claim != claims_.end()) {
      const NamespacedName& owner = *claim->second.begin();
      for (const ServiceRule& rule : rules_by_service_.at(owner)) {
        if (rule.frontend == key) winner = &rule;
      }
      if (claim->second.size() > 1) {
        warnings_.push_back(absl::StrCat("frontend ", key.String(), " is claimed by ",
                                         claim->second.size(), " Services; ", owner.String(),
                                         " keeps it"));
      }
    }
    if (winner == nullptr) {
      desired_.erase(key);
    } else {
      desired_[key] = *winner;
    }
    changed_.insert(key);
  }
  if (dirty_all_) {
    end_prepare();
    return Resync();
  }
  for (const FrontendKey& key : touched) {
    auto d = desired_.find(key);
    auto a = applied_.find(key);
    if (d == desired_.end()) {
      if (a != applied_.end()) diff.removals.push_back(key);
    } else if (a == applied_.end() || !(a->second == d->second)) {
      diff.upserts.push_back(d->second);
    }
  }
  end_prepare();
  return Program(std::move(diff), start);
}

absl::Status Reconciler::Resync() {
  TableDiff diff = Diff(desired_, applied_);
  for (const FrontendKey& key : uncertain_) {
    if (!desired_.contains(key) && !applied_.contains(key)) diff.removals.push_back(key);
  }
  return Program(std::move(diff), absl::Now());
}

absl::Status Reconciler::Program(TableDiff diff, absl::Time start) {
  stats_.frontends = desired_.size();
  stats_.services = rules_by_service_.size();
  if (diff.empty()) {
    dirty_all_ = false;
    return absl::OkStatus();
  }
  const absl::Time apply_start = absl::Now();
  absl::Status status = dataplane_->Apply(diff);
  stats_.last_sync_time = absl::Now();
  stats_.last_apply_duration = stats_.last_sync_time - apply_start;
  stats_.last_sync_duration = stats_.last_sync_time - start;
  if (!status.ok()) {
    ++stats_.sync_errors;
    if (absl::IsResourceExhausted(status)) ++stats_.capacity_errors;
    stats_.last_error = std::string(status.message());
    for (const ServiceRule& rule : diff.upserts) uncertain_.insert(rule.frontend);
    for (const FrontendKey& key : diff.removals) uncertain_.insert(key);
    dirty_all_ = true;
    return status;
  }
  ++stats_.syncs;
  stats_.last_success_time = stats_.last_sync_time;
  stats_.last_error.clear();
  stats_.endpoint_changes += diff.size();
  if (sync_observer_) sync_observer_(stats_.last_sync_duration);
  VLOG(1) << "programmed " << diff.upserts.size() << " upserts, " << diff.removals.size()
          << " removals in " << absl::FormatDuration(stats_.last_sync_duration);
  ApplyDiff(std::move(diff), &applied_);  // the dataplane is done with it
  // Only a Resync runs while uncertain_ is non-empty (dirty_all_), and its
  // diff covered every uncertain frontend.
  uncertain_.clear();
  dirty_all_ = false;
  return absl::OkStatus();
}

std::vector<std::string> Reconciler::TakeWarnings() { return std::exchange(warnings_, {}); }

std::vector<const ServiceRule*> Reconciler::DesiredRulesOf(const NamespacedName& service) const {
  std::vector<const ServiceRule*> out;
  auto it = rules_by_service_.find(service);
  if (it == rules_by_service_.end()) return out;
  for (const ServiceRule& rule : it->second) {
    auto d = desired_.find(rule.frontend);
    if (d != desired_.end() && d->second.service.service == service) out.push_back(&d->second);
  }
  return out;
}

std::vector<FrontendKey> Reconciler::TakeChangedFrontends() {
  std::vector<FrontendKey> out(changed_.begin(), changed_.end());
  changed_.clear();
  return out;
}

}  // namespace kpx::controller
