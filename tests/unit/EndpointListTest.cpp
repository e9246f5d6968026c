#include "registry/EndpointList.h"

#include <catch2/catch.hpp>

#include <thread>

using registry::EndpointList;

TEST_CASE("endpoints in order, a failed one skipped for a while, then back", "[endpoints]") {
    EndpointList list({"a", "b", "c"}, std::chrono::milliseconds(200));
    CHECK(list.order() == std::vector<size_t>{0, 1, 2});
    list.failed(0);
    CHECK(list.order() == std::vector<size_t>{1, 2, 0});
    list.failed(2);
    CHECK(list.order() == std::vector<size_t>{1, 0, 2});
    list.succeeded(2);
    CHECK(list.order() == std::vector<size_t>{1, 2, 0});
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
    CHECK(list.order() == std::vector<size_t>{0, 1, 2});
}
