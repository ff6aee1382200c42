#include "model/train_pass.h"

#include <algorithm>
#include <atomic>
#include <cmath>

#include "model/forward.h"
#include "ops/backward.h"
#include "ops/ops.h"
#include "ops/rows.h"
#include "util/error.h"

namespace flora {

namespace {

// Rows of the LM head's logits computed at once: (kHeadRows, V) floats, 33 MB
// at Llama 3's vocabulary, instead of the whole (N, V).
constexpr int64_t kHeadRows = 64;

// A float buffer that keeps its memory across runs and never initialises
// what it hands out: batches change shape every step, and a std::vector would
// copy its old contents on growth and zero-fill on resize (fresh pages from
// the kernel each time: 15% of a small model's step in perf). The few
// buffers that must start at zero say so with assign(n, 0).
// The bytes every Scratch of the process holds (train_pass_bytes_held()).
std::atomic<int64_t> g_scratch_bytes{0};

class Scratch {
 public:
  Scratch() = default;
  Scratch(Scratch&& o) noexcept : data_(std::move(o.data_)), size_(o.size_), cap_(o.cap_) { o.size_ = o.cap_ = 0; }
  Scratch& operator=(Scratch&&) = delete;
  ~Scratch() { g_scratch_bytes -= static_cast<int64_t>(cap_ * sizeof(float)); }
  void resize(size_t n) {
    if (n > cap_) {
      const size_t grown = std::max(n, cap_ + cap_ / 4);
      data_.reset();
      g_scratch_bytes -= static_cast<int64_t>(cap_ * sizeof(float));
      data_ = std::make_unique_for_overwrite<float[]>(grown);
      cap_ = grown;
      g_scratch_bytes += static_cast<int64_t>(cap_ * sizeof(float));
    }
    size_ = n;
  }
  void assign(size_t n, float value) {
    resize(n);
    std::fill(begin(), end(), value);
  }
  template <typename It>
  void assign(It first, It last) {
    resize(static_cast<size_t>(last - first));
    std::copy(first, last, begin());
  }
  float* data() { return data_.get(); }
  const float* data() const { return data_.get(); }
  float* begin() { return data_.get(); }
  float* end() { return data_.get() + size_; }
  const float* begin() const { return data_.get(); }
  const float* end() const { return data_.get() + size_; }
  size_t size() const { return size_; }
  float& operator[](size_t i) { return data_[i]; }
  float operator[](size_t i) const { return data_[i]; }

 private:
  std::unique_ptr<float[]> data_;
  size_t size_ = 0, cap_ = 0;
};

}  // namespace

// Activations of one layer that the backward reads. Shapes with N = B T rows.
struct LayerSaved {
  Scratch x;                        // (N, d) the layer's input (residual stream)
  Scratch rstd1;                    // (N)
  Scratch xn1;                      // (N, d) RMSNorm(x)
  Scratch qkv;                      // (N, q_dim + 2 kv_dim) q and k after RoPE, v
  Scratch att;                      // (N, q_dim) attention output
  Scratch x_mid;                    // (N, d) residual after attention
  Scratch rstd2;                    // (N)
  Scratch xn2;                      // (N, d)
  Scratch gate;                     // (N, f) gate product (with adapter), before SiLU
  Scratch up;                       // (N, f)
  std::array<Scratch, kTargets> z;  // (N, r) A_m drop(u) per target with A (LoRA: for dB)
  std::array<Scratch, 2> zsum;      // (N, r) FLoRA: z of the sub-block before phi
  std::array<Scratch, 2> p;         // (N, r) FLoRA: phi(z)
};

struct TrainPass::State {
  const LlamaConfig& cfg;
  ThreadPool& pool;
  WeightsView w;
  const TrainGrads* grads;
  const AdapterTrainView* adapter;  // null: no adapter
  int64_t max_rows;
  AdapterDropout dropout;
  bool keep_logits = false;
  std::vector<float> logits;  // (N, V) when keep_logits

  // Sizes of the run in flight.
  int64_t B = 0, T = 0, N = 0;
  int64_t d, f, qd, kvd, ld_qkv, hd, H, KV, V, r = 0;
  float s = 0;  // adapter scale
  bool flora = false;
  const AdapterExec* ac = nullptr;  // the adapter's values and flags

