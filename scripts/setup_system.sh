#!/usr/bin/env bash
# Installs the Debian packages knowcache builds against, only those missing.
# Idempotent and quick when everything is present.
set -euo pipefail

PACKAGES=(
  g++ make pkg-config       # toolchain (CMake and Ninja come from PyPI)
  libcpp-httplib-dev        # HTTP client of the runtime's CloudClient
  nlohmann-json3-dev        # JSON for manifests and cloud answers
  libssl-dev                # SHA-256 (OpenSSL EVP)
  libgtest-dev              # C++ unit tests
  espeak-ng                 # speech synthesis for the kws dataset
  dataset-fashion-mnist     # Fashion-MNIST idx files for the vision task
  libportaudio2             # PortAudio for sounddevice (`knowcache listen`)
  # knowcache-device for aarch64 boards: cross compiler, arm64 libraries
  # (Debian multiarch) and qemu-user to run it here (scripts/build_aarch64.sh)
  g++-aarch64-linux-gnu qemu-user libssl-dev:arm64 libcpp-httplib-dev:arm64 zlib1g-dev:arm64
  zlib1g-dev                # CRC-32 of knowcache-device's serial protocol
  clang libclang-rt-14-dev  # libFuzzer + sanitizers for the protocol parser (make fuzz)
  # The JNI bindings and the Java library org.knowcache.runtime, built and tested on
  # the host JVM (javac + JUnit 5's console launcher; no Maven or Gradle)
  openjdk-17-jdk-headless junit5
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "setup: need root (or sudo) to install: ${missing[*]}" >&2; exit 1
  fi
fi
echo "setup: installing Debian packages: ${missing[*]}"
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  $SUDO dpkg --add-architecture arm64
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
