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


// Prefill attention works on blocks of this many queries of one head, so that
// scores and outputs are matrix products (the 4 x 4 register blocks of ops).
constexpr int64_t kQueryBlock = 16;

}  // namespace

KVCache::KVCache(const LlamaConfig& c, int64_t capacity)
    : capacity_(capacity),
      kv_dim_(c.kv_dim()),
      k_(static_cast<size_t>(c.num_hidden_layers * capacity * c.kv_dim())),
      v_(static_cast<size_t>(c.num_hidden_layers * capacity * c.kv_dim())) {}

Forward::Forward(const LlamaModel& model, ThreadPool& pool, int64_t context, const AdapterExec* adapter,
                 const std::vector<LayerWeights>* layers, int slots)
    : model_(model),
      cfg_(model.config()),
      pool_(pool),
      inv_freq_(rope_inverse_frequencies(model.config())),
      adapter_(adapter),
      layers_(layers ? *layers : model.layers()) {
  if (context <= 0) fail("context must be positive, got {}", context);
  if (context > cfg_.max_position_embeddings)
    fail("context {} exceeds the model's max_position_embeddings {}", context, cfg_.max_position_embeddings);
  if (slots <= 0) fail("slots must be positive, got {}", slots);
  FLORA_ASSERT(static_cast<int64_t>(layers_.size()) == cfg_.num_hidden_layers);
  if (adapter_) FLORA_ASSERT(static_cast<int64_t>(adapter_->layers.size()) == cfg_.num_hidden_layers);
  caches_.reserve(slots);
  for (int i = 0; i < slots; ++i) caches_.emplace_back(model.config(), context);
  slot_used_.assign(slots, 0);
  scores_.resize(static_cast<size_t>(pool.size()) * context);
  block_scores_.resize(static_cast<size_t>(pool.size()) * kQueryBlock * context);
}

void Forward::truncate(int slot, int64_t n) {
  if (slot < 0 || slot >= slots()) fail("slot {}: expected 0..{}", slot, slots() - 1);
  if (n < 0 || n > caches_[slot].size())
    fail("slot {}: cannot truncate to {} positions, it holds {}", slot, n, caches_[slot].size());
  caches_[slot].set_size(n);
}

void Forward::ensure_buffers(int64_t T, int64_t n_out) {
  if (T > capacity_T_) {
    const int64_t d = cfg_.hidden_size, f = cfg_.intermediate_size;
    x_.resize(T * d);
    xn_.resize(static_cast<size_t>(pool_.size()) * T * d);
    qkv_.resize(T * (cfg_.q_dim() + 2 * cfg_.kv_dim()));
    att_.resize(T * cfg_.q_dim());
    gate_.resize(T * f);
    up_.resize(T * f);
    if (adapter_) {
      const size_t zs = static_cast<size_t>(T * adapter_->rank);
      z_entry_.resize(static_cast<size_t>(pool_.size()) * 3 * zs);
      z_exit_.resize(static_cast<size_t>(pool_.size()) * zs);
      phi_z_.resize(zs);
      phi_z_s_.resize(zs);
      carry_.resize(zs);
      lora_z_.resize(kTargets * zs);
    }
    capacity_T_ = T;
  }
  if (adapter_) z_stride_ = static_cast<size_t>(T * adapter_->rank);
  logits_.resize(n_out * cfg_.vocab_size);
}

void Forward::flora_entry_z(int t, const AdapterExec::Layer& a, std::initializer_list<Target> targets, const float* u,
                            int64_t ld_u, int64_t T) {
  const int64_t r = adapter_->rank;
  int slot = 0;
  for (Target m : targets) {
    if (adapter_->forward[index(m)]) ops::matmul_rows(thread_z(t, slot), r, u, ld_u, T, a.A[index(m)], 0, r, false);
    ++slot;
  }
  if (t != 0) return;
  // z = sum of the z_m (+ the carry of the previous sub-block), then phi.
  for (size_t i = 0; i < z_stride_; ++i) {
    float z = carry_[i];
    slot = 0;
    for (Target m : targets) {
      if (adapter_->forward[index(m)]) z += thread_z(0, slot)[i];
      ++slot;
    }
    phi_z_[i] = apply_nonlinearity(adapter_->nonlinearity, z);
    phi_z_s_[i] = adapter_->scale * phi_z_[i];
  }
}