  Forward forward;  // the model's one layer function, run with a sink (LayerActivations)
  std::vector<LayerSaved> saved;
  std::vector<LayerActivations> acts;    // views of `saved`, what forward_train writes
  const float* x_final = nullptr;        // (N, d) the residual after the last layer (the forward's)
  Scratch rstd_f, xn_f;                  // (N), (N, d)
  std::vector<int32_t> tokens, targets;  // (N)
  Scratch rope_cos, rope_sin;            // (T, hd / 2)
  // (N, f) SiLU(gate) * up of the layer in flight, one buffer for all: the
  // forward's layers write it in turn, and the backward recomputes each
  // layer's from its saved gate and up (the same swiglu_forward per value).
  Scratch h;

  // Backward buffers.
  Scratch dx, dx_mid, dxn, dqkv, datt, dh, dgate, dup;  // (N, d) ... (N, f)
  std::array<Scratch, 2> dp;                            // (N, r) d loss / d p of each sub-block (FLoRA)
  Scratch dcarry;                // (N, r) d loss / d carry_out of the sub-block being differentiated
  Scratch dz, tmp_r;             // (N, r)
  Scratch tmp_in;                // (N, max(d, f, q_dim)) adapter input gradients before the dropout mask
  Scratch drop_buf;              // (N, max(d, f, q_dim)) drop(u)
  Scratch grad_scratch;          // ops::weight_grad's (the largest call's weight_grad_scratch_floats)
  Scratch attn_scratch;          // (threads, attention_rows_backward_floats)
  Scratch dzsum_;                // (N, r) d loss / d z of the sub-block (FLoRA)
  Scratch xc, lg, dxc;           // (kHeadRows, d), (kHeadRows, V), (kHeadRows, d): the LM head's rows
  std::vector<double> row_loss;  // (N)
  std::vector<int32_t> chunk_targets;  // (kHeadRows) the targets of the LM head's rows in flight
  std::vector<double> chunk_loss;      // (kHeadRows) their losses
  std::vector<double> seq_loss;  // (B): row_loss summed over each sequence

  State(const LlamaConfig& c, ThreadPool& p, const WeightsView& weights, const TrainGrads* g, const AdapterTrainView* a,
        int64_t rows)
      : cfg(c), pool(p), w(weights), grads(g), adapter(a), max_rows(rows), forward(c, weights, p) {
    d = c.hidden_size, f = c.intermediate_size, qd = c.q_dim(), kvd = c.kv_dim(), ld_qkv = qd + 2 * kvd;
    hd = c.head_dim, H = c.num_attention_heads, KV = c.num_key_value_heads, V = c.vocab_size;
    if (adapter) {
      ac = &adapter->values;
      r = ac->rank;
      s = ac->scale;
      flora = ac->mode == AdapterMode::FLoRA;
      FLORA_ASSERT(static_cast<int64_t>(ac->layers.size()) == c.num_hidden_layers &&
                   adapter->grads.size() == ac->layers.size());
    }
    FLORA_ASSERT(static_cast<int64_t>(w.layers.size()) == c.num_hidden_layers);
    saved.resize(c.num_hidden_layers);
    acts.resize(c.num_hidden_layers);
  }

  // ---- parallel building blocks -------------------------------------------

  // dW (M, K) += scale dy^T x (ops::weight_grad), with the pass's scratch.
  void weight_grad(float* dW, const float* dy, int64_t ldy, int64_t M, const float* x, int64_t ldx, int64_t K,
                   int64_t n, float scale) {
    grad_scratch.resize(static_cast<size_t>(ops::weight_grad_scratch_floats(M, K, n, pool.size())));
    ops::weight_grad(pool, dW, dy, ldy, M, x, ldx, K, n, scale, grad_scratch.data());
  }

  // ---- dropout -------------------------------------------------------------

  // drop(u) for the adapter of (layer, m), as the forward drew it: u itself
  // when dropout is off, else u * mask / (1 - p) in drop_buf. u: (N, n_in) dense.
  const float* dropped(const float* u, int64_t n_in, int64_t layer, Target m) {
    if (dropout.p <= 0) return u;
    drop_buf.resize(static_cast<size_t>(N * n_in));
    dropout.apply(pool, drop_buf.data(), u, n_in, N, n_in, layer, m);
    return drop_buf.data();
  }

