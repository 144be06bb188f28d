// Maglev consistent hashing (Eisenbud et al., NSDI 2016) for the eBPF
// dataplane: each service gets a lookup table of M slots (M prime) filled
// from its backends, which the BPF program indexes with hash(flow) % M.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "controller/base/ipv4.h"

namespace kpx::xdp {

// One backend as the table sees it: `id` is what goes into the slots, `key`
// decides the backend's permutation. Keys must be stable across processes
// and nodes: kpxd uses MaglevKey(ip, port), so every node (and a restarted
// kpxd) builds the same table for the same endpoints whatever ids it gave
// them -- a flow that ECMP moves to another node keeps its backend.
struct MaglevBackend {
  uint32_t id = 0;
  uint64_t key = 0;
};

// The stable key of a backend address: 48 bits of ip:port.
uint64_t MaglevKey(Ipv4 ip, uint16_t port);

// Fills an M-slot table with backend ids (the paper's "populate" with
// offset = h1(key) % M and skip = h2(key) % (M-1) + 1; the hashes are fixed
// 64-bit mixers, never seeded per process). The result depends only on the
// set of (id, key) pairs and M, not on their order. Each backend gets
// floor(M/N) or ceil(M/N) slots; removing one of N backends moves about 1/N
// of the slots. M should be prime; any M >= 1 yields a full table (skips are
// forced coprime with M). Empty input or M == 0: empty result (no table; the
// service rejects new flows).
std::vector<uint32_t> BuildMaglevTable(absl::Span<const MaglevBackend> backends, uint32_t m);

// Same, with each id as its own key (tests, or ids that are stable already).
std::vector<uint32_t> BuildMaglevTable(absl::Span<const uint32_t> backend_ids, uint32_t m);

// Table size for a service with `backends` backends: the smallest prime of a
// fixed list (251, 509, 1021, ..., 65521) that is >= 100 x backends (so each
// backend's share is within 1 % of even), capped at the largest prime <=
// max_m. 0 for 0 backends. Why not always KPX_MAGLEV_M_DEFAULT: a 16381-slot
// table is 64 KiB of kernel memory, x 10k services = 655 MB; most services
// have a handful of backends and need 251..1021 slots.
uint32_t ChooseMaglevSize(size_t backends, uint32_t max_m);

// ChooseMaglevSize with hysteresis for a service whose table has
// `current_m` slots now (0 = none): keeps current_m while it is large enough
// (>= 50 slots per backend, i.e. shares within ~2 % of even, even if a fresh
// table would get 100), allowed (<= max_m) and not wasteful (<= 4 x the
// chosen size). A new M reshuffles the whole table (established flows keep
// their backend through conntrack, new flows of an ECMP-moved client do
// not), so growing a service by one backend must not change M: a table
// built at N backends keeps its M up to 2N (`kpx-bench lb` measures it), and
// a backend count flapping around a size step never flips M.
uint32_t ChooseMaglevSizeKeeping(size_t backends, uint32_t current_m, uint32_t max_m);

// True when `n` is prime (trial division; n is at most a few 100k here).
bool IsPrime(uint32_t n);

}  // namespace kpx::xdp
