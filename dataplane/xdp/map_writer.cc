// MapWriter: id allocation, write ordering, adoption and pruning for the
// eBPF maps. Write order for an upsert (each step leaves a state the BPF
// programs can use): new backend slots -> the Maglev table (same M: rewritten
// in place, only the slots that differ; new M: a fresh pool range) ->
// kpx_services value (switches offset and M in one update) -> zero backend
// slots no rule uses, quarantine the range no service points at.
#include "dataplane/xdp/map_writer.h"

#include <arpa/inet.h>

#include <algorithm>
#include <thread>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "controller/base/parallel.h"
#include "controller/base/status_macros.h"
#include "dataplane/xdp/abi_convert.h"
#include "dataplane/xdp/maglev.h"
#include "glog/logging.h"

namespace kpx::xdp {
namespace {

using controller::Backend;
using controller::FrontendKey;
using controller::ServiceRule;

uint64_t TableHash(const std::vector<uint32_t>& table) {
  uint64_t h = 0xcbf29ce484222325ULL ^ table.size();  // FNV-1a over 32-bit words
  for (uint32_t v : table) {
    h ^= v;
    h *= 0x100000001b3ULL;
  }
  return h;
}

uint32_t SvcFlags(const ServiceRule& rule) {
  uint32_t flags = 0;
  if (rule.affinity_timeout_s > 0) flags |= KPX_SVC_F_AFFINITY;
  if (rule.type == controller::FrontendType::kNodePort) flags |= KPX_SVC_F_NODEPORT;
  if (rule.type != controller::FrontendType::kClusterIP) flags |= KPX_SVC_F_EXTERNAL;
  if (rule.local_only) flags |= KPX_SVC_F_LOCAL;
  return flags;
}

// Every backend of the rule (kept alive for established flows) and the ones
// new flows may pick: ready ones, else serving ones (translate's graceful-
// termination fallback); among those the healthy ones, else all of them
// (fail-open is decided upstream; the dataplane never empties a service the
// controller gave backends).
void SelectBackends(const ServiceRule& rule, std::vector<uint64_t>* keep, std::vector<uint64_t>* usable) {
  absl::flat_hash_set<uint64_t> seen;
  std::vector<const Backend*> unique;
  for (const Backend& b : rule.backends) {
    if (b.ip.IsUnspecified() || b.port == 0) continue;
    if (seen.insert(AddrKey(b.ip, b.port)).second) unique.push_back(&b);
  }
  bool any_ready = false;
  for (const Backend* b : unique) any_ready |= b->ready;
  std::vector<const Backend*> candidates;
  for (const Backend* b : unique) {
    if (any_ready ? b->ready : b->serving) candidates.push_back(b);
  }
  bool any_healthy = false;
  for (const Backend* b : candidates) any_healthy |= b->healthy;
  for (const Backend* b : unique) keep->push_back(AddrKey(b->ip, b->port));
  // Terminating pods left out of `backends`: no new flows, but their
  // established flows keep a live slot (zeroing it would reset them).
  for (const Backend& b : rule.draining) {
    if (b.ip.IsUnspecified() || b.port == 0) continue;
    if (seen.insert(AddrKey(b.ip, b.port)).second) keep->push_back(AddrKey(b.ip, b.port));
  }
  for (const Backend* b : candidates) {
    if (b->healthy || !any_healthy) usable->push_back(AddrKey(b->ip, b->port));
  }
  std::sort(keep->begin(), keep->end());
  std::sort(usable->begin(), usable->end());
}

// The Maglev table of `usable` (sorted AddrKeys) as indexes into it: the
// same table BuildMaglevTable makes with the real ids, because keys are
// distinct and decide the order, and ids only fill the slots.
std::vector<uint32_t> IndexTable(const std::vector<uint64_t>& usable, uint32_t m) {
  std::vector<MaglevBackend> entries;
  entries.reserve(usable.size());
  for (size_t i = 0; i < usable.size(); ++i) {
    entries.push_back({static_cast<uint32_t>(i), MaglevKey(AddrKeyIp(usable[i]), AddrKeyPort(usable[i]))});
  }
  return BuildMaglevTable(entries, m);
}

}  // namespace

MapWriter::MapWriter(BpfMaps* maps, MapWriterOptions options)
    : maps_(maps),
      options_(std::move(options)),
      caps_(maps->capacities()),
      svc_ids_("kpx_svc_stats service ids", caps_.service_ids, options_.id_quarantine),
      backend_ids_("kpx_backends", caps_.backends, options_.id_quarantine),
      pool_(KPX_MAGLEV_CHUNK_SLOTS, caps_.maglev_chunks) {}

absl::StatusOr<std::unique_ptr<MapWriter>> MapWriter::Create(BpfMaps* maps, MapWriterOptions options) {
  if (!options.now) options.now = [] { return absl::Now(); };
  options.maglev_max_m = std::clamp<uint32_t>(options.maglev_max_m, 2, KPX_MAGLEV_M_MAX);
  std::unique_ptr<MapWriter> writer(new MapWriter(maps, std::move(options)));
  if (!writer->options_.maps_are_new) KPX_RETURN_IF_ERROR(writer->Adopt());
  return writer;
}

bool MapWriter::Serves(const ServiceRule& rule) {
  return rule.supported && rule.frontend.protocol == controller::Protocol::kTCP;
}

absl::Status MapWriter::Adopt() {
  const absl::Time now = options_.now();
  KPX_ASSIGN_OR_RETURN(std::vector<BackendEntry> backends, maps_->ListBackends());
  for (const BackendEntry& b : backends) {
    const uint64_t addr = AddrKey(Ipv4::FromBe(b.value.addr), ntohs(b.value.port));
    if (!backend_ids_.Reserve(b.id)) continue;  // out of range: cannot be ours
    if (backends_.contains(addr)) {
      // Two slots for one address (a crash mid-update): keep the first,
      // let Prune retire the other once nothing can reference it.
      stale_backend_ids_.push_back(b.id);
      ++adoption_.inconsistent;
      continue;
    }
    backends_[addr] = BackendState{b.id, 0};
    backend_addr_[b.id] = addr;
  }
  adoption_.backends = backends_.size();

  KPX_ASSIGN_OR_RETURN(std::vector<uint32_t> chunks, maps_->ListMaglevChunks());
  for (uint32_t c : chunks) pool_.AddChunk(c);
  adoption_.chunks = pool_.chunk_count();
  // Ranges no adopted service points at are free at once: the previous kpxd
  // is gone and this one took far longer than slot_quarantine to start.
  KPX_ASSIGN_OR_RETURN(std::vector<ServiceEntry> services, maps_->ListServices());
  for (const ServiceEntry& e : services) {
    std::optional<FrontendKey> fk = FrontendFromSvcKey(e.key);
    const uint32_t m = e.value.maglev_m, off = e.value.maglev_off;
    // The range first: one that overlaps another service's or lies outside
    // the pool cannot be ours to keep (a crash mid-update, another writer).
    const bool range_ok = m == 0 || pool_.Reserve(off, m);
    if (!fk.has_value() || !range_ok || !svc_ids_.Reserve(e.value.id)) {
      // The programs may still read the range until Prune deletes the key.
      if (m != 0 && range_ok) stale_ranges_.emplace_back(off, m);
      stale_services_.push_back(e.key);
      ++adoption_.inconsistent;
      continue;
    }
    FrontendState st;
    st.key = e.key;
    st.value = e.value;
    st.adopted = true;
    if (m != 0) {
      KPX_ASSIGN_OR_RETURN(std::vector<uint32_t> table, maps_->ReadMaglevSlots(off, m));
      ++adoption_.tables;
      st.maglev_m = m;
      st.maglev_off = off;
      st.table_hash = TableHash(table);
      absl::flat_hash_set<uint32_t> ids(table.begin(), table.end());
      for (uint32_t id : ids) {
        // A slot naming a dead backend makes this table differ from any we
        // would build: the first upsert rewrites it.
        if (backend_addr_.contains(id)) st.backend_ids.push_back(id);
      }
      std::sort(st.backend_ids.begin(), st.backend_ids.end());
    }
    for (uint32_t id : st.backend_ids) ++backends_[backend_addr_[id]].refs;
    frontends_[*fk] = std::move(st);
  }
  adoption_.frontends = frontends_.size();
  svc_ids_.FinishAdoption(now);
  backend_ids_.FinishAdoption(now);
  if (!services.empty() || !backends.empty()) {
    LOG(INFO) << "xdp: adopted " << adoption_.frontends << " frontends, " << adoption_.backends
              << " backends, " << adoption_.tables << " Maglev tables from pinned maps"
              << " in " << adoption_.chunks << " pool chunks (" << adoption_.inconsistent
              << " inconsistent entries left for Prune)";
  }
  return absl::OkStatus();
}

absl::Status MapWriter::Apply(const controller::TableDiff& diff) {
  absl::Status first;
  std::vector<const ServiceRule*> retry, fresh;
  for (const ServiceRule& rule : diff.upserts) {
    if (Serves(rule) && !frontends_.contains(rule.frontend)) fresh.push_back(&rule);
  }
  if (fresh.size() >= options_.batch_min) {
    first = ApplyBatch(fresh, &retry);
  } else {
    fresh.clear();
  }
  absl::flat_hash_set<const ServiceRule*> batched(fresh.begin(), fresh.end());
  for (const ServiceRule& rule : diff.upserts) {
    if (batched.contains(&rule)) continue;
    absl::Status s = Upsert(rule);
    if (absl::IsResourceExhausted(s)) {
      retry.push_back(&rule);
    } else if (!s.ok() && first.ok()) {
      first = s;
    }
  }
  for (const FrontendKey& key : diff.removals) {
    absl::Status s = Remove(key);
    if (!s.ok() && first.ok()) first = s;
  }
  for (const ServiceRule* rule : retry) {
    absl::Status s = Upsert(*rule);
    if (!s.ok() && first.ok()) first = s;
  }
  prepared_.clear();  // a batch used what fit; the rest is stale
  return first;
}

absl::Status MapWriter::ApplyBatch(const std::vector<const ServiceRule*>& rules,
                                   std::vector<const ServiceRule*>* retry) {
  // Room for every table up front: one chunk install (one RCU grace period)
  // instead of one per chunk as first fit runs out.
  uint64_t want = 0;
  for (const ServiceRule* r : rules) want += ChooseMaglevSize(r->backends.size(), options_.maglev_max_m);

  // The tables are pure functions of the rules: build them on every CPU
  // while another thread grows the pool (new chunk maps: the kernel
  // allocates and charges their memory). Upsert then only maps indexes to ids.
  absl::Status first;
  auto grow = [&] {
    first = GrowPoolFor(want);
    if (!first.ok()) LOG(WARNING) << "xdp: growing the Maglev pool for " << rules.size() << " frontends: " << first;
  };
  std::vector<Prebuilt> built(rules.size() >= options_.parallel_min ? rules.size() : 0);
  std::thread grower;
  if (built.empty()) {
    grow();
  } else {
    grower = std::thread(grow);
  }
  const uint64_t used_before = prepared_used_.load();
  ParallelRanges(built.size(), options_.build_threads, [&](size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; ++i) {
      Prebuilt& b = built[i];
      SelectFor(*rules[i], &b);
      // Concurrent finds only; each frontend's entry is moved from by one thread.
      if (auto p = prepared_.find(rules[i]->frontend);
          p != prepared_.end() && p->second.m == b.m && p->second.usable == b.usable && p->second.keep == b.keep) {
        b.slots = std::move(p->second.slots);
        prepared_used_.fetch_add(1, std::memory_order_relaxed);
      } else {
        b.slots = IndexTable(b.usable, b.m);
      }
    }
  });
  VLOG(1) << "xdp: batch of " << rules.size() << " new frontends, " << prepared_used_.load() - used_before << " of "
          << prepared_.size() << " tables built ahead used";
  prepared_.clear();
  if (grower.joinable()) grower.join();
  absl::flat_hash_map<const ServiceRule*, Prebuilt> prebuilt;
  prebuilt.reserve(built.size());
  // The serial pass inserts up to this many backends: room up front instead
  // of rehashing 100k-entry maps on the way (a cold start's batch).
  size_t new_backends = 0;
  for (const Prebuilt& b : built) new_backends += b.keep.size();
  backends_.reserve(backends_.size() + new_backends);
  backend_addr_.reserve(backend_addr_.size() + new_backends);
  for (size_t i = 0; i < built.size(); ++i) prebuilt.emplace(rules[i], std::move(built[i]));
  prebuilt_ = &prebuilt;

