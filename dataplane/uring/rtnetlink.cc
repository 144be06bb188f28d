// rtnetlink requests built by hand (a few fixed-layout messages), with
// extended-ack error text so failures say what the kernel disliked.
#include "dataplane/uring/rtnetlink.h"

#include <linux/if.h>
#include <linux/if_addr.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

// NLMSG_OK compares the u32 nlmsg_len with the caller's int length; clang
// reports that inside the macro, gcc does not.
#pragma GCC diagnostic ignored "-Wsign-compare"

namespace kpx::uring {
namespace {

// A request message under construction: header, fixed part, attributes.
class Request {
 public:
  Request(uint16_t type, uint16_t flags) {
    std::memset(buf_, 0, sizeof(buf_));
    hdr()->nlmsg_type = type;
    hdr()->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    hdr()->nlmsg_len = NLMSG_LENGTH(0);
  }
  nlmsghdr* hdr() { return reinterpret_cast<nlmsghdr*>(buf_); }
  template <typename T>
  T* Fixed() {
    T* t = reinterpret_cast<T*>(NLMSG_DATA(hdr()));
    hdr()->nlmsg_len = NLMSG_LENGTH(sizeof(T));
    return t;
  }
  rtattr* Attr(uint16_t type, const void* data, size_t len) {
    size_t off = NLMSG_ALIGN(hdr()->nlmsg_len);
    rtattr* a = reinterpret_cast<rtattr*>(buf_ + off);
    a->rta_type = type;
    a->rta_len = RTA_LENGTH(len);
    if (len > 0) std::memcpy(RTA_DATA(a), data, len);
    hdr()->nlmsg_len = off + RTA_ALIGN(a->rta_len);
    return a;
  }
  rtattr* Nest(uint16_t type) { return Attr(type, nullptr, 0); }
  void EndNest(rtattr* nest) {
    nest->rta_len = static_cast<uint16_t>(buf_ + hdr()->nlmsg_len - reinterpret_cast<char*>(nest));
  }
  void* data() { return buf_; }
  size_t size() { return hdr()->nlmsg_len; }

 private:
  alignas(nlmsghdr) char buf_[512];
};

}  // namespace

absl::StatusOr<std::unique_ptr<Rtnetlink>> Rtnetlink::Open() {
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat("netlink socket: ", std::strerror(errno)));
  }
  int one = 1;
  setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one));  // best effort
  setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof(one));
  sockaddr_nl local{};
  local.nl_family = AF_NETLINK;
  if (bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof(local)) != 0) {
    int err = errno;
    close(fd);
    return absl::UnavailableError(absl::StrCat("netlink bind: ", std::strerror(err)));
  }
  return std::unique_ptr<Rtnetlink>(new Rtnetlink(fd));
}

Rtnetlink::~Rtnetlink() { close(fd_); }

int Rtnetlink::Transact(void* msg, size_t len, std::string* reply, std::string* ext_ack) {
  nlmsghdr* req = static_cast<nlmsghdr*>(msg);
  req->nlmsg_seq = ++seq_;
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (sendto(fd_, msg, len, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof(kernel)) < 0) {
    return -errno;
  }
  alignas(nlmsghdr) char buf[16384];
  // Bounded: the kernel answers a non-dump request with at most a reply and
  // an ack; stray messages of older sequence numbers are skipped.
  for (int round = 0; round < 64; ++round) {
    ssize_t n = recv(fd_, buf, sizeof(buf), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    int left = static_cast<int>(n);
    for (nlmsghdr* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, left);
         h = NLMSG_NEXT(h, left)) {
      if (h->nlmsg_seq != req->nlmsg_seq) continue;
      if (h->nlmsg_type == NLMSG_ERROR) {
        auto* e = static_cast<nlmsgerr*>(NLMSG_DATA(h));
        if (ext_ack != nullptr && (h->nlmsg_flags & NLM_F_ACK_TLVS)) {
          // TLVs follow the error header and the (capped) original request.
          size_t off = sizeof(nlmsgerr);
          if (!(h->nlmsg_flags & NLM_F_CAPPED)) off += e->msg.nlmsg_len - sizeof(nlmsghdr);
          char* p = static_cast<char*>(NLMSG_DATA(h)) + NLMSG_ALIGN(off);
          char* end = reinterpret_cast<char*>(h) + h->nlmsg_len;
          while (p + sizeof(nlattr) <= end) {
            auto* a = reinterpret_cast<nlattr*>(p);
            if (a->nla_len < sizeof(nlattr) || p + a->nla_len > end) break;
            if ((a->nla_type & NLA_TYPE_MASK) == NLMSGERR_ATTR_MSG) {
              ext_ack->assign(p + NLA_HDRLEN, strnlen(p + NLA_HDRLEN, a->nla_len - NLA_HDRLEN));
            }
            p += NLA_ALIGN(a->nla_len);
          }
        }
        return e->error;
      }
      if (reply != nullptr && reply->empty()) {
        reply->assign(static_cast<char*>(NLMSG_DATA(h)), h->nlmsg_len - NLMSG_LENGTH(0));
      }
    }
  }
  return -ETIMEDOUT;
}