// y[t, i] += s * z[t, i mod r] for rows [row0, row1): repeat-and-add.
void Forward::repeat_add(float* y, int64_t ldy, int64_t T, const float* z, int64_t row0, int64_t row1) const {
  const int64_t r = adapter_->rank;
  const float s = adapter_->scale;
  for (int64_t t = 0; t < T; ++t) {
    const float* zt = z + t * r;
    float* yt = y + t * ldy;
    for (int64_t i = row0, j = row0 % r; i < row1; ++i) {  // j = i mod r, without a division per row
      yt[i] += s * zt[j];
      if (++j == r) j = 0;
    }
  }
}

void Forward::lora_unfused(const AdapterExec::Layer& a, Target m, const float* u, int64_t ld_u, int64_t T, float* y,
                           int64_t ldy) {
  const int64_t r = adapter_->rank;
  float* z = lora_z_.data() + index(m) * z_stride_;
  const MatrixRef& A = a.A[index(m)];
  const MatrixRef& B = a.B[index(m)];
  WorkChunks a_rows(r, 4), b_rows(B.rows, row_chunk(T));
  pool_.run([&](int, int) {  // z = s * A u
    int64_t r0, r1;
    while (a_rows.next(r0, r1)) {
      ops::matmul_rows(z, r, u, ld_u, T, A, r0, r1, false);
      for (int64_t t = 0; t < T; ++t)
        for (int64_t i = r0; i < r1; ++i) z[t * r + i] *= adapter_->scale;
    }
  });
  pool_.run([&](int, int) {  // y += B z
    int64_t r0, r1;
    while (b_rows.next(r0, r1)) ops::matmul_rows(y, ldy, z, r, T, B, r0, r1, true);
  });
}

// RoPE and the cache write of head h (of the stack [q; k; v]) for every row:
// each row at its own position, into its own sequence's slot.
void Forward::rope_and_cache(int64_t layer, int64_t h, int64_t T) {
  const int64_t hd = cfg_.head_dim, half = hd / 2, ld = cfg_.q_dim() + 2 * cfg_.kv_dim();
  const int64_t nq = cfg_.num_attention_heads, nkv = cfg_.num_key_value_heads;
  if (h < nq + nkv) {  // RoPE (rotate-half pairs (j, j + hd/2)) on q and k heads
    for (int64_t i = 0; i < T; ++i) {
      float* v = qkv_.data() + i * ld + h * hd;
      const float* cos = rope_cos_.data() + i * half;
      const float* sin = rope_sin_.data() + i * half;
      for (int64_t j = 0; j < half; ++j) {
        const float a = v[j], b = v[j + half];
        v[j] = a * cos[j] - b * sin[j];
        v[j + half] = b * cos[j] + a * sin[j];
      }
    }
  }
  if (h >= nq) {  // k and v heads go to the cache
    const bool is_k = h < nq + nkv;
    const int64_t kv_head = is_k ? h - nq : h - nq - nkv;
    for (int64_t i = 0; i < T; ++i) {
      const float* src = qkv_.data() + i * ld + h * hd;
      KVCache& cache = caches_[segments_[row_segment_[i]].slot];
      float* dst = (is_k ? cache.k(layer, row_pos_[i]) : cache.v(layer, row_pos_[i])) + kv_head * hd;
      std::copy(src, src + hd, dst);
    }
  }
}