  Staged staged;
  staged_ = &staged;
  for (const ServiceRule* rule : rules) {
    absl::Status s = Upsert(*rule);
    if (absl::IsResourceExhausted(s)) {
      retry->push_back(rule);
    } else if (!s.ok() && first.ok()) {
      first = s;
    }
  }
  staged_ = nullptr;
  prebuilt_ = nullptr;
  absl::Status w = WriteStagedTables(staged);
  if (!w.ok() && first.ok()) first = w;
  absl::Status f = FlushStaged(staged);
  return first.ok() ? f : first;
}
void MapWriter::Rollback(const Txn& txn) {
  const absl::Time now = options_.now();
  for (const auto& [addr, from_quarantine] : txn.new_backends) {
    auto it = backends_.find(addr);
    if (it == backends_.end()) continue;
    const uint32_t id = it->second.id;
    absl::Status s = maps_->UpdateBackend(id, kpx_backend{});
    if (!s.ok()) LOG(WARNING) << "xdp: rollback of backend slot " << id << ": " << s;
    backend_addr_.erase(id);
    backends_.erase(it);
    if (from_quarantine) {
      backend_ids_.Release(id, now);  // old flows may still name it
      quarantined_by_addr_[addr] = id;
    } else {
      backend_ids_.Unallocate(id);  // never visible to the programs
    }
  }
  if (txn.new_svc_id != 0) svc_ids_.Unallocate(txn.new_svc_id);
}

