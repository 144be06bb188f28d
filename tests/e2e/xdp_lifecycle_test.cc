// XdpDataplane on the real kernel, inside a network namespace the test
// creates (a veth pair kpxt0/kpxt1, nothing in the root namespace), with a
// private pin directory: load + attach, rules in the maps, a hitless
// "restart" that adopts and rewrites nothing, Prune, Cleanup. Root only.
#include "dataplane/xdp/xdp_dataplane.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <dirent.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "dataplane/xdp/libbpf_maps.h"
#include "dataplane/xdp/unique_fd.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testlib/netns.h"
#include "tests/testlib/testlib.h"

namespace kpx::xdp {
namespace {

using controller::Backend;
using controller::FrontendKey;
using controller::ServiceRule;
using controller::ServiceTable;

constexpr char kPinPrefix[] = "/sys/fs/bpf/kpx-e2e-xdp-";

Ipv4 Ip(const char* s) { return *Ipv4::Parse(s); }

bool Exists(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0;
}

// Pin dirs of earlier test processes that died before their TearDown.
void CleanupOrphanPinDirs() {
  DIR* dir = opendir("/sys/fs/bpf");
  if (dir == nullptr) return;
  std::vector<std::string> orphans;
  const std::string prefix = std::string(kPinPrefix).substr(strlen("/sys/fs/bpf/"));
  while (dirent* e = readdir(dir)) {
    std::string name = e->d_name;
    if (name.rfind(prefix, 0) != 0) continue;
    std::vector<std::string> parts = absl::StrSplit(name.substr(prefix.size()), '-');
    int pid = 0;
    if (parts.size() == 2 && absl::SimpleAtoi(parts[0], &pid) && pid > 0 && kill(pid, 0) != 0 && errno == ESRCH) {
      orphans.push_back("/sys/fs/bpf/" + name);
    }
  }
  closedir(dir);
  for (const std::string& d : orphans) XdpDataplane::Cleanup(d).IgnoreError();
}

struct XdpState {
  uint32_t prog_id = 0;
  uint8_t mode = 0;
};

XdpState QueryXdp(const char* ifname) {
  bpf_xdp_query_opts opts{};
  opts.sz = sizeof(opts);
  XdpState s;
  if (bpf_xdp_query(static_cast<int>(if_nametoindex(ifname)), 0, &opts) == 0) {
    s.prog_id = opts.prog_id;
    s.mode = opts.attach_mode;
  }
  return s;
}

uint32_t LinkId(const std::string& path) {
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0) return 0;
  UniqueFd link(fd);
  bpf_link_info info{};
  uint32_t len = sizeof(info);
  return bpf_obj_get_info_by_fd(fd, &info, &len) == 0 ? info.id : 0;
}

// The kernel id of Maglev pool chunk `index` (0: absent).
uint32_t ChunkMapId(const std::string& pin_dir, uint32_t index) {
  int fd = bpf_obj_get((pin_dir + "/kpx_maglev").c_str());
  if (fd < 0) return 0;
  UniqueFd outer(fd);
  uint32_t id = 0;
  return bpf_map_lookup_elem(fd, &index, &id) == 0 ? id : 0;
}

ServiceRule Rule() {
  ServiceRule r;
  r.service.service = {"default", "web"};
  r.frontend = FrontendKey{Ip("10.96.0.10"), 80};
  for (const char* ip : {"10.250.0.2", "10.250.0.3"}) {
    Backend b;
    b.ip = Ip(ip);
    b.port = 8080;
    r.backends.push_back(b);
  }
  return r;
}

class XdpDataplaneE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string why = kpx::testing::MissingRootReason(); !why.empty()) GTEST_SKIP() << why;
    CleanupOrphanPinDirs();
    static std::atomic<int> seq{0};
    absl::StatusOr<std::unique_ptr<kpx::testing::NetNs>> ns = kpx::testing::NetNs::Create();
    ASSERT_TRUE(ns.ok()) << ns.status();
    ns_ = std::move(*ns);
    ASSERT_TRUE(AddVeth().ok());
    pin_dir_ = absl::StrCat(kPinPrefix, getpid(), "-", seq.fetch_add(1));
    auto scope = ns_->Enter();
    ASSERT_TRUE(scope.ok()) << scope.status();
    scope_ = std::move(*scope);
  }

  void TearDown() override {
    dp_.reset();
    if (!pin_dir_.empty() && scope_ != nullptr) {
      absl::Status s = XdpDataplane::Cleanup(pin_dir_);
      EXPECT_TRUE(s.ok()) << s;
    }
    scope_.reset();
    ns_.reset();
  }

  absl::Status AddVeth() {
    return ns_->Exec("ip link add kpxt0 type veth peer name kpxt1 && ip addr add 10.250.0.1/24 dev kpxt0 && "
                     "ip link set kpxt0 up && ip link set kpxt1 up").status();
  }

  XdpOptions Options() {
    XdpOptions o;
    o.pin_dir = pin_dir_;
    o.xdp_interfaces = std::vector<std::string>{"kpxt0"};
    o.tc_interfaces = {"kpxt1"};
    o.cluster_cidr = *ParseIpv4Cidr("10.250.0.0/16");
    o.map_sizes = MapSizes{.frontends = 256, .backends = 1024, .services = 256, .conntrack = 4096, .affinity = 256};
    return o;
  }

  std::unique_ptr<XdpDataplane> Create(XdpOptions o) {
    absl::StatusOr<std::unique_ptr<XdpDataplane>> dp = XdpDataplane::Create(std::move(o));
    EXPECT_TRUE(dp.ok()) << dp.status();
    return dp.ok() ? std::move(*dp) : nullptr;
  }

  std::unique_ptr<kpx::testing::NetNs> ns_;
  std::unique_ptr<kpx::testing::NetNs::Scope> scope_;
  std::string pin_dir_;
  std::unique_ptr<XdpDataplane> dp_;
};

