// kpx_probe: the smallest XDP program kpx ships. It proves that the BPF
// toolchain (clang -> object -> bpftool skeleton -> libbpf load) works on this
// host and counts the packets it sees; kpxd uses it to test XDP support.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} kpx_probe_packets SEC(".maps");

SEC("xdp")
int kpx_probe_xdp(struct xdp_md *ctx)
{
	__u32 key = 0;
	__u64 *count = bpf_map_lookup_elem(&kpx_probe_packets, &key);

	if (count)
		*count += 1;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
