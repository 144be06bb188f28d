/* Internet checksum arithmetic in plain C (cheaper than a helper call for a
 * few words). Values stay in network byte order throughout: the one's
 * complement sum is byte-order independent as long as every operand is read
 * the same way. XDP packets come from NICs with complete checksums, so the
 * incremental updates (RFC 1624) below are exact there; tc uses the kernel's
 * bpf_l3/l4_csum_replace instead (see nat.h) because of CHECKSUM_PARTIAL. */
#ifndef KPX_LIB_CSUM_H
#define KPX_LIB_CSUM_H

#include "lib/common.h"

/* Folds a wide one's complement sum to 16 bits (not complemented). */
KPX_INLINE __u16 kpx_csum_fold(__u64 s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)s;
}

/* 32-bit one's complement add with end-around carry (a __wsum, as the
 * kernel's csum helpers take). */
KPX_INLINE __u32 kpx_csum_add(__u32 a, __u32 b)
{
	a += b;
	return a + (a < b);
}

KPX_INLINE __u32 kpx_csum_sub(__u32 a, __u32 b)
{
	return kpx_csum_add(a, ~b);
}

/* RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'). */
KPX_INLINE void kpx_csum_replace4(__sum16 *sum, __be32 from, __be32 to)
{
	__u64 s = (__u16)~*sum;

	s += (__u32)~from;
	s += (__u32)to;
	*sum = (__sum16)~kpx_csum_fold(s);
}

KPX_INLINE void kpx_csum_replace2(__sum16 *sum, __be16 from, __be16 to)
{
	__u64 s = (__u16)~*sum;

	s += (__u16)~from;
	s += to;
	*sum = (__sum16)~kpx_csum_fold(s);
}

/* Sum of n 16-bit words of a stack buffer (n is a compile-time constant). */
KPX_INLINE __u64 kpx_csum_words(const __u16 *w, int n)
{
	__u64 s = 0;

#pragma unroll
	for (int i = 0; i < n; i++)
		s += w[i];
	return s;
}

/* new - old over n words of two stack buffers, as a 32-bit partial sum. */
KPX_INLINE __u32 kpx_csum_diff_words(const __u16 *old, const __u16 *new, int n)
{
	__u64 s = 0;

#pragma unroll
	for (int i = 0; i < n; i++)
		s += (__u16)~old[i] + (__u32)new[i];
	s = (s & 0xffffffff) + (s >> 32);
	return (__u32)((s & 0xffffffff) + (s >> 32));
}

/* Sum of the IPv4 pseudo header for TCP with the given L4 length. */
KPX_INLINE __u64 kpx_csum_pseudo4(__be32 saddr, __be32 daddr, __u16 l4_len)
{
	return (__u64)saddr + daddr + bpf_htons(IPPROTO_TCP) + bpf_htons(l4_len);
}

/* Full TCP checksum of a bare 20-byte header (no options, no payload) whose
 * check field is zero. */
KPX_INLINE __sum16 kpx_tcp_csum20(__be32 saddr, __be32 daddr, const struct tcphdr *th)
{
	__u64 s = kpx_csum_pseudo4(saddr, daddr, sizeof(*th));

	s += kpx_csum_words((const __u16 *)th, sizeof(*th) / 2);
	return (__sum16)~kpx_csum_fold(s);
}

#endif /* KPX_LIB_CSUM_H */
