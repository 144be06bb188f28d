/* kpx eBPF ABI: every struct and constant shared between the BPF programs
 * (the bpf/ kpx_*.bpf.c programs) and userspace (dataplane/xdp). The one place the layout lives;
 * sizes and offsets are checked by static_asserts in tests/bpf/abi_test.cc.
 * Maps are pinned under KPX_PIN_DIR "/v" KPX_ABI_VERSION; a layout change bumps
 * KPX_ABI_VERSION so an upgraded kpxd never misreads an old pinned map. */
#ifndef KPX_ABI_H
#define KPX_ABI_H

#include <linux/types.h>

#define KPX_ABI_VERSION 3
#define KPX_PIN_DIR "/sys/fs/bpf/kpx"

/* Capacities (userspace may lower/raise some with bpf_map__set_max_entries
 * before load; these are the defaults compiled into the programs). */
#define KPX_MAX_SERVICES 65536     /* service ids 1..KPX_MAX_SERVICES-1; 0 = none */
#define KPX_MAX_BACKENDS 262144    /* backend ids 1..KPX_MAX_BACKENDS-1; 0 = none */
#define KPX_MAX_FRONTENDS 131072   /* (vip, port, proto) keys */
#define KPX_CT_MAX 524288          /* conntrack entries (two per flow) */
#define KPX_CT_SYN_MAX 65536       /* half-open conntrack entries (one or two per handshake) */
#define KPX_AFFINITY_MAX 131072
#define KPX_MAGLEV_M_DEFAULT 16381 /* prime; per-service table size upper bound */
#define KPX_MAGLEV_M_MAX 65521
#define KPX_MAX_IFACES 256

/* Maglev slot pool: every service's table is a range of consecutive u32
 * slots (backend ids) inside one chunk; chunks are BPF_F_MMAPABLE arrays of
 * KPX_MAGLEV_CHUNK_SLOTS slots held by the outer map kpx_maglev, created by
 * userspace as the pool grows. A range never crosses a chunk, so a table of
 * M slots at global slot index off lives in chunk off >> SHIFT at slots
 * (off & MASK) .. (off & MASK) + M - 1. The kernel stores array values in
 * 8-byte elements, so a chunk of 2^18 slots is 2 MiB (userspace's mmap sees
 * slot i at byte 8 * i). The default limit of 1024 chunks (created only as
 * needed) holds 65536 services of 4093 slots. */
#define KPX_MAGLEV_CHUNK_SHIFT 18
#define KPX_MAGLEV_CHUNK_SLOTS (1U << KPX_MAGLEV_CHUNK_SHIFT)
#define KPX_MAGLEV_CHUNK_MASK (KPX_MAGLEV_CHUNK_SLOTS - 1)
#define KPX_MAGLEV_CHUNKS 1024 /* outer map entries (pool limit, --bpf-maglev-chunks) */

/* struct kpx_svc.flags */
#define KPX_SVC_F_AFFINITY 0x1  /* sessionAffinity: ClientIP */
#define KPX_SVC_F_NODEPORT 0x2  /* frontend key has addr 0: any node address */
#define KPX_SVC_F_EXTERNAL 0x4  /* NodePort/ExternalIP/LoadBalancer (masquerade candidates) */
#define KPX_SVC_F_LOCAL 0x8     /* traffic policy Local applied */

/* struct kpx_ct_entry.flags (both entries of a flow carry the same bits
 * except KPX_CT_F_REPLY). */
#define KPX_CT_F_REPLY 0x1      /* reverse entry: key is backend -> client (or SNAT address) */
#define KPX_CT_F_SEEN_REPLY 0x2
#define KPX_CT_F_SNAT 0x4       /* masqueraded: source rewritten to snat_addr:snat_port */
#define KPX_CT_F_LOCAL_VIP 0x8  /* the frontend is a node address: replies must be redirected */
#define KPX_CT_F_FIN_FWD 0x10   /* FIN seen from the client */
#define KPX_CT_F_FIN_REPLY 0x20 /* FIN seen from the backend */
#define KPX_CT_F_RST 0x40       /* RST seen (either side) */

