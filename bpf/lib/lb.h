/* The load-balancing decision, independent of the hook: which frontend a
 * packet is for, which backend serves it (conntrack, ClientIP affinity,
 * Maglev), or which frontend a reply must appear to come from. The entry
 * programs carry out the decision (nat.h, rst.h, fib.h). */
#ifndef KPX_LIB_LB_H
#define KPX_LIB_LB_H

#include "lib/conntrack.h"
#include "lib/maps.h"
#include "lib/parse.h"

#define KPX_NSEC_PER_SEC 1000000000ULL

/* Consecutive Maglev slots tried when a slot names a removed backend (the
 * table is being rebuilt by userspace); then the SYN is rejected. */
#define KPX_MAGLEV_PROBES 4

enum kpx_action {
	KPX_A_PASS = 0, /* leave the packet alone */
	KPX_A_DNAT,     /* destination := addr:port (client -> backend) */
	KPX_A_SNAT,     /* source := addr:port (backend reply -> client) */
	KPX_A_RST,      /* answer with a TCP RST */
	KPX_A_DROP,     /* silently drop (a RST towards a dead backend) */
};

struct kpx_decision {
	__u32 action;  /* enum kpx_action */
	__u32 verdict; /* enum kpx_verdict to count */
	__u32 svc_id;  /* 0 when the packet belongs to no service */
	__be32 addr;
	__be16 port;
	__u16 pad;
};

KPX_INLINE struct kpx_svc *lb4_lookup_service(__be32 addr, __be16 port, __u8 proto)
{
	struct kpx_svc_key k = { .addr = addr, .port = port, .proto = proto, .pad = 0 };

	return bpf_map_lookup_elem(&kpx_services, &k);
}

KPX_INLINE int lb4_is_node_addr(__be32 addr)
{
	return bpf_map_lookup_elem(&kpx_node_addrs, &addr) != 0;
}

/* A live backend, or NULL for id 0, an id out of range or a removed slot. */
KPX_INLINE struct kpx_backend *lb4_backend(__u32 id)
{
	struct kpx_backend *be;

	if (!id)
		return 0;
	be = bpf_map_lookup_elem(&kpx_backends, &id);
	if (!be || !be->addr)
		return 0;
	return be;
}

/* 5-tuple hash, unseeded on purpose: every node picks the same backend for
 * a flow, so a flow that moves between nodes (ECMP change) keeps it. */
KPX_INLINE __u32 lb4_hash(const struct kpx_pkt *p)
{
	__u64 h = ((__u64)p->saddr << 32) | p->daddr;

	h ^= (((__u64)p->sport << 16) | p->dport | ((__u64)p->proto << 32)) *
	     0x9e3779b97f4a7c15ULL;
	/* murmur3 fmix64 */
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return (__u32)h;
}

KPX_INLINE __u32 lb4_maglev_pick(const struct kpx_svc *svc, __u32 hash)
{
	__u32 m = svc->maglev_m;
	__u32 svc_id = svc->id;
	__u32 slot;
	void *table;

	if (!m)
		return 0;
	table = bpf_map_lookup_elem(&kpx_maglev, &svc_id);
	if (!table)
		return 0;
	slot = hash % m;
	for (int i = 0; i < KPX_MAGLEV_PROBES; i++) {
		__u32 *be_id = bpf_map_lookup_elem(table, &slot);

		if (!be_id)
			return 0; /* maglev_m larger than the table: inconsistent */
		if (lb4_backend(*be_id))
			return *be_id;
		if (++slot >= m)
			slot = 0;
	}
	return 0;
}

/* Backend for a new flow: the client's pinned backend while the affinity
 * entry is fresh and the backend alive, else a Maglev pick (then pinned). */
KPX_INLINE __u32 lb4_pick(const struct kpx_pkt *p, const struct kpx_svc *svc, __u64 now)
{
	struct kpx_affinity_key ak = { .client = p->saddr, .svc_id = svc->id };
	struct kpx_affinity_val *av;
	struct kpx_affinity_val nv = {};
	__u32 id;

	if (!(svc->flags & KPX_SVC_F_AFFINITY))
		return lb4_maglev_pick(svc, lb4_hash(p));

	av = bpf_map_lookup_elem(&kpx_affinity, &ak);
	if (av) {
		__u64 timeout = (__u64)svc->affinity_timeout_s * KPX_NSEC_PER_SEC;

		id = av->backend_id;
		/* Signed: a stamp from a finer clock (userspace) may lie a
		 * tick after kpx_now_ns(). */
		if ((__s64)(now - av->last_seen_ns) <= (__s64)timeout && lb4_backend(id)) {
			av->last_seen_ns = now;
			return id;
		}
	}
	id = lb4_maglev_pick(svc, lb4_hash(p));
	if (id) {
		nv.last_seen_ns = now;
		nv.backend_id = id;
		bpf_map_update_elem(&kpx_affinity, &ak, &nv, BPF_ANY);
	}
	return id;
}

