// `petcam serve` and `petcam migrate`: settings, logging, database, jobs and the HTTP server wired
// together.
#pragma once

#include <string>

namespace petcam {

// Serves until SIGTERM/SIGINT; returns the process exit code. role: all | api | worker | "" (ROLE setting);
// device: as DEVICE, "" for the setting.
int run_serve(const std::string& env_file, const std::string& role, const std::string& device = "");
// action: up | down | status. steps: how many to revert for down.
int run_migrate(const std::string& action, int steps, const std::string& env_file);

}  // namespace petcam
