/* TCP connection tracking in two LRU maps of the same entries. kpx_ct holds
 * established flows, two entries each: the forward entry (client ->
 * frontend) keeps a flow on its backend across Maglev table changes; the
 * reverse entry (backend -> client, or -> the SNAT address:port when
 * masqueraded) tells the reply path what to restore. kpx_ct_syn holds
 * half-open flows, so that a SYN flood (even one whose SYN-ACKs are answered
 * by the client's RST) churns that map only and never evicts an
 * established flow:
 *  - SYN: only the reverse entry, which the SYN-ACK needs (masqueraded: the
 *    forward entry too, so a retransmitted SYN keeps its SNAT port);
 *  - SYN-ACK (reply path): reverse-NATed by it, and it adds the forward
 *    entry: the backend that answered is the one the handshake completes
 *    with, whatever the Maglev table says by then;
 *  - the client's ACK finds the forward entry: both are copied to kpx_ct
 *    (ct4_promote says why they stay in kpx_ct_syn unless masqueraded);
 *  - a RST from either side ends the half-open flow (forwarded, entries
 *    deleted).
 * A small state machine on FIN/RST: a closing flow expires after
 * KPX_CT_CLOSING_NS instead of holding LRU slots until evicted. */
#ifndef KPX_LIB_CONNTRACK_H
#define KPX_LIB_CONNTRACK_H

#include "lib/maps.h"
#include "lib/parse.h"

/* last_seen is written at most this often per entry: a store on every packet
 * would bounce the entry's cache line between CPUs for nothing. */
#define KPX_CT_REFRESH_NS 1000000000ULL

#define KPX_CT_F_BOTH_FINS (KPX_CT_F_FIN_FWD | KPX_CT_F_FIN_REPLY)

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

KPX_INLINE int ct4_closing(const struct kpx_ct_entry *e)
{
	return (e->flags & KPX_CT_F_RST) || (e->flags & KPX_CT_F_BOTH_FINS) == KPX_CT_F_BOTH_FINS;
}

/* Signed: another CPU may have stamped the entry a little after `now`. */
KPX_INLINE int ct4_expired(const struct kpx_ct_entry *e, __u64 now)
{
	return ct4_closing(e) && (__s64)(now - e->last_seen_ns) > (__s64)KPX_CT_CLOSING_NS;
}

KPX_INLINE void ct4_touch(struct kpx_ct_entry *e, __u64 now)
{
	if (now - e->last_seen_ns > KPX_CT_REFRESH_NS)
		e->last_seen_ns = now;
}

/* The reverse entry's key of a flow whose backend is addr:port. */
KPX_INLINE void ct4_reverse_key(const struct kpx_ct_entry *e, __be32 be_addr, __be16 be_port,
				__u8 proto, struct kpx_ct_key *k)
{
	int snat = e->flags & KPX_CT_F_SNAT;

	k->saddr = be_addr;
	k->sport = be_port;
	k->daddr = snat ? e->snat_addr : e->client_addr;
	k->dport = snat ? e->snat_port : e->client_port;
	k->proto = proto;
	k->pad[0] = 0;
	k->pad[1] = 0;
	k->pad[2] = 0;
}

KPX_INLINE void ct4_forward_key(const struct kpx_ct_entry *e, __u8 proto, struct kpx_ct_key *k)
{
	k->saddr = e->client_addr;
	k->daddr = e->vip;
	k->sport = e->client_port;
	k->dport = e->vport;
	k->proto = proto;
	k->pad[0] = 0;
	k->pad[1] = 0;
	k->pad[2] = 0;
}

/* Sets flag bits with an atomic OR, so that two CPUs updating one entry at
 * once (a FIN each way) never lose a bit. BPF atomics are 32 or 64 bits
 * wide: the OR goes to the aligned word holding vport, flags and pad, with
 * bits in the flags byte only (vport is never written after creation). */
_Static_assert(__builtin_offsetof(struct kpx_ct_entry, vport) % 4 == 0, "vport word alignment");
_Static_assert(__builtin_offsetof(struct kpx_ct_entry, flags) ==
		       __builtin_offsetof(struct kpx_ct_entry, vport) + 2,
	       "flags is byte 2 of the vport word");
KPX_INLINE void ct4_set_flags(struct kpx_ct_entry *e, __u8 bits)
{
	__u32 *word = (__u32 *)&e->vport;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	__sync_fetch_and_or(word, (__u32)bits << 16);
#else
	__sync_fetch_and_or(word, (__u32)bits << 8);
#endif
}

/* FIN/RST bookkeeping on both entries (e and the one under peer_key in
 * kpx_ct). Bits are set atomically (ct4_set_flags); the closing timestamp is a
 * plain store (either CPU's `now` will do). */