  // ---- adapters, forward ----------------------------------------------------

  const MatrixRef& A(int64_t l, Target m) const { return ac->layers[l].A[index(m)]; }
  const MatrixRef& Bm(int64_t l, Target m) const { return ac->layers[l].B[index(m)]; }
  const MatrixRef& C(int64_t l, Target m) const { return ac->layers[l].C[index(m)]; }
  float* gA(int64_t l, Target m) const { return adapter->grads[l].A[index(m)]; }
  float* gB(int64_t l, Target m) const { return adapter->grads[l].B[index(m)]; }
  float* gC(int64_t l, Target m) const { return adapter->grads[l].C[index(m)]; }
  // Output width of projection m of layer l (the base matrix's rows).
  int64_t target_out(int64_t l, Target m) const { return projection(w.layers[l], m).rows; }

  // ---- adapters, backward ---------------------------------------------------

  // Exit m of sub-block sb: dy (N, d) is d loss / d output; dc (N, n_in)
  // receives += d loss / d c through the adapter (the base part is done by
  // the caller). dcarry: d loss / d carry_out (zeros when nothing consumes it).
  // Adds to dp[sb].
  void exit_backward(int64_t l, int sb, Target m, const float* c, int64_t n_in, const float* dy, float* dc) {
    if (!adapter) return;
    LayerSaved& S = saved[l];
    const int mi = index(m);
    dz.assign(static_cast<size_t>(N * r), 0.0f);
    bool have_dz = false;
    if (!flora) {
      if (!ac->forward[mi]) return;
      // y += s B z: dz = s dy B, dB += s dy^T z
      ops::product_t(pool, dz.data(), r, dy, d, N, Bm(l, m), false);
      for (float& v : dz) v *= s;
      weight_grad(gB(l, m), dy, d, d, S.z[mi].data(), r, r, N, s);
      have_dz = true;
    } else {
      if (ac->backward[mi]) {  // y += s B p
        tmp_r.resize(static_cast<size_t>(N * r));
        ops::product_t(pool, tmp_r.data(), r, dy, d, N, Bm(l, m), false);
        for (int64_t i = 0; i < N * r; ++i) dp[sb][i] += s * tmp_r[i];
        weight_grad(gB(l, m), dy, d, d, S.p[sb].data(), r, r, N, s);
      }
      if (ac->carry[mi]) {  // carry = ze + C p
        ops::product_t(pool, dp[sb].data(), r, dcarry.data(), r, N, C(l, m), true);
        weight_grad(gC(l, m), dcarry.data(), r, r, S.p[sb].data(), r, r, N, 1.0f);
        std::copy(dcarry.begin(), dcarry.begin() + N * r, dz.begin());
        have_dz = true;
      }
      if (ac->forward[mi] && ac->repeat_add[mi]) {
        for (int64_t t = 0; t < N; ++t) ops::fold_add(dz.data() + t * r, dy + t * d, d, r, s);
        have_dz = true;
      }
    }
    if (!have_dz || !ac->forward[mi]) return;
    // ze = A drop(c): dA += dz^T drop(c), dc += mask(dz A)
    weight_grad(gA(l, m), dz.data(), r, r, dropped(c, n_in, l, m), n_in, n_in, N, 1.0f);
    tmp_in.resize(static_cast<size_t>(N * n_in));
    ops::product_t(pool, tmp_in.data(), n_in, dz.data(), r, N, A(l, m), false);
    dropout.add_masked(pool, dc, tmp_in.data(), N, n_in, l, m);
  }

