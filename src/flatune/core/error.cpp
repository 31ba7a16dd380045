#include "flatune/core/error.h"
