// LinkWatcher: an AF_NETLINK/NETLINK_ROUTE socket bound to RTNLGRP_LINK, a
// RTM_GETLINK dump right after binding, and a poll loop (socket + eventfd to
// stop). On ENOBUFS (events lost under a burst) it dumps again.
#include "dataplane/xdp/link_watcher.h"

#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"

namespace kpx::xdp {

absl::StatusOr<std::unique_ptr<LinkWatcher>> LinkWatcher::Start(Callback cb) {
  UniqueFd sock(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_ROUTE));
  if (sock.get() < 0) return absl::InternalError(absl::StrCat("netlink socket: ", strerror(errno)));
  sockaddr_nl addr{};
  addr.nl_family = AF_NETLINK;
  addr.nl_groups = 1u << (RTNLGRP_LINK - 1);
  if (bind(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return absl::InternalError(absl::StrCat("bind netlink RTNLGRP_LINK: ", strerror(errno)));
  }
  UniqueFd stop(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (stop.get() < 0) return absl::InternalError(absl::StrCat("eventfd: ", strerror(errno)));
  std::unique_ptr<LinkWatcher> w(new LinkWatcher(std::move(sock), std::move(stop), std::move(cb)));
  if (!w->RequestDump()) return absl::InternalError(absl::StrCat("netlink RTM_GETLINK dump: ", strerror(errno)));
  w->thread_ = std::thread([p = w.get()] { p->Run(); });
  return w;
}

LinkWatcher::LinkWatcher(UniqueFd sock, UniqueFd stop, Callback cb)
    : sock_(std::move(sock)), stop_(std::move(stop)), cb_(std::move(cb)) {}

LinkWatcher::~LinkWatcher() {
  uint64_t one = 1;
  if (write(stop_.get(), &one, sizeof(one)) != sizeof(one)) PLOG(ERROR) << "link watcher: eventfd write";
  if (thread_.joinable()) thread_.join();
}

bool LinkWatcher::RequestDump() {
  struct {
    nlmsghdr nh;
    ifinfomsg ifi;
  } req{};
  req.nh.nlmsg_len = sizeof(req);
  req.nh.nlmsg_type = RTM_GETLINK;
  req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.ifi.ifi_family = AF_UNSPEC;
  return send(sock_.get(), &req, sizeof(req), 0) == sizeof(req);
}

void LinkWatcher::Run() {
  std::vector<char> buf(64 * 1024);
  for (;;) {
    pollfd fds[2] = {{sock_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      PLOG(ERROR) << "link watcher: poll";
      return;
    }
    if (fds[1].revents != 0) return;
    // Drain what is there (bounded by what the kernel queued).
    for (;;) {
      ssize_t n = recv(sock_.get(), buf.data(), buf.size(), 0);
      if (n > 0) {
        Parse(buf.data(), static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && errno == ENOBUFS) {
        LOG(WARNING) << "link watcher: netlink events lost (ENOBUFS); listing the links again";
        if (!RequestDump()) PLOG(ERROR) << "link watcher: RTM_GETLINK dump";
        continue;
      }
      if (n < 0 && errno != EAGAIN && errno != EINTR) PLOG(ERROR) << "link watcher: recv";
      break;
    }
  }
}

void LinkWatcher::Parse(const char* buf, size_t len) {
  for (auto* nh = reinterpret_cast<const nlmsghdr*>(buf); NLMSG_OK(nh, len); nh = NLMSG_NEXT(nh, len)) {
    if (nh->nlmsg_type != RTM_NEWLINK && nh->nlmsg_type != RTM_DELLINK) continue;
    if (nh->nlmsg_len < NLMSG_LENGTH(sizeof(ifinfomsg))) continue;
    const auto* ifi = static_cast<const ifinfomsg*>(NLMSG_DATA(nh));
    LinkEvent ev;
    ev.added = nh->nlmsg_type == RTM_NEWLINK;
    ev.ifindex = ifi->ifi_index;
    int rem = static_cast<int>(IFLA_PAYLOAD(nh));
    for (auto* a = IFLA_RTA(ifi); RTA_OK(a, rem); a = RTA_NEXT(a, rem)) {
      if (a->rta_type == IFLA_IFNAME) {
        ev.name.assign(static_cast<const char*>(RTA_DATA(a)), strnlen(static_cast<const char*>(RTA_DATA(a)), RTA_PAYLOAD(a)));
      } else if (a->rta_type == IFLA_LINKINFO) {
        int irem = static_cast<int>(RTA_PAYLOAD(a));
        for (auto* i = static_cast<const rtattr*>(RTA_DATA(a)); RTA_OK(i, irem); i = RTA_NEXT(i, irem)) {
          if (i->rta_type == IFLA_INFO_KIND) {
            ev.kind.assign(static_cast<const char*>(RTA_DATA(i)), strnlen(static_cast<const char*>(RTA_DATA(i)), RTA_PAYLOAD(i)));
          }
        }
      }
    }
    events_.fetch_add(1);
    if (!ev.name.empty()) cb_(ev);
  }
}

}  // namespace kpx::xdp
