// SIGINT, SIGTERM and SIGHUP, taken synchronously: blocked in every thread before any is started,
// then waited for by the main thread, so no handler runs in the middle of a worker's system call.
// SIGHUP is one of them so that a terminal's hangup, sent to supervisor and worker alike, never
// kills both at once (that would release a fanotify group with its mounts up: Supervisor.h):
// `rafsd mount` stops on it as on SIGTERM, and `rafsd serve` reloads (InPlaceRestart.h).
#pragma once

#include <csignal>

namespace rafsd {

// Blocks the three in the calling thread and every thread it starts later.
sigset_t blockStopSignals();
// Waits for one of them; returns its number.
int waitForStopSignal(const sigset_t& set);
// "SIGINT", "SIGTERM", "SIGHUP" (or the number) for log lines.
const char* stopSignalName(int sig);

}  // namespace rafsd
