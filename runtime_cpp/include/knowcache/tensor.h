// Tensors as the knowcache API sees them: a dtype, a shape and bytes.
//
// TensorView borrows memory the caller owns (a NumPy array, a Java buffer, a
// WAV file in memory); the core never keeps a view past the call it was
// passed to. Nothing here depends on ExecuTorch so that the manifest, the
// cloud protocol and the gate can be used and tested without it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "knowcache/status.h"

namespace knowcache {

enum class DType { kFloat32, kUInt8, kInt8, kInt32, kInt64 };

/// Bytes per element.
size_t DTypeSize(DType dtype);
/// Wire name used in manifests and the X-Knowcache-Dtype header ("float32").
const char* DTypeName(DType dtype);
StatusOr<DType> ParseDType(const std::string& name);

/// Number of elements of a shape; 0 for an empty shape list is not allowed
/// by callers (scalars are {1}). Saturates at INT64_MAX when the product overflows.
int64_t NumElements(const std::vector<int64_t>& shape);
/// "1x16000", for messages and the X-Knowcache-Shape header uses ",".
std::string ShapeToString(const std::vector<int64_t>& shape, char sep = 'x');
/// Parses "1,16000" (the header form). Rejects empty, negative and overflowing.
StatusOr<std::vector<int64_t>> ParseShape(const std::string& text);

struct TensorView {
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t nbytes = 0;

  /// Checks that nbytes matches dtype x shape and that data is present.
  Status Validate() const;
};

}  // namespace knowcache
