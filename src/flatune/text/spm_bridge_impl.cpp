// The C side of spm_bridge.h, compiled into libflatune_spm.so with libsentencepiece.
#include <sentencepiece_processor.h>

#include <cstdlib>
#include <cstring>
#include <string>

namespace {
void set_error(char* err, size_t n, const std::string& msg) {
  if (err && n) {
    std::strncpy(err, msg.c_str(), n - 1);
    err[n - 1] = '\0';
  }
}
sentencepiece::SentencePieceProcessor* sp(void* h) { return static_cast<sentencepiece::SentencePieceProcessor*>(h); }
}  // namespace

extern "C" {

__attribute__((visibility("default"))) void* fspm_load(const char* data, size_t n, char* err, size_t errn) {
  auto* p = new sentencepiece::SentencePieceProcessor();
  auto st = p->LoadFromSerializedProto(absl::string_view(data, n));
  if (!st.ok()) {
    set_error(err, errn, st.ToString());
    delete p;
    return nullptr;
  }
  return p;
}
__attribute__((visibility("default"))) void fspm_free(void* h) { delete sp(h); }
__attribute__((visibility("default"))) int* fspm_encode(void* h, const char* text, size_t n, size_t* count) {
  std::vector<int> ids;
  sp(h)->Encode(absl::string_view(text, n), &ids);
  *count = ids.size();
  int* out = static_cast<int*>(std::malloc(sizeof(int) * (ids.size() + 1)));
  std::memcpy(out, ids.data(), sizeof(int) * ids.size());
  return out;
}
// Decoded text may hold NUL bytes: its length comes back separately.
__attribute__((visibility("default"))) char* fspm_decode(void* h, const int* ids, size_t n, size_t* len) {
  std::string s;
  sp(h)->Decode(std::vector<int>(ids, ids + n), &s);
  *len = s.size();
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  std::memcpy(out, s.c_str(), s.size() + 1);
  return out;
}
// Buffers from fspm_encode and fspm_decode go back through here: under RTLD_DEEPBIND this
// library's malloc is libc's even when the program's is tcmalloc, so the caller's free() is the
// wrong one.
__attribute__((visibility("default"))) void fspm_release(void* buffer) { std::free(buffer); }
__attribute__((visibility("default"))) int fspm_size(void* h) { return sp(h)->GetPieceSize(); }
__attribute__((visibility("default"))) const char* fspm_id_to_piece(void* h, int id, size_t* len) {
  const std::string& s = sp(h)->IdToPiece(id);
  *len = s.size();
  return s.data();
}
__attribute__((visibility("default"))) int fspm_piece_to_id(void* h, const char* piece, size_t n) {
  return sp(h)->PieceToId(absl::string_view(piece, n));
}
__attribute__((visibility("default"))) int fspm_is_control(void* h, int id) { return sp(h)->IsControl(id); }
__attribute__((visibility("default"))) int fspm_is_unknown(void* h, int id) { return sp(h)->IsUnknown(id); }
__attribute__((visibility("default"))) int fspm_special(void* h, int which) {
  switch (which) {
    case 0:
      return sp(h)->bos_id();
    case 1:
      return sp(h)->eos_id();
    case 2:
      return sp(h)->unk_id();
    default:
      return sp(h)->pad_id();
  }
}
}  // extern "C"
