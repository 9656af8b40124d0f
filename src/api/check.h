// nvfp4kv — argument checks for the public API: each failed check returns a Status that names
// the expression, the values and the place.
#pragma once

#include <sstream>
#include <string>

#include "nvfp4kv/status.h"

namespace nvfp4kv::detail {

template <class... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

}  // namespace nvfp4kv::detail

/// Returns kInvalidArgument with "<message> (check `cond` failed at file:line)" unless `cond`.
#define NVFP4KV_CHECK_ARG(cond, ...)                                                          \
  do {                                                                                        \
    if (!(cond)) {                                                                            \
      return ::nvfp4kv::Status(::nvfp4kv::StatusCode::kInvalidArgument,                       \
                               ::nvfp4kv::detail::concat(__VA_ARGS__, " (check `" #cond       \
                                                         "` failed at ",                      \
                                                         __FILE__, ":", __LINE__, ")"));      \
    }                                                                                         \
  } while (0)

/// Returns `expr`'s Status if it is not ok.
#define NVFP4KV_RETURN_IF_ERROR(expr)              \
  do {                                             \
    ::nvfp4kv::Status _nvfp4kv_status = (expr);    \
    if (!_nvfp4kv_status.ok()) return _nvfp4kv_status; \
  } while (0)
