// SIGINT and SIGTERM, taken synchronously: blocked in every thread before any is started, then
// waited for by the main thread, so no handler runs in the middle of a worker's system call.
#pragma once

#include <csignal>

namespace rafsd {

// Blocks SIGINT and SIGTERM in the calling thread and every thread it starts later.
sigset_t blockStopSignals();
// Waits for one of them; returns its number.
int waitForStopSignal(const sigset_t& set);

}  // namespace rafsd
