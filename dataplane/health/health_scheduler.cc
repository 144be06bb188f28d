// HealthScheduler: targets, heap of due probes, token bucket, transitions.
#include "dataplane/health/health_scheduler.h"

#include <algorithm>

#include "absl/container/flat_hash_set.h"

namespace kpx::health {
namespace {

// Min-heap order for std::push_heap (which builds a max-heap): later is "less".
bool Later(const auto& a, const auto& b) {
  return a.at != b.at ? a.at > b.at : a.slot > b.slot;
}

uint64_t ProbeId(uint32_t slot, uint32_t seq) { return (uint64_t{slot} << 32) | seq; }

}  // namespace

HealthScheduler::HealthScheduler(SchedulerOptions options, Prober* prober, ChangeCallback on_change)
    : options_(options),
      prober_(prober),
      on_change_(std::move(on_change)),
      bucket_(options.max_probes_per_second,
              options.burst > 0 ? options.burst
                                : std::max(100.0, options.max_probes_per_second / 20)),
      rng_(options.seed != 0 ? options.seed : std::random_device{}()) {}

double HealthScheduler::Draw() { return std::uniform_real_distribution<double>(0.0, 1.0)(rng_); }

void HealthScheduler::Schedule(uint32_t slot, absl::Time at) {
  Slot& s = slots_[slot];
  s.next_due = at;
  ++s.sched_seq;
  heap_.push_back(Due{at, slot, s.sched_seq});
  std::push_heap(heap_.begin(), heap_.end(), Later<Due, Due>);
}

void HealthScheduler::SetTargets(const std::vector<HealthTarget>& targets, absl::Time now) {
  absl::flat_hash_set<controller::BackendAddr> keep;
  keep.reserve(targets.size());
  for (const HealthTarget& t : targets) {
    keep.insert(t.backend);
    auto it = index_.find(t.backend);
    if (it != index_.end()) {
      Slot& s = slots_[it->second];
      if (s.target == t) continue;
      const bool spec_changed = s.target.spec != t.spec;
      s.target = t;
      s.stats.service = t.service;
      s.stats.spec = t.spec;
      if (spec_changed && !s.probing) {
        const absl::Time due = s.last_start == absl::InfinitePast()
                                   ? now + FirstProbeDelay(t.spec, Draw())
                                   : std::max(now, s.last_start + s.health.NextGap(t.spec, Draw()));
        if (due < s.next_due) Schedule(it->second, due);
      }
      continue;
    }
    uint32_t slot;
    if (!free_.empty()) {
      slot = free_.back();
      free_.pop_back();
    } else {
      slot = static_cast<uint32_t>(slots_.size());
      slots_.emplace_back();
    }
    Slot& s = slots_[slot];
    const uint32_t probe_seq = s.probe_seq;  // ids stay unique across tenants
    const uint32_t sched_seq = s.sched_seq;
    s = Slot{};
    s.probe_seq = probe_seq;
    s.sched_seq = sched_seq;
    s.target = t;
    s.live = true;
    s.stats.backend = t.backend;
    s.stats.service = t.service;
    s.stats.spec = t.spec;
    index_.emplace(t.backend, slot);
    Schedule(slot, now + FirstProbeDelay(t.spec, Draw()));
  }
  std::vector<uint32_t> gone;
  for (const auto& [addr, slot] : index_) {
    if (!keep.contains(addr)) gone.push_back(slot);
  }
  std::sort(gone.begin(), gone.end());  // deterministic callback order
  for (uint32_t slot : gone) Remove(slot);
}

void HealthScheduler::Remove(uint32_t slot) {
  Slot& s = slots_[slot];
  const controller::BackendAddr addr = s.target.backend;
  const bool was_down = !s.health.up();
  index_.erase(addr);
  s.live = false;
  s.probing = false;  // a late completion no longer matches
  ++s.sched_seq;      // its heap entry is stale now
  s.target = HealthTarget{};
  free_.push_back(slot);
  if (was_down) {
    --down_;
    on_change_(addr, true);
  }
}

void HealthScheduler::OnPassiveFailure(controller::BackendAddr backend, absl::Time now) {
  auto it = index_.find(backend);
  if (it == index_.end()) return;
  Slot& s = slots_[it->second];
  if (!s.health.OnPassiveFailure(s.target.spec)) return;
  ++totals_.passive_failures;
  ++s.stats.passive_failures;
  s.stats.state = s.health.state();
  if (s.probing) return;  // that probe's verdict comes first
  const absl::Time due = s.last_start == absl::InfinitePast()
                             ? now
                             : std::max(now, s.last_start + s.target.spec.suspect_interval);
  if (due < s.next_due) Schedule(it->second, due);
}

void HealthScheduler::StartProbe(uint32_t slot, absl::Time now) {
  Slot& s = slots_[slot];
  s.probing = true;
  ++s.probe_seq;
  s.last_start = now;
  s.next_due = absl::InfiniteFuture();
  if (s.rate_limited) {
    ++totals_.rate_limited;
    s.rate_limited = false;
  }
  ++in_flight_;
  ++totals_.probes_sent;
  ++s.stats.probes;
  const HealthSpec& spec = s.target.spec;
  ProbeRequest req;
  req.ip = s.target.backend.ip;
  req.port = spec.ProbePort(s.target.backend.port);
  req.type = spec.type;
  if (spec.type == CheckType::kHttp) req.path = spec.path;
  req.timeout = spec.timeout;
  prober_->Start(ProbeId(slot, s.probe_seq), req);
}

absl::Time HealthScheduler::RunDue(absl::Time now, absl::Duration early) {
  while (!heap_.empty()) {
    const Due top = heap_.front();
    Slot& s = slots_[top.slot];
    if (!s.live || s.sched_seq != top.seq || s.probing) {
      std::pop_heap(heap_.begin(), heap_.end(), Later<Due, Due>);
      heap_.pop_back();
      continue;
    }
    if (top.at > now + early) return top.at;
    if (in_flight_ >= options_.max_in_flight) return absl::InfiniteFuture();
    if (!bucket_.TryTake(now)) {
      s.rate_limited = true;
      return bucket_.NextToken(now);
    }
    std::pop_heap(heap_.begin(), heap_.end(), Later<Due, Due>);
    heap_.pop_back();
    StartProbe(top.slot, now);
  }
  return absl::InfiniteFuture();
}

void HealthScheduler::OnProbeDone(uint64_t probe_id, const ProbeResult& result, absl::Time now) {
  if (in_flight_ > 0) --in_flight_;
  const auto slot = static_cast<uint32_t>(probe_id >> 32);
  const auto seq = static_cast<uint32_t>(probe_id);
  if (slot >= slots_.size()) return;
  Slot& s = slots_[slot];
  if (!s.live || !s.probing || s.probe_seq != seq) return;
  s.probing = false;
  s.stats.last_latency = result.latency;
  s.stats.last_error = result.ok ? 0 : result.err;
  s.stats.last_http_status = result.http_status;
  const HealthSpec& spec = s.target.spec;
  if (result.local_error) {
    // Nothing learnt about the backend: try again soon, count nothing.
    ++totals_.local_errors;
    Schedule(slot, std::max(now, s.last_start + spec.suspect_interval));
    return;
  }
  if (!result.ok) {
    ++totals_.probe_failures;
    ++s.stats.failures;
  }
  if (s.health.OnProbe(result.ok, spec)) {
    const bool up = s.health.up();
    s.stats.last_change = now;
    if (up) {
      ++totals_.came_up;
      --down_;
    } else {
      ++totals_.went_down;
      ++down_;
    }
    on_change_(s.target.backend, up);
  }
  s.stats.state = s.health.state();
  Schedule(slot, std::max(now, s.last_start + s.health.NextGap(spec, Draw())));
}

HealthStats HealthScheduler::Stats(bool per_backend) const {
  HealthStats out = totals_;
  out.targets = index_.size();
  out.down = down_;
  out.in_flight = in_flight_;
  if (per_backend) {
    out.backends.reserve(index_.size());
    for (const auto& [addr, slot] : index_) out.backends.push_back(slots_[slot].stats);
    std::sort(out.backends.begin(), out.backends.end(),
              [](const BackendHealthStats& a, const BackendHealthStats& b) {
                return std::pair(a.backend.ip.host(), a.backend.port) <
                       std::pair(b.backend.ip.host(), b.backend.port);
              });
  }
  return out;
}

std::optional<HealthState> HealthScheduler::StateOf(controller::BackendAddr backend) const {
  auto it = index_.find(backend);
  if (it == index_.end()) return std::nullopt;
  return slots_[it->second].health.state();
}

size_t HealthScheduler::CountDown(const controller::ServiceRule& rule) const {
  size_t n = 0;
  for (const controller::Backend& b : rule.backends) {
    if (!b.ready) continue;
    auto it = index_.find(controller::BackendAddr{b.ip, b.port});
    if (it != index_.end() && !slots_[it->second].health.up()) ++n;
  }
  return n;
}

}  // namespace kpx::health
