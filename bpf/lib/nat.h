/* Address/port rewriting: DNAT of a flow's packets to its backend, SNAT of
 * the backend's replies back to the frontend address.
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

KPX_INLINE void xdp_nat4(struct kpx_pkt *p, const struct kpx_decision *d)
{
	struct iphdr *iph = p->iph;
	struct tcphdr *th = p->l4;

	if (d->action == KPX_A_DNAT) {
		kpx_csum_replace4(&iph->check, iph->daddr, d->addr);
		kpx_csum_replace4(&th->check, iph->daddr, d->addr);
		kpx_csum_replace2(&th->check, th->dest, d->port);
		iph->daddr = d->addr;
		th->dest = d->port;
		p->daddr = d->addr;
		p->dport = d->port;
	} else {
		kpx_csum_replace4(&iph->check, iph->saddr, d->addr);
		kpx_csum_replace4(&th->check, iph->saddr, d->addr);
		kpx_csum_replace2(&th->check, th->source, d->port);
		iph->saddr = d->addr;
		th->source = d->port;
		p->saddr = d->addr;
		p->sport = d->port;
	}
}

/* 0, or a negative errno (skb not writable): the packet may then be half
 * rewritten and must be dropped. Packet pointers in p are stale afterwards. */
KPX_INLINE int tc_nat4(struct __sk_buff *skb, struct kpx_pkt *p, const struct kpx_decision *d)
{
	__u32 csum_off = p->l4_off + offsetof(struct tcphdr, check);
	__u32 addr_off, port_off;
	__be32 old_addr, new_addr = d->addr;
	__be16 old_port, new_port = d->port;
	int err;

	if (d->action == KPX_A_DNAT) {
		addr_off = p->l3_off + offsetof(struct iphdr, daddr);
		port_off = p->l4_off + offsetof(struct tcphdr, dest);
		old_addr = p->daddr;
		old_port = p->dport;
		p->daddr = new_addr;
		p->dport = new_port;
	} else {
		addr_off = p->l3_off + offsetof(struct iphdr, saddr);
		port_off = p->l4_off + offsetof(struct tcphdr, source);
		old_addr = p->saddr;
		old_port = p->sport;
		p->saddr = new_addr;
		p->sport = new_port;
	}
	p->eth = 0;
	p->iph = 0;
	p->l4 = 0;

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

#endif /* KPX_LIB_NAT_H */
