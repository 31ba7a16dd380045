// Test tool for the parity tests against transformers and PEFT (tests/parity/*.py): flatune's
// fp32 logits of a model folder (optionally with a PEFT adapter folder) for the int64 tensor
// "input_ids" [B, T] of a safetensors file, written as "logits" [B, T, V] float32.
//   parity_logits MODEL_DIR IDS.safetensors OUT.safetensors [ADAPTER_DIR]
#include <torch/torch.h>

#include <cstdio>
#include <exception>

#include "flatune/io/safetensors.h"
#include "flatune/model/llama.h"
#include "flatune/model/lora.h"

int main(int argc, char** argv) {
  if (argc != 4 && argc != 5) {
    std::fprintf(stderr, "usage: parity_logits MODEL_DIR IDS.safetensors OUT.safetensors [ADAPTER_DIR]\n");
    return 2;
  }
  try {
    auto model = flatune::load_llama(argv[1]);
    if (argc == 5) flatune::load_lora_adapter(model, argv[4]);
    model->eval();
    flatune::SafetensorsFile ids_file(argv[2]);
    flatune::ForwardInput in;
    in.input_ids = ids_file.load("input_ids").to(torch::kLong);
    torch::NoGradGuard no_grad;
    torch::Tensor logits = model->forward(in).to(torch::kFloat);
    flatune::write_safetensors(argv[3], {{"logits", logits}});
  } catch (const std::exception& e) {
    std::fprintf(stderr, "parity_logits: %s\n", e.what());
    return 1;
  }
  return 0;
}
