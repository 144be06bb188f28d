/* Every map of the kpx ABI (bpf/include/kpx/abi.h), declared once for all
 * entry programs. Each map is pinned by name: objects opened with the same
 * pin_root_path (kpx_xdp and kpx_tc) share one instance of each. */
#ifndef KPX_LIB_MAPS_H
#define KPX_LIB_MAPS_H

#include "lib/common.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KPX_MAX_FRONTENDS);
	__type(key, struct kpx_svc_key);
	__type(value, struct kpx_svc);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpx_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, KPX_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct kpx_backend);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpx_backends SEC(".maps");

/* Template of a Maglev pool chunk: every chunk has exactly this type, size
 * and flags (userspace creates them with the same; no BPF_F_INNER_MAP, so the
 * verifier knows the size and inlines the lookup). BPF_F_MMAPABLE lets
 * userspace write slots with plain stores instead of one syscall each. */
struct kpx_maglev_chunk {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, KPX_MAGLEV_CHUNK_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, KPX_MAGLEV_CHUNKS);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct kpx_maglev_chunk); /* must be last */
} kpx_maglev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, KPX_CT_MAX);
	__type(key, struct kpx_ct_key);
	__type(value, struct kpx_ct_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpx_ct SEC(".maps");

/* Half-open flows (SYN seen, client's ACK not yet): same key and entry as
 * kpx_ct, a separate LRU so that a SYN flood churns only this map and never
 * evicts an established flow (lib/conntrack.h). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, KPX_CT_SYN_MAX);
	__type(key, struct kpx_ct_key);
	__type(value, struct kpx_ct_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpx_ct_syn SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, KPX_AFFINITY_MAX);
	__type(key, struct kpx_affinity_key);
	__type(value, struct kpx_affinity_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpx_affinity SEC(".maps");

/* This node's addresses: NodePort frontends (addr 0) match only these. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KPX_MAX_IFACES);
	__type(key, __be32);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpx_node_addrs SEC(".maps");

/* Interfaces a NATed packet may be redirected to directly, and XDP ingress
 * devices on which a RST may leave with XDP_TX. Userspace lists only devices
 * where that is safe (a veth whose peer has no XDP/GRO drops both).
 * Loader note: the kernel adds BPF_F_RDONLY_PROG to every devmap it creates
 * and libbpf 1.1 then finds a pinned kpx_tx_ports "incompatible"; when the
 * pin exists, set map_flags = BPF_F_RDONLY_PROG on this map before load
 * (creating it with that flag is refused). */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, KPX_MAX_IFACES);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpx_tx_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KPX_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct kpx_svc_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpx_svc_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KPX_V_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpx_verdict_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kpx_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kpx_config SEC(".maps");

#endif /* KPX_LIB_MAPS_H */
