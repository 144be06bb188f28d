// kpx_floor: programs that do nothing but accept the packet (XDP_PASS, and
// TC_ACT_OK for tc). `kpx-bench xdp` times them next to the load balancer
// with the same BPF_PROG_TEST_RUN method: their cost is the measurement's
// floor (syscall-side timer, context setup), which the paths are read against.
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int kpx_floor_xdp(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("tc")
int kpx_floor_tc(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} kpx_floor_count SEC(".maps");

SEC("xdp")
int kpx_floor_sink(struct xdp_md *ctx)
{
	__u32 key = 0;
	__u64 *count = bpf_map_lookup_elem(&kpx_floor_count, &key);

	if (count)
		*count += 1;
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