  // Entry adapters of sub-block sb with input u (N, d); dys[m] (row stride
  // ldy) is d loss / d y_m; du (N, d) receives += through the adapters.
  // Leaves d loss / d carry_in in dcarry (FLoRA).
  void entry_backward(int64_t l, int sb, std::initializer_list<Target> targets, const float* u,
                      std::initializer_list<const float*> dys, int64_t ldy, float* du) {
    if (!adapter) return;
    LayerSaved& S = saved[l];
    dz.resize(static_cast<size_t>(N * r));
    Scratch& dzsum = dzsum_;
    if (flora) {
      dzsum.resize(static_cast<size_t>(N * r));
      for (int64_t i = 0; i < N * r; ++i)
        dzsum[i] = dp[sb][i] * nonlinearity_derivative(ac->nonlinearity, S.zsum[sb][i]);
      dcarry.assign(dzsum.begin(), dzsum.end());
    }
    auto dy_it = dys.begin();
    for (Target m : targets) {
      const float* dy = *dy_it++;
      const int mi = index(m);
      if (!ac->forward[mi]) continue;
      const int64_t n_out = target_out(l, m);
      if (!flora) {  // y += s B z
        ops::product_t(pool, dz.data(), r, dy, ldy, N, Bm(l, m), false);
        for (float& v : dz) v *= s;
        weight_grad(gB(l, m), dy, ldy, n_out, S.z[mi].data(), r, r, N, s);
      } else {
        dz.assign(dzsum.begin(), dzsum.end());
        if (ac->repeat_add[mi])
          for (int64_t t = 0; t < N; ++t) ops::fold_add(dz.data() + t * r, dy + t * ldy, n_out, r, s);
      }
      weight_grad(gA(l, m), dz.data(), r, r, dropped(u, d, l, m), d, d, N, 1.0f);
      tmp_in.resize(static_cast<size_t>(N * d));
      ops::product_t(pool, tmp_in.data(), d, dz.data(), r, N, A(l, m), false);
      dropout.add_masked(pool, du, tmp_in.data(), N, d, l, m);
    }
  }

  // ---- layer ---------------------------------------------------------------

  // Sizes the saved activations for the batch and points the forward's sink at them.
  void bind_activations() {
    auto fit = [&](Scratch& v, int64_t n) {
      v.resize(static_cast<size_t>(n));
      return v.data();
    };
    for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
      LayerSaved& S = saved[l];
      LayerActivations& a = acts[l];
      a.x = fit(S.x, N * d), a.rstd1 = fit(S.rstd1, N), a.xn1 = fit(S.xn1, N * d), a.qkv = fit(S.qkv, N * ld_qkv);
      a.att = fit(S.att, N * qd), a.x_mid = fit(S.x_mid, N * d);
      a.rstd2 = fit(S.rstd2, N), a.xn2 = fit(S.xn2, N * d);
      a.gate = fit(S.gate, N * f), a.up = fit(S.up, N * f), a.h = fit(h, N * f);
      a.adapter = AdapterActivations{};
      if (!adapter) continue;
      for (Target m : kAllTargets)  // LoRA's backward reads z = A drop(u) for dB
        if (!flora && ac->forward[index(m)]) a.adapter.z[index(m)] = fit(S.z[index(m)], N * r);
      for (int sb = 0; flora && sb < 2; ++sb)
        a.adapter.zsum[sb] = fit(S.zsum[sb], N * r), a.adapter.p[sb] = fit(S.p[sb], N * r);
    }
  }