absl::Status Rtnetlink::ToStatus(int err, absl::string_view what, const std::string& ext_ack) {
  if (err == 0) return absl::OkStatus();
  std::string msg = absl::StrCat(what, ": ", std::strerror(-err));
  if (!ext_ack.empty()) absl::StrAppend(&msg, " (", ext_ack, ")");
  switch (-err) {
    case ENODEV: return absl::NotFoundError(msg);
    case EPERM:
    case EACCES: return absl::PermissionDeniedError(absl::StrCat(msg, "; needs CAP_NET_ADMIN"));
    case EOPNOTSUPP: return absl::UnimplementedError(msg);
    case EEXIST: return absl::AlreadyExistsError(msg);
    default: return absl::UnavailableError(msg);
  }
}

absl::StatusOr<int> Rtnetlink::LinkIndex(absl::string_view name) {
  if (name.empty() || name.size() >= IFNAMSIZ) {
    return absl::InvalidArgumentError(absl::StrCat("bad interface name \"", name, "\""));
  }
  Request req(RTM_GETLINK, 0);
  req.Fixed<ifinfomsg>()->ifi_family = AF_UNSPEC;
  std::string n(name);
  req.Attr(IFLA_IFNAME, n.c_str(), n.size() + 1);
  std::string reply, ext_ack;
  int err = Transact(req.data(), req.size(), &reply, &ext_ack);
  if (err != 0) return ToStatus(err, absl::StrCat("look up link ", name), ext_ack);
  if (reply.size() < sizeof(ifinfomsg)) {
    return absl::InternalError(absl::StrCat("look up link ", name, ": short reply"));
  }
  ifinfomsg info;
  std::memcpy(&info, reply.data(), sizeof(info));
  return info.ifi_index;
}

