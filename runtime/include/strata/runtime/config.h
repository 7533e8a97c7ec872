// The model hyperparameters live in formats/ (compile, verify and load share
// one validation of config.json); this header keeps the runtime's include path.
#pragma once

#include "strata/formats/model_config.h"