/* A flow is closing once a RST or both FINs were seen: its entries expire
 * KPX_CT_CLOSING_NS after the last packet (instead of waiting for the LRU),
 * a new SYN on its 5-tuple picks a backend afresh, and it no longer counts
 * as active. Userspace's conntrack walk deletes expired entries. */
#define KPX_CT_CLOSING_NS 10000000000ULL

/* Masquerade source ports (host order) when kpx_config leaves them 0:
 * above Linux's default ip_local_port_range (32768-60999), so a SNAT port
 * never collides with a socket of the node's own. */
#define KPX_SNAT_PORT_MIN_DEFAULT 61000
#define KPX_SNAT_PORT_MAX_DEFAULT 65535
/* Ports tried (from a random start, then linearly) for a new masqueraded
 * flow before it is refused with a RST. */
#define KPX_SNAT_PROBES 32

/* Frontend lookup key. NodePorts use addr = 0 and are looked up only when the
 * destination is one of this node's addresses (map kpx_node_addrs). */
struct kpx_svc_key {
	__be32 addr;
	__be16 port;
	__u8 proto; /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 pad;
};

struct kpx_svc {
	__u32 id;                 /* index into kpx_svc_stats, affinity/conntrack svc_id */
	__u32 flags;              /* KPX_SVC_F_* */
	__u32 affinity_timeout_s; /* 0 unless KPX_SVC_F_AFFINITY */
	__u32 backend_count;      /* usable backends in the Maglev table; 0 = reject (RST) */
	__u32 maglev_m;           /* size of this service's Maglev table (0: none) */
	__u32 maglev_off;         /* global pool slot index of its first slot (see above) */
};

/* Backend slot. addr == 0 means "no such backend (removed)": a conntrack hit
 * on it is treated as a dead flow (RST), never forwarded. */
struct kpx_backend {
	__be32 addr;
	__be16 port;
	__u8 flags;
	__u8 pad;
};

/* Conntrack key, oriented as the packet travels. Forward entries:
 * client -> frontend (daddr/dport = VIP/port as received). Reverse entries:
 * backend -> client (saddr/sport = backend), used to restore the source of
 * replies to the frontend address. */
struct kpx_ct_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

/* Both entries of a flow hold the whole flow; the key says which way. A
 * masqueraded flow's reverse key is backend -> snat_addr:snat_port, and
 * that entry is also the reservation of the SNAT port (created with
 * BPF_NOEXIST, so two flows never share one). */
struct kpx_ct_entry {
	__u64 last_seen_ns;  /* CLOCK_MONOTONIC (coarse, kpx_now_ns()) of the last packet (closing: of the close) */
	__u32 backend_id;    /* where the flow goes */
	__u32 svc_id;
	__be32 vip;          /* frontend address (restored as the reply's source) */
	__be16 vport;        /* frontend port */
	__u8 flags;          /* KPX_CT_F_* */
	__u8 pad;
	__be32 client_addr;  /* the client as it sent (restored as the reply's destination) */
	__be32 snat_addr;    /* KPX_CT_F_SNAT: the forward packets' new source */
	__be16 client_port;
	__be16 snat_port;
	__u32 pad2;
};

struct kpx_affinity_key {
	__be32 client;
	__u32 svc_id;
};

struct kpx_affinity_val {
	__u64 last_seen_ns;
	__u32 backend_id;
	__u32 pad;
};

/* Per-CPU counters per service id. */
struct kpx_svc_stats {
	__u64 packets;
	__u64 bytes;
	__u64 new_flows;
	__u64 no_backend; /* SYNs answered with RST */
};

