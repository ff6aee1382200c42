// The whole operations of ops/rows.h against the per-slice ops they are built
// from (ops.h, backward.h; tests/test_ops.cpp checks those against double),
// with pools of 1, 2 and 3 threads. Equal bit for bit, whatever the pool size:
// that is a design guarantee, not a tolerance, because each value is computed
// by one thread in a fixed order that does not depend on the thread count (a
// product's rows or columns are independent, or one chain each; attention is
// per (segment, head, block) and blocks equal the whole sequence; the sums
// over rows, dw and dE, run in row order by column blocks). So the reference
// here is the per-slice op over the whole range, on one thread, and any
// difference in any bit, padding included, fails. The ops have no SIMD code of
// their own: the kernels' split invariance on every target is
// Products.SplitsGiveTheSameBits; these run on the dispatcher's target (and
// under FLORA_CPU's caps in CI).
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <iterator>
#include <random>
#include <vector>

#include "bf16_products.h"
#include "op_harness.h"
#include "ops/backward.h"
#include "ops/ops.h"
#include "ops/rows.h"
#include "util/dtype.h"
#include "util/threads.h"

namespace flora {
namespace {

using test::kNaN;
using test::random_floats;
using test::same_bits;

constexpr int kPools[] = {1, 2, 3};

// Each of [0, n) counted once.
bool each_once(const std::vector<std::atomic<int>>& hits) {
  for (const auto& h : hits)
    if (h.load() != 1) return false;
  return true;
}

// ---------------------------------------------------------------- product_region

// Up to three products on one input with work at each hook: the outputs equal
// the plain products followed by the epilogue over every row, and every hook
// runs exactly as often as its contract says.
// bf16_dot: BF16 weights with BF16 products asked for (the region rounds its
// input once per thread, ops.h), else F32 weights.
void check_product_region(bool stacked, bool bf16_dot = false) {
  std::mt19937 rng(1);
  const int64_t T = 5, K = 37, ldx = K + 3, chunk = 16;
  const int64_t rows[3] = {70, stacked ? 33 : 70, stacked ? 5 : 70};  // stacked: chunks span two matrices
  std::vector<std::vector<float>> w(3);
  std::vector<std::vector<uint16_t>> w16(3);
  std::vector<MatrixRef> W(3);
  for (int j = 0; j < 3; ++j) {
    w[j] = random_floats(rows[j] * K, rng, 0.5);
    W[j] = MatrixRef{w[j].data(), DType::F32, rows[j], K, 0};
    if (bf16_dot) {
      for (float v : w[j]) w16[j].push_back(f32_to_bf16(v));
      W[j] = MatrixRef{w16[j].data(), DType::BF16, rows[j], K, 0};
    }
  }
  test::Bf16Products products(bf16_dot);
  const auto x = random_floats(T * ldx, rng, 1.0);
  std::vector<std::vector<float>> y0(3);
  for (int j = 0; j < 3; ++j) y0[j] = random_floats(T * (rows[j] + 1), rng, 1.0);
  // The epilogue's work: an elementwise function of the product and the row.
  auto epilogue = [&](std::vector<float>& y, int j, int64_t r0, int64_t r1) {
    for (int64_t t = 0; t < T; ++t)
      for (int64_t r = r0; r < r1; ++r) y[t * (rows[j] + 1) + r] = 0.5f * y[t * (rows[j] + 1) + r] + float(r);
  };
  std::vector<std::vector<float>> want = y0;
  for (int j = 0; j < 3; ++j) {
    ops::matmul_rows(want[j].data(), rows[j] + 1, x.data(), ldx, T, W[j], 0, rows[j], j == 1);
    epilogue(want[j], j, 0, rows[j]);
  }
  const int64_t chunk_rows = stacked ? rows[0] + rows[1] + rows[2] : rows[0], items = 7;
  for (int threads : kPools) {
    ThreadPool pool(threads);
    std::vector<std::vector<float>> y = y0;
    std::vector<std::vector<std::atomic<int>>> rows_done(3);
    for (int j = 0; j < 3; ++j) rows_done[j] = std::vector<std::atomic<int>>(rows[j]);
    std::vector<std::atomic<int>> chunk_done(chunk_rows), item_done(items), inputs(threads), befores(threads),
        afters(threads);
    std::atomic<int> misaligned{0};
    ops::ProductRegion g;
    g.T = T;
    for (int j = 0; j < 3; ++j) g.operands[j] = {&W[j], y[j].data(), rows[j] + 1, j == 1};
    g.n_operands = 3;
    g.stacked = stacked;
    g.chunk = chunk;
    g.ldx = ldx;
    g.input = [&](int t) {
      inputs[t]++;
      return x.data();
    };
    g.before = [&](int t, const float* xt) {
      befores[t]++;
      if (xt != x.data()) misaligned++;
    };
    g.epilogue = [&](int, int j, int64_t r0, int64_t r1) {
      epilogue(y[j], j, r0, r1);
      for (int64_t r = r0; r < r1; ++r) rows_done[j][r]++;
    };
    g.chunk_done = [&](int, int64_t c0, int64_t c1) {
      if (c0 % chunk != 0 || (c1 - c0 != chunk && c1 != chunk_rows)) misaligned++;
      for (int64_t c = c0; c < c1; ++c) chunk_done[c]++;
    };
    g.items = items;
    g.item = [&](int, int64_t i, const float* xt) {
      if (xt != x.data()) misaligned++;
      item_done[i]++;
    };
    g.after = [&](int t) { afters[t]++; };
    ops::product_region(pool, g);
    for (int j = 0; j < 3; ++j) {
      EXPECT_TRUE(same_bits(y[j], want[j])) << "operand " << j << ", threads " << threads;
      EXPECT_TRUE(each_once(rows_done[j])) << "epilogue of operand " << j << ", threads " << threads;
    }
    EXPECT_TRUE(each_once(chunk_done)) << threads;
    EXPECT_TRUE(each_once(item_done)) << threads;
    EXPECT_TRUE(each_once(inputs) && each_once(befores) && each_once(afters)) << threads;
    EXPECT_EQ(misaligned.load(), 0) << threads;
  }
}

TEST(Rows, ProductRegionStackedIsTheProductsAndTheirEpilogues) { check_product_region(true); }
TEST(Rows, ProductRegionWithBf16ProductsIsTheProducts) {
  if (!ops::bf16_dot_available()) GTEST_SKIP() << "this CPU has no AVX512_BF16 (or the target is below AVX-512)";
  check_product_region(true, true);
  check_product_region(false, true);
}
TEST(Rows, ProductRegionSideBySideIsTheProductsAndTheirEpilogues) { check_product_region(false); }

TEST(Rows, ForChunksCoversTheRangeOnceInWholeChunks) {
  for (int threads : kPools) {
    ThreadPool pool(threads);
    for (int64_t n : {0, 1, 7, 100}) {
      std::vector<std::atomic<int>> hits(n);
      std::atomic<int> bad{0};
      ops::for_chunks(pool, n, 7, [&](int t, int64_t c0, int64_t c1) {
        if (t < 0 || t >= threads || c0 % 7 != 0 || c1 <= c0 || (c1 - c0 != 7 && c1 != n)) bad++;
        for (int64_t i = c0; i < c1; ++i) hits[i]++;
      });
      EXPECT_TRUE(each_once(hits)) << n << " " << threads;
      EXPECT_EQ(bad.load(), 0) << n << " " << threads;
    }
  }
}

// ---------------------------------------------------------------- attention

// Three segments of one pass: a training sequence (p0 = 0, its own rows as
// keys), a prefill chunk over a KV cache and a decode row; grouped-query
// heads. Each (segment, head) equals one attention_block over the whole
// segment.
TEST(Rows, AttentionRowsAreAttentionBlocksOfEachSegmentAndHead) {
  std::mt19937 rng(2);
  const int64_t heads = 4, kv_heads = 2, hd = 8, qd = heads * hd, kvd = kv_heads * hd, group = heads / kv_heads;
  const int64_t ld_q = qd + 3, ld_out = qd + 1, ld_kv = 2 * kvd + 1;
  struct Seg {
    int64_t row0, n, p0;
  };
  const Seg segs[] = {{0, 37, 0}, {37, 5, 20}, {42, 1, 40}};
  const int64_t rows = 43, max_keys = 41;
  const auto q = random_floats(rows * ld_q, rng, 1.0);
  std::vector<std::vector<float>> kv;
  for (const Seg& s : segs) kv.push_back(random_floats((s.p0 + s.n) * ld_kv, rng, 1.0));
  std::vector<float> want(rows * ld_out, 777.0f);
  for (size_t i = 0; i < std::size(segs); ++i) {
    const Seg& s = segs[i];
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t keys = s.p0 + s.n;
      std::vector<float> S(s.n * keys);
      ops::attention_block(want.data() + s.row0 * ld_out + h * hd, ld_out, S.data(), keys,
                           q.data() + s.row0 * ld_q + h * hd, ld_q, s.n, kv[i].data() + (h / group) * hd,
                           kv[i].data() + kvd + (h / group) * hd, ld_kv, s.p0, hd);
    }
  }
  for (int threads : kPools) {
    ThreadPool pool(threads);
    std::vector<float> out(rows * ld_out, 777.0f);
    std::vector<float> scratch(threads * ops::kAttentionBlock * max_keys, kNaN);
    std::vector<ops::AttentionSegment> segments;
    for (size_t i = 0; i < std::size(segs); ++i)
      segments.push_back({segs[i].row0, segs[i].n, segs[i].p0, kv[i].data(), kv[i].data() + kvd, ld_kv});
    ops::attention_rows(pool, out.data(), ld_out, q.data(), ld_q, segments, heads, kv_heads, hd, scratch.data(),
                        max_keys);
    EXPECT_TRUE(same_bits(out, want)) << threads;
  }
}

// The training backward recomputes a sequence's probabilities in one call
// (p0 = 0, tq = T) where the forward computed them in blocks of queries
// (attention_rows: p0 = i0, tq <= kAttentionBlock) into a narrower scores
// buffer: the values must be the same bits (each score one dot of hd on the
// matrix kernel, each row's softmax its own), zeros after each row's keys.
TEST(Rows, AttentionProbabilitiesOfBlocksAreThoseOfTheWholeSequence) {
  std::mt19937 rng(5);
  const int64_t T = 37, hd = 8, ld_q = hd + 3, ld_kv = 2 * hd + 1;
  const auto q = random_floats(T * ld_q, rng, 2.0), k = random_floats(T * ld_kv, rng, 2.0);
  std::vector<float> whole(T * T, kNaN);
  ops::attention_probabilities(whole.data(), T, q.data(), ld_q, T, k.data(), ld_kv, 0, hd);
  for (int64_t i = 0; i < T; ++i)
    for (int64_t j = 0; j < T; ++j) {
      ASSERT_TRUE(std::isfinite(whole[i * T + j])) << i << " " << j;
      if (j > i) {
        ASSERT_EQ(whole[i * T + j], 0.0f) << i << " " << j;
      }
    }
  for (int64_t block : {int64_t{1}, int64_t{5}, ops::kAttentionBlock}) {
    const int64_t ld_s = T + 4;
    std::vector<float> S(block * ld_s);
    for (int64_t i0 = 0; i0 < T; i0 += block) {
      const int64_t tq = std::min(block, T - i0);
      std::fill(S.begin(), S.end(), kNaN);
      ops::attention_probabilities(S.data(), ld_s, q.data() + i0 * ld_q, ld_q, tq, k.data(), ld_kv, i0, hd);
      for (int64_t i = 0; i < tq; ++i) {
        const std::vector<float> got(S.begin() + i * ld_s, S.begin() + i * ld_s + i0 + tq);
        const std::vector<float> want(whole.begin() + (i0 + i) * T, whole.begin() + (i0 + i) * T + i0 + tq);
        EXPECT_TRUE(same_bits(got, want)) << "block " << block << " row " << i0 + i;
      }
    }
  }
}

// dq, dk, dv += per (sequence, KV head), the group's query heads in order, each
// head's P recomputed: the same bits as with the forward's P given.
TEST(Rows, AttentionRowsBackwardIsAttentionBackwardOfEachHeadInOrder) {
  std::mt19937 rng(3);
  const int64_t B = 2, T = 19, heads = 4, kv_heads = 2, hd = 8, group = heads / kv_heads;
  const int64_t qd = heads * hd, kvd = kv_heads * hd, ld = qd + 2 * kvd + 1, ld_out = qd + 2;
  const auto qkv = random_floats(B * T * ld, rng, 1.0), dout = random_floats(B * T * ld_out, rng, 1.0);
  // The forward's probabilities, each head's from attention_block over its whole sequence.
  std::vector<float> P(B * heads * T * T), o(T * qd);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < heads; ++h) {
      const float* base = qkv.data() + b * T * ld;
      ops::attention_block(o.data() + h * hd, qd, P.data() + (b * heads + h) * T * T, T, base + h * hd, ld, T,
                           base + qd + (h / group) * hd, base + qd + kvd + (h / group) * hd, ld, 0, hd);
    }
  const auto dqkv0 = random_floats(B * T * ld, rng, 1.0);
  std::vector<float> want = dqkv0, scratch(ops::attention_scratch_floats(T, hd));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t g = h / group;
      const float* base = qkv.data() + b * T * ld;
      float* d = want.data() + b * T * ld;
      ops::attention_backward(d + h * hd, d + qd + g * hd, d + qd + kvd + g * hd, dout.data() + b * T * ld_out + h * hd,
                              ld_out, P.data() + (b * heads + h) * T * T, base + h * hd, ld, base + qd + g * hd,
                              base + qd + kvd + g * hd, ld, T, hd, scratch.data());
    }
  for (int threads : kPools) {
    ThreadPool pool(threads);
    std::vector<float> dqkv = dqkv0, scratch_all(threads * ops::attention_rows_backward_floats(T, hd), kNaN);
    ops::attention_rows_backward(pool, dqkv.data(), dout.data(), ld_out, qkv.data(), ld, B, T, heads, kv_heads, hd,
                                 scratch_all.data());
    EXPECT_TRUE(same_bits(dqkv, want)) << threads;
  }
}