KPX_INLINE void ct4_track_close(struct kpx_ct_entry *e, const struct kpx_ct_key *peer_key,
				__u8 tcp_flags, __u8 fin_bit, __u64 now)
{
	struct kpx_ct_entry *pe;
	__u8 add = 0;

	if (tcp_flags & KPX_TCP_RST)
		add |= KPX_CT_F_RST;
	if (tcp_flags & KPX_TCP_FIN)
		add |= fin_bit;
	if (!add || (e->flags & add) == add)
		return;
	pe = bpf_map_lookup_elem(&kpx_ct, peer_key);
	ct4_set_flags(e, add);
	if (pe)
		ct4_set_flags(pe, add);
	if (ct4_closing(e)) {
		/* The closing lifetime runs from here. */
		e->last_seen_ns = now;
		if (pe)
			pe->last_seen_ns = now;
	}
}

KPX_INLINE void ct4_entry_init(struct kpx_ct_entry *e, const struct kpx_pkt *p, __u32 be_id,
			       __u32 svc_id, __u8 flags, __u64 now)
{
	__builtin_memset(e, 0, sizeof(*e));
	e->last_seen_ns = now;
	e->backend_id = be_id;
	e->svc_id = svc_id;
	e->vip = p->daddr;
	e->vport = p->dport;
	e->flags = flags;
	e->client_addr = p->saddr;
	e->client_port = p->sport;
}

/* Records flow p -> backend be (id be_id) of service svc_id in kpx_ct, both
 * directions, without masquerade (a mid-flow packet whose entries the LRU
 * evicted). Failure (map full of unevictable entries) is not fatal: the
 * packet is still forwarded; its flow will be re-picked. */
KPX_INLINE void ct4_create(const struct kpx_pkt *p, const struct kpx_backend *be,
			   __u32 be_id, __u32 svc_id, __u8 flags, __u64 now)
{
	struct kpx_ct_key k;
	struct kpx_ct_entry e;

	ct4_entry_init(&e, p, be_id, svc_id, flags, now);
	ct4_key(p, &k);
	bpf_map_update_elem(&kpx_ct, &k, &e, BPF_ANY);

	ct4_reverse_key(&e, be->addr, be->port, p->proto, &k);
	e.flags = flags | KPX_CT_F_REPLY;
	bpf_map_update_elem(&kpx_ct, &k, &e, BPF_ANY);
}

/* A SYN's half-open flow without masquerade: the reverse entry only, in
 * kpx_ct_syn (one insert). A retransmitted SYN re-picks (Maglev: the same
 * backend while the table is unchanged) and rewrites it. */
KPX_INLINE void ct4_half_open(const struct kpx_pkt *p, const struct kpx_backend *be,
			      __u32 be_id, __u32 svc_id, __u8 flags, __u64 now)
{
	struct kpx_ct_key k;
	struct kpx_ct_entry e;

	ct4_entry_init(&e, p, be_id, svc_id, flags | KPX_CT_F_REPLY, now);
	ct4_reverse_key(&e, be->addr, be->port, p->proto, &k);
	bpf_map_update_elem(&kpx_ct_syn, &k, &e, BPF_ANY);
}

/* The client's ACK of half-open flow h (forward key fk): both entries go to
 * kpx_ct (a FIN riding on the ACK is recorded). A masqueraded flow's
 * entries leave kpx_ct_syn (its reverse entry there would keep the SNAT
 * port reserved after the flow is over). Others are left to the LRU: the
 * two deletes cost as much as the two inserts (~900 ns of 2.8 us at 100k
 * flows, kpx-bench xdp), and a stale entry is harmless: kpx_ct is looked
 * up first on every path, the reply path reads kpx_ct_syn only for
 * SYN-ACKs and RSTs, a new SYN-ACK on the tuple rewrites the forward entry,
 * and a client packet finding a stale forward entry (its kpx_ct entries
 * evicted or expired and deleted) re-creates the flow on its old backend,
 * as the mid-flow re-pick would. */
KPX_INLINE void ct4_promote(const struct kpx_ct_entry *h, const struct kpx_ct_key *fk,
			    const struct kpx_backend *be, __u8 tcp_flags, __u64 now)
{
	struct kpx_ct_entry e = *h;
	struct kpx_ct_key rk;

	e.last_seen_ns = now;
	e.flags &= ~KPX_CT_F_REPLY;
	if (tcp_flags & KPX_TCP_FIN)
		e.flags |= KPX_CT_F_FIN_FWD;
	bpf_map_update_elem(&kpx_ct, fk, &e, BPF_ANY);
	ct4_reverse_key(&e, be->addr, be->port, fk->proto, &rk);
	e.flags |= KPX_CT_F_REPLY;
	bpf_map_update_elem(&kpx_ct, &rk, &e, BPF_ANY);
	if (e.flags & KPX_CT_F_SNAT) {
		bpf_map_delete_elem(&kpx_ct_syn, fk);
		bpf_map_delete_elem(&kpx_ct_syn, &rk);
	}
}