  // dx (N, d): d loss / d (this layer's output) in, d loss / d (its input) out.
  // dcarry: d loss / d (this layer's FFN carry_out) in, d loss / d (its
  // attention carry_in) out.
  void backward_layer(int64_t l) {
    LayerSaved& S = saved[l];
    const LayerView& L = w.layers[l];
    const TrainLayerGrads* G = grads ? &grads->layers[l] : nullptr;
    if (flora) {
      dp[0].assign(static_cast<size_t>(N * r), 0.0f);
      dp[1].assign(static_cast<size_t>(N * r), 0.0f);
    }

    // FFN exit: x_out = x_mid + h Wd^T (+ adapter), h = silu(gate) * up recomputed.
    ops::swiglu_rows(pool, h.data(), S.gate.data(), S.up.data(), N, f);
    dh.resize(static_cast<size_t>(N * f));
    ops::product_t(pool, dh.data(), f, dx.data(), d, N, L.down, false);
    if (G && G->down) weight_grad(G->down, dx.data(), d, d, h.data(), f, f, N, 1.0f);
    exit_backward(l, 1, Target::Down, h.data(), f, dx.data(), dh.data());
    // h = silu(gate) * up
    dgate.resize(static_cast<size_t>(N * f));
    dup.resize(static_cast<size_t>(N * f));
    ops::swiglu_rows_backward(pool, dgate.data(), dup.data(), dh.data(), S.gate.data(), S.up.data(), N, f);
    // FFN entry: gate, up = xn2 Wg^T, xn2 Wu^T (+ adapters).
    dxn.resize(static_cast<size_t>(N * d));
    ops::product_t(pool, dxn.data(), d, dgate.data(), f, N, L.gate, false);
    ops::product_t(pool, dxn.data(), d, dup.data(), f, N, L.up, true);
    if (G && G->gate) weight_grad(G->gate, dgate.data(), f, f, S.xn2.data(), d, d, N, 1.0f);
    if (G && G->up) weight_grad(G->up, dup.data(), f, f, S.xn2.data(), d, d, N, 1.0f);
    entry_backward(l, 1, {Target::Gate, Target::Up}, S.xn2.data(), {dgate.data(), dup.data()}, f, dxn.data());
    // dcarry now holds d loss / d (the attention exit's carry_out).
    dx_mid.assign(dx.begin(), dx.begin() + N * d);  // residual
    ops::rmsnorm_rows_backward(pool, dx_mid.data(), G ? G->ffn_norm : nullptr, dxn.data(), S.x_mid.data(), L.ffn_norm,
                               S.rstd2.data(), N, d);

    // Attention exit: x_mid = x + att Wo^T (+ adapter).
    datt.resize(static_cast<size_t>(N * qd));
    ops::product_t(pool, datt.data(), qd, dx_mid.data(), d, N, L.o, false);
    if (G && G->o) weight_grad(G->o, dx_mid.data(), d, d, S.att.data(), qd, qd, N, 1.0f);
    exit_backward(l, 0, Target::O, S.att.data(), qd, dx_mid.data(), datt.data());
    // Attention (its probabilities recomputed from q and k), per (sequence, KV head).
    dqkv.assign(static_cast<size_t>(N * ld_qkv), 0.0f);
    attn_scratch.resize(static_cast<size_t>(pool.size() * ops::attention_rows_backward_floats(T, hd)));
    ops::attention_rows_backward(pool, dqkv.data(), datt.data(), qd, S.qkv.data(), ld_qkv, B, T, H, KV, hd,
                                 attn_scratch.data());
    ops::rope_rows(pool, dqkv.data(), ld_qkv, N, H + KV, hd, rope_cos.data(), rope_sin.data(), T, true);
    // Attention entry: q|k|v = xn1 [Wq; Wk; Wv]^T (+ adapters).
    const float* dq = dqkv.data();
    const float* dk = dq + qd;
    const float* dv = dk + kvd;
    ops::product_t(pool, dxn.data(), d, dq, ld_qkv, N, L.q, false);
    ops::product_t(pool, dxn.data(), d, dk, ld_qkv, N, L.k, true);
    ops::product_t(pool, dxn.data(), d, dv, ld_qkv, N, L.v, true);
    if (G && G->q) weight_grad(G->q, dq, ld_qkv, qd, S.xn1.data(), d, d, N, 1.0f);
    if (G && G->k) weight_grad(G->k, dk, ld_qkv, kvd, S.xn1.data(), d, d, N, 1.0f);
    if (G && G->v) weight_grad(G->v, dv, ld_qkv, kvd, S.xn1.data(), d, d, N, 1.0f);
    entry_backward(l, 0, {Target::Q, Target::K, Target::V}, S.xn1.data(), {dq, dk, dv}, ld_qkv, dxn.data());
    // dcarry now holds d loss / d (the previous layer's down carry_out).
    std::copy(dx_mid.begin(), dx_mid.end(), dx.begin());  // residual
    ops::rmsnorm_rows_backward(pool, dx.data(), G ? G->attn_norm : nullptr, dxn.data(), S.x.data(), L.attn_norm,
                               S.rstd1.data(), N, d);
  }