absl::Status MapWriter::WriteStagedTables(Staged& staged) {
  std::vector<TableWrite>& tables = staged.tables;
  if (tables.empty()) return absl::OkStatus();
  auto write = [this, &tables](size_t lo, size_t hi) {
    std::vector<uint32_t> table;
    for (size_t i = lo; i < hi; ++i) {
      TableWrite& t = tables[i];
      table.resize(t.pre->slots.size());
      for (size_t j = 0; j < table.size(); ++j) table[j] = t.ids[t.pre->slots[j]];
      t.hash = TableHash(table);
      absl::StatusOr<uint32_t> w = maps_->WriteMaglevSlots(t.off, table);
      if (!w.ok()) {
        t.status = absl::Status(w.status().code(), absl::StrCat("Maglev table of ", t.fk.String(), " (", table.size(),
                                                                " slots at pool offset ", t.off, "): ",
                                                                w.status().message()));
      }
    }
  };
  ParallelRanges(tables.size(), options_.build_threads, write);

  absl::Status first;
  absl::flat_hash_set<FrontendKey> failed;
  for (TableWrite& t : tables) {
    if (!t.status.ok()) {
      if (first.ok()) first = t.status;
      failed.insert(t.fk);
      continue;
    }
    frontends_[t.fk].table_hash = t.hash;
  }
  tables.clear();
  if (failed.empty()) return absl::OkStatus();
  // Nothing of these frontends is visible yet: drop their staged writes.
  Staged kept;
  for (size_t i = 0; i < staged.frontends.size(); ++i) {
    if (failed.contains(staged.frontends[i])) continue;
    kept.services.push_back(staged.services[i]);
    kept.frontends.push_back(staged.frontends[i]);
    kept.stats.push_back(staged.stats[i]);
  }
  staged.services = std::move(kept.services);
  staged.frontends = std::move(kept.frontends);
  staged.stats = std::move(kept.stats);
  for (const FrontendKey& fk : failed) UndoStaged(fk);
  return first;
}

