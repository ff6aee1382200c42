// The fact documents of the synthetic corpus: profiles of people, towns, jobs,
// animals and things, and comparisons, each fact in several phrasings. Every
// fact's canonical sentence (World::sentence) appears word for word at least
// once, so that a test can check that whatever the mcq task asks is stated;
// the rest of the budget goes to documents in varied phrasings and orders, so
// that a small model sees each fact many times and in more than one form.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

#include "synth/world.h"

namespace flora::synth {

// Documents of at least `target_bytes` in all (the canonical ones alone may exceed it).
std::vector<std::string> fact_documents(const World& world, size_t target_bytes, Rng& rng);

}  // namespace flora::synth
