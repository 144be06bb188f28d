// kpx0 management over rtnetlink: create-or-adopt, reference-counted /32s,
// deferred removal while connections drain, and cleanup.
#include "dataplane/uring/vip_device.h"

#include <glog/logging.h>

#include <algorithm>
#include <utility>

#include "controller/base/status_macros.h"

namespace kpx::uring {

absl::StatusOr<std::unique_ptr<VipDevice>> VipDevice::Open(const std::string& name,
                                                           std::vector<xdp::Ipv4Cidr> local_ranges) {
  std::unique_ptr<VipDevice> dev(new VipDevice());
  dev->name_ = name;
  dev->local_ranges_ = std::move(local_ranges);
  KPX_ASSIGN_OR_RETURN(std::unique_ptr<Rtnetlink> nl, Rtnetlink::Open());
  absl::StatusOr<int> index = nl->LinkIndex(name);
  if (absl::IsNotFound(index.status())) {
    absl::Status s = nl->CreateLink(name, "dummy");
    if (absl::IsUnimplemented(s)) {
      // No dummy driver (e.g. a minimal kernel): a bridge without ports holds
      // local addresses just as well and never forwards anything.
      LOG(INFO) << "kernel has no dummy links; creating " << name << " as a port-less bridge";
      s = nl->CreateLink(name, "bridge");
    }
    KPX_RETURN_IF_ERROR(s);
    dev->created_ = true;
    index = nl->LinkIndex(name);
  }
  KPX_RETURN_IF_ERROR(index.status());
  dev->ifindex_ = *index;
  absl::Status up = nl->SetLinkUp(dev->ifindex_);
  if (!up.ok()) {
    if (dev->created_) nl->DeleteLink(dev->ifindex_).IgnoreError();
    return up;
  }
  for (const xdp::Ipv4Cidr& r : dev->local_ranges_) {
    absl::Status s = nl->AddLocalRoute(dev->ifindex_, r.addr, r.prefix);
    if (!s.ok()) {
      for (const xdp::Ipv4Cidr& done : dev->local_ranges_) {
        if (&done == &r) break;
        nl->RemoveLocalRoute(dev->ifindex_, done.addr, done.prefix).IgnoreError();
      }
      if (dev->created_) nl->DeleteLink(dev->ifindex_).IgnoreError();
      return s;
    }
    LOG(INFO) << "VIPs in " << r.addr.ToString() << "/" << r.prefix << " are local through one route on "
              << name << " (no address per VIP)";
  }
  absl::MutexLock lock(&dev->mu_);
  dev->nl_ = std::move(nl);
  return dev;
}

bool VipDevice::InLocalRange(Ipv4 ip) const {
  return std::any_of(local_ranges_.begin(), local_ranges_.end(),
                     [ip](const xdp::Ipv4Cidr& r) { return r.Contains(ip); });
}

VipDevice::~VipDevice() { Close(); }

absl::Status VipDevice::Acquire(Ipv4 ip) {
  absl::MutexLock lock(&mu_);
  if (closed_) return absl::FailedPreconditionError(absl::StrCat(name_, " is closed"));
  int& refs = refs_[ip];
  if (refs == 0 && !added_.contains(ip) && !InLocalRange(ip)) {
    absl::Status s = nl_->AddAddress(ifindex_, ip);
    if (!s.ok()) {
      refs_.erase(ip);
      return s;
    }
    added_.insert(ip);
  }
  ++refs;
  return absl::OkStatus();
}

void VipDevice::Release(Ipv4 ip, std::function<bool()> in_use) {
  absl::MutexLock lock(&mu_);
  if (closed_) return;
  auto it = refs_.find(ip);
  if (it == refs_.end()) return;
  if (--it->second > 0) return;
  refs_.erase(it);
  if (in_use && in_use()) {
    draining_.push_back({ip, std::move(in_use)});
    draining_count_.store(static_cast<int>(draining_.size()), std::memory_order_relaxed);
    return;
  }
  // Earlier releases of this ip may still be draining: then wait for them.
  bool others = std::any_of(draining_.begin(), draining_.end(),
                            [&](const Draining& d) { return d.ip == ip; });
  if (!others) RemoveLocked(ip);
}

void VipDevice::Reap() {
  if (!draining()) return;
  absl::MutexLock lock(&mu_);
  if (closed_) return;
  absl::flat_hash_set<Ipv4> candidates;
  for (const Draining& d : draining_) candidates.insert(d.ip);
  draining_.erase(std::remove_if(draining_.begin(), draining_.end(),
                                 [](const Draining& d) { return !d.in_use(); }),
                  draining_.end());
  draining_count_.store(static_cast<int>(draining_.size()), std::memory_order_relaxed);
  for (Ipv4 ip : candidates) {
    if (refs_.contains(ip)) continue;  // acquired again: the address stays
    bool busy = std::any_of(draining_.begin(), draining_.end(),
                            [&](const Draining& d) { return d.ip == ip; });
    if (!busy) RemoveLocked(ip);
  }
}

void VipDevice::RemoveLocked(Ipv4 ip) {
  if (!added_.contains(ip)) return;
  absl::Status s = nl_->RemoveAddress(ifindex_, ip);
  if (!s.ok()) LOG(WARNING) << "removing VIP from " << name_ << ": " << s;
  added_.erase(ip);
}

absl::Status VipDevice::Prune(const absl::flat_hash_set<Ipv4>& keep) {
  absl::MutexLock lock(&mu_);
  if (closed_) return absl::OkStatus();
  absl::StatusOr<std::vector<Ipv4>> present = nl_->HostAddresses(ifindex_);
  if (!present.ok()) return present.status();
  for (Ipv4 ip : *present) {
    if (keep.contains(ip) || refs_.contains(ip) || added_.contains(ip)) continue;
    LOG(INFO) << "pruning stale VIP " << ip.ToString() << " from " << name_;
    absl::Status s = nl_->RemoveAddress(ifindex_, ip);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

void VipDevice::Close() {
  absl::MutexLock lock(&mu_);
  if (closed_ || nl_ == nullptr) return;
  closed_ = true;
  if (created_) {
    absl::Status s = nl_->DeleteLink(ifindex_);  // takes its addresses and routes with it
    if (!s.ok()) LOG(WARNING) << "deleting " << name_ << ": " << s;
  } else {
    for (const xdp::Ipv4Cidr& r : local_ranges_) {
      absl::Status s = nl_->RemoveLocalRoute(ifindex_, r.addr, r.prefix);
      if (!s.ok()) LOG(WARNING) << "removing local route from " << name_ << ": " << s;
    }
    for (Ipv4 ip : added_) {
      absl::Status s = nl_->RemoveAddress(ifindex_, ip);
      if (!s.ok()) LOG(WARNING) << "removing VIP from " << name_ << ": " << s;
    }
  }
  added_.clear();
  refs_.clear();
  draining_.clear();
  draining_count_.store(0, std::memory_order_relaxed);
}

}  // namespace kpx::uring
