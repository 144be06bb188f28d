// kpxctl: the operator CLI. `render` works offline on manifests; the live
// commands (get, endpoints, drain, trace...) talk to kpxd's admin API.
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "controller/manifest_loader.h"
#include "controller/table_format.h"
#include "controller/translate.h"
#include "nlohmann/json.hpp"

namespace {

struct RenderArgs {
  std::vector<std::string> files;
  std::string node_name;
  std::string node_zone;
  std::string output = "table";
  bool quiet = false;
};

int RunRender(const RenderArgs& args) {
  auto loaded = kpx::controller::LoadManifests(args.files);
  if (!loaded.ok()) {
    std::cerr << "error: " << loaded.status().message() << "\n";
    return 1;
  }
  kpx::controller::NodeInfo node{args.node_name, args.node_zone};
  kpx::controller::TranslateResult result = kpx::controller::Translate(loaded->store.state(), node);
  if (!args.quiet) {
    for (const auto& w : loaded->warnings) std::cerr << "warning: " << w << "\n";
    for (const auto& w : result.warnings) std::cerr << "warning: " << w << "\n";
  }
  if (args.output == "json") {
    std::cout << kpx::controller::TableToJson(result).dump(2) << "\n";
  } else {
    std::cout << kpx::controller::TableToText(result);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kpxctl: inspect and operate kpx, the Kubernetes node service proxy"};
  app.require_subcommand(1);

  RenderArgs render;
  CLI::App* render_cmd = app.add_subcommand(
      "render", "Translate manifests into kpx's virtual-IP rules offline (no daemon needed)");
  render_cmd->add_option("-f,--filename", render.files, "Manifest file or directory (repeatable)")
      ->required()
      ->allow_extra_args(false);
  render_cmd->add_option("--node-name", render.node_name,
                         "Node to render for (endpoint locality, traffic policy Local)")
      ->required();
  render_cmd->add_option("--node-zone", render.node_zone, "Zone of the node (topology hints)");
  render_cmd->add_option("-o,--output", render.output, "Output format")
      ->check(CLI::IsMember({"table", "json"}));
  render_cmd->add_flag("-q,--quiet", render.quiet, "Do not print warnings");

  CLI11_PARSE(app, argc, argv);
  if (render_cmd->parsed()) return RunRender(render);
  return 2;
}
