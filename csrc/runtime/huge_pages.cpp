#include "huge_pages.h"

#include <mutex>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace exaone {

#if defined(__linux__) && defined(MADV_HUGEPAGE)
namespace {

constexpr size_t kHugePage = size_t(2) << 20;
constexpr size_t kChunk = size_t(64) << 20;  // blocks above this get a chunk of their own
constexpr size_t kAlign = 64;

struct Chunk {
  void* map = nullptr;
  size_t map_size = 0;
  char* base = nullptr;  // first 2 MiB boundary in the mapping
  size_t size = 0, used = 0;
  ~Chunk() {
    if (map) munmap(map, map_size);
  }
};

std::shared_ptr<Chunk> new_chunk(size_t need) {
  auto c = std::make_shared<Chunk>();
  c->size = ((need > kChunk ? need : kChunk) + kHugePage - 1) / kHugePage * kHugePage;
  c->map_size = c->size + kHugePage;  // room to start on a huge-page boundary
  void* m = mmap(nullptr, c->map_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return nullptr;
  c->map = m;
  const size_t addr = reinterpret_cast<size_t>(m);
  c->base = static_cast<char*>(m) + ((kHugePage - addr % kHugePage) % kHugePage);
  madvise(c->base, c->size, MADV_HUGEPAGE);  // advice only: without THP the pages are small
  return c;
}

}  // namespace

HugePageBlock huge_page_alloc(size_t bytes) {
  static std::mutex mu;
  static std::weak_ptr<Chunk> current;  // the chunk new blocks come from, while any block of it lives
  std::lock_guard<std::mutex> lk(mu);
  const size_t n = (bytes + kAlign - 1) / kAlign * kAlign;
  std::shared_ptr<Chunk> c = current.lock();
  if (!c || c->used + n > c->size) {
    c = new_chunk(n ? n : kAlign);
    if (!c) return {};
    if (n <= kChunk) current = c;  // a chunk of its own is not shared with later blocks
  }
  HugePageBlock b;
  b.data = c->base + c->used;
  c->used += n;
  b.owner = c;
  return b;
}

#else

HugePageBlock huge_page_alloc(size_t) { return {}; }

#endif

}  // namespace exaone
