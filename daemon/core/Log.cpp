#include "daemon/core/Log.h"

#include "format/Error.h"

#include <atomic>
#include <cstdio>
#include <mutex>

namespace rafsd::log {

namespace {
std::atomic<Level> g_level{Level::Info};
std::atomic<const char*> g_program{"rafsd"};
std::mutex g_mutex;
constexpr const char* kNames[] = {"error", "warn", "info", "debug"};
}  // namespace

void setLevel(Level level) { g_level = level; }
void setProgram(const char* name) { g_program = name; }

Level parseLevel(std::string_view name) {
    for (int i = 0; i < 4; ++i) {
        if (name == kNames[i]) return static_cast<Level>(i);
    }
    rafs::fail("log level '{}' is not one of error, warn, info, debug", name);
}

bool enabled(Level level) { return level <= g_level.load(std::memory_order_relaxed); }

void write(Level level, std::string_view message) {
    std::lock_guard lock(g_mutex);
    std::fprintf(stderr, "%s %s: %.*s\n", g_program.load(), kNames[static_cast<int>(level)],
                 static_cast<int>(message.size()), message.data());
}

}  // namespace rafsd::log