// ---------------------------------------------------------------- losses and embeddings

// Rows without a target: loss 0, and zeros for a gradient.
TEST(Rows, CrossEntropyRowsAreEachRowsCrossEntropy) {
  std::mt19937 rng(4);
  const int64_t n = 6, V = 50;
  const int32_t targets[n] = {3, -1, 0, 49, -1, 7};
  const auto logits0 = random_floats(n * V, rng, 3.0);
  for (bool backward : {false, true}) {
    std::vector<float> want = logits0;
    std::vector<double> want_loss(n);
    for (int64_t i = 0; i < n; ++i) {
      float* row = want.data() + i * V;
      if (targets[i] < 0) {
        want_loss[i] = 0;
        if (backward) std::fill(row, row + V, 0.0f);
      } else {
        want_loss[i] = backward ? ops::cross_entropy_forward_backward(row, V, targets[i], 0.37f)
                                : ops::cross_entropy_forward(row, V, targets[i]);
      }
    }
    for (int threads : kPools) {
      ThreadPool pool(threads);
      std::vector<float> logits = logits0;
      std::vector<double> loss(n, -1.0);
      ops::cross_entropy_rows(pool, loss.data(), logits.data(), targets, n, V, backward, 0.37f);
      EXPECT_TRUE(same_bits(logits, want)) << backward << " " << threads;
      EXPECT_TRUE(same_bits(loss, want_loss)) << backward << " " << threads;
    }
  }
}