absl::Status MapWriter::FlushStaged(Staged& staged) {
  // Backend slots a rolled-back upsert allocated and then gave up are not
  // written (their id is free again, or another backend's now).
  std::vector<BackendEntry> backends;
  backends.reserve(staged.backends.size());
  for (const BackendEntry& b : staged.backends) {
    auto a = backend_addr_.find(b.id);
    if (a != backend_addr_.end() && a->second == AddrKey(Ipv4::FromBe(b.value.addr), ntohs(b.value.port))) {
      backends.push_back(b);
    }
  }
  // Order as for one upsert: backends, counters, then the keys that make
  // the tables reachable.
  absl::Status s = maps_->UpdateBackends(backends);
  if (s.ok()) s = maps_->ClearServiceStats(absl::MakeConstSpan(staged.stats));
  if (!s.ok()) {
    for (const FrontendKey& fk : staged.frontends) UndoStaged(fk);
    return absl::Status(s.code(), absl::StrCat("batch of ", staged.frontends.size(),
                                               " new frontends not installed: ", s.message()));
  }
  size_t written = 0;
  s = maps_->UpdateServices(staged.services, &written);
  for (size_t i = written; i < staged.frontends.size(); ++i) UndoStaged(staged.frontends[i]);
  if (!s.ok()) {
    return absl::Status(s.code(), absl::StrCat(staged.frontends.size() - written, " of ", staged.frontends.size(),
                                               " new frontends not installed (first: ",
                                               staged.frontends[written].String(), "): ", s.message()));
  }
  return absl::OkStatus();
}

void MapWriter::UndoStaged(const FrontendKey& fk) {
  auto it = frontends_.find(fk);
  if (it == frontends_.end()) return;
  FrontendState st = std::move(it->second);
  frontends_.erase(it);
  if (st.maglev_m != 0) pool_.Free(st.maglev_off, st.maglev_m);
  for (uint32_t id : st.backend_ids) {
    if (absl::Status s = Unref(id); !s.ok()) LOG(WARNING) << "xdp: undoing " << fk.String() << ": " << s;
  }
  svc_ids_.Unallocate(st.value.id);
}

void MapWriter::SelectFor(const ServiceRule& rule, Prebuilt* b) const {
  SelectBackends(rule, &b->keep, &b->usable);
  b->m = ChooseMaglevSize(b->usable.size(), options_.maglev_max_m);
}

