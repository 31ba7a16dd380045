#include "flatune/eval/evaluate.h"

#include <cmath>
#include <random>
#include <regex>

#include "flatune/core/error.h"
#include "flatune/core/fs.h"
#include "flatune/core/progress.h"
#include "flatune/data/dataset.h"
#include "flatune/eval/loglik.h"
#include "flatune/eval/pyrandom.h"
#include "flatune/model/generate.h"

namespace flatune {

MetricValue mean_with_stderr(const std::vector<double>& xs) {
  MetricValue m;
  if (xs.empty()) return m;
  double sum = 0;
  for (double x : xs) sum += x;
  m.value = sum / xs.size();
  if (xs.size() > 1) {
    double ss = 0;
    for (double x : xs) ss += (x - m.value) * (x - m.value);
    m.stderr_ = std::sqrt(ss / (xs.size() - 1)) / std::sqrt(static_cast<double>(xs.size()));
  }
  return m;
}

namespace {
size_t code_points(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}
}  // namespace

void score_choices(const std::vector<double>& ll, const std::vector<std::string>& choices, int* pred, int* pred_norm) {
  *pred = 0;
  *pred_norm = 0;
  double best = -INFINITY, best_norm = -INFINITY;
  for (size_t i = 0; i < ll.size(); ++i) {
    // np.argmax keeps the first of equal values.
    if (ll[i] > best) {
      best = ll[i];
      *pred = static_cast<int>(i);
    }
    double norm = ll[i] / static_cast<double>(std::max<size_t>(1, code_points(choices[i])));
    if (norm > best_norm) {
      best_norm = norm;
      *pred_norm = static_cast<int>(i);
    }
  }
}

double true_probability_mass(const std::vector<double>& ll, const std::vector<int>& labels) {
  if (ll.empty() || ll.size() != labels.size()) fail("eval", "MC2 needs one label per choice");
  const double top = *std::max_element(ll.begin(), ll.end());
  double all = 0, truth = 0;
  for (size_t i = 0; i < ll.size(); ++i) {
    const double p = std::exp(ll[i] - top);
    all += p;
    if (labels[i] == 1) truth += p;
  }
  return truth / all;
}

// Few-shot examples as lm-eval's ContextSampler draws them when the few-shot split is the
// evaluated one (see evaluate.h).
std::string item_prefix(const Task& task, size_t item, const EvalOptions& o, PyRandom& rng) {
  std::string out = task.mc[item].description;
  if (o.shots <= 0) return out;
  const int64_t pool = static_cast<int64_t>(task.mc.size());
  std::vector<int64_t> drawn = rng.sample(pool, std::min<int64_t>(o.shots + 1, pool));
  int taken = 0;
  for (int64_t d : drawn) {
    if (static_cast<size_t>(d) == item || taken == o.shots) continue;
    const McItem& ex = task.mc[d];
    out += ex.context(ex.gold) + o.target_delimiter + ex.choice(ex.gold) + o.fewshot_delimiter;
    ++taken;
  }
  return out;
}

namespace {

void add_category(TaskResult& r, const std::map<std::string, std::map<std::string, std::vector<double>>>& per_cat) {
  for (const auto& [cat, metrics] : per_cat) {
    for (const auto& [name, xs] : metrics) r.categories[cat][name] = mean_with_stderr(xs);
    r.category_counts[cat] = static_cast<int64_t>(metrics.begin()->second.size());
  }
}

std::string normalise_number(const std::string& s) {
  std::string out;
  for (char c : s)
    if (c != ',' && c != '$') out += c;
  if (out.size() > 2 && out.compare(out.size() - 2, 2, ".0") == 0) out.resize(out.size() - 2);
  if (!out.empty() && out.back() == '.') out.pop_back();
  return out;
}

}  // namespace

std::string extract_answer(const std::string& text) {
  static const std::regex strict("#### (\\-?[0-9\\.\\,]+)");
  static const std::regex number("-?[$0-9.,]{2,}|-?[0-9]+");
  std::smatch m;
  if (std::regex_search(text, m, strict)) return normalise_number(m[1].str());
  std::string last;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), number); it != std::sregex_iterator(); ++it) {
    std::string s = normalise_number(it->str());
    if (s.find_first_of("0123456789") != std::string::npos) last = s;
  }
  return last;
}