// Region 1: RMSNorm, the fused q|k|v product, RoPE and the KV cache write.
// Threads own whole heads of the stacked q|k|v rows, so RoPE and the cache
// write need no further synchronisation.
void Forward::attention_entry(int64_t layer, int64_t T) {
  const LayerWeights& w = layers_[layer];
  const int64_t d = cfg_.hidden_size, hd = cfg_.head_dim, ld = cfg_.q_dim() + 2 * cfg_.kv_dim();
  const int64_t heads_total = cfg_.num_attention_heads + 2 * cfg_.num_key_value_heads;
  const AdapterMode mode = adapter_ ? adapter_->mode : AdapterMode::FLoRA;
  const bool flora = adapter_ && mode == AdapterMode::FLoRA;
  const bool lora = adapter_ && !flora;
  const AdapterExec::Layer* a = adapter_ ? &adapter_->layers[layer] : nullptr;
  const MatrixRef* mats[3] = {&w.q, &w.k, &w.v};
  const Target targets[3] = {Target::Q, Target::K, Target::V};
  WorkChunks heads(heads_total, 1);
  // Partially fused LoRA: the A rows of q, k, v are three more chunks of this product.
  WorkChunks a_rows(adapter_ && mode == AdapterMode::LoRAPartiallyFused ? 3 : 0, 1);
  pool_.run([&](int t, int) {
    float* xn = xn_.data() + static_cast<size_t>(t) * T * d;
    for (int64_t i = 0; i < T; ++i)
      ops::rmsnorm(xn + i * d, x_.data() + i * d, w.attn_norm.data(), d, float(cfg_.rms_norm_eps));
    if (flora) flora_entry_z(t, *a, {Target::Q, Target::K, Target::V}, xn, d, T);
    int64_t h0, h1;
    while (heads.next(h0, h1)) {
      // Rows [h0*hd, h1*hd) of the stack [q; k; v], product by product.
      int64_t base = 0;
      for (int j = 0; j < 3; ++j) {
        const MatrixRef* m = mats[j];
        const int64_t r0 = std::max(h0 * hd, base) - base, r1 = std::min(h1 * hd, base + m->rows) - base;
        if (r0 < r1) {
          ops::matmul_rows(qkv_.data() + base, ld, xn, d, T, *m, r0, r1, false);
          if (flora && adapter_->repeat_add[index(targets[j])])
            repeat_add(qkv_.data() + base, ld, T, thread_z(t, j), r0, r1);
        }
        base += m->rows;
      }
      if (!lora)
        for (int64_t h = h0; h < h1; ++h) rope_and_cache(layer, h, T);
    }
    int64_t j0, j1;
    while (a_rows.next(j0, j1)) {
      const Target m = targets[j0];
      if (!adapter_->forward[index(m)]) continue;
      float* z = lora_z_.data() + index(m) * z_stride_;
      ops::matmul_rows(z, adapter_->rank, xn, d, T, a->A[index(m)], 0, adapter_->rank, false);
      for (size_t i = 0; i < z_stride_; ++i) z[i] *= adapter_->scale;
    }
  });
  if (!lora) return;
  int64_t offsets[3];
  for (int j = 0, base = 0; j < 3; ++j) offsets[j] = base, base += static_cast<int>(mats[j]->rows);
  if (mode == AdapterMode::LoRAUnfused) {
    for (int j = 0; j < 3; ++j)
      if (adapter_->forward[index(targets[j])])
        lora_unfused(*a, targets[j], xn_.data(), d, T, qkv_.data() + offsets[j], ld);
  }
  // One more region: (partially fused: the B products and adds,) RoPE and the cache.
  WorkChunks heads2(heads_total, 1);
  pool_.run([&](int, int) {
    int64_t h0, h1;
    while (heads2.next(h0, h1)) {
      if (mode == AdapterMode::LoRAPartiallyFused) {
        for (int j = 0; j < 3; ++j) {
          const Target m = targets[j];
          const int64_t r0 = std::max(h0 * hd, offsets[j]) - offsets[j];
          const int64_t r1 = std::min(h1 * hd, offsets[j] + mats[j]->rows) - offsets[j];
          if (r0 < r1 && adapter_->forward[index(m)])
            ops::matmul_rows(qkv_.data() + offsets[j], ld, lora_z_.data() + index(m) * z_stride_, adapter_->rank, T,
                             a->B[index(m)], r0, r1, true);
        }
      }
      for (int64_t h = h0; h < h1; ++h) rope_and_cache(layer, h, T);
    }
  });
}

