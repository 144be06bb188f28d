// FakeProber: scripted probe outcomes on a Clock (see fake_prober.h).
#include "dataplane/health/fake_prober.h"

#include <algorithm>
#include <cerrno>

namespace kpx::health {

void FakeProber::Set(Ipv4 ip, uint16_t port, Behaviour b, absl::Duration latency) {
  absl::MutexLock lock(&mu_);
  scripts_[{ip.be(), port}] = Script{b, latency};
}

void FakeProber::SetResponder(std::function<ProbeResult(const ProbeRequest&)> responder) {
  absl::MutexLock lock(&mu_);
  responder_ = std::move(responder);
}

void FakeProber::Start(uint64_t probe_id, const ProbeRequest& request) {
  const absl::Time now = clock_->Now();
  absl::MutexLock lock(&mu_);
  started_.push_back(Started{probe_id, request, now});
  ProbeResult r;
  if (responder_) {
    r = responder_(request);
  } else {
    Script s{Behaviour::kUp, absl::Milliseconds(1)};
    if (auto it = scripts_.find({request.ip.be(), request.port}); it != scripts_.end()) s = it->second;
    r.latency = s.latency;
    switch (s.behaviour) {
      case Behaviour::kUp:
        r.ok = true;
        if (request.type == CheckType::kHttp) r.http_status = 200;
        break;
      case Behaviour::kRefuse:
        r.err = ECONNREFUSED;
        break;
      case Behaviour::kSilent:
        r.err = ETIMEDOUT;
        r.latency = request.timeout;
        break;
      case Behaviour::kLocalErr:
        r.err = EMFILE;
        r.local_error = true;
        break;
    }
  }
  pending_.push_back(Pending{probe_id, now + r.latency, r});
}

void FakeProber::Poll(absl::Duration max_wait) {
  std::vector<Pending> done;
  {
    absl::MutexLock lock(&mu_);
    if (max_wait > absl::ZeroDuration() && !woken_) {
      absl::Time next = absl::InfiniteFuture();
      for (const Pending& p : pending_) next = std::min(next, p.due);
      const absl::Duration until_due = next - clock_->Now();
      if (until_due > absl::ZeroDuration()) {
        auto woken = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return woken_; };
        mu_.AwaitWithTimeout(absl::Condition(&woken), std::min(max_wait, until_due));
      }
    }
    woken_ = false;
    const absl::Time now = clock_->Now();
    auto due = std::stable_partition(pending_.begin(), pending_.end(),
                                     [&](const Pending& p) { return p.due <= now; });
    done.assign(pending_.begin(), due);
    pending_.erase(pending_.begin(), due);
  }
  std::stable_sort(done.begin(), done.end(),
                   [](const Pending& a, const Pending& b) { return a.due < b.due; });
  for (const Pending& p : done) callback_(p.id, p.result);
}

void FakeProber::Wake() {
  absl::MutexLock lock(&mu_);
  woken_ = true;
}

size_t FakeProber::in_flight() const {
  absl::MutexLock lock(&mu_);
  return pending_.size();
}

absl::Time FakeProber::NextCompletion() const {
  absl::MutexLock lock(&mu_);
  absl::Time next = absl::InfiniteFuture();
  for (const Pending& p : pending_) next = std::min(next, p.due);
  return next;
}

std::vector<FakeProber::Started> FakeProber::started() const {
  absl::MutexLock lock(&mu_);
  return started_;
}

size_t FakeProber::started_count() const {
  absl::MutexLock lock(&mu_);
  return started_.size();
}

void FakeProber::ClearStarted() {
  absl::MutexLock lock(&mu_);
  started_.clear();
}

}  // namespace kpx::health