/* Forward hit of a live flow (entry e, backend be_addr:be_port): makes sure
 * the reverse entry exists, re-creating it if the LRU evicted it (replies
 * would otherwise leave un-NATed and the client would reset the flow). The
 * lookup also marks the entry referenced, which keeps a live flow's reverse
 * entry off the LRU's eviction list. One lookup per forwarded packet. */
KPX_INLINE void ct4_ensure_reply(const struct kpx_ct_entry *e, __be32 be_addr, __be16 be_port,
				 __u8 proto)
{
	struct kpx_ct_key k;
	struct kpx_ct_entry r;

	ct4_reverse_key(e, be_addr, be_port, proto, &k);
	if (bpf_map_lookup_elem(&kpx_ct, &k))
		return;
	r = *e;
	r.flags |= KPX_CT_F_REPLY;
	bpf_map_update_elem(&kpx_ct, &k, &r, BPF_NOEXIST);
}

struct ct4_snat_probe {
	struct kpx_ct_key k;
	struct kpx_ct_entry e;
	__u64 now;
	__u32 off;
	__u32 range;
	__u16 port_min;
	__u8 found;
	__u8 pad[5];
};

/* One port of the search (a bpf_loop callback: the verifier checks it
 * once, not once per iteration). The port is reserved by the reverse
 * entry created in kpx_ct_syn with BPF_NOEXIST (two handshakes never share
 * one), and only if no established flow in kpx_ct holds it (an expired
 * closing one's port is reused). 1 stops the loop. */
static long ct4_snat_try(__u32 i, void *data)
{
	struct ct4_snat_probe *c = data;
	struct kpx_ct_entry *old;

	c->k.dport = bpf_htons((__u16)(c->port_min + c->off));
	c->e.snat_port = c->k.dport;
	if (bpf_map_update_elem(&kpx_ct_syn, &c->k, &c->e, BPF_NOEXIST) == 0) {
		old = bpf_map_lookup_elem(&kpx_ct, &c->k);
		if (!old) {
			c->found = 1;
			return 1;
		}
		if (ct4_expired(old, c->now)) {
			bpf_map_delete_elem(&kpx_ct, &c->k);
			c->found = 1;
			return 1;
		}
		bpf_map_delete_elem(&kpx_ct_syn, &c->k);
	}
	if (++c->off >= c->range)
		c->off = 0;
	return 0;
}

/* As ct4_half_open, masqueraded to snat_addr: picks a free source port in
 * [port_min, port_max] (host order) from a random start, probing linearly
 * at most KPX_SNAT_PROBES ports (ct4_snat_try), and also records the
 * forward entry (a retransmitted SYN must keep the port). 0 and *port_out
 * (network order) on success, -1 when no port was free. */
KPX_INLINE int ct4_half_open_snat(const struct kpx_pkt *p, const struct kpx_backend *be,
				  __u32 be_id, __u32 svc_id, __u8 flags, __be32 snat_addr,
				  __u16 port_min, __u16 port_max, __u64 now, __be16 *port_out)
{
	struct ct4_snat_probe c;

	if (!port_min || port_max < port_min) {
		port_min = KPX_SNAT_PORT_MIN_DEFAULT;
		port_max = KPX_SNAT_PORT_MAX_DEFAULT;
	}
	__builtin_memset(&c, 0, sizeof(c));
	c.range = (__u32)port_max - port_min + 1;
	c.off = bpf_get_prandom_u32() % c.range;
	c.port_min = port_min;
	c.now = now;
	ct4_entry_init(&c.e, p, be_id, svc_id, flags | KPX_CT_F_SNAT | KPX_CT_F_REPLY, now);
	c.e.snat_addr = snat_addr;
	c.k.saddr = be->addr;
	c.k.sport = be->port;
	c.k.daddr = snat_addr;
	c.k.proto = p->proto;
	bpf_loop(KPX_SNAT_PROBES, ct4_snat_try, &c, 0);
	if (!c.found)
		return -1;

	c.e.flags &= ~KPX_CT_F_REPLY;
	ct4_key(p, &c.k);
	bpf_map_update_elem(&kpx_ct_syn, &c.k, &c.e, BPF_ANY);
	*port_out = c.e.snat_port;
	return 0;
}

#endif /* KPX_LIB_CONNTRACK_H */