// Region 2 for a block of queries of a segment longer than one row (prefill):
// S = Q K^T over the positions the block's last query sees (one product on the
// matrix kernel), then the causal softmax by row and O = P V row by row.
// S: (kQueryBlock, context) with row stride context, this thread's.
void Forward::attention_block(int64_t layer, const Segment& s, const AttentionItem& item, float* S) {
  const int64_t hd = cfg_.head_dim, qd = cfg_.q_dim(), ld = qd + 2 * cfg_.kv_dim(), kvd = cfg_.kv_dim();
  const int64_t group = cfg_.num_attention_heads / cfg_.num_key_value_heads, ctx = context();
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  KVCache& cache = caches_[s.slot];
  const int64_t h = item.head, i0 = item.i0, tq = item.tq, p0 = s.p0;
  const int64_t kv_off = (h / group) * hd, n = p0 + i0 + tq;  // positions the last query sees
  const MatrixRef K{cache.k(layer, 0) + kv_off, DType::F32, n, hd, kvd};
  ops::matmul_rows(S, ctx, qkv_.data() + (s.row0 + i0) * ld + h * hd, ld, tq, K, 0, n, false);
  for (int64_t i = 0; i < tq; ++i) {
    float* row = S + i * ctx;
    const int64_t visible = p0 + i0 + i + 1;
    float mx = -INFINITY;
    for (int64_t p = 0; p < visible; ++p) mx = std::max(mx, row[p] *= scale);
    float sum = 0;
    for (int64_t p = 0; p < visible; ++p) sum += (row[p] = std::exp(row[p] - mx));
    const float inv = 1.0f / sum;
    for (int64_t p = 0; p < visible; ++p) row[p] *= inv;
  }
  for (int64_t i = 0; i < tq; ++i) {  // O = P V, row by row over the visible positions
    float* out = att_.data() + (s.row0 + i0 + i) * qd + h * hd;
    std::fill(out, out + hd, 0.0f);
    const float* row = S + i * ctx;
    for (int64_t p = 0, visible = p0 + i0 + i + 1; p < visible; ++p)
      ops::axpy(row[p], cache.v(layer, p) + kv_off, out, hd);
  }
}

// Region 2 for a segment of one row (decode): one query of head h over all
// the positions of its slot. scores: (context), this thread's.
void Forward::attention_row(int64_t layer, const Segment& s, int64_t h, float* scores) {
  const int64_t hd = cfg_.head_dim, qd = cfg_.q_dim(), ld = qd + 2 * cfg_.kv_dim();
  const int64_t group = cfg_.num_attention_heads / cfg_.num_key_value_heads, kv_off = (h / group) * hd;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  KVCache& cache = caches_[s.slot];
  const float* q = qkv_.data() + s.row0 * ld + h * hd;
  const int64_t n = s.p0 + 1;  // positions visible to this query
  float mx = -INFINITY;
  for (int64_t p = 0; p < n; ++p) {
    scores[p] = ops::dot(q, cache.k(layer, p) + kv_off, hd) * scale;
    mx = std::max(mx, scores[p]);
  }
  float sum = 0;
  for (int64_t p = 0; p < n; ++p) sum += (scores[p] = std::exp(scores[p] - mx));
  float* out = att_.data() + s.row0 * qd + h * hd;
  std::fill(out, out + hd, 0.0f);
  const float inv = 1.0f / sum;
  for (int64_t p = 0; p < n; ++p) ops::axpy(scores[p] * inv, cache.v(layer, p) + kv_off, out, hd);
}

// Region 2: causal grouped-query attention of every row over the cached
// positions of its own sequence. Work items (built once per call): (segment,
// head) for single rows, (segment, head, block of kQueryBlock queries) for
// longer segments.
void Forward::attention(int64_t layer) {
  WorkChunks items(static_cast<int64_t>(attention_items_.size()), 1);
  pool_.run([&](int t, int) {
    float* scores = scores_.data() + static_cast<size_t>(t) * context();
    float* S = block_scores_.data() + static_cast<size_t>(t) * kQueryBlock * context();
    int64_t w0, w1;
    while (items.next(w0, w1))
      for (int64_t w = w0; w < w1; ++w) {
        const AttentionItem& item = attention_items_[w];
        const Segment& s = segments_[item.segment];
        if (s.n == 1)
          attention_row(layer, s, item.head, scores);
        else
          attention_block(layer, s, item, S);
      }
  });
}

