/* kpx_tc: the tc (clsact ingress, direct-action) entry program for
 * pod-facing veths: pods talking to Services, and backend replies. Same
 * decision as kpx_xdp; the rewrites go through skb helpers because packets
 * from local sockets may be CHECKSUM_PARTIAL. */
#include "lib/common.h"
#include "lib/fib.h"
#include "lib/lb.h"
#include "lib/maps.h"
#include "lib/nat.h"
#include "lib/parse.h"
#include "lib/rst.h"
#include "lib/stats.h"

/* Ethernet + VLAN + IPv4 with options + TCP with options. */
#define KPX_TC_HDR_MAX (ETH_HLEN + 4 + 60 + 60)

SEC("tc")
int kpx_tc(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct kpx_decision d;
	struct kpx_pkt p;
	int rc;

	rc = kpx_parse4(data, data_end, skb->len, &p);
	if (rc == KPX_P_MALFORMED && skb->len > data_end - data) {
		/* Headers partly in paged data (rare): make them linear, retry. */
		__u32 want = skb->len < KPX_TC_HDR_MAX ? skb->len : KPX_TC_HDR_MAX;

		if (bpf_skb_pull_data(skb, want) == 0) {
			data = (void *)(long)skb->data;
			data_end = (void *)(long)skb->data_end;
			rc = kpx_parse4(data, data_end, skb->len, &p);
		}
	}
	if (rc != KPX_P_OK) {
		kpx_count(kpx_parse_verdict(rc));
		return TC_ACT_OK;
	}
	if (skb->vlan_present)
		p.vlan = 1; /* tag held in skb metadata: no direct redirect */
	lb4_decide(&p, 0, &d);
	kpx_count(d.verdict);
	kpx_count_svc(d.svc_id, skb->len, d.verdict);
	switch (d.action) {
	case KPX_A_DNAT:
	case KPX_A_SNAT:
		if (tc_nat4(skb, &p, &d))
			return TC_ACT_SHOT;
		return tc_fib_forward(skb, &p, d.must_redirect);
	case KPX_A_RST:
		return tc_rst4(skb, &p);
	case KPX_A_DROP:
		return TC_ACT_SHOT;
	default:
		return TC_ACT_OK;
	}
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
