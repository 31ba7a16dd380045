#include "flatune/data/dataset.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "flatune/core/error.h"
#include "flatune/core/fs.h"
#include "flatune/core/json.h"

namespace flatune {

namespace {

// Records of a JSON array file or a JSONL file, each with a label for errors.
std::vector<std::pair<json, std::string>> read_records(const std::string& path) {
  std::string text = read_file(path);
  size_t first = text.find_first_not_of(" \t\r\n");
  std::vector<std::pair<json, std::string>> out;
  if (first != std::string::npos && text[first] == '[') {
    json arr = parse_json_text(text, path);
    for (size_t i = 0; i < arr.size(); ++i) out.emplace_back(arr[i], path + ": record " + std::to_string(i));
  } else {
    for_each_jsonl(path, [&](const json& j, size_t line) { out.emplace_back(j, path + ":" + std::to_string(line)); });
  }
  if (out.empty()) fail(path, "empty dataset");
  return out;
}

// Plain text documents: the non-blank lines.
std::vector<std::string> text_documents(const std::string& path) {
  std::string text = read_file(path);
  std::vector<std::string> docs;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    if (line.find_first_not_of(" \t\r") != std::string::npos) docs.push_back(std::move(line));
    start = end + 1;
  }
  if (docs.empty()) fail(path, "empty dataset");
  return docs;
}

std::string guess_format(const json& r) {
  if (!r.is_object()) return "";
  if (r.contains("instruction") && r.contains("output")) return "alpaca";
  if (r.contains("conversations") || r.contains("messages")) return "sharegpt";
  if (r.contains("query") && r.contains("response")) return "metamath";
  if ((r.contains("prompt") && r.contains("response")) || r.contains("text")) return "jsonl";
  return "";
}

std::string normalise_role(const std::string& r, const std::string& where) {
  if (r == "system") return "system";
  if (r == "human" || r == "user") return "user";
  if (r == "gpt" || r == "assistant" || r == "chatgpt" || r == "bard" || r == "model") return "assistant";
  fail(where, "unknown role '" + r + "' (system, human/user, gpt/assistant)");
}

Conversation from_messages(const json& msgs, const char* role_key, const char* content_key, const std::string& where) {
  if (!msgs.is_array())
    fail(where, std::string("field '") + (std::string(role_key) == "from" ? "conversations" : "messages") +
                    "' must be a list");
  Conversation c;
  for (size_t i = 0; i < msgs.size(); ++i) {
    std::string w = where + " turn " + std::to_string(i);
    Turn t;
    t.role = normalise_role(require_string(msgs[i], role_key, w), w);
    t.content = require_string(msgs[i], content_key, w);
    c.turns.push_back(std::move(t));
  }
  bool has_assistant = std::any_of(c.turns.begin(), c.turns.end(), [](const Turn& t) { return t.role == "assistant"; });
  if (!has_assistant) fail(where, "conversation has no assistant turn to learn from");
  return c;
}

}  // namespace

std::vector<Conversation> read_conversations(const std::string& path, const std::string& format_in) {
  if (format_in == "text") {
    std::vector<Conversation> out;
    for (auto& d : text_documents(path)) out.push_back(Conversation{{}, std::move(d)});
    return out;
  }
  auto records = read_records(path);
  std::string format = format_in;
  if (format == "auto") {
    format = guess_format(records[0].first);
    if (format.empty()) fail(records[0].second, "cannot tell the data format from the fields; give --format");
  }
  std::vector<Conversation> out;
  for (const auto& [r, where] : records) {
    if (!r.is_object()) fail(where, "expected a JSON object");
    Conversation c;
    if (format == "alpaca") {
      Turn u{"user", require_string(r, "instruction", where),
             r.contains("input") && r["input"].is_string() ? r["input"].get<std::string>() : ""};
      c.turns = {u, Turn{"assistant", require_string(r, "output", where), ""}};
    } else if (format == "metamath") {
      c.turns = {Turn{"user", require_string(r, "query", where), ""},
                 Turn{"assistant", require_string(r, "response", where), ""}};
    } else if (format == "sharegpt") {
      if (r.contains("conversations")) c = from_messages(r["conversations"], "from", "value", where);
      else if (r.contains("messages")) c = from_messages(r["messages"], "role", "content", where);
      else fail(where, "missing field 'conversations' (or 'messages')");
      if (r.contains("system") && r["system"].is_string() && !r["system"].get<std::string>().empty())
        c.turns.insert(c.turns.begin(), Turn{"system", r["system"].get<std::string>(), ""});
    } else if (format == "jsonl") {
      if (r.contains("messages")) c = from_messages(r["messages"], "role", "content", where);
      else if (r.contains("prompt"))
        c.turns = {Turn{"user", require_string(r, "prompt", where), ""},
                   Turn{"assistant", require_string(r, "response", where), ""}};
      else if (r.contains("text")) c.text = require_string(r, "text", where);
      else fail(where, "expected 'prompt'/'response', 'messages' or 'text'");
    } else {
      fail(path, "unknown data format '" + format + "' (alpaca, sharegpt, metamath, jsonl, text)");
    }
    out.push_back(std::move(c));
  }
  return out;
}

