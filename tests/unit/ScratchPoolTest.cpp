#include "daemon/core/ScratchPool.h"

#include <catch2/catch.hpp>

#include <cstddef>

using rafsd::ScratchPool;

namespace {

struct FakeBuffers {
    size_t held = 0;
    void trim(size_t keep) {
        if (held > keep) held = 0;
    }
};

}  // namespace

TEST_CASE("a lease takes the set given back last; leases at the same time get sets of their own", "[scratchpool]") {
    ScratchPool<FakeBuffers> pool;
    const FakeBuffers* used = nullptr;
    {
        auto a = pool.take();
        a->held = 8;
        used = a.operator->();
    }
    auto b = pool.take();
    CHECK(b.operator->() == used);
    CHECK(b->held == 8);  // its memory stays with it between runs
    auto c = pool.take();
    CHECK(c.operator->() != b.operator->());
    CHECK(c->held == 0);
}

TEST_CASE("trim shrinks the sets not leased and keeps the one in use", "[scratchpool]") {
    ScratchPool<FakeBuffers> pool;
    {
        auto spare = pool.take();
        spare->held = 8;
    }
    auto leased = pool.take();
    leased->held = 8;
    {
        auto other = pool.take();  // a new set: the only spare is leased
        other->held = 8;
    }
    pool.trim(2);
    CHECK(leased->held == 8);
    auto again = pool.take();
    CHECK(again->held == 0);
}