// Regions 3 and 5: x += W u, with the adapter of exit projection m.
void Forward::exit_product(int64_t layer, Target m, const MatrixRef& w, const float* u, int64_t ld_u, int64_t T) {
  const int64_t d = cfg_.hidden_size;
  const AdapterMode mode = adapter_ ? adapter_->mode : AdapterMode::FLoRA;
  const bool flora = adapter_ && mode == AdapterMode::FLoRA;
  const AdapterExec::Layer* a = adapter_ ? &adapter_->layers[layer] : nullptr;
  const int mi = index(m);
  const bool has_a = adapter_ && adapter_->forward[mi];
  const int64_t r = adapter_ ? adapter_->rank : 0;
  WorkChunks rows(d, row_chunk(T));
  WorkChunks a_rows(has_a && mode == AdapterMode::LoRAPartiallyFused ? 1 : 0, 1);
  pool_.run([&](int t, int) {
    float* z_exit = flora ? z_exit_.data() + static_cast<size_t>(t) * z_stride_ : nullptr;
    // FLoRA: A u of the exit, needed by every thread for repeat-and-add (ffa),
    // else only by thread 0 for the carry.
    if (flora && has_a && (adapter_->repeat_add[mi] || t == 0))
      ops::matmul_rows(z_exit, r, u, ld_u, T, a->A[mi], 0, r, false);
    int64_t r0, r1;
    while (rows.next(r0, r1)) {
      ops::matmul_rows(x_.data(), d, u, ld_u, T, w, r0, r1, true);
      if (!flora) continue;
      // The widened input [c; phi(z)]: x += s B phi(z) for the same rows.
      if (adapter_->backward[mi]) ops::matmul_rows(x_.data(), d, phi_z_s_.data(), r, T, a->B[mi], r0, r1, true);
      if (has_a && adapter_->repeat_add[mi]) repeat_add(x_.data(), d, T, z_exit, r0, r1);
    }
    while (a_rows.next(r0, r1)) {  // partially fused LoRA: the A rows inside this product
      float* z = lora_z_.data() + mi * z_stride_;
      ops::matmul_rows(z, r, u, ld_u, T, a->A[mi], 0, r, false);
      for (size_t i = 0; i < z_stride_; ++i) z[i] *= adapter_->scale;
    }
    // FLoRA carry: z' = A u + C phi(z) joins the next sub-block's sum.
    if (flora && t == 0) {
      if (adapter_->carry[mi]) {
        ops::matmul_rows(carry_.data(), r, phi_z_.data(), r, T, a->C[mi], 0, r, false);
        for (size_t i = 0; i < z_stride_; ++i) carry_[i] += z_exit[i];
      } else {
        std::fill(carry_.begin(), carry_.begin() + static_cast<int64_t>(z_stride_), 0.0f);
      }
    }
  });
  if (!adapter_ || flora || !has_a) return;
  if (mode == AdapterMode::LoRAUnfused) {
    lora_unfused(*a, m, u, ld_u, T, x_.data(), d);
    return;
  }
  WorkChunks b_rows(d, row_chunk(T));
  pool_.run([&](int, int) {  // partially fused LoRA: x += B (s A u)
    int64_t r0, r1;
    while (b_rows.next(r0, r1))
      ops::matmul_rows(x_.data(), d, lora_z_.data() + mi * z_stride_, r, T, a->B[mi], r0, r1, true);
  });
}