namespace {

bool mine(size_t item, const EvalOptions& o) { return o.shards <= 1 || static_cast<int>(item % o.shards) == o.shard; }

// Every process's per-item records (JSON objects with "i", the item index) merged into one list
// indexed by item.
std::vector<json> gather_items(const std::vector<json>& own, size_t n, const EvalOptions& o) {
  std::vector<json> all(n);
  if (o.shards <= 1) {
    for (const auto& r : own) all[r.at("i").get<size_t>()] = r;
    return all;
  }
  if (!o.gather)
    fail("evaluation", "sharded over " + std::to_string(o.shards) + " processes without a way to gather results");
  for (const auto& part : o.gather(json(own).dump()))
    for (const auto& r : json::parse(part)) all[r.at("i").get<size_t>()] = r;
  for (size_t i = 0; i < n; ++i)
    if (all[i].is_null()) fail("evaluation", "no process scored item " + std::to_string(i));
  return all;
}

}  // namespace

TaskResult evaluate_task(LlamaForCausalLM& model, const Tokenizer& tok, const Task& task, const EvalOptions& o) {
  TaskResult r;
  r.task = task.name;
  r.kind = task.kind;
  const int64_t window = o.max_length > 0 ? o.max_length : model->config().max_position_embeddings;
  bool was_training = model->is_training();
  model->eval();
  std::map<std::string, std::map<std::string, std::vector<double>>> per_cat;
  if (task.kind == "multiple_choice") {
    size_t n = task.mc.size();
    if (o.limit > 0) n = std::min<size_t>(n, o.limit);
    PyRandom rng(o.seed);
    // All items' pairs first (few-shot draws consume the generator in item order, as lm-eval's
    // do), then scored together so the fast path can batch across items.
    std::vector<EncodedPair> pairs;
    std::vector<size_t> first_pair, own_items;
    for (size_t i = 0; i < n; ++i) {
      const McItem& item = task.mc[i];
      std::string prefix = item_prefix(task, i, o, rng);
      if (!mine(i, o)) continue;
      own_items.push_back(i);
      first_pair.push_back(pairs.size());
      for (int c = 0; c < item.num_choices(); ++c)
        pairs.push_back(encode_pair(tok, prefix + item.context(c), o.target_delimiter + item.choice(c)));
    }
    Progress progress("eval " + task.name, static_cast<int64_t>(pairs.size()), "choice");
    auto report = [&](int64_t done) { progress.update(done); };
    std::vector<Loglik> ll;
    if (o.naive) {
      for (size_t p = 0; p < pairs.size(); ++p) {
        ll.push_back(score_naive(model, {pairs[p]}, window)[0]);
        report(static_cast<int64_t>(p + 1));
      }
    } else {
      ll = score_batched(model, pairs, window, o.batch_size, report);
    }
    progress.finish();
    std::vector<json> own;
    for (size_t k = 0; k < own_items.size(); ++k) {
      std::vector<double> values;
      for (int c = 0; c < task.mc[own_items[k]].num_choices(); ++c) values.push_back(ll[first_pair[k] + c].value);
      own.push_back({{"i", own_items[k]}, {"loglik", values}});
    }
    const std::vector<json> scored = gather_items(own, n, o);
    std::vector<double> acc, acc_norm;
    bool any_mc2 = false;
    for (size_t i = 0; i < n; ++i) {
      const McItem& item = task.mc[i];
      const std::vector<double> values = scored[i].at("loglik").get<std::vector<double>>();
      std::vector<std::string> choices;
      for (int c = 0; c < item.num_choices(); ++c)
        choices.push_back(item.choices.size() > 1 ? item.choices[c] : item.choices[0]);
      int pred = 0, pred_norm = 0;
      score_choices(values, choices, &pred, &pred_norm);
      json log = {{"id", item.id},    {"loglik", values},           {"gold", item.gold},
                  {"pred_acc", pred}, {"pred_acc_norm", pred_norm}, {"category", item.category}};
      if (!item.labels.empty()) {
        any_mc2 = true;
        const double mass = true_probability_mass(values, item.labels);
        acc.push_back(mass);
        per_cat[item.category]["acc"].push_back(mass);
        log["true_mass"] = mass;
      } else {
        double a = pred == item.gold, an = pred_norm == item.gold;
        acc.push_back(a);
        acc_norm.push_back(an);
        per_cat[item.category]["acc"].push_back(a);
        per_cat[item.category]["acc_norm"].push_back(an);
      }
      r.items.push_back(log);
    }
    r.n = static_cast<int64_t>(n);
    r.metrics["acc"] = mean_with_stderr(acc);
    if (!any_mc2) r.metrics["acc_norm"] = mean_with_stderr(acc_norm);
  } else {
    size_t n = task.gen.size();
    if (o.limit > 0) n = std::min<size_t>(n, o.limit);
    std::vector<double> em;
    GenerateOptions g;
    g.max_new_tokens = o.max_new_tokens;
    if (const auto eos = tok.special().eos_id) g.eos_ids.push_back(*eos);
    for (auto id : model->config().eos_token_ids)
      if (std::find(g.eos_ids.begin(), g.eos_ids.end(), id) == g.eos_ids.end()) g.eos_ids.push_back(id);
    // This process's prompts, generated in batches of o.batch_size (left-padded with a KV cache;
    // greedy decoding gives each item the tokens it gets alone). Items sorted by prompt length
    // so a batch pads little.
    std::vector<std::pair<size_t, std::vector<int64_t>>> prompts;
    for (size_t i = 0; i < n; ++i) {
      if (!mine(i, o)) continue;
      std::string prompt = task.gen[i].prompt;
      if (!o.template_name.empty()) {
        Conversation c{{Turn{"user", prompt, ""}, Turn{"assistant", "", ""}}, ""};
        prompt = render(c, o.template_name)[0].text;
      }
      auto ids32 = tok.encode(prompt, true);
      std::vector<int64_t> ids(ids32.begin(), ids32.end());
      if (static_cast<int64_t>(ids.size()) + o.max_new_tokens > window)
        ids.erase(ids.begin(), ids.begin() + std::min<int64_t>(ids.size() - 1, ids.size() + o.max_new_tokens - window));
      prompts.emplace_back(i, std::move(ids));
    }
    std::stable_sort(prompts.begin(), prompts.end(),
                     [](const auto& a, const auto& b) { return a.second.size() < b.second.size(); });
    const size_t per_batch = o.naive ? 1 : static_cast<size_t>(std::max<int64_t>(1, o.batch_size));
    Progress progress("eval " + task.name, static_cast<int64_t>(prompts.size()), "item");
    std::vector<json> own;
    for (size_t first = 0; first < prompts.size(); first += per_batch) {
      const size_t count = std::min(per_batch, prompts.size() - first);
      std::vector<std::vector<int64_t>> batch;
      for (size_t k = 0; k < count; ++k) batch.push_back(prompts[first + k].second);
      const auto outputs = generate(model, batch, g);
      for (size_t k = 0; k < count; ++k) {
        const size_t i = prompts[first + k].first;
        const GenItem& item = task.gen[i];
        std::vector<int32_t> out32;
        for (int64_t t : outputs[k])
          if (std::find(g.eos_ids.begin(), g.eos_ids.end(), t) == g.eos_ids.end())
            out32.push_back(static_cast<int32_t>(t));
        std::string text = tok.decode(out32, true);
        for (const auto& s : item.until.empty() ? o.stop : item.until) {
          auto pos = text.find(s);
          if (!s.empty() && pos != std::string::npos) text.resize(pos);
        }
        // Numeric answers (GSM8K style) compare extracted numbers; others the first line, trimmed
        // and lower-cased.
        std::string want = extract_answer(item.answer), got;
        if (!want.empty()) {
          got = extract_answer(text);
        } else {
          auto norm = [](std::string s) {
            s = s.substr(0, s.find('\n'));
            while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
            size_t b = s.find_first_not_of(" \t");
            s = b == std::string::npos ? "" : s.substr(b);
            for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            return s;
          };
          got = norm(text);
          want = norm(item.answer);
        }
        own.push_back({{"i", i},
                       {"id", item.id},
                       {"output", text},
                       {"extracted", got},
                       {"answer", want},
                       {"correct", !got.empty() && got == want}});
      }
      progress.update(static_cast<int64_t>(first + count));
    }
    progress.finish();
    for (json& log : gather_items(own, n, o)) {
      const double hit = log.at("correct").get<bool>();
      em.push_back(hit);
      per_cat[task.gen[log.at("i").get<size_t>()].category]["exact_match"].push_back(hit);
      log.erase("i");
      r.items.push_back(log);
    }
    r.n = static_cast<int64_t>(n);
    r.metrics["exact_match"] = mean_with_stderr(em);
  }
  add_category(r, per_cat);
  model->train(was_training);
  return r;
}