absl::Status MapWriter::GrowPoolFor(uint64_t want) {
  pool_.Reclaim(options_.now());
  const uint64_t free_slots = pool_.capacity_slots() - pool_.used_slots();
  if (want <= free_slots) return absl::OkStatus();
  // +1: first fit leaves a tail in each chunk that a table may not fit.
  const uint64_t chunks = (want - free_slots + KPX_MAGLEV_CHUNK_SLOTS - 1) / KPX_MAGLEV_CHUNK_SLOTS + 1;
  return GrowPool(static_cast<uint32_t>(std::min<uint64_t>(chunks, caps_.maglev_chunks)));
}

void MapWriter::Prepare(absl::Span<const ServiceRule* const> rules, const std::atomic<bool>& stop) {
  prepared_.clear();
  std::vector<const ServiceRule*> fresh;
  uint64_t want = 0;
  for (const ServiceRule* r : rules) {
    if (!Serves(*r) || frontends_.contains(r->frontend)) continue;
    fresh.push_back(r);
    want += ChooseMaglevSize(r->backends.size(), options_.maglev_max_m);  // as ApplyBatch counts
  }
  if (fresh.empty()) return;
  // Failing here costs nothing: the batch grows the pool again and reports.
  if (absl::Status s = GrowPoolFor(want); !s.ok()) VLOG(1) << "xdp: preparing the Maglev pool: " << s;
  prepared_.reserve(fresh.size());
  for (const ServiceRule* r : fresh) {
    if (stop.load(std::memory_order_relaxed)) break;
    Prebuilt b;
    SelectFor(*r, &b);
    b.slots = IndexTable(b.usable, b.m);
    prepared_.emplace(r->frontend, std::move(b));
  }
}

absl::Status MapWriter::GrowPool(uint32_t chunks) {
  std::vector<uint32_t> idx = pool_.MissingChunks(chunks);
  if (idx.empty()) return absl::OkStatus();
  KPX_RETURN_IF_ERROR(maps_->AddMaglevChunks(idx));
  for (uint32_t c : idx) pool_.AddChunk(c);
  VLOG(1) << "xdp: Maglev pool grew by " << idx.size() << " chunks to " << pool_.chunk_count();
  return absl::OkStatus();
}

absl::StatusOr<uint32_t> MapWriter::AllocateRange(uint32_t m, const FrontendKey& fk) {
  if (std::optional<uint32_t> off = pool_.Allocate(m)) return *off;
  if (pool_.chunk_count() < pool_.max_chunks()) {
    KPX_RETURN_IF_ERROR(GrowPool(1));
    if (std::optional<uint32_t> off = pool_.Allocate(m)) return *off;
  }
  return absl::ResourceExhaustedError(absl::StrCat(
      "Maglev slot pool (kpx_maglev) is full: ", pool_.chunk_count(), " of ", pool_.max_chunks(), " chunks of ",
      KPX_MAGLEV_CHUNK_SLOTS, " slots, ", pool_.used_slots(), " slots in tables (", pool_.quarantined_slots(),
      " of them quarantined for ", absl::FormatDuration(options_.slot_quarantine), "); cannot place the ", m,
      "-slot table of ", fk.String(), ": raise --bpf-maglev-chunks or lower --maglev-table-size"));
}

