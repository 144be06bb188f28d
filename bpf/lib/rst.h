/* Rejecting a connection in place: the offending segment becomes the RST
 * the kernel would send for a closed port (RFC 793 reset generation), with
 * MACs, addresses and ports swapped, options and payload cut off. XDP sends
 * it back with XDP_TX; tc redirects it out of the device it came in on. */
#ifndef KPX_LIB_RST_H
#define KPX_LIB_RST_H

#include <stddef.h>

#include "lib/csum.h"
#include "lib/parse.h"

#define KPX_RST_TTL 64

struct kpx_rst {
	__u8 macs[12];       /* new h_dest, h_source */
	struct iphdr ip;     /* first 20 bytes; IP options (if any) stay as they are */
	struct tcphdr th;    /* bare header, th.check = full checksum */
	__sum16 th_partial;  /* check for a CHECKSUM_PARTIAL skb: pseudo header only */
	__u16 pad;
	__u32 tcp_delta;     /* sum(new th) - sum(old first 20 bytes): skb->csum fix-up */
};

/* Reads the packet through p's pointers (still valid: nothing changed it). */
KPX_INLINE void kpx_rst4_build(const struct kpx_pkt *p, struct kpx_rst *r)
{
	const struct ethhdr *eth = p->eth;
	const struct iphdr *iph = p->iph;
	const struct tcphdr *th = p->l4;
	struct iphdr old_ip = *iph;
	struct tcphdr old_th = *th;
	__u8 *thb = (__u8 *)&r->th;
	__u32 seg_len;

	__builtin_memcpy(r->macs, eth->h_source, ETH_ALEN);
	__builtin_memcpy(r->macs + ETH_ALEN, eth->h_dest, ETH_ALEN);

	/* IP: the checksum word is left equal while diffing, so the diff
	 * covers exactly the fields that change (options are untouched). */
	r->ip = old_ip;
	r->ip.saddr = old_ip.daddr;
	r->ip.daddr = old_ip.saddr;
	r->ip.tot_len = bpf_htons(old_ip.ihl * 4 + sizeof(struct tcphdr));
	r->ip.id = 0;
	r->ip.frag_off = 0;
	r->ip.ttl = KPX_RST_TTL;
	r->ip.check = (__sum16)~kpx_csum_fold(
		(__u16)~old_ip.check +
		(__u64)kpx_csum_diff_words((const __u16 *)&old_ip, (const __u16 *)&r->ip,
					   sizeof(old_ip) / 2));

	__builtin_memset(&r->th, 0, sizeof(r->th));
	r->th.source = old_th.dest;
	r->th.dest = old_th.source;
	thb[12] = (sizeof(struct tcphdr) / 4) << 4; /* doff, no options */
	if (p->tcp_flags & KPX_TCP_ACK) {
		r->th.seq = old_th.ack_seq;
		thb[13] = KPX_TCP_RST;
	} else {
		seg_len = p->l4_len - p->thl;
		if (p->tcp_flags & KPX_TCP_SYN)
			seg_len++;
		if (p->tcp_flags & KPX_TCP_FIN)
			seg_len++;
		r->th.ack_seq = bpf_htonl(bpf_ntohl(old_th.seq) + seg_len);
		thb[13] = KPX_TCP_RST | KPX_TCP_ACK;
	}
	r->th.check = kpx_tcp_csum20(r->ip.saddr, r->ip.daddr, &r->th);
	r->th_partial = (__sum16)kpx_csum_fold(
		kpx_csum_pseudo4(r->ip.saddr, r->ip.daddr, sizeof(struct tcphdr)));
	r->pad = 0;
	r->tcp_delta = kpx_csum_diff_words((const __u16 *)&old_th, (const __u16 *)&r->th,
					   sizeof(old_th) / 2);
}

KPX_INLINE int xdp_rst4(struct xdp_md *ctx, struct kpx_pkt *p)
{
	struct kpx_rst r;
	__u32 new_len = p->l4_off + sizeof(struct tcphdr);
	__u32 cur_len;

	kpx_rst4_build(p, &r);
	__builtin_memcpy(p->eth, r.macs, sizeof(r.macs));
	__builtin_memcpy(p->iph, &r.ip, sizeof(r.ip));
	__builtin_memcpy(p->l4, &r.th, sizeof(r.th));
	cur_len = ctx->data_end - ctx->data;
	/* Best effort: if the tail cannot shrink, tot_len still says where
	 * the segment ends and receivers ignore the rest as padding. */
	if (cur_len > new_len)
		bpf_xdp_adjust_tail(ctx, (int)new_len - (int)cur_len);
	return XDP_TX;
}

/* The TCP checksum must be right whatever the skb's checksum state, which tc
 * cannot read: store the CHECKSUM_PARTIAL value, then move it to the full
 * checksum with a non-pseudo-header bpf_l4_csum_replace (a no-op exactly
 * for CHECKSUM_PARTIAL), and account for the untracked header change in
 * skb->csum with bpf_csum_update (acts only on CHECKSUM_COMPLETE). */
KPX_INLINE int tc_rst4(struct __sk_buff *skb, struct kpx_pkt *p)
{
	struct kpx_rst r;
	__u32 csum_off = p->l4_off + offsetof(struct tcphdr, check);
	__sum16 full;
	__u32 diff;

	kpx_rst4_build(p, &r);
	full = r.th.check;
	r.th.check = r.th_partial;
	/* new = ~fold(diff + ~partial) = full  <=>  diff = ~full + partial */
	diff = kpx_csum_add((__u16)~full, (__u16)r.th_partial);
	if (bpf_skb_store_bytes(skb, 0, r.macs, sizeof(r.macs), 0) ||
	    bpf_skb_store_bytes(skb, p->l3_off, &r.ip, sizeof(r.ip), 0) ||
	    bpf_skb_store_bytes(skb, p->l4_off, &r.th, sizeof(r.th), 0) ||
	    bpf_l4_csum_replace(skb, csum_off, 0, diff, 0))
		return TC_ACT_SHOT;
	bpf_csum_update(skb, r.tcp_delta);
	/* Must succeed: with CHECKSUM_PARTIAL the checksum would otherwise be
	 * computed over the stale tail. */
	if (bpf_skb_change_tail(skb, p->l4_off + sizeof(struct tcphdr), 0))
		return TC_ACT_SHOT;
	return bpf_redirect(skb->ifindex, 0);
}

#endif /* KPX_LIB_RST_H */
