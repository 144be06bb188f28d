// The device that holds the frontend VIPs as local /32 addresses (kpx0, like
// kube-proxy's kube-ipvs0), so the proxy's listeners can bind them. Addresses
// are reference-counted per frontend; an address whose last frontend went away
// stays while connections accepted on it are still open, so they can finish.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "controller/base/ipv4.h"
#include "dataplane/uring/rtnetlink.h"
#include "dataplane/xdp/interfaces.h"

namespace kpx::uring {

class VipDevice {
 public:
  // Adopts link `name` if it exists, else creates it: type dummy, or a
  // port-less bridge where the kernel has no dummy driver. Brings it up.
  // `local_ranges`: prefixes held by one `local` route each on the link
  // (AnyIP) instead of one /32 per VIP: adding the 10 000th address to a
  // link costs the kernel a walk of the other 9 999, a route costs nothing
  // per VIP. VIPs inside them are never added as addresses.
  static absl::StatusOr<std::unique_ptr<VipDevice>> Open(const std::string& name,
                                                         std::vector<xdp::Ipv4Cidr> local_ranges = {});
  ~VipDevice();  // Close()

  // One more frontend on `ip`: adds the address on the first.
  absl::Status Acquire(Ipv4 ip);
  // One frontend fewer on `ip`. On the last, the address goes at once unless
  // `in_use()` is true; then it goes at the first Reap() that finds every
  // released user idle (and no new Acquire meanwhile).
  void Release(Ipv4 ip, std::function<bool()> in_use);
  // Removes drained addresses. Cheap when nothing is draining.
  void Reap();
  bool draining() const { return draining_count_.load(std::memory_order_relaxed) > 0; }
  // Removes every address this object added and the link if it created it.
  void Close();
  // Removes the /32 addresses on the link that are neither in `keep` nor in
  // use here: leftovers of a previous process that crashed before Close().
  absl::Status Prune(const absl::flat_hash_set<Ipv4>& keep);

  const std::string& name() const { return name_; }
  bool created() const { return created_; }
  int ifindex() const { return ifindex_; }

 private:
  VipDevice() = default;
  void RemoveLocked(Ipv4 ip) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool InLocalRange(Ipv4 ip) const;

  std::string name_;
  bool created_ = false;
  int ifindex_ = 0;
  std::vector<xdp::Ipv4Cidr> local_ranges_;  // routed, set in Open
  absl::Mutex mu_;
  std::unique_ptr<Rtnetlink> nl_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<Ipv4, int> refs_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<Ipv4> added_ ABSL_GUARDED_BY(mu_);
  struct Draining {
    Ipv4 ip;
    std::function<bool()> in_use;
  };
  std::vector<Draining> draining_ ABSL_GUARDED_BY(mu_);
  std::atomic<int> draining_count_{0};
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace kpx::uring
