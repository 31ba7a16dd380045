#include "flatune/report/watch.h"

#include <memory>

#include "flatune/core/error.h"
#include "flatune/eval/evaluate.h"
#include "flatune/eval/forgetting.h"
#include "flatune/eval/tasks.h"
#include "flatune/text/tokenizer.h"

namespace flatune {

namespace {

struct WatchedSuites {
  std::vector<Task> general;
  std::vector<Task> target;  // zero or one
  Categories categories;
  std::unique_ptr<Tokenizer> tokenizer;
  EvalOptions options;
  std::string target_template;
};

WatchScore score(WatchedSuites& s, LlamaForCausalLM& model, const Distributed& dist) {
  EvalOptions eo = s.options;
  if (dist.active()) {
    eo.shard = dist.rank;
    eo.shards = dist.world_size;
    eo.gather = [&dist](const std::string& bytes) { return dist.all_gather(bytes); };
  }
  std::map<std::string, json> results;
  for (const Task& task : s.general)
    results[task.name] = task_result_to_json(evaluate_task(model, *s.tokenizer, task, eo));
  const GeneralScore general = general_score(results, s.categories);
  WatchScore w;
  w.overall = general.overall;
  for (const auto& [name, v] : general.categories) w.columns.emplace_back("category:" + name, v);
  for (const auto& [name, v] : general.tasks) w.columns.emplace_back("task:" + name, v);
  for (const Task& task : s.target) {
    EvalOptions to = eo;
    to.template_name = s.target_template;
    json r = task_result_to_json(evaluate_task(model, *s.tokenizer, task, to));
    w.target = r.at("metrics").at(reported_metric(task.name, r)).get<double>();
  }
  return w;
}

}  // namespace

TrainHooks make_watch_hooks(const TrainOptions& o) {
  TrainHooks hooks;
  if (o.watch.empty()) return hooks;
  auto s = std::make_shared<WatchedSuites>();
  for (const auto& path : o.watch) s->general.push_back(read_task(path));
  if (!o.watch_target.empty()) s->target.push_back(read_task(o.watch_target));
  s->categories = o.watch_categories.empty() ? paper_categories() : load_categories(o.watch_categories);
  s->tokenizer = load_tokenizer(o.tokenizer.empty() ? o.model : o.tokenizer);
  s->options.limit = o.watch_limit;
  if (o.watch_batch_size > 0) s->options.batch_size = o.watch_batch_size;
  if (o.watch_max_new_tokens > 0) s->options.max_new_tokens = o.watch_max_new_tokens;
  s->target_template = o.watch_template;
  bool any_categorised = false;
  for (const Task& t : s->general) any_categorised |= !s->categories.category_of(t.name).empty();
  if (!any_categorised)
    fail("--watch",
         "no watched suite belongs to a category, so there is no general score (name the suites by their "
         "category's task prefixes, or give --watch-categories FILE.yaml)");
  hooks.watch = [s](LlamaForCausalLM& model, const Distributed& dist) { return score(*s, model, dist); };
  return hooks;
}

}  // namespace flatune