std::string resolve_template(const std::string& name, const Tokenizer& tok) {
  static const std::vector<std::string> known = {"alpaca", "llama2", "chatml", "llama3", "vicuna", "plain"};
  if (name != "auto") {
    if (std::find(known.begin(), known.end(), name) == known.end())
      fail("--template", "unknown template '" + name + "' (alpaca, llama2, chatml, llama3, vicuna, plain, auto)");
    return name;
  }
  const std::string& t = tok.chat_template();
  if (t.find("<|start_header_id|>") != std::string::npos) return "llama3";
  if (t.find("<|im_start|>") != std::string::npos) return "chatml";
  if (t.find("[INST]") != std::string::npos) return "llama2";
  return "alpaca";
}

std::vector<Segment> render(const Conversation& c, const std::string& tpl) {
  std::vector<Segment> out;
  auto prompt = [&](std::string s) { out.push_back({std::move(s), false, false}); };
  auto reply = [&](std::string s, bool eos) { out.push_back({std::move(s), true, eos}); };
  std::string system;
  std::vector<Turn> turns;
  for (const auto& t : c.turns) {
    if (t.role == "system") {
      system = t.content;
    } else {
      turns.push_back(t);
      // Only the Alpaca prompt has a slot for Alpaca's input; elsewhere it follows the instruction.
      if (tpl != "alpaca" && !t.input.empty()) turns.back().content += "\n\n" + t.input;
    }
  }
  if (tpl == "alpaca") {
    // The Stanford Alpaca prompt (PROMPT_DICT of its train.py), turn by turn.
    for (const auto& t : turns) {
      if (t.role == "user") {
        if (!t.input.empty())
          prompt(
              "Below is an instruction that describes a task, paired with an input that provides further context. "
              "Write a response that appropriately completes the request.\n\n### Instruction:\n" +
              t.content + "\n\n### Input:\n" + t.input + "\n\n### Response:");
        else
          prompt(
              "Below is an instruction that describes a task. Write a response that appropriately completes the "
              "request.\n\n"
              "### Instruction:\n" +
              t.content + "\n\n### Response:");
      } else {
        reply(t.content, true);
      }
    }
  } else if (tpl == "llama2") {
    // Meta's chat format: [INST] <<SYS>>…<</SYS>> user [/INST] answer </s>; BOS per exchange
    // (the first one is the tokenizer's own).
    bool first = true;
    for (const auto& t : turns) {
      if (t.role == "user") {
        std::string u = t.content;
        if (first && !system.empty()) u = "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + u;
        out.push_back({"[INST] " + u + " [/INST]", false, false, !first});
        first = false;
      } else {
        reply(" " + t.content + " ", true);
      }
    }
  } else if (tpl == "chatml") {
    if (!system.empty()) prompt("<|im_start|>system\n" + system + "<|im_end|>\n");
    for (const auto& t : turns) {
      if (t.role == "user") prompt("<|im_start|>user\n" + t.content + "<|im_end|>\n<|im_start|>assistant\n");
      else {
        reply(t.content + "<|im_end|>", false);
        prompt("\n");
      }
    }
  } else if (tpl == "llama3") {
    if (!system.empty()) prompt("<|start_header_id|>system<|end_header_id|>\n\n" + system + "<|eot_id|>");
    for (const auto& t : turns) {
      if (t.role == "user")
        prompt("<|start_header_id|>user<|end_header_id|>\n\n" + t.content +
               "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
      else reply(t.content + "<|eot_id|>", false);
    }
  } else if (tpl == "vicuna") {
    // FastChat's vicuna_v1.1.
    std::string sys = system.empty()
                          ? "A chat between a curious user and an artificial intelligence assistant. "
                            "The assistant gives helpful, detailed, and polite answers to the user's questions."
                          : system;
    bool first = true;
    for (const auto& t : turns) {
      if (t.role == "user") {
        prompt((first ? sys + " " : std::string()) + "USER: " + t.content + " ASSISTANT:");
        first = false;
      } else {
        reply(" " + t.content, true);
      }
    }
  } else if (tpl == "plain") {
    for (const auto& t : turns) {
      if (t.role == "user") prompt(t.content + "\n");
      else reply(t.content, true);
    }
  } else {
    fail("--template", "unknown template '" + tpl + "'");
  }
  return out;
}

std::vector<Example> tokenize_conversations(const std::vector<Conversation>& data, const Tokenizer& tok,
                                            const TokenizeOptions& o, TokenizeStats* stats) {
  if (o.max_length < 2) fail("--max-length", "must be at least 2 tokens");
  TokenizeStats st;
  std::vector<Example> out;
  const auto& sp = tok.special();
  for (const auto& c : data) {
    Example ex;
    if (sp.add_bos && sp.bos_id) {
      ex.ids.push_back(*sp.bos_id);
      ex.labels.push_back(-100);
    }
    auto append = [&](const std::vector<int32_t>& ids, bool train) {
      for (int32_t id : ids) {
        ex.ids.push_back(id);
        ex.labels.push_back(train || o.train_on_prompt ? id : -100);
      }
    };
    if (!c.text.empty() || c.turns.empty()) {
      auto ids = tok.encode(c.text, false);
      if (sp.eos_id) ids.push_back(*sp.eos_id);
      append(ids, true);
    } else {
      for (const auto& seg : render(c, o.template_name)) {
        if (seg.add_bos && sp.bos_id) append({*sp.bos_id}, seg.train);
        auto ids = tok.encode(seg.text, false);
        if (seg.add_eos && sp.eos_id) ids.push_back(*sp.eos_id);
        append(ids, seg.train);
      }
    }
    ++st.examples;
    if (static_cast<int64_t>(ex.ids.size()) > o.max_length) {
      ++st.truncated;
      ex.ids.resize(o.max_length);
      ex.labels.resize(o.max_length);
    }
    // Labels count from position 1: the model predicts token t from the tokens before it.
    int64_t counted = 0;
    for (size_t i = 1; i < ex.labels.size(); ++i) counted += ex.labels[i] != -100;
    if (counted == 0) {
      ++st.dropped;
      continue;
    }
    st.tokens += ex.ids.size();
    st.label_tokens += counted;
    out.push_back(std::move(ex));
  }
  if (stats) *stats = st;
  return out;
}

std::vector<Example> text_blocks(const std::string& path, const Tokenizer& tok, int64_t block_size) {
  if (block_size < 2) fail("--max-length", "block size must be at least 2");
  std::vector<int64_t> stream;
  const auto& sp = tok.special();
  for (const auto& doc : text_documents(path)) {
    if (sp.add_bos && sp.bos_id) stream.push_back(*sp.bos_id);
    for (int32_t id : tok.encode(doc, false)) stream.push_back(id);
    if (sp.eos_id) stream.push_back(*sp.eos_id);
  }
  std::vector<Example> out;
  for (size_t b = 0; b + block_size <= stream.size(); b += block_size) {
    Example ex;
    ex.ids.assign(stream.begin() + b, stream.begin() + b + block_size);
    ex.labels = ex.ids;
    out.push_back(std::move(ex));
  }
  if (out.empty()) fail(path, "text too short for one block of " + std::to_string(block_size) + " tokens");
  return out;
}

int64_t validation_size(int64_t n, double v) {
  if (!(v >= 0)) fail("--val", "the validation split must be a fraction in [0, 1) or a count");
  if (v >= 1) return static_cast<int64_t>(v);
  if (v == 0) return 0;
  return std::max<int64_t>(1, static_cast<int64_t>(std::llround(v * static_cast<double>(n))));
}

void split_validation(std::vector<Example>& train, std::vector<Example>& val, int64_t val_count, uint64_t seed) {
  val.clear();
  if (val_count <= 0) return;
  if (val_count >= static_cast<int64_t>(train.size()))
    fail("--val-count", "validation split would leave no training data");
  std::vector<size_t> idx(train.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  std::mt19937_64 rng(seed ^ 0x9e3779b97f4a7c15ull);
  std::shuffle(idx.begin(), idx.end(), rng);
  std::vector<bool> is_val(train.size(), false);
  for (int64_t i = 0; i < val_count; ++i) is_val[idx[i]] = true;
  std::vector<Example> rest;
  for (size_t i = 0; i < train.size(); ++i) (is_val[i] ? val : rest).push_back(std::move(train[i]));
  train = std::move(rest);
}

}  // namespace flatune
