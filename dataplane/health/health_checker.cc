// HealthChecker: the checker thread (commands in, probes out, transitions to
// the callback) around a HealthScheduler.
#include "dataplane/health/health_checker.h"

#include <glog/logging.h>
#include <pthread.h>

#include <algorithm>
#include <cerrno>

#include "dataplane/health/uring_prober.h"

namespace kpx::health {
namespace {

// The loop wakes at least this often even with nothing due (cheap, and a
// safety net should a wake-up ever be lost).
constexpr absl::Duration kMaxSleep = absl::Seconds(1);

}  // namespace

HealthChecker::HealthChecker(HealthOptions options, ChangeCallback on_change)
    : options_(std::move(options)),
      on_change_(std::move(on_change)),
      clock_(options_.clock != nullptr ? options_.clock : MonotonicClock::Get()) {}

absl::StatusOr<std::unique_ptr<HealthChecker>> HealthChecker::Create(HealthOptions options,
                                                                     ChangeCallback on_change) {
  std::unique_ptr<HealthChecker> hc(new HealthChecker(std::move(options), std::move(on_change)));
  hc->thread_ = std::thread([p = hc.get()] { p->Run(); });
  absl::Status status;
  {
    absl::MutexLock lock(&hc->init_mu_);
    // A named local, not an init-capture: clang resolves the annotation's
    // argument in the enclosing scope.
    HealthChecker* const p = hc.get();
    auto ready = [p]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->init_mu_) {
      return p->init_status_.has_value();
    };
    hc->init_mu_.Await(absl::Condition(&ready));
    status = *hc->init_status_;
  }
  if (!status.ok()) {
    hc->thread_.join();
    return status;
  }
  return hc;
}

HealthChecker::~HealthChecker() { Stop(); }

void HealthChecker::Stop() {
  {
    absl::MutexLock lock(&cmd_mu_);
    stopping_ = true;
  }
  if (prober_ != nullptr) prober_->Wake();
  if (thread_.joinable()) thread_.join();
}

void HealthChecker::Run() {
  // Named so its CPU can be told apart in /proc/<pid>/task (kpx-bench health).
  pthread_setname_np(pthread_self(), "kpx-health");
  absl::StatusOr<std::unique_ptr<Prober>> prober =
      options_.make_prober ? options_.make_prober()
                           : absl::StatusOr<std::unique_ptr<Prober>>(
                                 UringProber::Create(options_.ring_entries));
  if (!prober.ok()) {
    absl::MutexLock lock(&init_mu_);
    init_status_ = prober.status();
    return;
  }
  prober_ = std::move(*prober);
  prober_->SetCallback(
      [this](uint64_t id, const ProbeResult& r) { done_.emplace_back(id, r); });
  {
    absl::MutexLock lock(&mu_);
    scheduler_ = std::make_unique<HealthScheduler>(
        options_.scheduler, prober_.get(),
        [this](controller::BackendAddr b, bool up) { changes_.emplace_back(b, up); });
  }
  {
    absl::MutexLock lock(&init_mu_);
    init_status_ = absl::OkStatus();
  }
  Loop();
}

void HealthChecker::Loop() {
  for (;;) {
    std::optional<std::vector<HealthTarget>> targets;
    std::vector<controller::BackendAddr> passive;
    {
      absl::MutexLock lock(&cmd_mu_);
      if (stopping_) return;
      targets.swap(pending_targets_);
      passive.assign(pending_passive_.begin(), pending_passive_.end());
      pending_passive_.clear();
      wake_pending_ = false;
    }
    absl::Time next;
    {
      absl::MutexLock lock(&mu_);
      const absl::Time now = clock_->Now();
      if (targets.has_value()) scheduler_->SetTargets(*targets, now);
      for (const controller::BackendAddr& b : passive) scheduler_->OnPassiveFailure(b, now);
      for (const auto& [id, r] : done_) scheduler_->OnProbeDone(id, r, now);
      done_.clear();
      next = scheduler_->RunDue(now, options_.batch_window);
      for (const auto& [backend, up] : changes_) {
        LOG(INFO) << "health: backend " << backend.ip.ToString() << ":" << backend.port
                  << (!up ? " is down"
                          : scheduler_->StateOf(backend).has_value() ? " is up again"
                                                                     : " is no longer checked");
      }
    }
    // Outside the lock: the callback may read Stats().
    for (const auto& [backend, up] : changes_) on_change_(backend, up);
    changes_.clear();
    const absl::Duration wait = std::clamp(next - clock_->Now(), absl::ZeroDuration(), kMaxSleep);
    prober_->Poll(wait);
  }
}

void HealthChecker::SetTargets(std::vector<HealthTarget> targets) {
  {
    absl::MutexLock lock(&cmd_mu_);
    if (stopping_) return;
    pending_targets_ = std::move(targets);
    wake_pending_ = true;
  }
  prober_->Wake();
}

void HealthChecker::ReportPassive(controller::BackendAddr backend, bool ok) {
  if (ok) return;
  bool wake;
  {
    absl::MutexLock lock(&cmd_mu_);
    if (stopping_) return;
    pending_passive_.insert(backend);
    wake = !wake_pending_;
    wake_pending_ = true;
  }
  if (wake) prober_->Wake();
}

void HealthChecker::OnConnectFailed(Ipv4 ip, uint16_t port, int err) {
  if (IsLocalProbeError(err)) return;
  ReportPassive(controller::BackendAddr{ip, port}, false);
}

void HealthChecker::OnConnectSucceeded(Ipv4 ip, uint16_t port) {
  ReportPassive(controller::BackendAddr{ip, port}, true);
}

HealthStats HealthChecker::Stats(bool per_backend) const {
  absl::MutexLock lock(&mu_);
  return scheduler_->Stats(per_backend);
}

std::optional<HealthState> HealthChecker::StateOf(controller::BackendAddr backend) const {
  absl::MutexLock lock(&mu_);
  return scheduler_->StateOf(backend);
}

size_t HealthChecker::CountDown(const controller::ServiceRule& rule) const {
  absl::MutexLock lock(&mu_);
  return scheduler_->CountDown(rule);
}

}  // namespace kpx::health
