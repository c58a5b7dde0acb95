// Errors as values for the knowcache core.
//
// The core never throws: every fallible call returns a Status or a
// StatusOr<T>. Bindings (pybind11, JNI) turn a non-ok Status into their
// language's exception at the edge. ExecuTorch's runtime::Error carries no
// message, and a user needs to know *what* to fix, so a Status holds both a
// code and a sentence.
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <utility>

namespace knowcache {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,    // the caller passed something wrong (shape, dtype, config)
  kNotFound,           // a file, partition or manifest entry does not exist
  kCorrupt,            // bytes that fail verification (sha256, size, .pte parse)
  kUnavailable,        // the cloud cannot be reached or refused the request
  kDeadlineExceeded,   // a timeout elapsed
  kResourceExhausted,  // byte budget, slots or a size limit would be exceeded
  kFailedPrecondition, // the object is not in a state that allows the call
  kProtocol,           // a peer answered something we cannot understand
  kInternal,           // ExecuTorch or the OS failed unexpectedly
};

const char* StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message)
      : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  /// "CODE: message", for logs.
  std::string ToString() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status InvalidArgument(std::string m) { return {StatusCode::kInvalidArgument, std::move(m)}; }
inline Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
inline Status Corrupt(std::string m) { return {StatusCode::kCorrupt, std::move(m)}; }
inline Status Unavailable(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
inline Status DeadlineExceeded(std::string m) { return {StatusCode::kDeadlineExceeded, std::move(m)}; }
inline Status ResourceExhausted(std::string m) { return {StatusCode::kResourceExhausted, std::move(m)}; }
inline Status FailedPrecondition(std::string m) { return {StatusCode::kFailedPrecondition, std::move(m)}; }
inline Status ProtocolError(std::string m) { return {StatusCode::kProtocol, std::move(m)}; }
inline Status Internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }

/// A value or the Status that explains why there is none.
template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  StatusOr(Status status) : status_(std::move(status)) {  // NOLINT
    assert(!status_.ok() && "StatusOr needs a value or a non-ok Status");
    if (status_.ok()) status_ = Internal("StatusOr built from an ok Status");
  }

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  T& operator*() & { return *value_; }
  const T& operator*() const& { return *value_; }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace knowcache

#define KC_CONCAT_INNER(a, b) a##b
#define KC_CONCAT(a, b) KC_CONCAT_INNER(a, b)

/// Returns the Status from the enclosing function if `expr` is not ok.
#define KC_RETURN_IF_ERROR(expr)              \
  do {                                        \
    ::knowcache::Status kc_status_ = (expr);  \
    if (!kc_status_.ok()) return kc_status_;  \
  } while (0)

#define KC_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.ok()) return tmp.status();            \
  lhs = std::move(tmp).value()

/// `KC_ASSIGN_OR_RETURN(auto x, MakeX());`
#define KC_ASSIGN_OR_RETURN(lhs, expr) \
  KC_ASSIGN_OR_RETURN_IMPL(KC_CONCAT(kc_statusor_, __LINE__), lhs, expr)
