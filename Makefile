# nvfp4kv — the two commands: `make run` (build + demo) and `make test` (build + every test the
# machine can run). Both configure and build in build/ as needed.
BUILD      ?= build
JOBS       ?= $(shell nproc)
CMAKE_ARGS ?=
DEB_PACKAGES := cmake ninja-build g++ libgtest-dev nlohmann-json3-dev

.PHONY: all build run test test-cpu test-gpu deps clean

all: build

deps:
	@bash scripts/install_deps.sh $(DEB_PACKAGES)

$(BUILD)/build.ninja: CMakeLists.txt | deps
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_ARGS)

build: $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

run: build
	./$(BUILD)/nvfp4kv demo

test: build
	@bash scripts/run_tests.sh $(BUILD)

test-cpu: build
	ctest --test-dir $(BUILD) -L cpu --output-on-failure -j $(JOBS)

test-gpu: build
	ctest --test-dir $(BUILD) -L gpu --output-on-failure

clean:
	rm -rf $(BUILD)
