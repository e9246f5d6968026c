// Command-line parsing as every rafsd tool does it, with CLI11: --help printed with exit status 0;
// a usage error said in one line, "TOOL: what (see TOOL --help)", with exit status 2, naming a
// mistyped command, which CLI11 reports only as a missing one ("A subcommand is required").
// Header-only: for the programs, each of which depends on CLI11.
#pragma once

#include <CLI/CLI.hpp>

#include <iostream>
#include <optional>
#include <string>
#include <string_view>

namespace rafs {

// Parses `argv` into `app`: nullopt to go on, or the exit status to end with.
inline std::optional<int> parseCommandLine(CLI::App& app, int argc, char** argv, std::string_view tool) {
    try {
        app.parse(argc, argv);
        return std::nullopt;
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForAllHelp& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        const std::vector<std::string> rest = app.remaining();
        const bool mistyped = app.get_subcommands().empty() && !rest.empty() && !rest.front().starts_with('-');
        std::cerr << tool << ": " << (mistyped ? "unknown command '" + rest.front() + "'" : std::string(e.what()))
                  << " (see " << tool << " --help)\n";
        return 2;
    }
}

}  // namespace rafs
