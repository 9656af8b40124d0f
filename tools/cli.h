// nvfp4kv CLI — subcommand registry. Each tools/cmd_*.cpp registers one subcommand.
#pragma once

#include <string>
#include <vector>

namespace nvfp4kv::cli {

/// Exit codes of the CLI.
enum ExitCode : int {
  kExitOk = 0,        ///< success
  kExitMismatch = 1,  ///< a verification found a mismatch
  kExitUsage = 2,     ///< bad command line
  kExitError = 3,     ///< library or file error
};

/// One subcommand: `run` receives the arguments after the subcommand name.
struct Command {
  const char* name;
  const char* summary;
  int (*run)(const std::vector<std::string>& args);
};

/// Adds a subcommand (called from static initialisers via NVFP4KV_CLI_COMMAND).
bool register_command(const Command& command);
/// All registered subcommands, sorted by name.
std::vector<Command> commands();

}  // namespace nvfp4kv::cli

#define NVFP4KV_CLI_CONCAT2(a, b) a##b
#define NVFP4KV_CLI_CONCAT(a, b) NVFP4KV_CLI_CONCAT2(a, b)
/// Registers `fn` as subcommand `name` with a one-line summary.
#define NVFP4KV_CLI_COMMAND(name, summary, fn)                                              \
  static const bool NVFP4KV_CLI_CONCAT(nvfp4kv_cli_registered_, __LINE__) =                \
      ::nvfp4kv::cli::register_command(::nvfp4kv::cli::Command{name, summary, fn})
