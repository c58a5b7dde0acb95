# knowcache: `make demo` and `make test` work on a fresh machine from a fresh
# clone; both run `make setup` first (idempotent).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
BUILD := build/host
CPP_SOURCES := $(shell find runtime_cpp cmake -type f) CMakeLists.txt
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup build-cpp build-java build-aarch64 android-bundle build-fuzz fuzz test test-cpp test-java test-py demo bench-overhead models mutants clean

## setup: Debian packages, .venv, torch/executorch and the editable install
setup: $(VENV)/.stamp-ext

$(VENV)/.stamp-system: scripts/setup_system.sh
	bash scripts/setup_system.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	touch $@

# torch first (the CPU build on this machine's disk), then what the C++ build
# needs before pip can build the editable install without isolation: the build
# backend and the executorch wheel whose CMake package it links.
$(VENV)/.stamp-deps: pyproject.toml $(VENV)/.stamp-system
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q executorch==1.5.1 "scikit-build-core>=0.10" "pybind11>=2.13" "cmake>=3.28" "ninja>=1.11"
	# Google's speech_embedding weights (kws): only the wheel's bundled ONNX files are
	# read, so its runtime dependencies (tflite-runtime has no Python 3.11 build) are skipped.
	$(PIP) install -q --no-deps openwakeword==0.5.1
	# .[ray]: Ray Serve, for `knowcache serve --ray` and its tests (tests/test_serve_ray*.py)
	$(PIP) install -q --no-build-isolation -e ".[dev,synth,ray]"
	touch $@

# Rebuilds the C++ extension when runtime sources change.
$(VENV)/.stamp-ext: $(VENV)/.stamp-deps $(CPP_SOURCES)
	$(PIP) install -q --no-build-isolation --no-deps -e .
	touch $@

## build-cpp: C++ unit tests, benchmarks and knowcache-device in build/host
## (CMakePresets.json: `host`; also host-release, aarch64-linux, fuzz)
JOBS ?= 2
build-cpp: setup
	cmake --preset host > /dev/null
	cmake --build --preset host -j$(JOBS)

## build-java: the JNI library (build/host, preset host), the Java library
## org.knowcache.runtime (android_app/runtime) and the app's platform-free logic
## org.knowcache.logic (android_app/logic) with their JUnit 5 tests, compiled with javac
## into build/java for the host JVM (Gradle is for the Android app)
JUNIT_JAR := /usr/share/java/junit-platform-console-standalone.jar
JAVA_MAIN := $(shell find android_app/runtime/src/main/java android_app/logic/src/main/java -name '*.java')
JAVA_TEST := $(shell find android_app/runtime/src/test/java android_app/logic/src/test/java -name '*.java')
JNI_LIB := $(BUILD)/runtime_cpp/bindings/jni/libknowcache_jni.so
build-java: build/java/.stamp
$(JNI_LIB): $(CPP_SOURCES) CMakePresets.json $(VENV)/.stamp-deps
	cmake --preset host > /dev/null
	cmake --build --preset host --target knowcache_jni -j$(JOBS)
build/java/.stamp: $(JNI_LIB) $(JAVA_MAIN) $(JAVA_TEST)
	rm -rf build/java && mkdir -p build/java
	javac -Xlint:all,-serial -Werror -d build/java/classes $(JAVA_MAIN)
	javac -Xlint:all,-serial -Werror -d build/java/test-classes -cp build/java/classes:$(JUNIT_JAR) $(JAVA_TEST)
	touch $@

## test-java: the JUnit tests on the host JVM (tests/test_jni.py and
## tests/test_android_logic.py prepare their fixtures and run them)
test-java: build-java setup
	$(PY) -m pytest -q tests/test_jni.py tests/test_android_logic.py

## build-aarch64: knowcache-device cross-built for aarch64 Linux in build/aarch64
build-aarch64: setup
	bash scripts/build_aarch64.sh

## android-bundle: knowcache-device for aarch64 with its own loader and every library it
## needs in build/android-bundle, started by run.sh from `adb shell` (docs/android.md)
android-bundle: build-aarch64
	$(PY) -m knowcache.devicelink.bundle --out build/android-bundle

