// Memory for weights made at load (GGUF blocks repacked, weights quantized as they load), from
// 2 MiB-aligned anonymous mappings advised MADV_HUGEPAGE where the OS has them (Linux).
//
// Decoding streams every weight once per token (~0.8 GB for the 1.2B in int4). On 4 KiB pages the
// CPU's stream prefetchers stop at each page boundary and every page costs a TLB walk; from malloc
// (the heap, which EXAONE_CPU_MALLOC=keep keeps for blocks under 64 MB) only part of the weights got
// huge pages (numpy advises its larger blocks: 368 of the Q4_K_M file's 822 MB). Measured on the
// Zen 4 VM, 2 threads: decoding that file 7-16 % faster with every weight on huge pages (BENCHMARKS.md).
#pragma once
#include <cstddef>
#include <memory>

namespace exaone {

// A block of `bytes` (64-byte aligned) carved from a shared chunk; `owner` keeps the chunk mapped
// (the chunk goes when its last block's owner does). Null `data` where huge pages are not
// available: allocate normally then. Thread-safe.
struct HugePageBlock {
  void* data = nullptr;
  std::shared_ptr<void> owner;
};
HugePageBlock huge_page_alloc(size_t bytes);

}  // namespace exaone
