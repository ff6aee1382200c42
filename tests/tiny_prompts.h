// Prompts for the tiny fixture model (tests/fixtures/tiny_llama, vocabulary
// 384, BOS 379) shared by the batched-forward tests: different lengths, and
// 21 and 18 tokens span two prefill query blocks of 16.
#pragma once
#include <cstdint>
#include <vector>

namespace flora::test {

inline const std::vector<std::vector<int32_t>> kTinyPrompts = {
    {379, 92, 259, 35, 82},
    {379, 121, 118, 348, 306, 351, 382, 30, 7, 200, 201, 202, 17, 18, 19, 20, 21, 22, 23, 24, 25},
    {379, 5},
    {379, 44, 45, 46, 47, 48, 49, 50, 51},
    {379, 300, 301, 302, 303, 304, 305, 306, 307, 308, 309, 310, 311, 312, 313, 314, 315, 316},
    {379, 60, 61},
};

}  // namespace flora::test
