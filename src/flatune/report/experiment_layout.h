// The names inside an experiment folder, spelled only here: the runner writes by them, the
// report and `flatune correlate` read by them, so renaming one changes all three.
//
//   <experiment>/base/                       the before model's evaluation, then DONE
//   <experiment>/stages/<stage>/             models the stages build (unless a stage cache is set)
//   <experiment>/runs/<target>__<method>__s<seed>/
//       the trainer's run folder, plus wiseft/ (the merged model of a wiseft-alpha method),
//       eval/, flatness.json, landscape/, wiseft_sweep/, sharpness.json (when `flatune
//       sharpness --out` was pointed there), then DONE
//   <experiment>/forgetting.json             every run against the before model
#pragma once
#include <cstdint>
#include <string>

#include "flatune/core/fs.h"
#include "flatune/landscape/output_files.h"

namespace flatune::experiment_layout {

inline std::string base_dir(const std::string& experiment) { return join_path(experiment, "base"); }
inline std::string stages_dir(const std::string& experiment) { return join_path(experiment, "stages"); }
inline std::string runs_dir(const std::string& experiment) { return join_path(experiment, "runs"); }

inline std::string run_name(const std::string& target, const std::string& method, uint64_t seed) {
  return target + "__" + method + "__s" + std::to_string(seed);
}
inline std::string run_dir(const std::string& experiment, const std::string& run) {
  return join_path(runs_dir(experiment), run);
}

// Written last into base/ and each run folder: present means finished, and a resumed
// experiment skips it.
inline std::string done_marker(const std::string& dir) { return join_path(dir, "DONE"); }

inline std::string flatness_file(const std::string& run_dir) { return join_path(run_dir, "flatness.json"); }
inline std::string sharpness_file(const std::string& run_dir) { return join_path(run_dir, kSharpnessJsonFile); }
inline std::string landscape_dir(const std::string& run_dir) { return join_path(run_dir, "landscape"); }
inline std::string wiseft_model_dir(const std::string& run_dir) { return join_path(run_dir, "wiseft"); }
inline std::string wiseft_sweep_dir(const std::string& run_dir) { return join_path(run_dir, "wiseft_sweep"); }

// {"norm": ||before weights||}: written when a method scales its rho by it.
inline std::string weight_norm_file(const std::string& experiment) {
  return join_path(base_dir(experiment), "weight_norm.json");
}

inline std::string forgetting_file(const std::string& experiment) { return join_path(experiment, "forgetting.json"); }

}  // namespace flatune::experiment_layout
