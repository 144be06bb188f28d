/* Bounded IPv4 header parsing shared by the XDP and tc programs: Ethernet
 * (one optional VLAN tag), IPv4 with options, TCP or UDP ports. Every header
 * is checked against data_end once; the result keeps both pointers (valid
 * until a helper changes the packet) and offsets (for tc's store helpers). */
#ifndef KPX_LIB_PARSE_H
#define KPX_LIB_PARSE_H

#include "lib/common.h"

/* Outcome of kpx_parse4(): what the program does next. */
enum kpx_parse_result {
	KPX_P_OK = 0,       /* IPv4 first fragment or whole datagram, l4 parsed */
	KPX_P_NOT_IPV4,     /* ARP, IPv6, QinQ, ...: not ours */
	KPX_P_MALFORMED,    /* truncated or inconsistent headers */
	KPX_P_FRAGMENT,     /* IPv4 fragment: no reliable ports, never touched */
};

struct kpx_pkt {
	struct ethhdr *eth;
	struct iphdr *iph;
	void *l4;            /* tcphdr or udphdr; NULL for other protocols */
	__u32 l3_off;        /* bytes from the start of the frame */
	__u32 l4_off;
	__be32 saddr;
	__be32 daddr;
	__be16 sport;        /* 0 unless TCP/UDP */
	__be16 dport;
	__be32 seq;          /* TCP only */
	__be32 ack_seq;
	__u16 tot_len;       /* IPv4 total length, host order */
	__u16 l4_len;        /* tot_len - IP header length */
	__u8 proto;
	__u8 tcp_flags;      /* byte 13 of the TCP header */
	__u8 thl;            /* TCP header length in bytes */
	__u8 vlan;           /* 1 if one 802.1Q/802.1ad tag was skipped */
	__u8 tos;
	__u8 ttl;
	__u8 pad[2];
};

/* hdr_cursor style: pos only moves forward past a checked header. */
struct kpx_cursor {
	void *pos;
};

/* pkt_len: bytes in the whole frame, which for a non-linear skb is more than
 * data_end - data; headers must be linear, the payload need not be. */
KPX_INLINE int kpx_parse4(void *data, void *data_end, __u32 pkt_len, struct kpx_pkt *p)
{
	struct kpx_cursor c = { .pos = data };
	struct ethhdr *eth = c.pos;
	__be16 h_proto;

	if ((void *)(eth + 1) > data_end)
		return KPX_P_MALFORMED;
	c.pos = eth + 1;
	h_proto = eth->h_proto;
	p->eth = eth;
	p->vlan = 0;
	if (h_proto == bpf_htons(ETH_P_8021Q) || h_proto == bpf_htons(ETH_P_8021AD)) {
		/* 802.1Q tag: TCI then the inner EtherType. */
		__be16 *tag = c.pos;

		if ((void *)(tag + 2) > data_end)
			return KPX_P_MALFORMED;
		h_proto = tag[1];
		c.pos = tag + 2;
		p->vlan = 1;
	}
	if (h_proto != bpf_htons(ETH_P_IP))
		return KPX_P_NOT_IPV4;

	struct iphdr *iph = c.pos;
	__u32 ihl_len, tot_len;

	if ((void *)(iph + 1) > data_end)
		return KPX_P_MALFORMED;
	if (iph->version != 4 || iph->ihl < 5)
		return KPX_P_MALFORMED;
	ihl_len = iph->ihl * 4;
	tot_len = bpf_ntohs(iph->tot_len);
	/* Options are allowed; the L4 header starts after them. Trailing bytes
	 * past tot_len (Ethernet padding) are fine, a short datagram is not. */
	if (c.pos + ihl_len > data_end || tot_len < ihl_len)
		return KPX_P_MALFORMED;
	p->iph = iph;
	p->l3_off = c.pos - data;
	if (p->l3_off + tot_len > pkt_len)
		return KPX_P_MALFORMED;
	p->saddr = iph->saddr;
	p->daddr = iph->daddr;
	p->proto = iph->protocol;
	p->tot_len = tot_len;
	p->l4_len = tot_len - ihl_len;
	p->tos = iph->tos;
	p->ttl = iph->ttl;
	p->sport = 0;
	p->dport = 0;
	p->seq = 0;
	p->ack_seq = 0;
	p->tcp_flags = 0;
	p->thl = 0;
	p->l4 = 0;
	if (iph->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return KPX_P_FRAGMENT;
	c.pos += ihl_len;
	p->l4_off = c.pos - data;

	if (iph->protocol == IPPROTO_TCP) {
		struct tcphdr *th = c.pos;
		__u32 thl;

		if ((void *)(th + 1) > data_end)
			return KPX_P_MALFORMED;
		thl = th->doff * 4;
		if (thl < sizeof(*th) || thl > p->l4_len)
			return KPX_P_MALFORMED;
		p->l4 = th;
		p->sport = th->source;
		p->dport = th->dest;
		p->seq = th->seq;
		p->ack_seq = th->ack_seq;
		p->tcp_flags = ((__u8 *)th)[13];
		p->thl = thl;
	} else if (iph->protocol == IPPROTO_UDP) {
		struct udphdr *uh = c.pos;

		if ((void *)(uh + 1) > data_end)
			return KPX_P_MALFORMED;
		p->l4 = uh;
		p->sport = uh->source;
		p->dport = uh->dest;
	}
	return KPX_P_OK;
}

/* The verdict counted for a packet kpx_parse4() did not accept. */
KPX_INLINE __u32 kpx_parse_verdict(int rc)
{
	if (rc == KPX_P_MALFORMED)
		return KPX_V_MALFORMED;
	if (rc == KPX_P_FRAGMENT)
		return KPX_V_FRAGMENT;
	return KPX_V_PASS_NON_SERVICE;
}

#endif /* KPX_LIB_PARSE_H */
