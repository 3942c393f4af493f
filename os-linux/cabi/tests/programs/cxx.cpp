// The C++ operators under LD_PRELOAD: containers, over-aligned types, the
// nothrow forms, std::bad_alloc and the new-handler loop.
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <new>
#include <string>
#include <vector>

static int handler_calls;
static void handler() {
    if (++handler_calls >= 3) std::set_new_handler(nullptr);
}

struct alignas(64) Line { char c[100]; };
struct alignas(8192) Page { char c[10]; };

void *volatile sink;

int main() {
    std::map<std::string, std::vector<int>> m;
    for (int i = 0; i < 200000; i++) m[std::to_string(i % 5000)].push_back(i);
    unsigned long sum = 0;
    for (auto &kv : m) sum += kv.first.size() * kv.second.size() + kv.second.back();
    std::printf("map: %zu keys, checksum %lu\n", m.size(), sum);

    auto lines = new Line[1000];
    auto page = std::make_unique<Page>();
    std::printf("aligned new: %d %d\n", (int)((uintptr_t)lines % 64 == 0),
                (int)((uintptr_t)page.get() % 8192 == 0));
    delete[] lines;

    const std::size_t huge = SIZE_MAX / 2;
    sink = ::operator new(huge, std::nothrow);
    std::printf("nothrow new of a huge size: %s\n", sink ? "non-null" : "null");
    sink = ::operator new(huge, std::align_val_t(64), std::nothrow);
    std::printf("aligned nothrow new of a huge size: %s\n", sink ? "non-null" : "null");
    try {
        sink = ::operator new(huge);
        std::puts("no exception");
    } catch (const std::bad_alloc &) {
        std::puts("bad_alloc caught");
    }
    try {
        sink = ::operator new[](huge, std::align_val_t(128));
        std::puts("no exception");
    } catch (const std::bad_alloc &) {
        std::puts("aligned bad_alloc caught");
    }
    std::set_new_handler(handler);
    try {
        sink = ::operator new(huge);
    } catch (const std::bad_alloc &) {
        std::printf("new handler ran %d times, then bad_alloc\n", handler_calls);
    }
    return 0;
}
