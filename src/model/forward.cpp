#include "model/forward.h"

#include <algorithm>
#include <cmath>

#include "util/error.h"

namespace flora {

namespace {

// Output rows per chunk of work in a product (WorkChunks): a multiple of the
// register block (4 rows) and of a 64-byte line of f32 outputs. Decode chunks
// of 64 rows read 256 KiB of a 2048-wide BF16 matrix: small enough to balance
// threads, large enough that taking a chunk costs nothing. Prefill chunks are
// larger because each one streams the whole (T, K) input once more.
int64_t row_chunk(int64_t T) { return T == 1 ? 64 : 256; }

inline float silu(float g) { return g / (1.0f + std::exp(-g)); }

}  // namespace

KVCache::KVCache(const LlamaConfig& c, int64_t capacity)
    : capacity_(capacity),
      kv_dim_(c.kv_dim()),
      k_(static_cast<size_t>(c.num_hidden_layers * capacity * c.kv_dim())),
      v_(static_cast<size_t>(c.num_hidden_layers * capacity * c.kv_dim())) {}

Forward::Forward(const LlamaModel& model, ThreadPool& pool, int64_t context)
    : model_(model),
      cfg_(model.config()),
      pool_(pool),
      cache_(model.config(), context),
      inv_freq_(rope_inverse_frequencies(model.config())) {
  if (context <= 0) fail("context must be positive, got {}", context);
  if (context > cfg_.max_position_embeddings)
    fail("context {} exceeds the model's max_position_embeddings {}", context, cfg_.max_position_embeddings);
  scores_.resize(static_cast<size_t>(pool.size()) * context);
}

void Forward::ensure_buffers(int64_t T, bool all_logits) {
  if (T > capacity_T_) {
    const int64_t d = cfg_.hidden_size, f = cfg_.intermediate_size;
    x_.resize(T * d);
    xn_.resize(static_cast<size_t>(pool_.size()) * T * d);
    qkv_.resize(T * (cfg_.q_dim() + 2 * cfg_.kv_dim()));
    att_.resize(T * cfg_.q_dim());
    gate_.resize(T * f);
    up_.resize(T * f);
    capacity_T_ = T;
  }
  logits_.resize((all_logits ? T : 1) * cfg_.vocab_size);
}

// Region 1: RMSNorm, the fused q|k|v product, RoPE and the KV cache write.
// Threads own whole heads of the stacked q|k|v rows, so RoPE and the cache
// write need no further synchronisation.
void Forward::attention_entry(int64_t layer, int64_t T, int64_t p0) {
  const LayerWeights& w = model_.layers()[layer];
  const int64_t d = cfg_.hidden_size, hd = cfg_.head_dim, qd = cfg_.q_dim(), kvd = cfg_.kv_dim();
  const int64_t ld = qd + 2 * kvd, half = hd / 2;
  const int64_t heads_total = cfg_.num_attention_heads + 2 * cfg_.num_key_value_heads;
  WorkChunks heads(heads_total, 1);
  pool_.run([&](int t, int) {
    float* xn = xn_.data() + static_cast<size_t>(t) * T * d;
    for (int64_t i = 0; i < T; ++i)
      ops::rmsnorm(xn + i * d, x_.data() + i * d, w.attn_norm.data(), d, float(cfg_.rms_norm_eps));
    int64_t h0, h1;
    while (heads.next(h0, h1)) {
      // Rows [h0*hd, h1*hd) of the stack [q; k; v], product by product.
      const MatrixRef* mats[3] = {&w.q, &w.k, &w.v};
      int64_t base = 0;
      for (const MatrixRef* m : mats) {
        const int64_t r0 = std::max(h0 * hd, base) - base, r1 = std::min(h1 * hd, base + m->rows) - base;
        if (r0 < r1) ops::matmul_rows(qkv_.data() + base, ld, xn, d, T, *m, r0, r1, false);
        base += m->rows;
      }
      // RoPE (rotate-half pairs (i, i + hd/2)) on the q and k heads owned here.
      for (int64_t h = h0; h < std::min(h1, cfg_.num_attention_heads + cfg_.num_key_value_heads); ++h) {
        for (int64_t i = 0; i < T; ++i) {
          float* v = qkv_.data() + i * ld + h * hd;
          const float* cos = rope_cos_.data() + i * half;
          const float* sin = rope_sin_.data() + i * half;
          for (int64_t j = 0; j < half; ++j) {
            const float c = cos[j], s = sin[j];
            const float a = v[j], b = v[j + half];
            v[j] = a * c - b * s;
            v[j + half] = b * c + a * s;
          }
        }
      }
      // k and v heads owned here go to the cache.
      for (int64_t h = std::max(h0, cfg_.num_attention_heads); h < h1; ++h) {
        const bool is_k = h < cfg_.num_attention_heads + cfg_.num_key_value_heads;
        const int64_t kv_head =
            is_k ? h - cfg_.num_attention_heads : h - cfg_.num_attention_heads - cfg_.num_key_value_heads;
        for (int64_t i = 0; i < T; ++i) {
          const float* src = qkv_.data() + i * ld + h * hd;
          float* dst = (is_k ? cache_.k(layer, p0 + i) : cache_.v(layer, p0 + i)) + kv_head * hd;
          std::copy(src, src + hd, dst);
        }
      }
    }
  });
}

// Region 2: causal grouped-query attention of the T new queries over all
// cached positions. Work items are (head, query) pairs.
void Forward::attention(int64_t layer, int64_t T, int64_t p0) {
  const int64_t hd = cfg_.head_dim, qd = cfg_.q_dim(), ld = qd + 2 * cfg_.kv_dim();
  const int64_t heads = cfg_.num_attention_heads, group = heads / cfg_.num_key_value_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  WorkChunks items(heads * T, T == 1 ? 1 : 8);
  pool_.run([&](int t, int) {
    float* scores = scores_.data() + static_cast<size_t>(t) * cache_.capacity();
    int64_t w0, w1;
    while (items.next(w0, w1))
      for (int64_t item = w0; item < w1; ++item) {
        const int64_t h = item / T, i = item % T, kv_off = (h / group) * hd;
        const float* q = qkv_.data() + i * ld + h * hd;
        const int64_t n = p0 + i + 1;  // positions visible to this query
        float mx = -INFINITY;
        for (int64_t p = 0; p < n; ++p) {
          scores[p] = ops::dot(q, cache_.k(layer, p) + kv_off, hd) * scale;
          mx = std::max(mx, scores[p]);
        }
        float sum = 0;
        for (int64_t p = 0; p < n; ++p) sum += (scores[p] = std::exp(scores[p] - mx));
        float* out = att_.data() + i * qd + h * hd;
        std::fill(out, out + hd, 0.0f);
        const float inv = 1.0f / sum;
        for (int64_t p = 0; p < n; ++p) ops::axpy(scores[p] * inv, cache_.v(layer, p) + kv_off, out, hd);
      }
  });
}

const float* Forward::forward(const int32_t* tokens, int64_t T, bool all_logits) {
  if (T <= 0) fail("forward: no tokens given");
  const int64_t p0 = cache_.size();
  if (p0 + T > cache_.capacity())
    fail("context is full: {} cached + {} new tokens exceed the context of {}", p0, T, cache_.capacity());
  const uint64_t sync0 = pool_.sync_points();
  ensure_buffers(T, all_logits);
  const int64_t d = cfg_.hidden_size, f = cfg_.intermediate_size, V = cfg_.vocab_size;
  for (int64_t i = 0; i < T; ++i) {
    if (tokens[i] < 0 || tokens[i] >= V)
      fail("token id {} at position {} is outside the vocabulary [0, {})", tokens[i], p0 + i, V);
    embedding_row(model_.embed(), tokens[i], x_.data() + i * d);
  }
  // RoPE angles of the new positions, in double: pos * inv_freq reaches 1e5
  // radians at long contexts, where f32 would lose the phase.
  const int64_t half = cfg_.head_dim / 2;
  rope_cos_.resize(T * half);
  rope_sin_.resize(T * half);
  for (int64_t i = 0; i < T; ++i)
    for (int64_t j = 0; j < half; ++j) {
      const double angle = static_cast<double>(p0 + i) * inv_freq_[j];
      rope_cos_[i * half + j] = static_cast<float>(std::cos(angle));
      rope_sin_[i * half + j] = static_cast<float>(std::sin(angle));
    }

  for (int64_t l = 0; l < cfg_.num_hidden_layers; ++l) {
    const LayerWeights& w = model_.layers()[l];
    attention_entry(l, T, p0);
    attention(l, T, p0);
    WorkChunks o_rows(d, row_chunk(T)), ffn_rows(f, row_chunk(T)), down_rows(d, row_chunk(T));
    pool_.run([&](int, int) {  // 3: x += att o^T
      int64_t r0, r1;
      while (o_rows.next(r0, r1)) ops::matmul_rows(x_.data(), d, att_.data(), cfg_.q_dim(), T, w.o, r0, r1, true);
    });
    pool_.run([&](int t, int) {  // 4: gate|up with SwiGLU in the epilogue
      float* xn = xn_.data() + static_cast<size_t>(t) * T * d;
      for (int64_t i = 0; i < T; ++i)
        ops::rmsnorm(xn + i * d, x_.data() + i * d, w.ffn_norm.data(), d, float(cfg_.rms_norm_eps));
      int64_t r0, r1;
      while (ffn_rows.next(r0, r1)) {
        ops::matmul_rows(gate_.data(), f, xn, d, T, w.gate, r0, r1, false);
        ops::matmul_rows(up_.data(), f, xn, d, T, w.up, r0, r1, false);
        for (int64_t i = 0; i < T; ++i)
          for (int64_t r = r0; r < r1; ++r) gate_[i * f + r] = silu(gate_[i * f + r]) * up_[i * f + r];
      }
    });
    pool_.run([&](int, int) {  // 5: x += h down^T
      int64_t r0, r1;
      while (down_rows.next(r0, r1)) ops::matmul_rows(x_.data(), d, gate_.data(), f, T, w.down, r0, r1, true);
    });
  }

  // Final norm and LM head, for the last token or for all of them.
  const int64_t first = all_logits ? 0 : T - 1, n_out = T - first;
  WorkChunks vocab_rows(V, 512);
  pool_.run([&](int t, int) {
    float* xn = xn_.data() + static_cast<size_t>(t) * T * d;
    for (int64_t i = 0; i < n_out; ++i)
      ops::rmsnorm(xn + i * d, x_.data() + (first + i) * d, model_.final_norm().data(), d, float(cfg_.rms_norm_eps));
    int64_t r0, r1;
    while (vocab_rows.next(r0, r1)) ops::matmul_rows(logits_.data(), V, xn, d, n_out, model_.lm_head(), r0, r1, false);
  });
  cache_.set_size(p0 + T);
  last_sync_points_ = pool_.sync_points() - sync0;
  return logits_.data();
}

}  // namespace flora