// dE[tokens[t]] += dx[t] in token order, repeated tokens included; three column blocks, the last partial.
TEST(Rows, EmbeddingBackwardAddsEachRowInOrder) {
  std::mt19937 rng(5);
  const int64_t V = 11, d = 150, n = 40;
  std::vector<int32_t> tokens(n);
  for (auto& t : tokens) t = int32_t(rng() % 4);  // few distinct tokens: many adds into the same row
  const auto dx = random_floats(n * d, rng, 1.0), dE0 = random_floats(V * d, rng, 1.0);
  std::vector<float> want = dE0;
  for (int64_t t = 0; t < n; ++t)
    for (int64_t j = 0; j < d; ++j) want[tokens[t] * d + j] += dx[t * d + j];
  for (int threads : kPools) {
    ThreadPool pool(threads);
    std::vector<float> dE = dE0;
    ops::embedding_backward(pool, dE.data(), tokens.data(), dx.data(), n, d);
    EXPECT_TRUE(same_bits(dE, want)) << threads;
  }
}

// ---------------------------------------------------------------- products

// product = matmul_rows over all of W's rows; product_t = matmul_cols over all
// its columns, narrow chunks (100 columns) and wide ones (800 >= 2 x 128 x 3);
// with BF16 products too where the CPU has them (product_t then rounds x once,
// its 9 rows in ranges taken by the threads).
TEST(Rows, ProductsAreTheKernelsOverTheWholeMatrix) {
  std::mt19937 rng(6);
  const int64_t n = 9;
  for (bool bf16_dot : {false, true})
  for (int64_t cols : {100, 800}) {
    if (bf16_dot && !ops::bf16_dot_available()) continue;
    test::Bf16Products products(bf16_dot);
    const int64_t rows = 70, ldw = cols + 2;
    const auto wf = random_floats(rows * ldw, rng, 0.5);
    std::vector<uint16_t> wb(wf.size());
    for (size_t i = 0; i < wf.size(); ++i) wb[i] = f32_to_bf16(wf[i]);
    const MatrixRef W{wb.data(), DType::BF16, rows, cols, ldw};
    const int64_t ldx = cols + 1, ldy = rows + 3, ldx_t = rows + 1, ldy_t = cols + 3;
    const auto x = random_floats(n * ldx, rng, 1.0), x_t = random_floats(n * ldx_t, rng, 1.0);
    const auto y0 = random_floats(n * ldy, rng, 1.0), y0_t = random_floats(n * ldy_t, rng, 1.0);
    for (bool accumulate : {false, true}) {
      std::vector<float> want = y0, want_t = y0_t;
      ops::matmul_rows(want.data(), ldy, x.data(), ldx, n, W, 0, rows, accumulate);
      ops::matmul_cols(want_t.data(), ldy_t, x_t.data(), ldx_t, n, W, 0, cols, accumulate);
      for (int threads : kPools) {
        ThreadPool pool(threads);
        std::vector<float> y = y0, y_t = y0_t;
        ops::product(pool, y.data(), ldy, x.data(), ldx, n, W, accumulate);
        ops::product_t(pool, y_t.data(), ldy_t, x_t.data(), ldx_t, n, W, accumulate);
        EXPECT_TRUE(same_bits(y, want)) << cols << " " << accumulate << " " << threads << " bf16 " << bf16_dot;
        EXPECT_TRUE(same_bits(y_t, want_t)) << cols << " " << accumulate << " " << threads << " bf16 " << bf16_dot;
      }
    }
  }
}