// Region 4: RMSNorm -> gate|up (+ adapters) -> SiLU(gate) * up.
void Forward::ffn_entry(int64_t layer, int64_t T) {
  const LayerWeights& w = layers_[layer];
  const int64_t d = cfg_.hidden_size, f = cfg_.intermediate_size;
  const AdapterMode mode = adapter_ ? adapter_->mode : AdapterMode::FLoRA;
  const bool flora = adapter_ && mode == AdapterMode::FLoRA;
  const bool lora = adapter_ && !flora;
  const AdapterExec::Layer* a = adapter_ ? &adapter_->layers[layer] : nullptr;
  const int gi = index(Target::Gate), ui = index(Target::Up);
  WorkChunks rows(f, row_chunk(T));
  WorkChunks a_rows(adapter_ && mode == AdapterMode::LoRAPartiallyFused ? 2 : 0, 1);
  pool_.run([&](int t, int) {
    float* xn = xn_.data() + static_cast<size_t>(t) * T * d;
    for (int64_t i = 0; i < T; ++i)
      ops::rmsnorm(xn + i * d, x_.data() + i * d, w.ffn_norm.data(), d, float(cfg_.rms_norm_eps));
    if (flora) flora_entry_z(t, *a, {Target::Gate, Target::Up}, xn, d, T);
    int64_t r0, r1;
    while (rows.next(r0, r1)) {
      ops::matmul_rows(gate_.data(), f, xn, d, T, w.gate, r0, r1, false);
      ops::matmul_rows(up_.data(), f, xn, d, T, w.up, r0, r1, false);
      if (flora && adapter_->repeat_add[gi]) repeat_add(gate_.data(), f, T, thread_z(t, 0), r0, r1);
      if (flora && adapter_->repeat_add[ui]) repeat_add(up_.data(), f, T, thread_z(t, 1), r0, r1);
      if (lora) continue;  // the LoRA deltas come first
      for (int64_t i = 0; i < T; ++i)
        for (int64_t r = r0; r < r1; ++r) gate_[i * f + r] = silu(gate_[i * f + r]) * up_[i * f + r];
    }
    int64_t j0, j1;
    while (a_rows.next(j0, j1)) {
      const int mi = j0 == 0 ? gi : ui;
      if (!adapter_->forward[mi]) continue;
      float* z = lora_z_.data() + mi * z_stride_;
      ops::matmul_rows(z, adapter_->rank, xn, d, T, a->A[mi], 0, adapter_->rank, false);
      for (size_t i = 0; i < z_stride_; ++i) z[i] *= adapter_->scale;
    }
  });
  if (!lora) return;
  if (mode == AdapterMode::LoRAUnfused) {
    if (adapter_->forward[gi]) lora_unfused(*a, Target::Gate, xn_.data(), d, T, gate_.data(), f);
    if (adapter_->forward[ui]) lora_unfused(*a, Target::Up, xn_.data(), d, T, up_.data(), f);
  }
  WorkChunks rows2(f, row_chunk(T));
  pool_.run([&](int, int) {  // (partially fused: B products and adds,) then SwiGLU
    int64_t r0, r1;
    while (rows2.next(r0, r1)) {
      if (mode == AdapterMode::LoRAPartiallyFused) {
        if (adapter_->forward[gi])
          ops::matmul_rows(gate_.data(), f, lora_z_.data() + gi * z_stride_, adapter_->rank, T, a->B[gi], r0, r1, true);
        if (adapter_->forward[ui])
          ops::matmul_rows(up_.data(), f, lora_z_.data() + ui * z_stride_, adapter_->rank, T, a->B[ui], r0, r1, true);
      }
      for (int64_t i = 0; i < T; ++i)
        for (int64_t r = r0; r < r1; ++r) gate_[i * f + r] = silu(gate_[i * f + r]) * up_[i * f + r];
    }
  });
}

const float* Forward::forward(const int32_t* tokens, int64_t T, bool all_logits) {
  if (T <= 0) fail("forward: no tokens given");
  return run({Chunk{0, tokens, T}}, all_logits);
}

const float* Forward::forward_batch(const std::vector<Chunk>& chunks, bool all_logits) {
  if (chunks.empty()) fail("forward_batch: no chunks given");
  return run(chunks, all_logits);
}

