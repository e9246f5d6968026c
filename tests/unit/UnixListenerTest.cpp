#include "daemon/api/UnixListener.h"

#include "format/Error.h"
#include "tests/unit/TempDir.h"

#include <catch2/catch.hpp>

#include <latch>
#include <optional>
#include <thread>

using rafsd::UnixListener;

// Two rafsds started at once on one socket path (the service and a `rafsd mount` reading the same
// config): between one's bind() and its listen(), the other's probe finds nobody listening and
// would take the file as stale, remove it and bind its own; both would run, one unreachable.
TEST_CASE("of two listeners binding one path at once one listens and the other is refused", "[api]") {
    const rafs::test::TempDir dir;
    const std::filesystem::path path = dir.path() / "api.sock";
    for (int round = 0; round < 300; ++round) {
        std::latch start(2);  // both bind at once
        std::optional<UnixListener> listeners[2];
        std::string errors[2];
        auto bind = [&](int i) {
            start.arrive_and_wait();
            try {
                listeners[i].emplace(UnixListener::bind(path, 0600, 0));
            } catch (const rafs::Error& e) {
                errors[i] = e.what();
            }
        };
        std::thread a(bind, 0), b(bind, 1);
        a.join();
        b.join();
        INFO("round " << round << ": " << errors[0] << " / " << errors[1]);
        REQUIRE(listeners[0].has_value() != listeners[1].has_value());
        const int refused = listeners[0] ? 1 : 0;
        CHECK(errors[refused] == "another process is already listening on " + path.string());
        listeners[1 - refused].reset();  // removes its socket file
    }
}