json task_result_to_json(const TaskResult& r) {
  json metrics = json::object(), cats = json::object();
  for (const auto& [k, v] : r.metrics) {
    metrics[k] = v.value;
    metrics[k + "_stderr"] = v.stderr_;
  }
  for (const auto& [cat, ms] : r.categories) {
    json c = {{"n", r.category_counts.at(cat)}};
    for (const auto& [k, v] : ms) {
      c[k] = v.value;
      c[k + "_stderr"] = v.stderr_;
    }
    cats[cat.empty() ? "(none)" : cat] = c;
  }
  return {{"task", r.task}, {"kind", r.kind}, {"n", r.n}, {"metrics", metrics}, {"categories", cats}};
}

void write_task_result(const TaskResult& r, const std::string& dir, const json& extra) {
  json j = task_result_to_json(r);
  for (const auto& [k, v] : extra.items()) j[k] = v;
  make_dirs(dir);
  write_file_atomic(join_path(dir, r.task + ".json"), j.dump(2) + "\n");
  std::string items;
  for (const auto& it : r.items) items += it.dump() + "\n";
  write_file_atomic(join_path(dir, r.task + ".items.jsonl"), items);
}

json perplexity_to_json(const std::string& name, const PerplexityResult& p) {
  return {{"task", name},
          {"kind", "perplexity"},
          {"n", p.tokens},
          {"metrics",
           {{"loglik", p.loglik},
            {"tokens", p.tokens},
            {"bytes", p.bytes},
            {"words", p.words},
            {"token_perplexity", p.token_perplexity()},
            {"word_perplexity", p.word_perplexity()},
            {"byte_perplexity", p.byte_perplexity()},
            {"bits_per_byte", p.bits_per_byte()}}}};
}