const float* Forward::run(const std::vector<Chunk>& chunks, bool all_logits) {
  // Check everything before any state changes, so that a refused call leaves the caches as they were.
  const int64_t V = cfg_.vocab_size;
  int64_t T = 0;
  std::fill(slot_used_.begin(), slot_used_.end(), 0);
  for (const Chunk& c : chunks) {
    if (c.slot < 0 || c.slot >= slots()) fail("forward: slot {}: expected 0..{}", c.slot, slots() - 1);
    if (slot_used_[c.slot]) fail("forward: slot {} appears twice in one call", c.slot);
    slot_used_[c.slot] = 1;
    if (c.n <= 0) fail("forward: slot {}: no tokens given", c.slot);
    const int64_t p0 = caches_[c.slot].size();
    if (p0 + c.n > context())
      fail("{}context is full: {} cached + {} new tokens exceed the context of {}",
           slots() > 1 ? fmt::format("slot {}: ", c.slot) : "", p0, c.n, context());
    for (int64_t i = 0; i < c.n; ++i)
      if (c.tokens[i] < 0 || c.tokens[i] >= V)
        fail("token id {} at position {} is outside the vocabulary [0, {})", c.tokens[i], p0 + i, V);
    T += c.n;
  }
  const uint64_t sync0 = pool_.sync_points();
  const int64_t d = cfg_.hidden_size, f = cfg_.intermediate_size, half = cfg_.head_dim / 2;
  const int64_t heads = cfg_.num_attention_heads;

  // The call's layout: segments, each row's segment and position, attention
  // items and the rows whose logits are returned.
  segments_.clear();
  row_segment_.resize(T);
  row_pos_.resize(T);
  attention_items_.clear();
  out_rows_.clear();
  int64_t row = 0;
  for (const Chunk& c : chunks) {
    const int32_t seg = static_cast<int32_t>(segments_.size());
    const int64_t p0 = caches_[c.slot].size();
    segments_.push_back({c.slot, row, c.n, p0});
    for (int64_t i = 0; i < c.n; ++i) {
      row_segment_[row + i] = seg;
      row_pos_[row + i] = p0 + i;
      if (all_logits) out_rows_.push_back(row + i);
    }
    if (!all_logits) out_rows_.push_back(row + c.n - 1);
    const int64_t block = c.n == 1 ? 1 : kQueryBlock;
    for (int32_t h = 0; h < heads; ++h)
      for (int64_t i0 = 0; i0 < c.n; i0 += block) attention_items_.push_back({seg, h, i0, std::min(block, c.n - i0)});
    row += c.n;
  }
  const int64_t n_out = static_cast<int64_t>(out_rows_.size());
  ensure_buffers(T, n_out);
  row = 0;
  for (const Chunk& c : chunks)
    for (int64_t i = 0; i < c.n; ++i) embedding_row(model_.embed(), c.tokens[i], x_.data() + row++ * d);
  // RoPE angles of each row's position, in double: pos * inv_freq reaches 1e5
  // radians at long contexts, where f32 would lose the phase.
  rope_cos_.resize(T * half);
  rope_sin_.resize(T * half);
  for (int64_t i = 0; i < T; ++i)
    for (int64_t j = 0; j < half; ++j) {
      const double angle = static_cast<double>(row_pos_[i]) * inv_freq_[j];
      rope_cos_[i * half + j] = static_cast<float>(std::cos(angle));
      rope_sin_[i * half + j] = static_cast<float>(std::sin(angle));
    }
  // The first layer's attention sum has no carried z.
  if (adapter_) std::fill(carry_.begin(), carry_.begin() + static_cast<int64_t>(z_stride_), 0.0f);

  for (int64_t l = 0; l < cfg_.num_hidden_layers; ++l) {
    const LayerWeights& w = layers_[l];
    attention_entry(l, T);
    attention(l);
    exit_product(l, Target::O, w.o, att_.data(), cfg_.q_dim(), T);
    ffn_entry(l, T);
    exit_product(l, Target::Down, w.down, gate_.data(), f, T);
  }

  // Final norm and LM head, for the rows asked for (each segment's last, or all).
  WorkChunks vocab_rows(V, 512);
  pool_.run([&](int t, int) {
    float* xn = xn_.data() + static_cast<size_t>(t) * T * d;
    for (int64_t i = 0; i < n_out; ++i)
      ops::rmsnorm(xn + i * d, x_.data() + out_rows_[i] * d, model_.final_norm().data(), d, float(cfg_.rms_norm_eps));
    int64_t r0, r1;
    while (vocab_rows.next(r0, r1)) ops::matmul_rows(logits_.data(), V, xn, d, n_out, model_.lm_head(), r0, r1, false);
  });
  for (const Segment& s : segments_) caches_[s.slot].set_size(s.p0 + s.n);
  last_sync_points_ = pool_.sync_points() - sync0;
  return logits_.data();
}

}  // namespace flora
