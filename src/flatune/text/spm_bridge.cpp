#include "flatune/text/spm_bridge.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "flatune/core/error.h"
#include "flatune/core/fs.h"

extern char** environ;

namespace flatune::spm {

namespace {

struct Api {
  void* lib = nullptr;
  void* (*load)(const char*, size_t, char*, size_t) = nullptr;
  void (*free_model)(void*) = nullptr;
  int* (*encode)(void*, const char*, size_t, size_t*) = nullptr;
  char* (*decode)(void*, const int*, size_t, size_t*) = nullptr;
  void (*release)(void*) = nullptr;
  int (*size)(void*) = nullptr;
  const char* (*id_to_piece)(void*, int, size_t*) = nullptr;
  int (*piece_to_id)(void*, const char*, size_t) = nullptr;
  int (*is_control)(void*, int) = nullptr;
  int (*is_unknown)(void*, int) = nullptr;
  int (*special)(void*, int) = nullptr;
};

// Where libflatune_spm.so is: $FLATUNE_SPM_LIB, the build tree's path, or beside the binary.
std::vector<std::string> candidates() {
  std::vector<std::string> c;
  if (const char* env = std::getenv("FLATUNE_SPM_LIB")) c.emplace_back(env);
#ifdef FLATUNE_SPM_LIB_PATH
  c.emplace_back(FLATUNE_SPM_LIB_PATH);
#endif
  std::error_code ec;
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    c.push_back((exe.parent_path() / "libflatune_spm.so").string());
    c.push_back((exe.parent_path() / "../lib/libflatune_spm.so").string());
  }
  c.emplace_back("libflatune_spm.so");
  return c;
}

const Api& api() {
  static const Api a = [] {
    Api a;
    std::string tried;
    for (const auto& path : candidates()) {
      a.lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
      if (a.lib) break;
      tried += " " + path;
    }
    if (!a.lib) fail("libflatune_spm.so", "cannot load the SentencePiece bridge (tried:" + tried + ")");
    auto sym = [&](const char* name) {
      void* p = dlsym(a.lib, name);
      if (!p) fail("libflatune_spm.so", std::string("missing symbol ") + name);
      return p;
    };
    a.load = reinterpret_cast<decltype(a.load)>(sym("fspm_load"));
    a.free_model = reinterpret_cast<decltype(a.free_model)>(sym("fspm_free"));
    a.encode = reinterpret_cast<decltype(a.encode)>(sym("fspm_encode"));
    a.decode = reinterpret_cast<decltype(a.decode)>(sym("fspm_decode"));
    a.release = reinterpret_cast<decltype(a.release)>(sym("fspm_release"));
    a.size = reinterpret_cast<decltype(a.size)>(sym("fspm_size"));
    a.id_to_piece = reinterpret_cast<decltype(a.id_to_piece)>(sym("fspm_id_to_piece"));
    a.piece_to_id = reinterpret_cast<decltype(a.piece_to_id)>(sym("fspm_piece_to_id"));
    a.is_control = reinterpret_cast<decltype(a.is_control)>(sym("fspm_is_control"));
    a.is_unknown = reinterpret_cast<decltype(a.is_unknown)>(sym("fspm_is_unknown"));
    a.special = reinterpret_cast<decltype(a.special)>(sym("fspm_special"));
    return a;
  }();
  return a;
}

}  // namespace

Model::Model(const std::string& bytes, const std::string& where) {
  char err[512] = {0};
  handle_ = api().load(bytes.data(), bytes.size(), err, sizeof err);
  if (!handle_) fail(where, std::string("not a SentencePiece model (") + err + ")");
}

Model::~Model() {
  if (handle_) api().free_model(handle_);
}

std::vector<int> Model::encode(const std::string& text) const {
  size_t n = 0;
  int* ids = api().encode(handle_, text.data(), text.size(), &n);
  std::vector<int> out(ids, ids + n);
  api().release(ids);
  return out;
}

std::string Model::decode(const std::vector<int>& ids) const {
  size_t len = 0;
  char* s = api().decode(handle_, ids.data(), ids.size(), &len);
  std::string out(s, len);
  api().release(s);
  return out;
}

int Model::size() const { return api().size(handle_); }
std::string Model::id_to_piece(int id) const {
  size_t len = 0;
  const char* p = api().id_to_piece(handle_, id, &len);
  return std::string(p, len);
}
int Model::piece_to_id(const std::string& piece) const {
  return api().piece_to_id(handle_, piece.data(), piece.size());
}
bool Model::is_control(int id) const { return api().is_control(handle_, id) != 0; }
bool Model::is_unknown(int id) const { return api().is_unknown(handle_, id) != 0; }
int Model::bos_id() const { return api().special(handle_, 0); }
int Model::eos_id() const { return api().special(handle_, 1); }
int Model::unk_id() const { return api().special(handle_, 2); }
int Model::pad_id() const { return api().special(handle_, 3); }

void train(const std::vector<std::string>& flags, const std::string& log_path) {
  std::vector<std::string> args = {"spm_train"};
  args.insert(args.end(), flags.begin(), flags.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  pid_t pid;
  int rc = posix_spawnp(&pid, "spm_train", &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) fail("spm_train", "cannot run it (install the Debian package sentencepiece)");
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::string log = file_exists(log_path) ? read_file(log_path) : "";
    while (!log.empty() && log.back() == '\n') log.pop_back();
    fail("spm_train", "failed: " + log.substr(log.rfind('\n') + 1) + " (log: " + log_path + ")");
  }
}

}  // namespace flatune::spm
