# The two commands of the README. Both run the set-up first (idempotent).
BUILD ?= build
JOBS ?= $(shell nproc)

.PHONY: setup build test demo golden clean
setup:
	@bash scripts/setup.sh

build: setup
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# Until the demo issue lands: a small random model, text generated from it with
# and without a fused adapter, and the variants side by side (tiny shapes:
# the figures show the mechanics, not the speed; docs/benchmarks.md has those).
demo: build
	./$(BUILD)/flora init-model --preset tiny --seed 1 --out out/demo-tiny
	./$(BUILD)/flora generate --model out/demo-tiny --prompt "Hello, flora" -n 32 --seed 1
	./$(BUILD)/flora init-adapter --model out/demo-tiny --variant ffba --rank 8 --init random --out out/demo-ffba
	./$(BUILD)/flora generate --model out/demo-tiny --adapter out/demo-ffba --prompt "Hello, flora" -n 32 --seed 1
	./$(BUILD)/flora bench --model out/demo-tiny --variants base,lora,pf-lora,lora-merged,ffa,ffba,ffba-aorb --rank 8 -p 32 -n 16 -r 3

# Regenerates the golden files of the PyTorch twin (needs python3-torch).
golden:
	@bash scripts/setup.sh --torch
	/usr/bin/python3 tools/torch_twin.py golden

clean:
	rm -rf $(BUILD)
