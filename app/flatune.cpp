// flatune: the command line. Each verb is added by its cmd_<verb>.cpp; errors a user can cause
// end here as one line `flatune: <where>: <problem>` and exit code 2.
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <unistd.h>
#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "commands.h"
#include "flatune/core/compat.h"
#include "flatune/core/error.h"
#include "flatune/core/log.h"
#include "flatune/core/version.h"
#include "flatune/train/signals.h"
#include "yaml_config.h"

namespace {
std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }
}  // namespace

int main(int argc, char** argv) {
  // libgomp reads its wait policy when it is loaded, before main, so flatune sets it (see
  // compat::default_omp_wait_policy) and executes itself again, once; a policy the user set is
  // kept. FLATUNE_CHOSE_OMP_WAIT_POLICY tells `launch` the policy was flatune's choice, which it
  // replaces for several ranks on one machine (their threads would spin on each other's cores).
  // SIGINT/SIGTERM stay pending across the re-execution (blocked signals are, even ones the
  // parent ignores) and reach the handlers installed below: a Ctrl-C while flatune starts is
  // never lost.
  if (!std::getenv("OMP_WAIT_POLICY")) {
    setenv("OMP_WAIT_POLICY", flatune::compat::default_omp_wait_policy(), 1);
    setenv("FLATUNE_CHOSE_OMP_WAIT_POLICY", "1", 1);
    flatune::block_interrupts();
    execv("/proc/self/exe", argv);  // on failure, run on with libgomp's default
  }
  flatune::install_interrupt_handlers();
  CLI::App app{"flatune: fine-tune Llama-family models while keeping what they know"};
  app.set_version_flag("--version", "flatune " + flatune::flatune_version());
  app.require_subcommand(1);
  app.set_config("--config", "", "YAML file whose keys are the long flag names")->check(CLI::ExistingFile);
  auto yaml_config = std::make_shared<flatune::cli::YamlConfig>(&app);
  app.config_formatter(yaml_config);
  const char* level = std::getenv("FLATUNE_LOG");
  flatune::init_logging(level ? level : "info");
  // libtorch's default intra-op thread count was 1 on a 2-vCPU machine: use every core unless
  // a verb's --threads says otherwise.
  at::set_num_threads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));

  // Verbs (one line each; see commands.h).
  flatune::cli::add_bench_command(app);
  flatune::cli::add_generate_command(app);
  flatune::cli::add_launch_command(app);
  flatune::cli::add_train_command(app);
  flatune::cli::add_fisher_command(app);
  flatune::cli::add_merge_command(app);
  flatune::cli::add_wiseft_sweep_command(app);
  flatune::cli::add_eval_command(app);
  flatune::cli::add_forgetting_command(app);
  flatune::cli::add_import_command(app);
  flatune::cli::add_experiment_command(app);
  flatune::cli::add_demo_command(app);
  flatune::cli::add_info_command(app);
  flatune::cli::add_tokenize_command(app);
  flatune::cli::add_landscape_command(app);
  flatune::cli::add_sharpness_command(app);
  flatune::cli::add_correlate_command(app);
  flatune::cli::add_plot_watch_command(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    std::string where = yaml_config->locate(e.what(), std::vector<std::string>(argv, argv + argc));
    if (!where.empty()) {
      std::fprintf(stderr, "flatune: %s: %s\n", where.c_str(), first_line(e.what()).c_str());
      return 2;
    }
    return app.exit(e);
  } catch (const flatune::Interrupted& e) {
    std::fprintf(stderr, "flatune: %s\n", e.what());
    return 128 + e.signal;
  } catch (const flatune::Error& e) {
    // A bad value from --config FILE is named where the file holds it.
    std::string where = e.where().rfind("--", 0) == 0
                            ? yaml_config->locate(e.where(), std::vector<std::string>(argv, argv + argc))
                            : "";
    if (!where.empty()) {
      std::fprintf(stderr, "flatune: %s: %s\n", where.c_str(), e.problem().c_str());
      return 2;
    }
    std::fprintf(stderr, "flatune: %s\n", e.what());
    return 2;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "flatune: torch: %s\n", first_line(e.what_without_backtrace()).c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "flatune: %s\n", first_line(e.what()).c_str());
    return 1;
  }
  return 0;
}
