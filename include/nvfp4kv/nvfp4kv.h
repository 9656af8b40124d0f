// nvfp4kv — umbrella header: the whole public API.
#pragma once

#include "nvfp4kv/device.h"
#include "nvfp4kv/kv_cache.h"
#include "nvfp4kv/quantize.h"
#include "nvfp4kv/safetensors.h"
#include "nvfp4kv/status.h"
#include "nvfp4kv/types.h"