## build-fuzz / fuzz: libFuzzer (+ASan, UBSan) on the serial protocol's frame parser, the
## manifest parser, the device's WAV reader and the serial session's request dispatch
## (scripts/session_fuzz_seeds.py writes its seeds), and atheris on the Python parsers
## (scripts/fuzz_python.py); `make fuzz` runs each for FUZZ_SECONDS (the suite runs a
## short pass of each: tests/test_fuzz.py)
FUZZER := build/fuzz/frame_fuzzer
FUZZ_SECONDS ?= 120
PY_FUZZ_TARGETS := wav image idx frame manifest task_file
build-fuzz: $(FUZZER)
$(FUZZER): $(CPP_SOURCES) CMakePresets.json $(VENV)/.stamp-deps
	cmake --preset fuzz > /dev/null
	cmake --build --preset fuzz -j$(JOBS)
fuzz: $(FUZZER) setup
	mkdir -p build/fuzz/corpus build/fuzz/corpus_manifest build/fuzz/corpus_wav build/fuzz/corpus_session
	cp -n runtime_cpp/device/fuzz/corpus/* build/fuzz/corpus/
	cp -n runtime_cpp/fuzz/corpus_manifest/* build/fuzz/corpus_manifest/
	cp -n runtime_cpp/device/fuzz/corpus_wav/* build/fuzz/corpus_wav/
	cp -n runtime_cpp/device/fuzz/corpus_session/* build/fuzz/corpus_session/
	cd build/fuzz && ./frame_fuzzer -max_total_time=$(FUZZ_SECONDS) -max_len=8192 -print_final_stats=1 corpus
	cd build/fuzz && ./manifest_fuzzer -max_total_time=$(FUZZ_SECONDS) -max_len=16384 -print_final_stats=1 corpus_manifest
	cd build/fuzz && ./wav_fuzzer -max_total_time=$(FUZZ_SECONDS) -max_len=8192 -print_final_stats=1 corpus_wav
	cd build/fuzz && ./session_fuzzer -max_total_time=$(FUZZ_SECONDS) -max_len=8192 -print_final_stats=1 corpus_session
	for t in $(PY_FUZZ_TARGETS); do (cd build/fuzz && ../../$(PY) ../../scripts/fuzz_python.py $$t --work py -max_total_time=$(FUZZ_SECONDS) -max_len=16384 -print_final_stats=1) || exit 1; done

test-cpp: build-cpp
	ctest --preset host -j$(JOBS)

# In two parts: every test not marked `serial` in TEST_WORKERS pytest-xdist workers (a
# test file per worker at a time: module fixtures are built once), then the `serial`
# ones alone (Ray clusters, CPU quotas, latency ratios: they need the machine to
# themselves). Both parts always run; either failing fails the target.
TEST_WORKERS ?= 2
test-py: setup build-java
	@rc=0; \
	$(PY) -m pytest -q --durations=30 -n $(TEST_WORKERS) --dist loadfile -m "not serial" || rc=$$?; \
	$(PY) -m pytest -q --durations=10 -m serial || rc=$$?; \
	exit $$rc

## test: the whole suite (C++ under ctest, then Python under pytest, which runs
## the aarch64 knowcache-device under qemu and the Java library's JUnit tests)
test: test-cpp build-aarch64 build-fuzz build-java test-py

## mutants: the mutation check of manifest.cc, engine.cc, store.cc, server/app.py and the
## serial protocol and server (scripts/mutants.py: listed mutants, one at a time, against
## each file's own tests; about 25 min on 2 cores, so not part of `make test`);
## MUTANTS=engine.cc checks one file.
## Scores and surviving mutants: docs/testing.md
mutants: build-cpp
	$(PY) scripts/mutants.py $(MUTANTS)

## demo: a short `knowcache bench` of both tasks on the shipped models (tables, JSON, plots in out/demo)
demo: setup
	$(VENV)/bin/knowcache demo --out out/demo

## bench-overhead: runtime overhead over bare ExecuTorch on a ~1 ms model
bench-overhead: build-cpp
	$(PY) -m knowcache.bench.overhead_models --out out/bench
	$(BUILD)/runtime_cpp/knowcache_overhead_bench out/bench/cnn1ms.pte --iters 300 --rounds 15

## models: regenerate models/kws and models/vision (hours on a 2-core CPU; minutes
## with a CUDA GPU: `knowcache build-models --task T --device cuda`)
models: setup
	$(VENV)/bin/knowcache build-models --task kws
	$(VENV)/bin/knowcache build-models --task vision

clean:
	rm -rf build out $(VENV)
