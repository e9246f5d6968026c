#include "daemon/core/RepeatedFailureLog.h"

#include <catch2/catch.hpp>

#include <chrono>
#include <optional>

using rafsd::RepeatedFailureLog;
using namespace std::chrono_literals;

TEST_CASE("a repeated failure is logged once per interval, with the count held back", "[log]") {
    RepeatedFailureLog failures(10s);
    const RepeatedFailureLog::Clock::time_point t0{};
    CHECK(failures.admit(t0) == std::optional<uint64_t>(0));
    for (int i = 0; i < 87; ++i) CHECK_FALSE(failures.admit(t0 + 1s));
    CHECK_FALSE(failures.admit(t0 + 9s));
    CHECK(failures.admit(t0 + 10s) == std::optional<uint64_t>(88));
    CHECK_FALSE(failures.admit(t0 + 11s));
    CHECK(failures.admit(t0 + 60s) == std::optional<uint64_t>(1));
}

TEST_CASE("the count held back ends the next line, if there is one", "[log]") {
    CHECK(RepeatedFailureLog::heldBack(0, "backend failures").empty());
    CHECK(RepeatedFailureLog::heldBack(88, "backend failures") ==
          " (and 88 more backend failures since the last of these lines)");
}