TEST_F(XdpDataplaneE2E, ProbeSucceedsAndTouchesNoPins) {
  absl::Status s = XdpDataplane::Probe();
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_FALSE(Exists("/sys/fs/bpf/kpx_services"));  // the probe pins nothing
}

TEST_F(XdpDataplaneE2E, RulesRestartAdoptionPruneAndCleanup) {
  dp_ = Create(Options());
  ASSERT_NE(dp_, nullptr);
  ASSERT_EQ(dp_->xdp_attachments().size(), 1u);
  EXPECT_FALSE(dp_->xdp_attachments()[0].updated);
  const std::string link_path = pin_dir_ + "/links/xdp_kpxt0";
  const uint32_t link_id = LinkId(link_path);
  EXPECT_NE(link_id, 0u) << link_path << " not pinned";
  const XdpState xdp_before = QueryXdp("kpxt0");
  EXPECT_NE(xdp_before.prog_id, 0u);
  EXPECT_TRUE(HasKpxTc(static_cast<int>(if_nametoindex("kpxt1"))));
  EXPECT_THAT(dp_->node_addresses(), ::testing::ElementsAre(Ip("10.250.0.1")));

  ServiceRule rule = Rule();
  ServiceTable desired{{rule.frontend, rule}};
  ASSERT_TRUE(dp_->Apply(controller::Diff(desired, {})).ok());

  // What the programs will read, through a second, independent handle.
  absl::StatusOr<std::unique_ptr<LibbpfMaps>> maps = LibbpfMaps::Open(pin_dir_);
  ASSERT_TRUE(maps.ok()) << maps.status();
  auto services = (*maps)->ListServices();
  ASSERT_TRUE(services.ok());
  ASSERT_EQ(services->size(), 1u);
  const kpx_svc svc = (*services)[0].value;
  EXPECT_EQ((*services)[0].key.addr, Ip("10.96.0.10").be());
  EXPECT_EQ(svc.backend_count, 2u);
  EXPECT_EQ(svc.maglev_m, 251u);
  auto backends = (*maps)->ListBackends();
  ASSERT_TRUE(backends.ok());
  ASSERT_EQ(backends->size(), 2u);
  auto table = (*maps)->ReadMaglevSlots(svc.maglev_off, svc.maglev_m);
  ASSERT_TRUE(table.ok());
  ASSERT_EQ(table->size(), 251u);
  std::set<uint32_t> in_table(table->begin(), table->end());
  EXPECT_EQ(in_table, (std::set<uint32_t>{(*backends)[0].id, (*backends)[1].id}));
  auto config = (*maps)->ReadConfig();
  ASSERT_TRUE(config.ok());
  EXPECT_EQ(config->abi_version, static_cast<uint32_t>(KPX_ABI_VERSION));
  EXPECT_EQ(config->snat_addr, Ip("10.250.0.1").be());
  EXPECT_EQ(config->cluster_prefix, 16u);
  auto addrs = (*maps)->ListNodeAddresses();
  ASSERT_TRUE(addrs.ok());
  EXPECT_THAT(*addrs, ::testing::ElementsAre(Ip("10.250.0.1")));
  const uint32_t chunk = svc.maglev_off >> KPX_MAGLEV_CHUNK_SHIFT;
  const uint32_t chunk_before = ChunkMapId(pin_dir_, chunk);
  ASSERT_NE(chunk_before, 0u);

  // kpxd exits: everything stays.
  dp_.reset();
  EXPECT_EQ(QueryXdp("kpxt0").prog_id, xdp_before.prog_id);
  EXPECT_TRUE(HasKpxTc(static_cast<int>(if_nametoindex("kpxt1"))));

  // kpxd starts again: adopts, swaps the program inside the same link.
  dp_ = Create(Options());
  ASSERT_NE(dp_, nullptr);
  EXPECT_EQ(dp_->adoption().frontends, 1u);
  EXPECT_EQ(dp_->adoption().backends, 2u);
  ASSERT_EQ(dp_->xdp_attachments().size(), 1u);
  EXPECT_TRUE(dp_->xdp_attachments()[0].updated);
  EXPECT_EQ(LinkId(link_path), link_id);
  const XdpState xdp_after = QueryXdp("kpxt0");
  EXPECT_NE(xdp_after.prog_id, 0u);
  EXPECT_NE(xdp_after.prog_id, xdp_before.prog_id);  // the new program, same link
  ASSERT_TRUE(dp_->Apply(controller::Diff(desired, {})).ok());
  ASSERT_TRUE(dp_->Prune(desired).ok());
  // Same pool chunk (adopted and mapped, not recreated), same table.
  EXPECT_EQ(ChunkMapId(pin_dir_, chunk), chunk_before);
  auto table2 = (*maps)->ReadMaglevSlots(svc.maglev_off, svc.maglev_m);
  ASSERT_TRUE(table2.ok());
  EXPECT_EQ(*table2, *table);
  auto services2 = (*maps)->ListServices();
  ASSERT_TRUE(services2.ok());
  ASSERT_EQ(services2->size(), 1u);
  EXPECT_TRUE(SameBytes((*services2)[0].value, svc));
  auto backends2 = (*maps)->ListBackends();
  ASSERT_TRUE(backends2.ok());
  ASSERT_EQ(backends2->size(), 2u);
  EXPECT_EQ((*backends2)[0].id, (*backends)[0].id);
  EXPECT_EQ((*backends2)[1].id, (*backends)[1].id);
  dataplane::DataplaneStats stats = dp_->Stats();
  ASSERT_EQ(stats.frontends.size(), 1u);
  EXPECT_EQ(stats.frontends[0].backends.size(), 2u);
  auto counters = dp_->Counters();
  ASSERT_TRUE(counters.ok()) << counters.status();
  auto verdicts = dp_->VerdictStats();
  ASSERT_TRUE(verdicts.ok()) << verdicts.status();
  auto flows = dp_->ActiveFlows();
  ASSERT_TRUE(flows.ok()) << flows.status();

  // The Service goes away after the first sync of a later restart.
  ASSERT_TRUE(dp_->Prune(ServiceTable{}).ok());
  services2 = (*maps)->ListServices();
  ASSERT_TRUE(services2.ok());
  EXPECT_TRUE(services2->empty());
  EXPECT_EQ(dp_->PoolUsage().quarantined_slots, 251u);  // its range waits before reuse

  // kpxd --cleanup.
  dp_.reset();
  maps->reset();
  ASSERT_TRUE(XdpDataplane::Cleanup(pin_dir_).ok());
  EXPECT_FALSE(Exists(pin_dir_));
  EXPECT_EQ(QueryXdp("kpxt0").prog_id, 0u);
  EXPECT_FALSE(HasKpxTc(static_cast<int>(if_nametoindex("kpxt1"))));
  EXPECT_TRUE(XdpDataplane::Cleanup(pin_dir_).ok());  // idempotent
}

