// A minimal rtnetlink client: just the link and address requests the VIP
// device needs (create/delete a link, set it up, add/remove an IPv4 address).
// The socket belongs to the network namespace of the thread that opened it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"
#include "controller/base/ipv4.h"

namespace kpx::uring {

class Rtnetlink {
 public:
  static absl::StatusOr<std::unique_ptr<Rtnetlink>> Open();
  ~Rtnetlink();
  Rtnetlink(const Rtnetlink&) = delete;
  Rtnetlink& operator=(const Rtnetlink&) = delete;

  // Interface index of `name`; NotFound if there is no such link.
  absl::StatusOr<int> LinkIndex(absl::string_view name);
  // Creates a link of `kind` ("dummy", "bridge"). The kernel's errno is kept
  // in the status message; Unimplemented when the kind is not supported.
  absl::Status CreateLink(absl::string_view name, absl::string_view kind);
  absl::Status SetLinkUp(int ifindex);
  absl::Status DeleteLink(int ifindex);
  // Adds / removes `ip`/32. Adding an address that is there is OK (adoption
  // after a restart), so is removing one that is gone.
  absl::Status AddAddress(int ifindex, Ipv4 ip);
  absl::Status RemoveAddress(int ifindex, Ipv4 ip);
  // A `local` route for `dst`/`prefix` on link `ifindex` in the local table
  // (as `ip route add local DST/PREFIX dev IF table local`): every address in
  // it is local to the host without being an address of any link. Adding
  // one that is there is OK, so is removing one that is gone.
  absl::Status AddLocalRoute(int ifindex, Ipv4 dst, int prefix);
  absl::Status RemoveLocalRoute(int ifindex, Ipv4 dst, int prefix);
  // The IPv4 /32 addresses on link `ifindex`.
  absl::StatusOr<std::vector<Ipv4>> HostAddresses(int ifindex);

 private:
  explicit Rtnetlink(int fd) : fd_(fd) {}
  // Sends one request (NLM_F_ACK is added) and waits for its answer. Returns
  // the negative errno of the NLMSG_ERROR (0 = OK); `reply`, if not null,
  // receives the first non-error message's payload. `what` names the request
  // for the error message, `ext_ack` the kernel's extended-ack text.
  int Transact(void* msg, size_t len, std::string* reply, std::string* ext_ack);
  absl::Status ToStatus(int err, absl::string_view what, const std::string& ext_ack);

  int fd_;
  uint32_t seq_ = 1;
};

}  // namespace kpx::uring
