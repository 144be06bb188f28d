/* Address/port rewriting: DNAT of a flow's packets to its backend (and, when
 * masqueraded, SNAT of their source to the node), reverse NAT of the
 * backend's replies (source back to the frontend, destination back to the
 * client when masqueraded).
 *  - XDP: direct writes with incremental checksums (NICs hand XDP complete
 *    checksums).
 *  - tc: bpf_l3/l4_csum_replace, with BPF_F_PSEUDO_HDR for the address (part
 *    of the TCP pseudo header), which is right for every skb checksum state:
 *    CHECKSUM_PARTIAL (local sockets: only the pseudo-header sum is stored),
 *    CHECKSUM_COMPLETE (skb->csum kept in step) and NONE/UNNECESSARY. */
#ifndef KPX_LIB_NAT_H
#define KPX_LIB_NAT_H

#include <stddef.h>

#include "lib/csum.h"
#include "lib/lb.h"
#include "lib/parse.h"

KPX_INLINE void xdp_set_dst4(struct kpx_pkt *p, __be32 addr, __be16 port)
{
	struct iphdr *iph = p->iph;
	struct tcphdr *th = p->l4;

	kpx_csum_replace4(&iph->check, iph->daddr, addr);
	kpx_csum_replace4(&th->check, iph->daddr, addr);
	kpx_csum_replace2(&th->check, th->dest, port);
	iph->daddr = addr;
	th->dest = port;
	p->daddr = addr;
	p->dport = port;
}

KPX_INLINE void xdp_set_src4(struct kpx_pkt *p, __be32 addr, __be16 port)
{
	struct iphdr *iph = p->iph;
	struct tcphdr *th = p->l4;

	kpx_csum_replace4(&iph->check, iph->saddr, addr);
	kpx_csum_replace4(&th->check, iph->saddr, addr);
	kpx_csum_replace2(&th->check, th->source, port);
	iph->saddr = addr;
	th->source = port;
	p->saddr = addr;
	p->sport = port;
}

KPX_INLINE void xdp_nat4(struct kpx_pkt *p, const struct kpx_decision *d)
{
	if (d->action == KPX_A_DNAT) {
		xdp_set_dst4(p, d->addr, d->port);
		if (d->nat2)
			xdp_set_src4(p, d->addr2, d->port2);
	} else {
		xdp_set_src4(p, d->addr, d->port);
		if (d->nat2)
			xdp_set_dst4(p, d->addr2, d->port2);
	}
}

/* One address:port of the packet (src or dst) through the skb helpers. */
KPX_INLINE int tc_set_addr4(struct __sk_buff *skb, struct kpx_pkt *p, int src, __be32 new_addr,
			    __be16 new_port)
{
	__u32 csum_off = p->l4_off + offsetof(struct tcphdr, check);
	__u32 addr_off, port_off;
	__be32 old_addr;
	__be16 old_port;
	int err;

	if (src) {
		addr_off = p->l3_off + offsetof(struct iphdr, saddr);
		port_off = p->l4_off + offsetof(struct tcphdr, source);
		old_addr = p->saddr;
		old_port = p->sport;
		p->saddr = new_addr;
		p->sport = new_port;
	} else {
		addr_off = p->l3_off + offsetof(struct iphdr, daddr);
		port_off = p->l4_off + offsetof(struct tcphdr, dest);
		old_addr = p->daddr;
		old_port = p->dport;
		p->daddr = new_addr;
		p->dport = new_port;
	}
	err = bpf_l4_csum_replace(skb, csum_off, old_addr, new_addr,
				  BPF_F_PSEUDO_HDR | sizeof(new_addr));
	if (!err)
		err = bpf_l4_csum_replace(skb, csum_off, old_port, new_port, sizeof(new_port));
	if (!err)
		err = bpf_l3_csum_replace(skb, p->l3_off + offsetof(struct iphdr, check),
					  old_addr, new_addr, sizeof(new_addr));
	if (!err)
		err = bpf_skb_store_bytes(skb, addr_off, &new_addr, sizeof(new_addr), 0);
	if (!err)
		err = bpf_skb_store_bytes(skb, port_off, &new_port, sizeof(new_port), 0);
	return err;
}

/* 0, or a negative errno (skb not writable): the packet may then be half
 * rewritten and must be dropped. Packet pointers in p are stale afterwards. */
KPX_INLINE int tc_nat4(struct __sk_buff *skb, struct kpx_pkt *p, const struct kpx_decision *d)
{
	int dnat = d->action == KPX_A_DNAT;
	int err;

	p->eth = 0;
	p->iph = 0;
	p->l4 = 0;
	err = tc_set_addr4(skb, p, !dnat, d->addr, d->port);
	if (!err && d->nat2)
		err = tc_set_addr4(skb, p, dnat, d->addr2, d->port2);
	return err;
}

#endif /* KPX_LIB_NAT_H */