TEST_F(XdpDataplaneE2E, RecreatedInterfaceGetsAFreshLink) {
  dp_ = Create(Options());
  ASSERT_NE(dp_, nullptr);
  dp_.reset();
  ASSERT_TRUE(ns_->Exec("ip link del kpxt0").ok());  // takes kpxt1 with it
  ASSERT_TRUE(AddVeth().ok());
  EXPECT_EQ(QueryXdp("kpxt0").prog_id, 0u);
  dp_ = Create(Options());
  ASSERT_NE(dp_, nullptr);
  ASSERT_EQ(dp_->xdp_attachments().size(), 1u);
  EXPECT_FALSE(dp_->xdp_attachments()[0].updated);
  EXPECT_NE(QueryXdp("kpxt0").prog_id, 0u);
}

TEST_F(XdpDataplaneE2E, GenericModeAndPruneDetachesDroppedInterfaces) {
  XdpOptions o = Options();
  o.xdp_interfaces = std::vector<std::string>{"kpxt0", "kpxt1"};
  o.tc_interfaces.clear();
  o.xdp_mode = XdpMode::kGeneric;
  dp_ = Create(o);
  ASSERT_NE(dp_, nullptr);
  ASSERT_EQ(dp_->xdp_attachments().size(), 2u);
  EXPECT_TRUE(dp_->xdp_attachments()[0].generic);
  EXPECT_EQ(QueryXdp("kpxt1").mode, XDP_ATTACHED_SKB);
  dp_.reset();
  o.xdp_interfaces = std::vector<std::string>{"kpxt0"};
  dp_ = Create(o);
  ASSERT_NE(dp_, nullptr);
  ASSERT_EQ(dp_->xdp_attachments().size(), 1u);
  EXPECT_TRUE(dp_->xdp_attachments()[0].updated);
  EXPECT_TRUE(dp_->xdp_attachments()[0].generic);  // the link keeps its mode
  EXPECT_NE(QueryXdp("kpxt1").prog_id, 0u);  // nothing detached before the first sync
  ASSERT_TRUE(dp_->Prune(ServiceTable{}).ok());
  EXPECT_EQ(QueryXdp("kpxt1").prog_id, 0u);
  EXPECT_NE(QueryXdp("kpxt0").prog_id, 0u);
  EXPECT_FALSE(Exists(pin_dir_ + "/links/xdp_kpxt1"));
}

TEST_F(XdpDataplaneE2E, UnknownInterfaceFailsBeforeLoadingAnything) {
  XdpOptions o = Options();
  o.xdp_interfaces = std::vector<std::string>{"kpxt-nope"};
  absl::StatusOr<std::unique_ptr<XdpDataplane>> dp = XdpDataplane::Create(o);
  ASSERT_FALSE(dp.ok());
  EXPECT_TRUE(absl::IsNotFound(dp.status())) << dp.status();
  EXPECT_THAT(std::string(dp.status().message()), ::testing::HasSubstr("kpxt0"));  // lists what exists
  EXPECT_FALSE(Exists(pin_dir_));
}

}  // namespace
}  // namespace kpx::xdp
