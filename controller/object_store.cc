// ObjectStore: per-source object sets merged with "latest-registered source wins".
#include "controller/object_store.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace kpx::controller {
namespace {

const char* KindOf(const Service*) { return "Service"; }
const char* KindOf(const EndpointSlice*) { return "EndpointSlice"; }
const char* KindOf(const Endpoints*) { return "Endpoints"; }

NamespacedName AffectedService(const Service& s) { return s.meta.id; }
NamespacedName AffectedService(const EndpointSlice& s) { return OwningService(s); }
NamespacedName AffectedService(const Endpoints& e) { return e.meta.id; }

}  // namespace

NamespacedName OwningService(const EndpointSlice& slice) {
  if (slice.service_name.empty()) return {};
  return {slice.meta.id.ns, slice.service_name};
}

void ObjectStore::IndexSlice(const EndpointSlice& slice, bool add) {
  NamespacedName svc = OwningService(slice);
  if (svc.name.empty()) return;
  if (add) {
    slices_by_service_[svc].insert(slice.meta.id);
    return;
  }
  auto it = slices_by_service_.find(svc);
  if (it == slices_by_service_.end()) return;
  it->second.erase(slice.meta.id);
  if (it->second.empty()) slices_by_service_.erase(it);
}

template <typename T>
void ObjectStore::Withdraw(uint64_t seq, const std::vector<T>& objs, Candidates<T>* cands,
                           absl::btree_map<NamespacedName, const T*>* effective, ServiceSet* affected) {
  for (const T& obj : objs) {
    auto it = cands->find(obj.meta.id);
    if (it == cands->end()) continue;
    auto& by_seq = it->second;
    bool was_winner = !by_seq.empty() && by_seq.rbegin()->first == seq;
    by_seq.erase(seq);
    if (!was_winner) continue;
    const T& old = *effective->at(obj.meta.id);
    affected->insert(AffectedService(old));
    if constexpr (std::is_same_v<T, EndpointSlice>) IndexSlice(old, /*add=*/false);
    if (by_seq.empty()) {
      effective->erase(obj.meta.id);
      cands->erase(it);
    } else {
      const T& next = *by_seq.rbegin()->second;
      (*effective)[obj.meta.id] = &next;
      affected->insert(AffectedService(next));
      if constexpr (std::is_same_v<T, EndpointSlice>) IndexSlice(next, /*add=*/true);
    }
  }
}

template <typename T>
void ObjectStore::Contribute(uint64_t seq, const std::vector<T>& objs, Candidates<T>* cands,
                             absl::btree_map<NamespacedName, const T*>* effective,
                             ServiceSet* affected) {
  for (const T& obj : objs) {
    auto& by_seq = (*cands)[obj.meta.id];
    if (!by_seq.empty() && !by_seq.contains(seq)) {
      const T* other = by_seq.rbegin()->second;
      bool wins = by_seq.rbegin()->first < seq;
      warnings_.push_back(absl::StrCat(
          obj.meta.source.String(), ": ", obj.meta.id.String(), ": ", KindOf(&obj),
          " is also defined at ", other->meta.source.String(), "; using the one at ",
          wins ? obj.meta.source.String() : other->meta.source.String()));
    }
    by_seq[seq] = &obj;
    if (by_seq.rbegin()->first != seq) continue;  // a later source still wins
    auto eff = effective->find(obj.meta.id);
    if (eff != effective->end()) {
      affected->insert(AffectedService(*eff->second));
      if constexpr (std::is_same_v<T, EndpointSlice>) IndexSlice(*eff->second, /*add=*/false);
    }
    (*effective)[obj.meta.id] = &obj;
    affected->insert(AffectedService(obj));
    if constexpr (std::is_same_v<T, EndpointSlice>) IndexSlice(obj, /*add=*/true);
  }
}

ObjectStore::ServiceSet ObjectStore::Replace(const std::string& source, ObjectSet objects) {
  ServiceSet affected = Remove(source);
  Source& src = sources_[source];
  src.seq = next_seq_++;
  // Re-registering keeps no memory of the old position: a file rewritten on
  // disk is "applied again", as kubectl apply would do.
  src.objects = std::make_unique<ObjectSet>(std::move(objects));
  Contribute(src.seq, src.objects->services, &service_cands_, &state_.services, &affected);
  Contribute(src.seq, src.objects->slices, &slice_cands_, &state_.slices, &affected);
  Contribute(src.seq, src.objects->endpoints, &endpoints_cands_, &state_.endpoints, &affected);
  affected.erase(NamespacedName{});
  return affected;
}

ObjectStore::ServiceSet ObjectStore::Remove(const std::string& source) {
  ServiceSet affected;
  auto it = sources_.find(source);
  if (it == sources_.end()) return affected;
  const Source& src = it->second;
  Withdraw(src.seq, src.objects->services, &service_cands_, &state_.services, &affected);
  Withdraw(src.seq, src.objects->slices, &slice_cands_, &state_.slices, &affected);
  Withdraw(src.seq, src.objects->endpoints, &endpoints_cands_, &state_.endpoints, &affected);
  sources_.erase(it);
  affected.erase(NamespacedName{});
  return affected;
}

ServiceEndpoints ObjectStore::EndpointsFor(const NamespacedName& service) const {
  ServiceEndpoints eps;
  if (auto it = slices_by_service_.find(service); it != slices_by_service_.end()) {
    for (const NamespacedName& name : it->second) {
      if (auto s = state_.slices.find(name); s != state_.slices.end()) {
        eps.slices.push_back(s->second);
      }
    }
  }
  if (eps.slices.empty()) {
    if (auto e = state_.endpoints.find(service); e != state_.endpoints.end()) {
      eps.legacy = e->second;
    }
  }
  return eps;
}

std::vector<std::string> ObjectStore::TakeWarnings() { return std::exchange(warnings_, {}); }

}  // namespace kpx::controller