KPX_INLINE void lb4_set_nat(struct kpx_decision *d, __u32 action, __u32 verdict,
			    __be32 addr, __be16 port)
{
	d->action = action;
	d->verdict = verdict;
	d->addr = addr;
	d->port = port;
}

/* A packet to frontend svc. */
KPX_INLINE void lb4_forward(const struct kpx_pkt *p, const struct kpx_svc *svc,
			    struct kpx_decision *d)
{
	__u8 flags = p->tcp_flags;
	int syn = (flags & (KPX_TCP_SYN | KPX_TCP_ACK | KPX_TCP_RST)) == KPX_TCP_SYN;
	__u64 now = kpx_now_ns();
	struct kpx_ct_entry *e = ct4_lookup(p);
	struct kpx_backend *be;
	__u32 id;

	if (e) {
		be = lb4_backend(e->backend_id);
		d->svc_id = e->svc_id;
		if (be) {
			ct4_touch(e, now);
			lb4_set_nat(d, KPX_A_DNAT, KPX_V_CT_HIT, be->addr, be->port);
			return;
		}
		if (!syn) {
			/* Established flow whose backend is gone: fail fast.
			 * The entry stays so retransmissions get a RST too. */
			d->verdict = KPX_V_DEAD_BACKEND;
			d->action = (flags & KPX_TCP_RST) ? KPX_A_DROP : KPX_A_RST;
			return;
		}
		/* Tuple reused after its backend went away: a new flow. */
	} else if (!syn) {
		/* Mid-flow packet we never saw start (e.g. opened before kpx
		 * ran): not ours, the kernel decides. */
		return;
	}

	d->svc_id = svc->id;
	if (svc->backend_count == 0) {
		d->action = KPX_A_RST;
		d->verdict = KPX_V_NO_BACKEND;
		return;
	}
	id = lb4_pick(p, svc, now);
	be = lb4_backend(id);
	if (!be) {
		d->action = KPX_A_RST;
		d->verdict = KPX_V_NO_BACKEND;
		return;
	}
	ct4_create(p, be, id, svc->id, now);
	lb4_set_nat(d, KPX_A_DNAT, KPX_V_NEW_FLOW, be->addr, be->port);
}

/* A reply from a backend (reverse conntrack entry), or 0. */
KPX_INLINE int lb4_reply(const struct kpx_pkt *p, struct kpx_decision *d)
{
	struct kpx_ct_entry *e = ct4_lookup(p);

	if (!e || !(e->flags & KPX_CT_F_REPLY))
		return 0;
	ct4_touch(e, kpx_now_ns());
	if (!(e->flags & KPX_CT_F_SEEN_REPLY)) {
		/* First reply: mark both entries once (the forward one tells
		 * userspace this backend answered). */
		struct kpx_ct_key fk = {
			.saddr = p->daddr,
			.daddr = e->vip,
			.sport = p->dport,
			.dport = e->vport,
			.proto = p->proto,
		};
		struct kpx_ct_entry *fe = bpf_map_lookup_elem(&kpx_ct, &fk);

		e->flags |= KPX_CT_F_SEEN_REPLY;
		if (fe)
			fe->flags |= KPX_CT_F_SEEN_REPLY;
	}
	d->svc_id = e->svc_id;
	lb4_set_nat(d, KPX_A_SNAT, KPX_V_REPLY, e->vip, e->vport);
	return 1;
}

/* Frontend lookup, then reply lookup, then NodePorts (addr 0) for packets to
 * this node's own addresses. Only TCP for now: UDP frontends pass. */
KPX_INLINE void lb4_decide(const struct kpx_pkt *p, struct kpx_decision *d)
{
	struct kpx_svc *svc;

	d->action = KPX_A_PASS;
	d->verdict = KPX_V_PASS_NON_SERVICE;
	d->svc_id = 0;
	d->addr = 0;
	d->port = 0;
	d->pad = 0;
	/* l4 is tested too so the verifier, which cannot tie p->proto to the
	 * parse branch that set p->l4, sees a TCP header on every path on. */
	if (p->proto != IPPROTO_TCP || !p->l4)
		return;
	svc = lb4_lookup_service(p->daddr, p->dport, IPPROTO_TCP);
	if (!svc) {
		/* Replies first: a reply to a client on this node must not be
		 * mistaken for a NodePort by its destination port. */
		if (lb4_reply(p, d))
			return;
		if (!lb4_is_node_addr(p->daddr))
			return;
		svc = lb4_lookup_service(0, p->dport, IPPROTO_TCP);
		if (!svc)
			return;
	}
	lb4_forward(p, svc, d);
}

#endif /* KPX_LIB_LB_H */
