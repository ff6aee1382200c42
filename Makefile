# The two commands of the README. Both run the set-up first (idempotent).
BUILD ?= build
JOBS ?= $(shell nproc)

.PHONY: setup build test test-sanitize fuzz demo golden clean
setup:
	@bash scripts/setup.sh

build: setup
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

# scripts/test.sh: the suite on this CPU's best SIMD target, then capped at AVX2 and at scalar.
test: build
	@BUILD=$(BUILD) JOBS=$(JOBS) bash scripts/test.sh

# The unit and CLI tests built with ASan + UBSan (RelWithDebInfo: -O2 -g) in build-asan.
# Excluded there, with the reason:
#   (none so far)
ASAN_BUILD ?= build-asan
ASAN_EXCLUDE ?=
test-sanitize: setup
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFLORA_SANITIZE=ON >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)
	@cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j $(JOBS) $(if $(ASAN_EXCLUDE),-E '$(ASAN_EXCLUDE)')

# Every libFuzzer target of tests/fuzz for FUZZ_SECONDS each (scripts/fuzz.sh; clang, build-fuzz).
fuzz: setup
	@JOBS=$(JOBS) bash scripts/fuzz.sh

# The main job (scripts/demo.sh): fine-tune lora, ffa, ffba and ffba-aorb from the
# committed small base model on flora's synthetic task suite, evaluate each on the
# three test sets, time every variant at the Llama-3.2-1B shape, print the table.
demo: build
	FLORA=./$(BUILD)/flora bash scripts/demo.sh

# Regenerates the golden files of the PyTorch twin (needs python3-torch).
golden:
	@bash scripts/setup.sh --torch
	/usr/bin/python3 tools/torch_twin.py golden

clean:
	rm -rf $(BUILD)
