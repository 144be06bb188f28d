/* Per-CPU counters: one per verdict (enum kpx_verdict) and one block per
 * service id. Per-CPU maps need no atomics; userspace sums over CPUs. */
#ifndef KPX_LIB_STATS_H
#define KPX_LIB_STATS_H

#include "lib/maps.h"

KPX_INLINE void kpx_count(__u32 verdict)
{
	__u64 *c = bpf_map_lookup_elem(&kpx_verdict_stats, &verdict);

	if (c)
		*c += 1;
}

/* Service traffic in both directions (forward packets and their replies). */
KPX_INLINE void kpx_count_svc(__u32 svc_id, __u32 bytes, __u32 verdict)
{
	struct kpx_svc_stats *s;

	if (!svc_id)
		return;
	s = bpf_map_lookup_elem(&kpx_svc_stats, &svc_id);
	if (!s)
		return;
	s->packets += 1;
	s->bytes += bytes;
	if (verdict == KPX_V_NEW_FLOW)
		s->new_flows += 1;
	else if (verdict == KPX_V_NO_BACKEND)
		s->no_backend += 1;
}

#endif /* KPX_LIB_STATS_H */