// dW += scale dy^T x, one addition per element of a sum formed from zero: in
// the wide form a matmul_cols of (scale dy)^T over x, in the narrow form (few
// columns: 70 x 3) a matmul_cols of (scale x)^T over dy, added transposed.
TEST(Rows, WeightGradIsOneTransposedProductAddedOnce) {
  std::mt19937 rng(7);
  const int64_t M = 70, n = 9, ldy = M + 3;
  for (int64_t K : {130, 3}) {
    const int64_t ldx = K + 1;
    const auto dy = random_floats(n * ldy, rng, 1.0), x = random_floats(n * ldx, rng, 1.0);
    const auto dW0 = random_floats(M * K, rng, 1.0);
    for (float scale : {1.0f, 0.37f}) {
      std::vector<float> want = dW0;
      if (K == 130) {
        std::vector<float> a(M * n), sum(M * K);
        ops::transpose(a.data(), dy.data(), n, M, ldy);
        for (float& v : a) v *= scale;
        ops::matmul_cols(sum.data(), K, a.data(), n, M, MatrixRef{x.data(), DType::F32, n, K, ldx}, 0, K, false);
        for (int64_t i = 0; i < M * K; ++i) want[i] += sum[i];
      } else {
        std::vector<float> b(K * n), sumT(K * M);
        ops::transpose(b.data(), x.data(), n, K, ldx);
        for (float& v : b) v *= scale;
        ops::matmul_cols(sumT.data(), M, b.data(), n, K, MatrixRef{dy.data(), DType::F32, n, M, ldy}, 0, M, false);
        for (int64_t m = 0; m < M; ++m)
          for (int64_t k = 0; k < K; ++k) want[m * K + k] += sumT[k * M + m];
      }
      for (int threads : kPools) {
        ThreadPool pool(threads);
        std::vector<float> dW = dW0, scratch(ops::weight_grad_scratch_floats(M, K, n, threads), kNaN);
        ops::weight_grad(pool, dW.data(), dy.data(), ldy, M, x.data(), ldx, K, n, scale, scratch.data());
        EXPECT_TRUE(same_bits(dW, want)) << "K " << K << " scale " << scale << " threads " << threads;
      }
    }
  }
}