  // Final norm, LM head and cross-entropy over the rows that have a target
  // (every row with keep_logits), kHeadRows at a time. With backward, fills
  // dx (N, d) with d loss / d x_final.
  double head(bool backward, float grad_scale) {
    ops::rmsnorm_rows(pool, xn_f.data(), rstd_f.data(), x_final, w.final_norm, N, d, float(cfg.rms_norm_eps));
    std::vector<int64_t> rows;
    for (int64_t t = 0; t < N; ++t)
      if (keep_logits || targets[t] >= 0) rows.push_back(t);
    if (keep_logits) logits.assign(static_cast<size_t>(N * V), 0.0f);
    xc.resize(static_cast<size_t>(kHeadRows * d));
    lg.resize(static_cast<size_t>(kHeadRows * V));
    dxc.resize(static_cast<size_t>(kHeadRows * d));
    row_loss.assign(static_cast<size_t>(N), 0.0);
    chunk_targets.resize(kHeadRows);
    chunk_loss.resize(kHeadRows);
    if (backward) dxn.assign(static_cast<size_t>(N * d), 0.0f);
    float* dE = grads ? (w.tied ? grads->embed : grads->lm_head) : nullptr;
    for (size_t c0 = 0; c0 < rows.size(); c0 += kHeadRows) {
      const int64_t n = std::min<int64_t>(kHeadRows, static_cast<int64_t>(rows.size() - c0));
      for (int64_t i = 0; i < n; ++i)
        std::copy(xn_f.begin() + rows[c0 + i] * d, xn_f.begin() + (rows[c0 + i] + 1) * d, xc.begin() + i * d);
      ops::product(pool, lg.data(), V, xc.data(), d, n, w.lm_head, false);
      for (int64_t i = 0; keep_logits && i < n; ++i)
        std::copy(lg.begin() + i * V, lg.begin() + (i + 1) * V, logits.begin() + rows[c0 + i] * V);
      for (int64_t i = 0; i < n; ++i) chunk_targets[i] = targets[rows[c0 + i]];
      ops::cross_entropy_rows(pool, chunk_loss.data(), lg.data(), chunk_targets.data(), n, V, backward, grad_scale);
      for (int64_t i = 0; i < n; ++i) row_loss[rows[c0 + i]] = chunk_loss[i];
      if (!backward) continue;
      ops::product_t(pool, dxc.data(), d, lg.data(), V, n, w.lm_head, false);
      for (int64_t i = 0; i < n; ++i)
        std::copy(dxc.begin() + i * d, dxc.begin() + (i + 1) * d, dxn.begin() + rows[c0 + i] * d);
      if (dE) weight_grad(dE, lg.data(), V, V, xc.data(), d, d, n, 1.0f);
    }
    // Per sequence, its rows in order (padding adds exact zeros), then the
    // sequences in order: a caller that adds sequence_loss over micro-batches
    // in data order gets the same sum however the batch was split.
    seq_loss.assign(static_cast<size_t>(B), 0.0);
    double loss = 0;
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t t = 0; t < T; ++t) seq_loss[b] += row_loss[b * T + t];
      loss += seq_loss[b];
    }
    if (backward) {
      dx.assign(static_cast<size_t>(N * d), 0.0f);
      ops::rmsnorm_rows_backward(pool, dx.data(), grads ? grads->final_norm : nullptr, dxn.data(), x_final,
                                 w.final_norm, rstd_f.data(), N, d);
    }
    return loss;
  }

  double run(const TrainBatch& batch, bool backward, float grad_scale) {
    if (batch.B <= 0 || batch.T <= 0) fail("training batch is empty ({} x {})", batch.B, batch.T);
    if (batch.B * batch.T > max_rows)
      fail("training batch of {} x {} rows exceeds the {} rows the pass was sized for", batch.B, batch.T, max_rows);
    if (batch.T > cfg.max_position_embeddings)
      fail("sequence length {} exceeds the model's max_position_embeddings {}", batch.T, cfg.max_position_embeddings);
    B = batch.B, T = batch.T, N = B * T;
    tokens.assign(batch.tokens, batch.tokens + N);
    targets.assign(batch.targets, batch.targets + N);
    for (int64_t t = 0; t < N; ++t) {
      if (tokens[t] < 0 || tokens[t] >= V)
        fail("token id {} at row {} is outside the vocabulary [0, {})", tokens[t], t, V);
      if (targets[t] >= V) fail("target id {} at row {} is outside the vocabulary [0, {})", targets[t], t, V);
    }
    const int64_t half = hd / 2;
    const std::vector<double> inv_freq = rope_inverse_frequencies(cfg);
    rope_cos.resize(static_cast<size_t>(T * half));
    rope_sin.resize(static_cast<size_t>(T * half));
    for (int64_t p = 0; p < T; ++p) rope_angles(inv_freq, p, rope_cos.data() + p * half, rope_sin.data() + p * half);
    rstd_f.resize(static_cast<size_t>(N));
    xn_f.resize(static_cast<size_t>(N * d));
    bind_activations();
    x_final = forward.forward_train(tokens.data(), B, T, ac, dropout, acts);
    const double loss = head(backward, grad_scale);
    if (!backward) return loss;

    dcarry.assign(static_cast<size_t>(N * std::max<int64_t>(r, 1)), 0.0f);  // the last layer's carry is dropped
    for (int64_t l = cfg.num_hidden_layers - 1; l >= 0; --l) backward_layer(l);
    if (grads && grads->embed) ops::embedding_backward(pool, grads->embed, tokens.data(), dx.data(), N, d);
    return loss;
  }
};

