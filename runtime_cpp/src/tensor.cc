#include "knowcache/tensor.h"

#include <cerrno>
#include <cstdlib>
#include <limits>

namespace knowcache {

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return 4;
    case DType::kUInt8: return 1;
    case DType::kInt8: return 1;
    case DType::kInt32: return 4;
    case DType::kInt64: return 8;
  }
  return 0;
}

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return "float32";
    case DType::kUInt8: return "uint8";
    case DType::kInt8: return "int8";
    case DType::kInt32: return "int32";
    case DType::kInt64: return "int64";
  }
  return "unknown";
}

StatusOr<DType> ParseDType(const std::string& name) {
  for (DType d : {DType::kFloat32, DType::kUInt8, DType::kInt8, DType::kInt32,
                  DType::kInt64}) {
    if (name == DTypeName(d)) return d;
  }
  return InvalidArgument("unknown dtype '" + name +
                         "'; expected one of float32, uint8, int8, int32, int64");
}

int64_t NumElements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    // A shape from a request can hold any integers (found by session_fuzzer).
    if (__builtin_mul_overflow(n, d, &n)) return std::numeric_limits<int64_t>::max();
  }
  return n;
}

std::string ShapeToString(const std::vector<int64_t>& shape, char sep) {
  std::string out;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) out += sep;
    out += std::to_string(shape[i]);
  }
  return out.empty() ? "scalar" : out;
}

StatusOr<std::vector<int64_t>> ParseShape(const std::string& text) {
  std::vector<int64_t> shape;
  if (text.empty()) return InvalidArgument("empty shape; expected e.g. '1,16000'");
  size_t pos = 0;
  constexpr int64_t kMaxElements = int64_t{1} << 40;
  while (pos <= text.size()) {
    size_t comma = text.find(',', pos);
    std::string part = text.substr(pos, comma == std::string::npos ? std::string::npos
                                                                   : comma - pos);
    char* end = nullptr;
    errno = 0;
    long long v = std::strtoll(part.c_str(), &end, 10);
    if (part.empty() || end == part.c_str() || *end != '\0' || errno == ERANGE ||
        v <= 0) {
      return InvalidArgument("bad shape '" + text +
                             "': every dimension must be a positive integer");
    }
    shape.push_back(v);
    if (NumElements(shape) > kMaxElements || shape.size() > 8) {
      return InvalidArgument("shape '" + text + "' is too large");
    }
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return shape;
}

Status TensorView::Validate() const {
  if (shape.empty()) return InvalidArgument("tensor has no shape");
  for (int64_t d : shape) {
    if (d <= 0) return InvalidArgument("tensor shape " + ShapeToString(shape) +
                                       " has a non-positive dimension");
  }
  const int64_t elements = NumElements(shape);
  if (elements > std::numeric_limits<int64_t>::max() / 8) {
    return InvalidArgument("tensor shape " + ShapeToString(shape) + " has too many elements");
  }
  size_t expected = static_cast<size_t>(elements) * DTypeSize(dtype);
  if (nbytes != expected) {
    return InvalidArgument("tensor of shape " + ShapeToString(shape) + " and dtype " +
                           DTypeName(dtype) + " needs " + std::to_string(expected) +
                           " bytes, got " + std::to_string(nbytes));
  }
  if (data == nullptr) return InvalidArgument("tensor has no data");
  return Status::Ok();
}

}  // namespace knowcache