absl::Status MapWriter::Upsert(const ServiceRule& rule) {
  const FrontendKey& fk = rule.frontend;
  if (!Serves(rule)) {
    if (frontends_.contains(fk)) return Remove(fk);
    return absl::OkStatus();
  }
  auto it = frontends_.find(fk);
  const FrontendState* old = it == frontends_.end() ? nullptr : &it->second;
  // Staged writes only for frontends the programs cannot reach yet.
  Staged* const staged = old == nullptr ? staged_ : nullptr;

  // A batch's new frontend may come with its backends and table prebuilt.
  const Prebuilt* pre = nullptr;
  if (prebuilt_ != nullptr && old == nullptr) {
    if (auto p = prebuilt_->find(&rule); p != prebuilt_->end()) pre = &p->second;
  }
  std::vector<uint64_t> keep_own, usable_own;
  if (pre == nullptr) SelectBackends(rule, &keep_own, &usable_own);
  const std::vector<uint64_t>& keep = pre != nullptr ? pre->keep : keep_own;
  const std::vector<uint64_t>& usable = pre != nullptr ? pre->usable : usable_own;

  // Room, before any write: a full map must leave this frontend untouched.
  if (old == nullptr) {
    if (frontends_.size() >= caps_.services) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "kpx_services is full (", caps_.services, " frontends, KPX_MAX_FRONTENDS); cannot add ",
          fk.String(), ": remove services or raise the map size"));
    }
    if (svc_ids_.available() == 0) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "kpx_svc_stats is full (", caps_.service_ids, " slots, KPX_MAX_SERVICES; service ids 1..",
          caps_.service_ids - 1, " in use); cannot add ", fk.String()));
    }
  }
  size_t needed = 0;
  for (uint64_t addr : keep) needed += !backends_.contains(addr);
  if (needed > backend_ids_.available()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "kpx_backends is full (", caps_.backends, " slots, KPX_MAX_BACKENDS): ", fk.String(), " needs ",
        needed, " new backend slots, ", backend_ids_.available(), " free"));
  }

  const absl::Time now = options_.now();
  pool_.Reclaim(now);
  Txn txn;
  uint32_t svc_id = 0;
  if (old != nullptr) {
    svc_id = old->value.id;
  } else {
    KPX_ASSIGN_OR_RETURN(svc_id, svc_ids_.Allocate(now));
    txn.new_svc_id = svc_id;
  }
  for (uint64_t addr : keep) {
    if (backends_.contains(addr)) continue;
    uint32_t id = 0;
    bool from_quarantine = false;
    if (auto q = quarantined_by_addr_.find(addr); q != quarantined_by_addr_.end()) {
      if (!backend_addr_.contains(q->second) && backend_ids_.Take(q->second)) {
        id = q->second;
        from_quarantine = true;
      }
      quarantined_by_addr_.erase(q);
    }
    if (id == 0) {
      absl::StatusOr<uint32_t> got = backend_ids_.Allocate(now);
      if (!got.ok()) {
        Rollback(txn);
        return got.status();
      }
      id = *got;
    }
    backends_[addr] = BackendState{id, 0};
    backend_addr_[id] = addr;
    txn.new_backends.emplace_back(addr, from_quarantine);
    const kpx_backend bv = BackendValue(AddrKeyIp(addr), AddrKeyPort(addr));
    if (staged != nullptr) {
      staged->backends.push_back({id, bv});
    } else if (absl::Status s = maps_->UpdateBackend(id, bv); !s.ok()) {
      Rollback(txn);
      return absl::Status(s.code(), absl::StrCat("writing backend slot ", id, " for ", fk.String(), ": ",
                                                 s.message()));
    }
  }

  const uint32_t n = static_cast<uint32_t>(usable.size());
  const uint32_t old_m = old != nullptr ? old->maglev_m : 0;
  const uint32_t m = ChooseMaglevSizeKeeping(n, old_m, options_.maglev_max_m);
  std::vector<uint32_t> table;
  // A staged new frontend with a prebuilt table: its range is allocated
  // below and the table written by WriteStagedTables, on every CPU.
  const bool deferred = staged != nullptr && pre != nullptr && pre->m == m && n > 0;
  if (!deferred) {
    std::vector<MaglevBackend> entries;
    entries.reserve(usable.size());
    for (uint64_t addr : usable) {
      entries.push_back({backends_[addr].id, MaglevKey(AddrKeyIp(addr), AddrKeyPort(addr))});
    }
    table = BuildMaglevTable(entries, m);
  }
  const uint64_t hash = table.empty() ? 0 : TableHash(table);  // deferred: set by WriteStagedTables

  // Same M: the live range is rewritten in place (only differing slots; a
  // racing SYN reads the old or the new backend of this service, and both
  // are live in kpx_backends until the Unref below). New M: a fresh range,
  // filled before kpx_services points at it.
  const bool in_place = n > 0 && old_m != 0 && old_m == m;
  const bool new_range = n > 0 && !in_place;
  uint32_t off = in_place ? old->maglev_off : 0;
  if (new_range) {
    absl::StatusOr<uint32_t> got = AllocateRange(m, fk);
    if (!got.ok()) {
      Rollback(txn);
      return got.status();
    }
    off = *got;
  }
  if (deferred) {
    std::vector<uint32_t> ids(n);
    for (uint32_t i = 0; i < n; ++i) ids[i] = backends_[usable[i]].id;
    staged->tables.push_back(TableWrite{fk, off, pre, std::move(ids), 0, absl::OkStatus()});
  } else if (new_range || (in_place && old->table_hash != hash)) {
    if (absl::StatusOr<uint32_t> w = maps_->WriteMaglevSlots(off, table); !w.ok()) {
      if (new_range) pool_.Free(off, m);
      Rollback(txn);
      return absl::Status(w.status().code(),
                          absl::StrCat("Maglev table of ", fk.String(), " (service id ", svc_id, ", ", m,
                                       " slots at pool offset ", off, "): ", w.status().message()));
    }
  }

  kpx_svc value{};
  value.id = svc_id;
  value.flags = SvcFlags(rule);
  value.affinity_timeout_s = rule.affinity_timeout_s;
  value.backend_count = n;
  value.maglev_m = n > 0 ? m : 0;
  value.maglev_off = n > 0 ? off : 0;
  const kpx_svc_key key = SvcKey(fk);
  const bool value_changed = old == nullptr || !SameBytes(old->value, value);

  FrontendState next;
  next.key = key;
  next.value = value;
  next.maglev_m = n > 0 ? m : 0;
  next.maglev_off = n > 0 ? off : 0;
  next.table_hash = hash;
  absl::Status late;
  if (staged != nullptr) {
    // A recycled id must not inherit the counters of its previous service.
    staged->stats.push_back(svc_id);
    staged->services.push_back({key, value});
    staged->frontends.push_back(fk);
  } else {
    if (old == nullptr) {
      if (absl::Status s = maps_->ClearServiceStats(svc_id); !s.ok()) {
        if (new_range) pool_.Free(off, m);
        Rollback(txn);
        return s;
      }
    }
    if (value_changed) {
      if (absl::Status s = maps_->UpdateService(key, value); !s.ok()) {
        if (old == nullptr || new_range) {
          // Nothing points at the new range: give it back. An existing
          // frontend keeps its old value, table and references.
          if (new_range) pool_.Free(off, m);
          if (old == nullptr) {
            Rollback(txn);
            return s;
          }
          Rollback(txn);
          return absl::Status(s.code(), absl::StrCat("updating ", fk.String(), " in kpx_services: ", s.message()));
        }
        // In place: the new table is live (the old value, same offset and M,
        // is consistent with it); keep the new references, retry the value.
        next.value = old->value;
        next.maglev_m = old->maglev_m;
        next.maglev_off = old->maglev_off;
        if (!in_place) next.table_hash = old->table_hash;
        late = absl::Status(s.code(), absl::StrCat("updating ", fk.String(), " in kpx_services (its new Maglev "
                                                   "table is installed; resend to retry): ", s.message()));
      }
    }
  }
  // The old range once nothing points at it.
  if (old != nullptr && old_m != 0 && !in_place && late.ok()) {
    pool_.Quarantine(old->maglev_off, old_m, now + options_.slot_quarantine);
  }

  // Commit: references for the new set before dropping the old set, so a
  // backend in both never touches zero.
  for (uint64_t addr : keep) {
    BackendState& b = backends_[addr];
    ++b.refs;
    next.backend_ids.push_back(b.id);
  }
  std::sort(next.backend_ids.begin(), next.backend_ids.end());
  std::vector<uint32_t> old_ids;
  if (old != nullptr) old_ids = old->backend_ids;
  frontends_[fk] = std::move(next);
  for (uint32_t id : old_ids) {
    absl::Status s = Unref(id);
    if (!s.ok() && late.ok()) late = s;
  }
  return late;
}

