# Finds what the runtime links: ExecuTorch (from the executorch wheel),
# cpp-httplib, nlohmann_json and OpenSSL (Debian packages).

find_package(Python COMPONENTS Interpreter)

# The executorch wheel's package directory. Asked from Python without
# importing executorch (which would import torch).
set(KNOWCACHE_EXECUTORCH_ROOT "" CACHE PATH
    "executorch package directory holding lib/cmake/executorch")
if(NOT KNOWCACHE_EXECUTORCH_ROOT AND Python_Interpreter_FOUND)
  execute_process(
    COMMAND "${Python_EXECUTABLE}" -c
            "import importlib.util as u; s = u.find_spec('executorch'); print(s.submodule_search_locations[0] if s else '')"
    OUTPUT_VARIABLE _kc_et_root OUTPUT_STRIP_TRAILING_WHITESPACE)
  set(KNOWCACHE_EXECUTORCH_ROOT "${_kc_et_root}" CACHE PATH "" FORCE)
endif()
if(NOT EXISTS "${KNOWCACHE_EXECUTORCH_ROOT}/lib/cmake/executorch/executorch-config.cmake")
  message(FATAL_ERROR
    "ExecuTorch's CMake package was not found (looked in '${KNOWCACHE_EXECUTORCH_ROOT}'). "
    "Install executorch==1.5.1 into the Python that runs CMake (make setup does), or pass "
    "-DKNOWCACHE_EXECUTORCH_ROOT=<site-packages>/executorch.")
endif()
set(executorch_DIR "${KNOWCACHE_EXECUTORCH_ROOT}/lib/cmake/executorch")
find_package(executorch REQUIRED CONFIG
             COMPONENTS kernels_optimized backend_xnnpack kernels_quantized)
message(STATUS "knowcache: ExecuTorch ${EXECUTORCH_BUILD_VERSION} at ${KNOWCACHE_EXECUTORCH_ROOT}")

find_package(OpenSSL REQUIRED COMPONENTS Crypto)
find_package(ZLIB REQUIRED)   # CRC-32 of the serial protocol (knowcache-device)
find_package(nlohmann_json 3 REQUIRED)
if(ANDROID)
  # The NDK has no pkg-config: cpp-httplib (header-only, plain HTTP) is found under
  # CMAKE_FIND_ROOT_PATH (android_app/README.md). Not built on these machines.
  find_path(KNOWCACHE_HTTPLIB_INCLUDE httplib.h REQUIRED)
  add_library(PkgConfig::HTTPLIB INTERFACE IMPORTED)
  target_include_directories(PkgConfig::HTTPLIB INTERFACE ${KNOWCACHE_HTTPLIB_INCLUDE})
else()
  find_package(PkgConfig REQUIRED)
  pkg_check_modules(HTTPLIB REQUIRED IMPORTED_TARGET cpp-httplib)
endif()