double PerplexityResult::token_perplexity() const { return std::exp(-loglik / std::max<int64_t>(1, tokens)); }
double PerplexityResult::word_perplexity() const { return std::exp(-loglik / std::max<int64_t>(1, words)); }
double PerplexityResult::byte_perplexity() const { return std::exp(-loglik / std::max<int64_t>(1, bytes)); }
double PerplexityResult::bits_per_byte() const { return -loglik / (std::max<int64_t>(1, bytes) * std::log(2.0)); }

PerplexityResult rolling_perplexity(LlamaForCausalLM& model, const Tokenizer& tok, const std::string& text,
                                    int64_t max_length) {
  torch::NoGradGuard ng;
  PerplexityResult r;
  auto ids32 = tok.encode(text, false);
  std::vector<int64_t> tokens(ids32.begin(), ids32.end());
  r.tokens = static_cast<int64_t>(tokens.size());
  r.bytes = static_cast<int64_t>(text.size());
  std::istringstream ws(text);
  std::string w;
  while (ws >> w) ++r.words;
  if (tokens.empty()) return r;
  const auto& sp = tok.special();
  auto prefix = sp.bos_id ? sp.bos_id : sp.eos_id;
  if (!prefix) fail("tokenizer", "has neither BOS nor EOS for the first window");
  bool was_training = model->is_training();
  model->eval();
  // Windows (context_len 1): each predicts up to max_length new tokens.
  auto score = [&](const std::vector<int64_t>& input, const std::vector<int64_t>& targets) {
    ForwardInput in;
    in.input_ids = torch::tensor(input, torch::kLong).unsqueeze(0);
    auto logp = model->forward(in)[0].to(torch::kDouble).log_softmax(-1);
    const int64_t k = static_cast<int64_t>(targets.size());
    auto rows = logp.narrow(0, logp.size(0) - k, k);
    r.loglik +=
        rows.gather(1, torch::tensor(targets, torch::kLong).to(rows.device()).unsqueeze(1)).sum().item<double>();
  };
  const int64_t n = static_cast<int64_t>(tokens.size());
  int64_t first = std::min(max_length, n);
  std::vector<int64_t> input = {*prefix};
  input.insert(input.end(), tokens.begin(), tokens.begin() + first - 1);
  score(input, std::vector<int64_t>(tokens.begin(), tokens.begin() + first));
  int64_t predicted = first;
  while (predicted < n) {
    int64_t len = std::min(n - predicted, max_length);
    int64_t end = predicted + len;
    std::vector<int64_t> win(tokens.begin() + (end - max_length - 1), tokens.begin() + (end - 1));
    score(win, std::vector<int64_t>(tokens.begin() + (end - len), tokens.begin() + end));
    predicted += len;
  }
  model->train(was_training);
  return r;
}

}  // namespace flatune