absl::Status MapWriter::Unref(uint32_t id) {
  auto a = backend_addr_.find(id);
  if (a == backend_addr_.end()) return absl::OkStatus();
  BackendState& b = backends_[a->second];
  if (b.refs > 0) --b.refs;
  if (b.refs > 0) return absl::OkStatus();
  return ReleaseBackend(a->second);
}

absl::Status MapWriter::ReleaseBackend(uint64_t addr) {
  auto it = backends_.find(addr);
  if (it == backends_.end()) return absl::OkStatus();
  const uint32_t id = it->second.id;
  // addr 0: conntrack hits on this id are answered with RST (clients fail
  // fast); flows of backends still in some rule are untouched. On failure
  // the backend stays, unreferenced, and Prune retries.
  if (absl::Status s = maps_->UpdateBackend(id, kpx_backend{}); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("zeroing backend slot ", id, ": ", s.message()));
  }
  backend_addr_.erase(id);
  backends_.erase(it);
  backend_ids_.Release(id, options_.now());
  if (quarantined_by_addr_.size() >= caps_.backends) {
    absl::erase_if(quarantined_by_addr_, [&](const auto& e) { return backend_ids_.InUse(e.second); });
  }
  quarantined_by_addr_[addr] = id;
  return absl::OkStatus();
}

absl::Status MapWriter::Remove(const FrontendKey& frontend) {
  auto it = frontends_.find(frontend);
  if (it == frontends_.end()) return absl::OkStatus();
  // The key first: once it is gone no new flow reaches the table or slots.
  if (absl::Status s = maps_->DeleteService(it->second.key); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("deleting ", frontend.String(), " from kpx_services: ", s.message()));
  }
  FrontendState st = std::move(it->second);
  frontends_.erase(it);
  absl::Status first;
  const absl::Time now = options_.now();
  if (st.maglev_m != 0) pool_.Quarantine(st.maglev_off, st.maglev_m, now + options_.slot_quarantine);
  for (uint32_t id : st.backend_ids) {
    absl::Status s = Unref(id);
    if (!s.ok() && first.ok()) first = s;
  }
  svc_ids_.Release(st.value.id, now);
  return first;
}

