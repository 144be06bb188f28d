// LinkWatcher: pod veths appear and disappear while kpxd runs. It follows
// rtnetlink link events (RTNLGRP_LINK) of one network namespace on its own
// thread and reports every veth that exists or appears, and every one that
// goes, so XdpDataplane can attach kpx_tc to new pod veths.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "dataplane/xdp/unique_fd.h"

namespace kpx::xdp {

struct LinkEvent {
  bool added = false;  // RTM_NEWLINK (also sent again on state changes), else RTM_DELLINK
  std::string name;
  int ifindex = 0;
  std::string kind;  // IFLA_INFO_KIND: "veth", "dummy", ... ("" for physical NICs)
};

class LinkWatcher {
 public:
  using Callback = std::function<void(const LinkEvent&)>;

  // Subscribes a netlink socket in the calling thread's network namespace
  // (the socket stays there whichever thread reads it), then asks for a dump
  // of the links, so a link that appeared before the subscription is
  // reported too (as added). `cb` runs on the watcher's thread.
  static absl::StatusOr<std::unique_ptr<LinkWatcher>> Start(Callback cb);
  // Stops and joins the thread.
  ~LinkWatcher();
  LinkWatcher(const LinkWatcher&) = delete;
  LinkWatcher& operator=(const LinkWatcher&) = delete;

  // Messages parsed so far (for tests waiting on progress).
  uint64_t events() const { return events_.load(); }

 private:
  LinkWatcher(UniqueFd sock, UniqueFd stop, Callback cb);
  void Run();
  bool RequestDump();
  void Parse(const char* buf, size_t len);

  UniqueFd sock_;
  UniqueFd stop_;  // eventfd
  Callback cb_;
  std::atomic<uint64_t> events_{0};
  std::thread thread_;
};

}  // namespace kpx::xdp