int64_t train_pass_bytes_held() { return g_scratch_bytes.load(); }

TrainPassBytes train_pass_bytes(const LlamaConfig& c, int64_t B, int64_t T, int64_t r, bool full, int threads) {
  const int64_t N = B * T, d = c.hidden_size, f = c.intermediate_size, qd = c.q_dim(), V = c.vocab_size;
  const int64_t ld_qkv = qd + 2 * c.kv_dim(), widest = std::max({d, f, qd});
  // LayerSaved: x, xn1, x_mid, xn2 (d each), two rstd, qkv, att, gate, up;
  // z of every target, zsum and p of both sub-blocks (r each).
  const int64_t per_layer = N * (4 * d + 2 + ld_qkv + qd + 2 * f + (r > 0 ? (kTargets + 4) * r : 0));
  // h; dx, dx_mid, dxn, dqkv, datt, dh, dgate, dup; dp, dcarry, dz, tmp_r, dzsum;
  // tmp_in, drop_buf (adapters only); the weight gradients' scratch (its largest call); the
  // LM head's chunks; attention scratch per thread; the final norm, tokens and
  // targets, row losses.
  int64_t grad_scratch = 0;
  auto weight_grad_call = [&](int64_t M, int64_t K, int64_t n) {
    grad_scratch = std::max(grad_scratch, ops::weight_grad_scratch_floats(M, K, n, threads));
  };
  const int64_t kvd = c.kv_dim();
  if (full) {
    for (const auto& [M, K] : {std::pair{qd, d}, {kvd, d}, {d, qd}, {f, d}, {d, f}}) weight_grad_call(M, K, N);
    weight_grad_call(V, d, std::min(N, kHeadRows));  // the tied embedding, by the LM head's chunks
  }
  if (r > 0) {
    for (int64_t width : {d, qd, kvd, f}) weight_grad_call(width, r, N), weight_grad_call(r, width, N);
    weight_grad_call(r, r, N);  // FLoRA's carry C
  }
  const int64_t scratch_floats = N * (3 * d + ld_qkv + qd + 4 * f) + N * 6 * std::max<int64_t>(r, 1) +
                                 (r > 0 ? 2 * N * widest : 0) + grad_scratch + kHeadRows * (2 * d + V) +
                                 threads * ops::attention_rows_backward_floats(T, c.head_dim) + N * (d + 1);
  TrainPassBytes b;
  b.saved = static_cast<int64_t>(sizeof(float)) * per_layer * c.num_hidden_layers;
  b.scratch = static_cast<int64_t>(sizeof(float)) * scratch_floats + N * (2 * 4 + 2 * 8);
  return b;
}

TrainPass::TrainPass(const LlamaConfig& config, ThreadPool& pool, const WeightsView& weights, const TrainGrads* grads,
                     const AdapterTrainView* adapter, int64_t max_rows)
    : s_(std::make_unique<State>(config, pool, weights, grads, adapter, max_rows)) {}
TrainPass::~TrainPass() = default;
void TrainPass::set_dropout(float p, uint64_t seed) {
  if (!(p >= 0 && p < 1)) fail("dropout must be in [0, 1), got {}", p);
  s_->dropout = AdapterDropout{p, seed};
}
double TrainPass::run(const TrainBatch& batch, bool backward, float grad_scale) {
  return s_->run(batch, backward, grad_scale);
}
void TrainPass::keep_logits(bool keep) { s_->keep_logits = keep; }
const std::vector<float>& TrainPass::logits() const { return s_->logits; }
const std::vector<double>& TrainPass::sequence_losses() const { return s_->seq_loss; }

}  // namespace flora
