// nvfp4kv CLI — entry point: dispatches to the registered subcommands (tools/cmd_*.cpp).
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "cli.h"

namespace nvfp4kv::cli {
namespace {
std::vector<Command>& registry() {
  static std::vector<Command> r;
  return r;
}
}  // namespace

bool register_command(const Command& command) {
  registry().push_back(command);
  return true;
}

std::vector<Command> commands() {
  std::vector<Command> c = registry();
  std::sort(c.begin(), c.end(), [](const Command& a, const Command& b) {
    return std::string(a.name) < std::string(b.name);
  });
  return c;
}

}  // namespace nvfp4kv::cli

namespace {
void print_usage(std::FILE* f) {
  std::fprintf(f, "usage: nvfp4kv <command> [options]   (nvfp4kv <command> --help for details)\n\ncommands:\n");
  for (const auto& c : nvfp4kv::cli::commands()) std::fprintf(f, "  %-12s %s\n", c.name, c.summary);
  std::fprintf(f, "\nexit codes: 0 ok, 1 verification mismatch, 2 usage, 3 library or file error\n");
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    print_usage(stderr);
    return nvfp4kv::cli::kExitUsage;
  }
  const std::string name = argv[1];
  if (name == "--help" || name == "-h" || name == "help") {
    print_usage(stdout);
    return nvfp4kv::cli::kExitOk;
  }
  for (const auto& c : nvfp4kv::cli::commands()) {
    if (name == c.name) return c.run(std::vector<std::string>(argv + 2, argv + argc));
  }
  std::fprintf(stderr, "nvfp4kv: unknown command '%s'\n\n", name.c_str());
  print_usage(stderr);
  return nvfp4kv::cli::kExitUsage;
}