/* Per-CPU counters per verdict (index into kpx_verdict_stats). */
enum kpx_verdict {
	KPX_V_PASS_NON_SERVICE = 0, /* not for a frontend, not a reply: untouched */
	KPX_V_CT_HIT = 1,           /* established flow, forwarded to its backend */
	KPX_V_NEW_FLOW = 2,         /* SYN, backend picked, conntrack inserted */
	KPX_V_REPLY = 3,            /* backend -> client, reverse-NATed */
	KPX_V_NO_BACKEND = 4,       /* answered with TCP RST */
	KPX_V_DEAD_BACKEND = 5,     /* conntrack hit on a removed backend: RST */
	KPX_V_REDIRECT = 6,         /* after NAT: sent with bpf_redirect*(fib) */
	KPX_V_PASS_STACK = 7,       /* after NAT: passed to the kernel to route */
	KPX_V_MALFORMED = 8,        /* truncated/bad headers: passed untouched */
	KPX_V_FRAGMENT = 9,         /* IP fragment to a frontend: passed untouched */
	KPX_V_SNAT_NO_PORT = 10,    /* masquerade needed, no free SNAT port: RST */
	KPX_V_HANDSHAKE = 11,       /* client's ACK completing a handshake: half-open flow moved to kpx_ct */
	KPX_V_MAX = 12,
};

/* Global configuration, one entry (key 0). */
/* Masquerade rules (lb.h lb4_masq), after kube-proxy's iptables rules:
 *  - hairpin: a pod reaching itself through a frontend, always;
 *  - NodePort/externalIP/LoadBalancer frontends with traffic policy Cluster:
 *    clients outside cluster_cidr (every client when it is unknown);
 *  - ClusterIPs: clients outside cluster_cidr when it is known.
 * snat_addr 0 turns masquerading off. */
struct kpx_config {
	__u32 abi_version;
	__u32 flags;
	__be32 snat_addr;     /* node address used to masquerade (0 = never) */
	__be32 cluster_cidr;  /* pod CIDR: sources outside it are external */
	__u32 cluster_prefix; /* prefix length of cluster_cidr (0 = unknown) */
	__be32 cluster_mask;  /* netmask of cluster_prefix */
	__u16 snat_port_min;  /* host order; 0: KPX_SNAT_PORT_MIN_DEFAULT */
	__u16 snat_port_max;  /* host order, inclusive; 0: KPX_SNAT_PORT_MAX_DEFAULT */
	__u32 pad;
};

/* Map names as pinned under KPX_PIN_DIR/v<KPX_ABI_VERSION>/ (also the names
 * in the BPF objects):
 *   kpx_services      HASH        kpx_svc_key -> kpx_svc
 *   kpx_backends      ARRAY       __u32 backend id -> kpx_backend
 *   kpx_maglev        ARRAY_OF_MAPS __u32 chunk index -> chunk ARRAY (BPF_F_MMAPABLE,
 *                                 KPX_MAGLEV_CHUNK_SLOTS x __u32 backend id): the slot pool
 *   kpx_ct            LRU_HASH    kpx_ct_key -> kpx_ct_entry (established flows)
 *   kpx_ct_syn        LRU_HASH    kpx_ct_key -> kpx_ct_entry (half-open flows: SYN seen,
 *                                 handshake not completed; see lib/conntrack.h)
 *   kpx_affinity      LRU_HASH    kpx_affinity_key -> kpx_affinity_val
 *   kpx_node_addrs    HASH        __be32 -> __u8 (this node's addresses, for NodePorts)
 *   kpx_tx_ports      DEVMAP_HASH ifindex -> ifindex (interfaces safe for XDP_REDIRECT)
 *   kpx_svc_stats     PERCPU_ARRAY svc id -> kpx_svc_stats
 *   kpx_verdict_stats PERCPU_ARRAY enum kpx_verdict -> __u64
 *   kpx_config        ARRAY       0 -> kpx_config
 */

#endif /* KPX_ABI_H */
