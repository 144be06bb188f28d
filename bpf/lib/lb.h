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
	KPX_A_DNAT,     /* destination := addr:port (client -> backend); nat2: source := addr2:port2 */
	KPX_A_SNAT,     /* source := addr:port (backend reply -> client); nat2: destination := addr2:port2 */
	KPX_A_RST,      /* answer with a TCP RST */
	KPX_A_DROP,     /* silently drop (a RST towards a dead backend) */
	KPX_A_DEFER,    /* XDP only: leave it, untouched and uncounted, to tc behind */
};

struct kpx_decision {
	__u32 action;  /* enum kpx_action */
	__u32 verdict; /* enum kpx_verdict to count */
	__u32 svc_id;  /* 0 when the packet belongs to no service */
	__be32 addr;
	__be32 addr2;
	__be16 port;
	__be16 port2;
	__u8 nat2;          /* the other address:port is rewritten too (masquerade) */
	__u8 must_redirect; /* after NAT the source is a node address: the stack
			     * would drop it as a martian, so it must be redirected */
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

/* The service's table is maglev_m slots of the pool at maglev_off (abi.h).
 * Userspace switches (maglev_off, maglev_m) with one kpx_services update, so
 * the pair read here is always consistent. */
KPX_INLINE __u32 lb4_maglev_pick(const struct kpx_svc *svc, __u32 hash)
{
	__u32 m = svc->maglev_m;
	__u32 off = svc->maglev_off;
	__u32 chunk_idx = off >> KPX_MAGLEV_CHUNK_SHIFT;
	__u32 base = off & KPX_MAGLEV_CHUNK_MASK;
	__u32 slot;
	void *chunk;

	if (!m || m > KPX_MAGLEV_CHUNK_SLOTS - base)
		return 0; /* no table, or a range crossing its chunk: inconsistent */
	chunk = bpf_map_lookup_elem(&kpx_maglev, &chunk_idx);
	if (!chunk)
		return 0;
	slot = hash % m;
	for (int i = 0; i < KPX_MAGLEV_PROBES; i++) {
		__u32 idx = base + slot;
		__u32 *be_id = bpf_map_lookup_elem(chunk, &idx);

		if (!be_id)
			return 0;
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

KPX_INLINE struct kpx_config *lb4_config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&kpx_config, &zero);
}

/* Whether a new flow from saddr to svc is masqueraded (abi.h, kpx_config):
 * kube-proxy's rules, minus hairpin, which needs the backend. */
KPX_INLINE int lb4_masq(__be32 saddr, const struct kpx_svc *svc, const struct kpx_config *cfg)
{
	int off_cluster;

	if (!cfg || !cfg->snat_addr)
		return 0;
	off_cluster = !cfg->cluster_prefix || (saddr & cfg->cluster_mask) != cfg->cluster_cidr;
	if (svc->flags & KPX_SVC_F_EXTERNAL)
		return !(svc->flags & KPX_SVC_F_LOCAL) && off_cluster;
	return cfg->cluster_prefix && off_cluster;
}

/* NAT of a flow's forward packets to backend be, plus the masquerade of its
 * source when entry e says so. */
KPX_INLINE void lb4_dnat_flow(const struct kpx_ct_entry *e, const struct kpx_backend *be,
			      __u32 verdict, struct kpx_decision *d)
{
	lb4_set_nat(d, KPX_A_DNAT, verdict, be->addr, be->port);
	if (e->flags & KPX_CT_F_SNAT) {
		d->nat2 = 1;
		d->must_redirect = 1;
		d->addr2 = e->snat_addr;
		d->port2 = e->snat_port;
	}
}

/* A client's non-SYN packet without a kpx_ct entry: the ACK (or RST) of a
 * half-open flow in kpx_ct_syn? Its forward entry exists once the backend
 * answered. An ACK moves the flow to kpx_ct; a RST ends it. 1 when decided. */
KPX_INLINE int lb4_handshake(const struct kpx_pkt *p, int defer_masq, __u64 now,
			     struct kpx_decision *d)
{
	struct kpx_ct_entry *hp, h;
	struct kpx_backend *be;
	struct kpx_ct_key k, rk;