absl::Status MapWriter::Prune(const controller::ServiceTable& desired) {
  absl::Status first;
  auto keep_first = [&first](absl::Status s) {
    if (!s.ok() && first.ok()) first = std::move(s);
  };
  std::vector<FrontendKey> stale;
  for (const auto& [fk, st] : frontends_) {
    auto d = desired.find(fk);
    if (d == desired.end() || !Serves(d->second)) stale.push_back(fk);
  }
  for (const FrontendKey& fk : stale) keep_first(Remove(fk));
  size_t stale_services = 0;
  for (const kpx_svc_key& key : stale_services_) {
    std::optional<FrontendKey> fk = FrontendFromSvcKey(key);
    if (fk.has_value() && frontends_.contains(*fk)) continue;  // re-added since, under a valid id
    keep_first(maps_->DeleteService(key));
    ++stale_services;
  }
  stale_services_.clear();
  // Backends no rule references: adopted leftovers, or slots whose zeroing
  // failed earlier.
  std::vector<uint64_t> unreferenced;
  for (const auto& [addr, b] : backends_) {
    if (b.refs == 0) unreferenced.push_back(addr);
  }
  for (uint64_t addr : unreferenced) keep_first(ReleaseBackend(addr));
  for (uint32_t id : stale_backend_ids_) {
    if (backend_addr_.contains(id)) continue;
    keep_first(maps_->UpdateBackend(id, kpx_backend{}));
    backend_ids_.Release(id, options_.now());
  }
  stale_backend_ids_.clear();
  // Ranges of the inconsistent services just deleted.
  const absl::Time now = options_.now();
  for (const auto& [off, m] : stale_ranges_) pool_.Quarantine(off, m, now + options_.slot_quarantine);
  const size_t stale_ranges = stale_ranges_.size();
  stale_ranges_.clear();
  for (auto& [fk, st] : frontends_) st.adopted = false;
  LOG(INFO) << "xdp: prune removed " << stale.size() << " frontends, " << stale_services
            << " inconsistent services (" << stale_ranges << " Maglev ranges), " << unreferenced.size()
            << " unused backends";
  return first;
}

std::vector<MapWriter::FrontendInfo> MapWriter::Frontends() const {
  std::vector<FrontendInfo> out;
  out.reserve(frontends_.size());
  for (const auto& [fk, st] : frontends_) {
    out.push_back(FrontendInfo{fk, st.value, st.backend_ids, st.adopted});
  }
  return out;
}

std::vector<MapWriter::FrontendInfo> MapWriter::FrontendsOf(absl::Span<const FrontendKey> frontends) const {
  std::vector<FrontendInfo> out;
  for (const FrontendKey& fk : frontends) {
    auto it = frontends_.find(fk);
    if (it == frontends_.end()) continue;
    out.push_back(FrontendInfo{fk, it->second.value, it->second.backend_ids, it->second.adopted});
  }
  return out;
}

std::optional<uint32_t> MapWriter::ServiceId(const FrontendKey& frontend) const {
  auto it = frontends_.find(frontend);
  if (it == frontends_.end()) return std::nullopt;
  return it->second.value.id;
}

std::optional<uint32_t> MapWriter::MaglevOffset(const FrontendKey& frontend) const {
  auto it = frontends_.find(frontend);
  if (it == frontends_.end() || it->second.maglev_m == 0) return std::nullopt;
  return it->second.maglev_off;
}

SlotPoolUsage MapWriter::pool_usage() const {
  SlotPoolUsage u;
  u.used_slots = pool_.used_slots();
  u.quarantined_slots = pool_.quarantined_slots();
  u.capacity_slots = pool_.capacity_slots();
  u.chunks = pool_.chunk_count();
  u.max_chunks = pool_.max_chunks();
  return u;
}

std::optional<uint32_t> MapWriter::BackendId(Ipv4 ip, uint16_t port) const {
  auto it = backends_.find(AddrKey(ip, port));
  if (it == backends_.end()) return std::nullopt;
  return it->second.id;
}

std::optional<std::pair<Ipv4, uint16_t>> MapWriter::BackendAddress(uint32_t id) const {
  auto it = backend_addr_.find(id);
  if (it == backend_addr_.end()) return std::nullopt;
  return std::pair(AddrKeyIp(it->second), AddrKeyPort(it->second));
}

}  // namespace kpx::xdp