// ---------------------------------------------------------------- row-wise ops

// 21 rows (chunks of 8: the last partial), 100 columns (dw's column blocks of 64: the last partial).
TEST(Rows, RmsnormRowsAreEachRowsRmsnorm) {
  std::mt19937 rng(8);
  const int64_t n = 21, d = 100;
  const float eps = 1e-5f;
  const auto x = random_floats(n * d, rng, 2.0), w = random_floats(d, rng, 1.0), dout = random_floats(n * d, rng, 1.0);
  const auto dx0 = random_floats(n * d, rng, 1.0), dw0 = random_floats(d, rng, 1.0);
  std::vector<float> want(n * d), want_rstd(n), want_dx = dx0, want_dw = dw0;
  for (int64_t t = 0; t < n; ++t) want_rstd[t] = ops::rmsnorm(want.data() + t * d, x.data() + t * d, w.data(), d, eps);
  for (int64_t t = 0; t < n; ++t)
    ops::rmsnorm_backward(want_dx.data() + t * d, want_dw.data(), dout.data() + t * d, x.data() + t * d, w.data(),
                          want_rstd[t], d);
  for (int threads : kPools) {
    ThreadPool pool(threads);
    std::vector<float> out(n * d, kNaN), rstd(n, kNaN);
    ops::rmsnorm_rows(pool, out.data(), rstd.data(), x.data(), w.data(), n, d, eps);
    EXPECT_TRUE(same_bits(out, want) && same_bits(rstd, want_rstd)) << threads;
    for (bool frozen : {false, true}) {
      std::vector<float> dx = dx0, dw = dw0;
      ops::rmsnorm_rows_backward(pool, dx.data(), frozen ? nullptr : dw.data(), dout.data(), x.data(), w.data(),
                                 rstd.data(), n, d);
      EXPECT_TRUE(same_bits(dx, want_dx)) << frozen << " " << threads;
      EXPECT_TRUE(same_bits(dw, frozen ? dw0 : want_dw)) << frozen << " " << threads;
    }
  }
}

