// SIGINT/SIGTERM during training: the first one asks the loop to save a checkpoint and stop at
// the end of the current step; the handler only sets a flag (the one piece of process-wide
// state besides the logger, as a signal handler needs).
#pragma once

namespace flatune {

// Installs the handlers for the lifetime of the object and restores the previous ones after.
class StopRequest {
 public:
  StopRequest();
  ~StopRequest();
  StopRequest(const StopRequest&) = delete;
  StopRequest& operator=(const StopRequest&) = delete;
  bool requested() const;
  int signal() const;
};

}  // namespace flatune
