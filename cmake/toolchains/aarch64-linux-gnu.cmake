# Cross-compiling knowcache-device for aarch64 Linux with Debian's
# g++-aarch64-linux-gnu. Libraries come from Debian multiarch (arm64 packages
# in /usr/lib/aarch64-linux-gnu), ExecuTorch from the aarch64 executorch wheel
# (pass -DKNOWCACHE_EXECUTORCH_ROOT=<unpacked wheel>/executorch).
# scripts/build_aarch64.sh does all of it.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)
# pkg-config must see the arm64 .pc files only.
set(ENV{PKG_CONFIG_LIBDIR} "/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_PATH} "")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
