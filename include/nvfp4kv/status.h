// nvfp4kv — status values returned by every public function.
#pragma once

#include <string>
#include <utility>

namespace nvfp4kv {

/// Error category of a Status. The CLI maps these to exit codes (see tools/).
enum class StatusCode {
  kOk = 0,              ///< success
  kInvalidArgument,     ///< a shape, stride, dtype, pointer or option is not acceptable
  kUnsupported,         ///< valid request that this build or device cannot run
  kOutOfRange,          ///< an index (slot, page) points outside its tensor
  kResourceExhausted,   ///< a pool or workspace is too small
  kCudaError,           ///< a CUDA runtime call or kernel launch failed
  kIoError,             ///< a file could not be read or written, or is malformed
  kInternal,            ///< a bug in nvfp4kv
};

/// Result of a library call: a code and, on failure, a message that names the argument and
/// the expected value. Functions never throw, abort or print across the API.
class [[nodiscard]] Status {
 public:
  /// Success.
  Status() = default;
  /// Failure (or success if `code == kOk`) with a human-readable message.
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  /// A success value.
  static Status ok_status() { return Status(); }

  /// True on success.
  bool ok() const { return code_ == StatusCode::kOk; }
  /// The error category.
  StatusCode code() const { return code_; }
  /// The message; empty on success.
  const std::string& message() const { return message_; }
  /// "OK" or "<code name>: <message>".
  std::string to_string() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

/// Name of a status code ("kInvalidArgument" → "invalid argument").
const char* status_code_name(StatusCode code);

}  // namespace nvfp4kv
