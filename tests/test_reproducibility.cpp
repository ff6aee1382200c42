// The bit-for-bit guarantees of docs/architecture.md ("What is reproducible"),
// each tested where the design makes it hold: a row's loss does not depend on
// the other rows of its batch or on the padded length, so a loss summed
// sequence by sequence in data order is the same for every micro-batch split.
// (Threads: TrainPass.GradientsDoNotDependOnThreads; resume: tests/cli/train.sh.)
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "adapters/adapter.h"
#include "adapters/exec.h"
#include "model/train_pass.h"
#include "model/weights.h"
#include "util/threads.h"

namespace flora {
namespace {

const std::string kFixtures = std::string(FLORA_SOURCE_DIR) + "/tests/fixtures/tiny_llama";

// Three sequences of lengths 11, 5 and 8 (targets: the next token, the last
// position none), padded with token 0 to T.
struct Sequences {
  std::vector<std::vector<int32_t>> seqs = {{379, 12, 200, 31, 7, 99, 150, 3, 45, 46, 47},
                                            {379, 8, 9, 10, 11},
                                            {379, 60, 61, 62, 63, 64, 65, 66}};
  void batch(const std::vector<size_t>& which, int64_t T, std::vector<int32_t>& tokens,
             std::vector<int32_t>& targets) const {
    tokens.assign(which.size() * T, 0);
    targets.assign(which.size() * T, -1);
    for (size_t b = 0; b < which.size(); ++b) {
      const auto& s = seqs[which[b]];
      for (size_t t = 0; t < s.size(); ++t) {
        tokens[b * T + t] = s[t];
        if (t + 1 < s.size()) targets[b * T + t] = s[t + 1];
      }
    }
  }
};

TEST(Reproducible, SequenceLossIgnoresBatchAndPadding) {
  auto model = LlamaModel::load(kFixtures + "/f32");
  Adapter adapter = Adapter::load(kFixtures + "/adapters/ffba", model->config());
  Adapter grads = adapter.zeros_like();
  ThreadPool pool(2);
  const Sequences data;
  const int64_t kMaxRows = 3 * 40;
  const auto pass_adapter = make_adapter_train_view(&adapter, &grads);
  TrainPass pass(model->config(), pool, weights_view_of(*model), nullptr, pass_adapter ? &*pass_adapter : nullptr,
                 kMaxRows);

  // Each sequence alone at its own length: the reference bits.
  std::vector<double> alone;
  std::vector<int32_t> tokens, targets;
  for (size_t i = 0; i < data.seqs.size(); ++i) {
    const int64_t T = static_cast<int64_t>(data.seqs[i].size());
    data.batch({i}, T, tokens, targets);
    pass.run(TrainBatch{1, T, tokens.data(), targets.data()}, false, 1.0f);
    ASSERT_EQ(pass.sequence_losses().size(), 1u);
    alone.push_back(pass.sequence_losses()[0]);
    EXPECT_GT(alone.back(), 0.0);
  }
  // Together, in other orders, padded to lengths past the 32-row blocks.
  for (int64_t T : {11, 17, 33, 40})
    for (const std::vector<size_t>& which : {std::vector<size_t>{0, 1, 2}, {2, 0, 1}, {1, 2}}) {
      data.batch(which, T, tokens, targets);
      const double total = pass.run(TrainBatch{static_cast<int64_t>(which.size()), T, tokens.data(), targets.data()},
                                    false, 1.0f);
      double sum = 0;
      for (size_t b = 0; b < which.size(); ++b) {
        const double got = pass.sequence_losses()[b], want = alone[which[b]];
        EXPECT_EQ(std::memcmp(&got, &want, sizeof got), 0)
            << "sequence " << which[b] << " at T=" << T << ": " << got << " vs alone " << want;
        sum += got;
      }
      EXPECT_EQ(total, sum) << "run() returns the sequences' sum in order";
    }
}

}  // namespace
}  // namespace flora
