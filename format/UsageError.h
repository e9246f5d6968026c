// The line a command-line tool prints for a usage error CLI11 found (after "TOOL: "): CLI11's own
// message, but for a mistyped command, which CLI11 reports only as a missing one ("A subcommand is
// required"). Header-only: for the programs, each of which depends on CLI11.
#pragma once

#include <CLI/CLI.hpp>

#include <string>

namespace rafs {

inline std::string usageError(const CLI::App& app, const CLI::ParseError& e) {
    const std::vector<std::string> rest = app.remaining();
    if (app.get_subcommands().empty() && !rest.empty() && !rest.front().starts_with('-')) {
        return "unknown command '" + rest.front() + "'";
    }
    return e.what();
}

}  // namespace rafs
