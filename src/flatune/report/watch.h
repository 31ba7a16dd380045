// The evaluation `flatune train --watch` runs during training: the general suites and the
// target's test scored on the live model, as `flatune eval` scores them (so a watched step's
// scores equal those of `flatune eval` on that step's checkpoint), summed into the general
// score by the same categories the forgetting table uses. Here because it joins train/ and
// eval/, which do not know each other.
#pragma once
#include "flatune/train/trainer.h"

namespace flatune {

// Reads the watched task files, the categories and the tokenizer now (a bad file fails before
// training starts); empty hooks when the options watch nothing.
TrainHooks make_watch_hooks(const TrainOptions& o);

}  // namespace flatune
