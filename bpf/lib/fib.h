/* After NAT: where the packet goes. bpf_fib_lookup from the ingress device;
 * if the egress device is listed in kpx_tx_ports (userspace lists only
 * devices where a direct redirect is safe: XDP_REDIRECT into a veth whose
 * peer has no XDP program and no GRO is dropped silently), set the MACs,
 * decrement the TTL and redirect. Anything else (no route or neighbour yet,
 * MTU, VLAN, unlisted device) is passed on: the kernel routes the already
 * rewritten packet. */
#ifndef KPX_LIB_FIB_H
#define KPX_LIB_FIB_H

#include <stddef.h>

#include "lib/csum.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/stats.h"

/* 0 and fib filled in when the packet may be redirected to fib->ifindex.
 * tot_len 0 (tc) lets the kernel check the MTU against the skb itself, which
 * is right for GSO skbs; XDP frames are single packets, so p->tot_len.
 * any_port (tc, packets the stack would drop as martians): every egress
 * device will do, and 1 means "route known, neighbour not resolved yet". */
KPX_INLINE int kpx_fib4(void *ctx, const struct kpx_pkt *p, __u32 ifindex, __u16 tot_len,
			int any_port, struct bpf_fib_lookup *fib)
{
	int rc;

	if (p->vlan || p->ttl <= 1)
		return -1; /* the stack handles VLAN devices and ICMP time exceeded */
	__builtin_memset(fib, 0, sizeof(*fib));
	fib->family = KPX_AF_INET;
	fib->tos = p->tos;
	fib->l4_protocol = p->proto;
	fib->sport = p->sport;
	fib->dport = p->dport;
	fib->tot_len = tot_len;
	fib->ipv4_src = p->saddr;
	fib->ipv4_dst = p->daddr;
	fib->ifindex = ifindex;
	rc = bpf_fib_lookup(ctx, fib, sizeof(*fib), 0);
	if (any_port && rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return 1;
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return -1;
	if (!any_port && !bpf_map_lookup_elem(&kpx_tx_ports, &fib->ifindex))
		return -1;
	return 0;
}

/* The (ttl, protocol) word of the IP header before and after a decrement. */
KPX_INLINE __be16 kpx_ttl_word(__u8 ttl, __u8 proto)
{
	return bpf_htons(((__u16)ttl << 8) | proto);
}

KPX_INLINE int xdp_fib_forward(struct xdp_md *ctx, struct kpx_pkt *p)
{
	struct bpf_fib_lookup fib;
	struct iphdr *iph = p->iph;

	if (kpx_fib4(ctx, p, ctx->ingress_ifindex, p->tot_len, 0, &fib)) {
		kpx_count(KPX_V_PASS_STACK);
		return XDP_PASS;
	}
	kpx_csum_replace2(&iph->check, kpx_ttl_word(p->ttl, p->proto),
			  kpx_ttl_word(p->ttl - 1, p->proto));
	iph->ttl = p->ttl - 1;
	__builtin_memcpy(p->eth->h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(p->eth->h_source, fib.smac, ETH_ALEN);
	kpx_count(KPX_V_REDIRECT);
	return bpf_redirect_map(&kpx_tx_ports, fib.ifindex, 0);
}

/* must_redirect: the packet's source is now a node address (masqueraded,
 * or a NodePort reply), which the stack would drop as a martian: redirect
 * it into whatever device the route names (tc's skb redirect works into
 * any device), resolving the neighbour with bpf_redirect_neigh if needed. */
KPX_INLINE int tc_fib_forward(struct __sk_buff *skb, struct kpx_pkt *p, int must_redirect)
{
	struct bpf_fib_lookup fib;
	__u8 ttl = p->ttl - 1;
	int rc = kpx_fib4(skb, p, skb->ifindex, 0, must_redirect, &fib);

	if (rc < 0) {
		kpx_count(KPX_V_PASS_STACK);
		return TC_ACT_OK;
	}
	if (bpf_l3_csum_replace(skb, p->l3_off + offsetof(struct iphdr, check),
				kpx_ttl_word(p->ttl, p->proto), kpx_ttl_word(ttl, p->proto),
				sizeof(__be16)) ||
	    bpf_skb_store_bytes(skb, p->l3_off + offsetof(struct iphdr, ttl), &ttl, 1, 0))
		return TC_ACT_SHOT; /* half rewritten (skb not writable): must not go anywhere */
	kpx_count(KPX_V_REDIRECT);
	if (rc == 1)
		return bpf_redirect_neigh(fib.ifindex, 0, 0, 0);
	if (bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_dest), fib.dmac, ETH_ALEN, 0) ||
	    bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_source), fib.smac, ETH_ALEN, 0))
		return TC_ACT_SHOT;
	return bpf_redirect(fib.ifindex, 0);
}

#endif /* KPX_LIB_FIB_H */
