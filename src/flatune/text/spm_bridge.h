// libsentencepiece carries its own copy of protobuf-lite and exports those symbols; in a process
// that also has libtorch's libprotobuf they collide (a crash in protobuf's static initialisers).
// So SentencePiece lives behind this small C interface in its own shared library
// (libflatune_spm.so, spm_bridge_impl.cpp), loaded with RTLD_LOCAL | RTLD_DEEPBIND so each side
// keeps its own protobuf.
#pragma once
#include <memory>
#include <string>
#include <vector>

namespace flatune::spm {

class Model {
 public:
  // Parses a serialized tokenizer.model; errors name `where`.
  Model(const std::string& bytes, const std::string& where);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  std::vector<int> encode(const std::string& text) const;
  std::string decode(const std::vector<int>& ids) const;
  int size() const;
  std::string id_to_piece(int id) const;
  int piece_to_id(const std::string& piece) const;
  bool is_control(int id) const;
  bool is_unknown(int id) const;
  int bos_id() const;
  int eos_id() const;
  int unk_id() const;
  int pad_id() const;

 private:
  void* handle_;
};

// Trains a model with Debian's `spm_train` (package sentencepiece) and flags such as
// "--input=…", "--model_prefix=…". A separate process: SentencePieceTrainer inside a process
// that also holds libtorch crashes on its iostream globals under RTLD_DEEPBIND. Its output
// goes to `log_path`; a failure is an Error quoting the log's last line.
void train(const std::vector<std::string>& flags, const std::string& log_path);

}  // namespace flatune::spm