	ct4_key(p, &k);
	hp = bpf_map_lookup_elem(&kpx_ct_syn, &k);
	if (!hp || (hp->flags & KPX_CT_F_REPLY))
		return 0;
	h = *hp;
	if (defer_masq && (h.flags & KPX_CT_F_SNAT)) {
		d->action = KPX_A_DEFER;
		return 1;
	}
	d->svc_id = h.svc_id;
	be = lb4_backend(h.backend_id);
	if (!be) {
		/* The backend went away during the handshake. */
		bpf_map_delete_elem(&kpx_ct_syn, &k);
		d->verdict = KPX_V_DEAD_BACKEND;
		d->action = (p->tcp_flags & KPX_TCP_RST) ? KPX_A_DROP : KPX_A_RST;
		return 1;
	}
	lb4_dnat_flow(&h, be, KPX_V_HANDSHAKE, d);
	if (p->tcp_flags & KPX_TCP_RST) {
		ct4_reverse_key(&h, be->addr, be->port, p->proto, &rk);
		bpf_map_delete_elem(&kpx_ct_syn, &k);
		bpf_map_delete_elem(&kpx_ct_syn, &rk);
		return 1;
	}
	ct4_promote(&h, &k, be, p->tcp_flags, now);
	return 1;
}

/* A packet to frontend svc. local_vip: it came in through a NodePort (its
 * destination is a node address). defer_masq: XDP with tc behind it, which
 * leaves masqueraded flows to tc (their packets must be redirected, and tc
 * can redirect into any device) before any state is written. */
KPX_INLINE void lb4_forward(const struct kpx_pkt *p, const struct kpx_svc *svc, int local_vip,
			    int defer_masq, struct kpx_decision *d)
{
	__u8 flags = p->tcp_flags;
	int syn = (flags & (KPX_TCP_SYN | KPX_TCP_ACK | KPX_TCP_RST)) == KPX_TCP_SYN;
	__u64 now = kpx_now_ns();
	struct kpx_ct_entry *e = ct4_lookup(p);
	struct kpx_config *cfg;
	struct kpx_backend *be;
	struct kpx_ct_key rk;
	__u8 ct_flags = 0;
	__be16 snat_port;
	int masq;
	__u32 id;

	if (e && ct4_closing(e) && (syn || ct4_expired(e, now))) {
		/* A closed flow: anything but a SYN after its closing lifetime
		 * is not ours; a SYN is a new connection on a reused 5-tuple
		 * and picks afresh. Its old entries go (the reverse one may
		 * hold a SNAT port; the handshake's ACK must not find the
		 * forward one). */
		if (!syn)
			return;
		if (defer_masq && (e->flags & KPX_CT_F_SNAT)) {
			d->action = KPX_A_DEFER;
			return;
		}
		be = lb4_backend(e->backend_id);
		if (be) {
			ct4_reverse_key(e, be->addr, be->port, p->proto, &rk);
			bpf_map_delete_elem(&kpx_ct, &rk);
		}
		ct4_key(p, &rk);
		bpf_map_delete_elem(&kpx_ct, &rk);
		e = 0;
	}
	if (e) {
		be = lb4_backend(e->backend_id);
		d->svc_id = e->svc_id;
		if (be) {
			if (defer_masq && (e->flags & KPX_CT_F_SNAT)) {
				d->action = KPX_A_DEFER;
				return;
			}
			ct4_touch(e, now);
			if (flags & (KPX_TCP_FIN | KPX_TCP_RST)) {
				ct4_reverse_key(e, be->addr, be->port, p->proto, &rk);
				ct4_track_close(e, &rk, flags, KPX_CT_F_FIN_FWD, now);
			} else if (!ct4_closing(e)) {
				ct4_ensure_reply(e, be->addr, be->port, p->proto);
			}
			lb4_dnat_flow(e, be, KPX_V_CT_HIT, d);
			return;
		}
		if (!syn) {
			/* Established flow whose backend is gone: fail fast.
			 * The entry stays so retransmissions get a RST too. */
			d->verdict = KPX_V_DEAD_BACKEND;
			d->action = (flags & KPX_TCP_RST) ? KPX_A_DROP : KPX_A_RST;
			return;
		}
		/* Tuple reused after its backend went away: a new flow (the
		 * handshake's ACK must not find the dead entry). */
		ct4_key(p, &rk);
		bpf_map_delete_elem(&kpx_ct, &rk);
	} else if (!syn) {
		if (lb4_handshake(p, defer_masq, now, d))
			return;
		/* A reset of a flow we do not track: nothing to keep alive. */
		if (flags & KPX_TCP_RST)
			return;
	}
	/* !e && !syn: a mid-flow packet without an entry. The LRU evicted it
	 * (kpx_ct is full of established flows; half-open ones live in
	 * kpx_ct_syn), or the flow predates kpx. Passing it would break the
	 * flow (nothing else serves the VIP); Maglev picks the same backend
	 * while the backend set is unchanged, so re-pick and re-create both
	 * entries in kpx_ct (not when masqueraded: a new SNAT port would be a
	 * different flow to the backend). */

	d->svc_id = svc->id;
	if (svc->backend_count == 0) {
		d->action = KPX_A_RST;
		d->verdict = KPX_V_NO_BACKEND;
		return;
	}
	cfg = lb4_config();
	masq = lb4_masq(p->saddr, svc, cfg);
	if (masq && !syn)
		return;
	if (masq && defer_masq) {
		d->action = KPX_A_DEFER;
		return;
	}
	id = lb4_pick(p, svc, now);
	be = lb4_backend(id);
	if (!be) {
		d->action = KPX_A_RST;
		d->verdict = KPX_V_NO_BACKEND;
		return;
	}
	/* Hairpin: a pod reaching itself through the frontend would see its
	 * own address as the source and answer itself directly. */
	if (!masq && cfg && cfg->snat_addr && be->addr == p->saddr) {
		if (defer_masq) {
			d->action = KPX_A_DEFER;
			return;
		}
		masq = 1;
	}
	if (local_vip || ((svc->flags & KPX_SVC_F_EXTERNAL) && lb4_is_node_addr(p->daddr)))
		ct_flags |= KPX_CT_F_LOCAL_VIP;
	lb4_set_nat(d, KPX_A_DNAT, KPX_V_NEW_FLOW, be->addr, be->port);
	if (!masq) {
		if (syn)
			ct4_half_open(p, be, id, svc->id, ct_flags, now);
		else
			ct4_create(p, be, id, svc->id, ct_flags, now);
		return;
	}
	/* A retransmitted SYN of a masqueraded handshake keeps its port. */
	ct4_key(p, &rk);
	e = bpf_map_lookup_elem(&kpx_ct_syn, &rk);
	if (e && (e->flags & KPX_CT_F_SNAT) && !(e->flags & KPX_CT_F_REPLY) &&
	    e->backend_id == id) {
		d->verdict = KPX_V_HANDSHAKE;
		snat_port = e->snat_port;
	} else if (ct4_half_open_snat(p, be, id, svc->id, ct_flags, cfg->snat_addr,
				      cfg->snat_port_min, cfg->snat_port_max, now, &snat_port)) {
		d->action = KPX_A_RST;
		d->verdict = KPX_V_SNAT_NO_PORT;
		return;
	}
	d->nat2 = 1;
	d->must_redirect = 1;
	d->addr2 = cfg->snat_addr;
	d->port2 = snat_port;
}

/* NAT of a reply by its flow's reverse entry e. */
KPX_INLINE void lb4_snat_reply(const struct kpx_ct_entry *e, struct kpx_decision *d)
{
	d->svc_id = e->svc_id;
	lb4_set_nat(d, KPX_A_SNAT, KPX_V_REPLY, e->vip, e->vport);
	if (e->flags & KPX_CT_F_SNAT) {
		d->nat2 = 1;
		d->addr2 = e->client_addr;
		d->port2 = e->client_port;
	}
	d->must_redirect = (e->flags & (KPX_CT_F_SNAT | KPX_CT_F_LOCAL_VIP)) != 0;
}

/* The backend's SYN-ACK (or RST) of a half-open flow (key k, kpx_ct_syn).
 * The first SYN-ACK adds the forward entry the client's ACK will look for;
 * a RST ends the half-open flow. 1 when decided. */
KPX_INLINE int lb4_reply_half_open(const struct kpx_pkt *p, const struct kpx_ct_key *k,
				   int defer_masq, struct kpx_decision *d)
{
	struct kpx_ct_entry *hp, h;
	struct kpx_ct_key fk;

	hp = bpf_map_lookup_elem(&kpx_ct_syn, k);
	if (!hp || !(hp->flags & KPX_CT_F_REPLY))
		return 0;
	h = *hp;
	if (defer_masq && (h.flags & (KPX_CT_F_SNAT | KPX_CT_F_LOCAL_VIP))) {
		d->action = KPX_A_DEFER;
		return 1;
	}
	ct4_forward_key(&h, p->proto, &fk);
	if (p->tcp_flags & KPX_TCP_RST) {
		bpf_map_delete_elem(&kpx_ct_syn, k);
		bpf_map_delete_elem(&kpx_ct_syn, &fk);
	} else if (!(h.flags & KPX_CT_F_SEEN_REPLY)) {
		ct4_set_flags(hp, KPX_CT_F_SEEN_REPLY);
		h.flags = (h.flags | KPX_CT_F_SEEN_REPLY) & ~KPX_CT_F_REPLY;
		h.last_seen_ns = kpx_now_ns();
		bpf_map_update_elem(&kpx_ct_syn, &fk, &h, BPF_ANY);
	}
	lb4_snat_reply(&h, d);
	return 1;
}

/* A reply from a backend (reverse conntrack entry), or 0. */
KPX_INLINE int lb4_reply(const struct kpx_pkt *p, int defer_masq, struct kpx_decision *d)
{
	struct kpx_ct_key k;
	struct kpx_ct_entry *e;
	__u64 now;

	ct4_key(p, &k);
	e = bpf_map_lookup_elem(&kpx_ct, &k);
	/* Only a SYN-ACK or a RST can answer a half-open flow, which is newer
	 * than a closing flow's entry on the same tuple: that one may outlive
	 * its forward entry (evicted, or deleted by userspace's walk first),
	 * and a new SYN on the tuple then never sees it. */
	if ((p->tcp_flags & (KPX_TCP_SYN | KPX_TCP_RST)) && (!e || ct4_closing(e)) &&
	    lb4_reply_half_open(p, &k, defer_masq, d))
		return 1;
	if (!e || !(e->flags & KPX_CT_F_REPLY))
		return 0;
	now = kpx_now_ns();
	if (ct4_expired(e, now))
		return 0;
	if (defer_masq && (e->flags & (KPX_CT_F_SNAT | KPX_CT_F_LOCAL_VIP))) {
		d->action = KPX_A_DEFER;
		return 1;
	}
	ct4_touch(e, now);
	if (!(e->flags & KPX_CT_F_SEEN_REPLY) || (p->tcp_flags & (KPX_TCP_FIN | KPX_TCP_RST))) {
		struct kpx_ct_key fk;

		ct4_forward_key(e, p->proto, &fk);
		if (!(e->flags & KPX_CT_F_SEEN_REPLY)) {
			/* First reply: mark both entries once (the forward
			 * one tells userspace this backend answered). */
			struct kpx_ct_entry *fe = bpf_map_lookup_elem(&kpx_ct, &fk);

			ct4_set_flags(e, KPX_CT_F_SEEN_REPLY);
			if (fe)
				ct4_set_flags(fe, KPX_CT_F_SEEN_REPLY);
		}
		ct4_track_close(e, &fk, p->tcp_flags, KPX_CT_F_FIN_REPLY, now);
	}
	lb4_snat_reply(e, d);
	return 1;
}

/* Frontend lookup, then reply lookup, then NodePorts (addr 0) for packets to
 * this node's own addresses. Only TCP for now: UDP frontends pass. */
KPX_INLINE void lb4_decide(const struct kpx_pkt *p, int defer_masq, struct kpx_decision *d)
{
	struct kpx_svc *svc;
	int local_vip = 0;

	__builtin_memset(d, 0, sizeof(*d));
	d->action = KPX_A_PASS;
	d->verdict = KPX_V_PASS_NON_SERVICE;
	/* l4 is tested too so the verifier, which cannot tie p->proto to the
	 * parse branch that set p->l4, sees a TCP header on every path on. */
	if (p->proto != IPPROTO_TCP || !p->l4)
		return;
	svc = lb4_lookup_service(p->daddr, p->dport, IPPROTO_TCP);
	if (!svc) {
		/* Replies first: a reply to a client on this node must not be
		 * mistaken for a NodePort by its destination port. */
		if (lb4_reply(p, defer_masq, d))
			return;
		if (!lb4_is_node_addr(p->daddr))
			return;
		svc = lb4_lookup_service(0, p->dport, IPPROTO_TCP);
		if (!svc)
			return;
		local_vip = 1;
	}
	lb4_forward(p, svc, local_vip, defer_masq, d);
}

#endif /* KPX_LIB_LB_H */
