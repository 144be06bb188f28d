// The ABI contract of bpf/include/kpx/abi.h checked from both sides: C++
// static_asserts pin every size and offset, and the BTF that clang emitted
// for the BPF objects must agree with them (same sizes, same member
// offsets), as must every map's type, key and value size and capacity.
#include "kpx/abi.h"

#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include <cstddef>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kpx_tc.skel.h"
#include "kpx_xdp.skel.h"

namespace {

static_assert(sizeof(kpx_svc_key) == 8);
static_assert(offsetof(kpx_svc_key, addr) == 0);
static_assert(offsetof(kpx_svc_key, port) == 4);
static_assert(offsetof(kpx_svc_key, proto) == 6);
static_assert(offsetof(kpx_svc_key, pad) == 7);

static_assert(sizeof(kpx_svc) == 24);
static_assert(offsetof(kpx_svc, id) == 0);
static_assert(offsetof(kpx_svc, flags) == 4);
static_assert(offsetof(kpx_svc, affinity_timeout_s) == 8);
static_assert(offsetof(kpx_svc, backend_count) == 12);
static_assert(offsetof(kpx_svc, maglev_m) == 16);
static_assert(offsetof(kpx_svc, maglev_off) == 20);

static_assert(sizeof(kpx_backend) == 8);
static_assert(offsetof(kpx_backend, addr) == 0);
static_assert(offsetof(kpx_backend, port) == 4);
static_assert(offsetof(kpx_backend, flags) == 6);
static_assert(offsetof(kpx_backend, pad) == 7);

static_assert(sizeof(kpx_ct_key) == 16);
static_assert(offsetof(kpx_ct_key, saddr) == 0);
static_assert(offsetof(kpx_ct_key, daddr) == 4);
static_assert(offsetof(kpx_ct_key, sport) == 8);
static_assert(offsetof(kpx_ct_key, dport) == 10);
static_assert(offsetof(kpx_ct_key, proto) == 12);
static_assert(offsetof(kpx_ct_key, pad) == 13);

static_assert(sizeof(kpx_ct_entry) == 40);
static_assert(offsetof(kpx_ct_entry, last_seen_ns) == 0);
static_assert(offsetof(kpx_ct_entry, backend_id) == 8);
static_assert(offsetof(kpx_ct_entry, svc_id) == 12);
static_assert(offsetof(kpx_ct_entry, vip) == 16);
static_assert(offsetof(kpx_ct_entry, vport) == 20);
static_assert(offsetof(kpx_ct_entry, flags) == 22);
static_assert(offsetof(kpx_ct_entry, pad) == 23);
static_assert(offsetof(kpx_ct_entry, client_addr) == 24);
static_assert(offsetof(kpx_ct_entry, snat_addr) == 28);
static_assert(offsetof(kpx_ct_entry, client_port) == 32);
static_assert(offsetof(kpx_ct_entry, snat_port) == 34);
static_assert(offsetof(kpx_ct_entry, pad2) == 36);

static_assert(sizeof(kpx_affinity_key) == 8);
static_assert(offsetof(kpx_affinity_key, client) == 0);
static_assert(offsetof(kpx_affinity_key, svc_id) == 4);

static_assert(sizeof(kpx_affinity_val) == 16);
static_assert(offsetof(kpx_affinity_val, last_seen_ns) == 0);
static_assert(offsetof(kpx_affinity_val, backend_id) == 8);
static_assert(offsetof(kpx_affinity_val, pad) == 12);

static_assert(sizeof(kpx_svc_stats) == 32);
static_assert(offsetof(kpx_svc_stats, packets) == 0);
static_assert(offsetof(kpx_svc_stats, bytes) == 8);
static_assert(offsetof(kpx_svc_stats, new_flows) == 16);
static_assert(offsetof(kpx_svc_stats, no_backend) == 24);

static_assert(sizeof(kpx_config) == 32);
static_assert(offsetof(kpx_config, abi_version) == 0);
static_assert(offsetof(kpx_config, flags) == 4);
static_assert(offsetof(kpx_config, snat_addr) == 8);
static_assert(offsetof(kpx_config, cluster_cidr) == 12);
static_assert(offsetof(kpx_config, cluster_prefix) == 16);
static_assert(offsetof(kpx_config, cluster_mask) == 20);
static_assert(offsetof(kpx_config, snat_port_min) == 24);
static_assert(offsetof(kpx_config, snat_port_max) == 26);
static_assert(offsetof(kpx_config, pad) == 28);

static_assert(KPX_ABI_VERSION == 3);
static_assert(KPX_V_MAX == 12);
static_assert(KPX_SNAT_PORT_MIN_DEFAULT <= KPX_SNAT_PORT_MAX_DEFAULT);
static_assert(KPX_MAGLEV_M_DEFAULT <= KPX_MAGLEV_M_MAX);
static_assert(KPX_MAGLEV_M_MAX <= KPX_MAGLEV_CHUNK_SLOTS, "a table fits one pool chunk");
static_assert(uint64_t{KPX_MAGLEV_CHUNKS} * KPX_MAGLEV_CHUNK_SLOTS <= (uint64_t{1} << 32), "pool offsets are u32");

struct Member {
  const char* name;
  size_t offset;
};
struct StructLayout {
  const char* name;
  size_t size;
  std::vector<Member> members;
};

#define KPX_M(type, field) \
  Member { #field, offsetof(type, field) }

const std::vector<StructLayout>& Layouts() {
  static const std::vector<StructLayout> layouts = {
      {"kpx_svc_key",
       sizeof(kpx_svc_key),
       {KPX_M(kpx_svc_key, addr), KPX_M(kpx_svc_key, port), KPX_M(kpx_svc_key, proto),
        KPX_M(kpx_svc_key, pad)}},
      {"kpx_svc",
       sizeof(kpx_svc),
       {KPX_M(kpx_svc, id), KPX_M(kpx_svc, flags), KPX_M(kpx_svc, affinity_timeout_s),
        KPX_M(kpx_svc, backend_count), KPX_M(kpx_svc, maglev_m), KPX_M(kpx_svc, maglev_off)}},
      {"kpx_backend",
       sizeof(kpx_backend),
       {KPX_M(kpx_backend, addr), KPX_M(kpx_backend, port), KPX_M(kpx_backend, flags),
        KPX_M(kpx_backend, pad)}},
      {"kpx_ct_key",
       sizeof(kpx_ct_key),
       {KPX_M(kpx_ct_key, saddr), KPX_M(kpx_ct_key, daddr), KPX_M(kpx_ct_key, sport),
        KPX_M(kpx_ct_key, dport), KPX_M(kpx_ct_key, proto), KPX_M(kpx_ct_key, pad)}},
      {"kpx_ct_entry",
       sizeof(kpx_ct_entry),
       {KPX_M(kpx_ct_entry, last_seen_ns), KPX_M(kpx_ct_entry, backend_id),
        KPX_M(kpx_ct_entry, svc_id), KPX_M(kpx_ct_entry, vip), KPX_M(kpx_ct_entry, vport),
        KPX_M(kpx_ct_entry, flags), KPX_M(kpx_ct_entry, pad), KPX_M(kpx_ct_entry, client_addr),
        KPX_M(kpx_ct_entry, snat_addr), KPX_M(kpx_ct_entry, client_port),
        KPX_M(kpx_ct_entry, snat_port), KPX_M(kpx_ct_entry, pad2)}},
      {"kpx_affinity_key",
       sizeof(kpx_affinity_key),
       {KPX_M(kpx_affinity_key, client), KPX_M(kpx_affinity_key, svc_id)}},
      {"kpx_affinity_val",
       sizeof(kpx_affinity_val),
       {KPX_M(kpx_affinity_val, last_seen_ns), KPX_M(kpx_affinity_val, backend_id),
        KPX_M(kpx_affinity_val, pad)}},
      {"kpx_svc_stats",
       sizeof(kpx_svc_stats),
       {KPX_M(kpx_svc_stats, packets), KPX_M(kpx_svc_stats, bytes), KPX_M(kpx_svc_stats, new_flows),
        KPX_M(kpx_svc_stats, no_backend)}},
      {"kpx_config",
       sizeof(kpx_config),
       {KPX_M(kpx_config, abi_version), KPX_M(kpx_config, flags), KPX_M(kpx_config, snat_addr),
        KPX_M(kpx_config, cluster_cidr), KPX_M(kpx_config, cluster_prefix),
        KPX_M(kpx_config, cluster_mask), KPX_M(kpx_config, snat_port_min),
        KPX_M(kpx_config, snat_port_max), KPX_M(kpx_config, pad)}},
  };
  return layouts;
}

struct MapSpec {
  const char* name;
  bpf_map_type type;
  uint32_t key_size;
  uint32_t value_size;
  uint32_t max_entries;
};

const std::vector<MapSpec>& Maps() {
  static const std::vector<MapSpec> maps = {
      {"kpx_services", BPF_MAP_TYPE_HASH, sizeof(kpx_svc_key), sizeof(kpx_svc), KPX_MAX_FRONTENDS},
      {"kpx_backends", BPF_MAP_TYPE_ARRAY, 4, sizeof(kpx_backend), KPX_MAX_BACKENDS},
      {"kpx_maglev", BPF_MAP_TYPE_ARRAY_OF_MAPS, 4, 4, KPX_MAGLEV_CHUNKS},
      {"kpx_ct", BPF_MAP_TYPE_LRU_HASH, sizeof(kpx_ct_key), sizeof(kpx_ct_entry), KPX_CT_MAX},
      {"kpx_ct_syn", BPF_MAP_TYPE_LRU_HASH, sizeof(kpx_ct_key), sizeof(kpx_ct_entry), KPX_CT_SYN_MAX},
      {"kpx_affinity", BPF_MAP_TYPE_LRU_HASH, sizeof(kpx_affinity_key), sizeof(kpx_affinity_val),
       KPX_AFFINITY_MAX},
      {"kpx_node_addrs", BPF_MAP_TYPE_HASH, 4, 1, KPX_MAX_IFACES},
      {"kpx_tx_ports", BPF_MAP_TYPE_DEVMAP_HASH, 4, 4, KPX_MAX_IFACES},
      {"kpx_svc_stats", BPF_MAP_TYPE_PERCPU_ARRAY, 4, sizeof(kpx_svc_stats), KPX_MAX_SERVICES},
      {"kpx_verdict_stats", BPF_MAP_TYPE_PERCPU_ARRAY, 4, 8, KPX_V_MAX},
      {"kpx_config", BPF_MAP_TYPE_ARRAY, 4, sizeof(kpx_config), 1},
  };
  return maps;
}

// Opening (not loading) a skeleton needs no privileges.
template <typename Skel>
class Opened {
 public:
  Opened() : skel_(Skel::open()) {}
  ~Opened() {
    if (skel_ != nullptr) Skel::destroy(skel_);
  }
  bpf_object* obj() const { return skel_ == nullptr ? nullptr : skel_->obj; }

 private:
  Skel* skel_;
};

void CheckObject(bpf_object* obj, const char* what) {
  ASSERT_NE(obj, nullptr) << what << " failed to open";
  const btf* b = bpf_object__btf(obj);
  ASSERT_NE(b, nullptr) << what << " has no BTF";
  for (const StructLayout& s : Layouts()) {
    SCOPED_TRACE(std::string(what) + " struct " + s.name);
    int id = btf__find_by_name_kind(b, s.name, BTF_KIND_STRUCT);
    ASSERT_GT(id, 0) << "not in BTF";
    const btf_type* t = btf__type_by_id(b, id);
    EXPECT_EQ(size_t(t->size), s.size);
    ASSERT_EQ(size_t(btf_vlen(t)), s.members.size());
    const btf_member* m = btf_members(t);
    for (size_t i = 0; i < s.members.size(); ++i) {
      EXPECT_STREQ(btf__name_by_offset(b, m[i].name_off), s.members[i].name);
      EXPECT_EQ(size_t(btf_member_bit_offset(t, i)), s.members[i].offset * 8) << s.members[i].name;
    }
  }
  for (const MapSpec& m : Maps()) {
    SCOPED_TRACE(std::string(what) + " map " + m.name);
    bpf_map* map = bpf_object__find_map_by_name(obj, m.name);
    ASSERT_NE(map, nullptr);
    EXPECT_EQ(bpf_map__type(map), m.type);
    EXPECT_EQ(bpf_map__key_size(map), m.key_size);
    EXPECT_EQ(bpf_map__value_size(map), m.value_size);
    EXPECT_EQ(bpf_map__max_entries(map), m.max_entries);
  }
  // Maglev pool chunks: what LibbpfMaps::AddMaglevChunks creates must match
  // this template exactly (type, size, flags) or the outer map refuses it.
  bpf_map* inner = bpf_map__inner_map(bpf_object__find_map_by_name(obj, "kpx_maglev"));
  ASSERT_NE(inner, nullptr);
  EXPECT_EQ(bpf_map__type(inner), BPF_MAP_TYPE_ARRAY);
  EXPECT_EQ(bpf_map__map_flags(inner), uint32_t(BPF_F_MMAPABLE));
  EXPECT_EQ(bpf_map__max_entries(inner), uint32_t(KPX_MAGLEV_CHUNK_SLOTS));
  EXPECT_EQ(bpf_map__value_size(inner), 4u);
}

TEST(Abi, XdpObjectMatchesHeader) {
  Opened<kpx_xdp> xdp;
  CheckObject(xdp.obj(), "kpx_xdp");
}

TEST(Abi, TcObjectMatchesHeader) {
  Opened<kpx_tc> tc;
  CheckObject(tc.obj(), "kpx_tc");
}

}  // namespace