absl::Status Rtnetlink::CreateLink(absl::string_view name, absl::string_view kind) {
  Request req(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
  req.Fixed<ifinfomsg>()->ifi_family = AF_UNSPEC;
  std::string n(name), k(kind);
  req.Attr(IFLA_IFNAME, n.c_str(), n.size() + 1);
  rtattr* linkinfo = req.Nest(IFLA_LINKINFO);
  req.Attr(IFLA_INFO_KIND, k.data(), k.size());
  req.EndNest(linkinfo);
  std::string ext_ack;
  int err = Transact(req.data(), req.size(), nullptr, &ext_ack);
  return ToStatus(err, absl::StrCat("create link ", name, " type ", kind), ext_ack);
}

absl::Status Rtnetlink::SetLinkUp(int ifindex) {
  Request req(RTM_NEWLINK, 0);
  ifinfomsg* info = req.Fixed<ifinfomsg>();
  info->ifi_family = AF_UNSPEC;
  info->ifi_index = ifindex;
  info->ifi_flags = IFF_UP;
  info->ifi_change = IFF_UP;
  std::string ext_ack;
  int err = Transact(req.data(), req.size(), nullptr, &ext_ack);
  return ToStatus(err, absl::StrCat("set link ", ifindex, " up"), ext_ack);
}

absl::Status Rtnetlink::DeleteLink(int ifindex) {
  Request req(RTM_DELLINK, 0);
  ifinfomsg* info = req.Fixed<ifinfomsg>();
  info->ifi_family = AF_UNSPEC;
  info->ifi_index = ifindex;
  std::string ext_ack;
  int err = Transact(req.data(), req.size(), nullptr, &ext_ack);
  if (err == -ENODEV) return absl::OkStatus();
  return ToStatus(err, absl::StrCat("delete link ", ifindex), ext_ack);
}

namespace {
void FillAddress(Request& req, int ifindex, Ipv4 ip) {
  ifaddrmsg* ifa = req.Fixed<ifaddrmsg>();
  ifa->ifa_family = AF_INET;
  ifa->ifa_prefixlen = 32;
  ifa->ifa_scope = RT_SCOPE_UNIVERSE;
  ifa->ifa_index = static_cast<uint32_t>(ifindex);
  uint32_t be = ip.be();
  req.Attr(IFA_LOCAL, &be, sizeof(be));
  req.Attr(IFA_ADDRESS, &be, sizeof(be));
}
}  // namespace

absl::Status Rtnetlink::AddAddress(int ifindex, Ipv4 ip) {
  Request req(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
  FillAddress(req, ifindex, ip);
  std::string ext_ack;
  int err = Transact(req.data(), req.size(), nullptr, &ext_ack);
  if (err == -EEXIST) return absl::OkStatus();
  return ToStatus(err, absl::StrCat("add address ", ip.ToString(), "/32 to link ", ifindex),
                  ext_ack);
}

absl::Status Rtnetlink::RemoveAddress(int ifindex, Ipv4 ip) {
  Request req(RTM_DELADDR, 0);
  FillAddress(req, ifindex, ip);
  std::string ext_ack;
  int err = Transact(req.data(), req.size(), nullptr, &ext_ack);
  if (err == -EADDRNOTAVAIL || err == -ENODEV) return absl::OkStatus();
  return ToStatus(err, absl::StrCat("remove address ", ip.ToString(), "/32 from link ", ifindex),
                  ext_ack);
}

namespace {
void FillLocalRoute(Request& req, int ifindex, Ipv4 dst, int prefix) {
  rtmsg* rt = req.Fixed<rtmsg>();
  rt->rtm_family = AF_INET;
  rt->rtm_dst_len = static_cast<unsigned char>(prefix);
  rt->rtm_table = RT_TABLE_LOCAL;
  rt->rtm_protocol = RTPROT_STATIC;
  rt->rtm_scope = RT_SCOPE_HOST;
  rt->rtm_type = RTN_LOCAL;
  uint32_t be = dst.be();
  req.Attr(RTA_DST, &be, sizeof(be));
  uint32_t oif = static_cast<uint32_t>(ifindex);
  req.Attr(RTA_OIF, &oif, sizeof(oif));
}
}  // namespace

absl::Status Rtnetlink::AddLocalRoute(int ifindex, Ipv4 dst, int prefix) {
  Request req(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE);
  FillLocalRoute(req, ifindex, dst, prefix);
  std::string ext_ack;
  int err = Transact(req.data(), req.size(), nullptr, &ext_ack);
  return ToStatus(err, absl::StrCat("add local route ", dst.ToString(), "/", prefix, " on link ", ifindex),
                  ext_ack);
}

absl::Status Rtnetlink::RemoveLocalRoute(int ifindex, Ipv4 dst, int prefix) {
  Request req(RTM_DELROUTE, 0);
  FillLocalRoute(req, ifindex, dst, prefix);
  std::string ext_ack;
  int err = Transact(req.data(), req.size(), nullptr, &ext_ack);
  if (err == -ESRCH || err == -ENODEV) return absl::OkStatus();
  return ToStatus(err, absl::StrCat("remove local route ", dst.ToString(), "/", prefix, " from link ", ifindex),
                  ext_ack);
}

absl::StatusOr<std::vector<Ipv4>> Rtnetlink::HostAddresses(int ifindex) {
  Request req(RTM_GETADDR, NLM_F_DUMP);
  req.hdr()->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;  // a dump ends with NLMSG_DONE, no ack
  req.Fixed<ifaddrmsg>()->ifa_family = AF_INET;
  nlmsghdr* hdr = req.hdr();
  hdr->nlmsg_seq = ++seq_;
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (sendto(fd_, req.data(), req.size(), 0, reinterpret_cast<sockaddr*>(&kernel),
             sizeof(kernel)) < 0) {
    return ToStatus(-errno, "list addresses", "");
  }
  std::vector<Ipv4> out;
  alignas(nlmsghdr) char buf[32768];
  // Bounded: a node's address dump is a handful of datagrams.
  for (int round = 0; round < 4096; ++round) {
    ssize_t n = recv(fd_, buf, sizeof(buf), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ToStatus(-errno, "list addresses", "");
    }
    int left = static_cast<int>(n);
    for (nlmsghdr* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
      if (h->nlmsg_seq != hdr->nlmsg_seq) continue;
      if (h->nlmsg_type == NLMSG_DONE) return out;
      if (h->nlmsg_type == NLMSG_ERROR) {
        return ToStatus(static_cast<nlmsgerr*>(NLMSG_DATA(h))->error, "list addresses", "");
      }
      if (h->nlmsg_type != RTM_NEWADDR) continue;
      auto* ifa = static_cast<ifaddrmsg*>(NLMSG_DATA(h));
      if (static_cast<int>(ifa->ifa_index) != ifindex || ifa->ifa_prefixlen != 32) continue;
      int attr_len = static_cast<int>(IFA_PAYLOAD(h));
      for (rtattr* a = IFA_RTA(ifa); RTA_OK(a, attr_len); a = RTA_NEXT(a, attr_len)) {
        if (a->rta_type == IFA_LOCAL && RTA_PAYLOAD(a) == 4) {
          uint32_t be;
          std::memcpy(&be, RTA_DATA(a), 4);
          out.push_back(Ipv4::FromBe(be));
        }
      }
    }
  }
  return absl::DeadlineExceededError("list addresses: no end of dump");
}

}  // namespace kpx::uring