// RoPE on the first 3 heads of rows of stride 29 (q and 5 more columns, untouched), row t at position t mod 5.
TEST(Rows, RopeRowsAreEachHeadsRotation) {
  std::mt19937 rng(9);
  const int64_t n = 13, heads = 3, hd = 8, half = hd / 2, ld = heads * hd + 5, T = 5;
  std::vector<float> cos(T * half), sin(T * half);
  for (int64_t p = 0; p < T; ++p)
    for (int64_t j = 0; j < half; ++j) {
      const double theta = double(p) * std::pow(500000.0, -2.0 * j / hd);
      cos[p * half + j] = float(std::cos(theta)), sin[p * half + j] = float(std::sin(theta));
    }
  const auto v0 = random_floats(n * ld, rng, 1.0);
  for (bool backward : {false, true}) {
    std::vector<float> want = v0;
    for (int64_t t = 0; t < n; ++t)
      for (int64_t h = 0; h < heads; ++h)
        (backward ? ops::rope_backward : ops::rope_forward)(want.data() + t * ld + h * hd, cos.data() + (t % T) * half,
                                                            sin.data() + (t % T) * half, hd);
    for (int threads : kPools) {
      ThreadPool pool(threads);
      std::vector<float> v = v0;
      ops::rope_rows(pool, v.data(), ld, n, heads, hd, cos.data(), sin.data(), T, backward);
      EXPECT_TRUE(same_bits(v, want)) << backward << " " << threads;
    }
  }
}

TEST(Rows, SwigluRowsAreEachRowsSwiglu) {
  std::mt19937 rng(10);
  const int64_t n = 19, f = 33;
  const auto g = random_floats(n * f, rng, 3.0), u = random_floats(n * f, rng, 1.0),
             dh = random_floats(n * f, rng, 1.0);
  std::vector<float> want(n * f), want_dg(n * f), want_du(n * f);
  for (int64_t t = 0; t < n; ++t) {
    ops::swiglu_forward(want.data() + t * f, g.data() + t * f, u.data() + t * f, f);
    ops::swiglu_backward(want_dg.data() + t * f, want_du.data() + t * f, dh.data() + t * f, g.data() + t * f,
                         u.data() + t * f, f);
  }
  for (int threads : kPools) {
    ThreadPool pool(threads);
    std::vector<float> h(n * f, kNaN), dg(n * f, kNaN), du(n * f, kNaN);
    ops::swiglu_rows(pool, h.data(), g.data(), u.data(), n, f);
    ops::swiglu_rows_backward(pool, dg.data(), du.data(), dh.data(), g.data(), u.data(), n, f);
    EXPECT_TRUE(same_bits(h, want)) << threads;
    EXPECT_TRUE(same_bits(dg, want_dg) && same_bits(du, want_du)) << threads;
  }
}

}  // namespace
}  // namespace flora
