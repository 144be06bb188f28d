/* TCP connection tracking in the kpx_ct LRU map: two entries per flow. The
 * forward entry (client -> frontend) keeps a flow on its backend across
 * Maglev table changes; the reverse entry (backend -> client) tells the
 * reply path which frontend address to restore. No state machine: a flow
 * starts at a SYN and lives until the LRU evicts it. */
#ifndef KPX_LIB_CONNTRACK_H
#define KPX_LIB_CONNTRACK_H

#include "lib/maps.h"
#include "lib/parse.h"

/* last_seen is written at most this often per entry: a store on every packet
 * would bounce the entry's cache line between CPUs for nothing. */
#define KPX_CT_REFRESH_NS 1000000000ULL

/* Key of the packet as it travels (forward lookups and reply lookups alike). */
KPX_INLINE void ct4_key(const struct kpx_pkt *p, struct kpx_ct_key *k)
{
	k->saddr = p->saddr;
	k->daddr = p->daddr;
	k->sport = p->sport;
	k->dport = p->dport;
	k->proto = p->proto;
	k->pad[0] = 0;
	k->pad[1] = 0;
	k->pad[2] = 0;
}

KPX_INLINE struct kpx_ct_entry *ct4_lookup(const struct kpx_pkt *p)
{
	struct kpx_ct_key k;

	ct4_key(p, &k);
	return bpf_map_lookup_elem(&kpx_ct, &k);
}

KPX_INLINE void ct4_touch(struct kpx_ct_entry *e, __u64 now)
{
	if (now - e->last_seen_ns > KPX_CT_REFRESH_NS)
		e->last_seen_ns = now;
}

/* Records a new flow p -> backend be (id be_id) of service svc_id, both
 * directions. Failure (map full of unevictable entries) is not fatal: the
 * packet is still forwarded; its flow will simply be re-picked. */
KPX_INLINE void ct4_create(const struct kpx_pkt *p, const struct kpx_backend *be,
			   __u32 be_id, __u32 svc_id, __u64 now)
{
	struct kpx_ct_key k;
	struct kpx_ct_entry e = {
		.last_seen_ns = now,
		.backend_id = be_id,
		.svc_id = svc_id,
		.vip = p->daddr,
		.vport = p->dport,
		.flags = 0,
	};

	ct4_key(p, &k);
	bpf_map_update_elem(&kpx_ct, &k, &e, BPF_ANY);

	k.saddr = be->addr;
	k.sport = be->port;
	k.daddr = p->saddr;
	k.dport = p->sport;
	e.flags = KPX_CT_F_REPLY;
	bpf_map_update_elem(&kpx_ct, &k, &e, BPF_ANY);
}

#endif /* KPX_LIB_CONNTRACK_H */
