// Benchmarks of the Maglev table build (kpxd builds one per Service with
// backends: 10k Services are 10k tables at a cold start). items/s counts
// tables.
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "dataplane/xdp/maglev.h"

namespace kpx::xdp {
namespace {

// Distinct backend sets: rebuilding one table over and over lets the CPU's
// branch predictor learn its probe sequence (6 us instead of 13 us per
// 1021-slot table on the lab machine), which a cold start never sees.
std::vector<std::vector<MaglevBackend>> RandomBackendSets(size_t n, size_t sets) {
  std::mt19937_64 rng(7);
  std::vector<std::vector<MaglevBackend>> out(sets);
  for (auto& set : out) {
    for (size_t i = 0; i < n; ++i) set.push_back({static_cast<uint32_t>(i + 1), rng() & 0xffffffffffffULL});
  }
  return out;
}

// Arg: backends; M as kpxd chooses it.
void BM_BuildMaglevTable(benchmark::State& st) {
  const size_t n = static_cast<size_t>(st.range(0));
  const uint32_t m = ChooseMaglevSize(n, 65521);
  const std::vector<std::vector<MaglevBackend>> sets = RandomBackendSets(n, n >= 100 ? 64 : 1024);
  size_t next = 0;
  for (auto _ : st) {
    const std::vector<MaglevBackend>& bes = sets[next++ % sets.size()];
    std::vector<uint32_t> t = BuildMaglevTable(bes, m);
    benchmark::DoNotOptimize(t);
  }
  st.counters["M"] = m;
  st.SetItemsProcessed(st.iterations());
}
BENCHMARK(BM_BuildMaglevTable)
    ->ArgName("backends")
    ->Arg(3)
    ->Arg(10)
    ->Arg(100)
    ->Arg(600)
    ->MinTime(0.3);

}  // namespace
}  // namespace kpx::xdp

BENCHMARK_MAIN();
