/* Includes and small definitions every kpx BPF header relies on. Only UAPI
 * headers (no vmlinux.h / CO-RE): packet processing needs nothing else. */
#ifndef KPX_LIB_COMMON_H
#define KPX_LIB_COMMON_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/types.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "kpx/abi.h"

#define KPX_INLINE static __always_inline

/* The programs' clock for conntrack and affinity timestamps: CLOCK_MONOTONIC
 * (the clock of bpf_ktime_get_ns() and of userspace's clock_gettime), read
 * at tick resolution. bpf_ktime_get_ns() reads the clocksource on every
 * call, ~20 ns per packet in a VM (kvm-clock), for a precision that second-
 * scale timeouts do not use. Every timestamp the programs write or compare
 * must come from here: a mix of coarse and fine reads can see time go back
 * by up to a tick. */
KPX_INLINE __u64 kpx_now_ns(void)
{
	return bpf_ktime_get_coarse_ns();
}

/* <sys/socket.h> is libc, not UAPI. */
#define KPX_AF_INET 2

#ifndef IP_MF
#define IP_MF 0x2000
#endif
#ifndef IP_OFFSET
#define IP_OFFSET 0x1fff
#endif

/* TCP flag bits as they sit in byte 13 of the TCP header. */
#define KPX_TCP_FIN 0x01
#define KPX_TCP_SYN 0x02
#define KPX_TCP_RST 0x04
#define KPX_TCP_PSH 0x08
#define KPX_TCP_ACK 0x10

#endif /* KPX_LIB_COMMON_H */
