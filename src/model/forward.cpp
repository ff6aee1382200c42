#include "model/forward.h"

#include <algorithm>
#include <cmath>

#include "ops/backward.h"
#include "ops/rows.h"
#include "util/error.h"

namespace flora {

KVCache::KVCache(const LlamaConfig& c, int64_t capacity)
    : capacity_(capacity),
      kv_dim_(c.kv_dim()),
      k_(static_cast<size_t>(c.num_hidden_layers * capacity * c.kv_dim())),
      v_(static_cast<size_t>(c.num_hidden_layers * capacity * c.kv_dim())) {}

Forward::Forward(const LlamaModel& model, ThreadPool& pool, int64_t context, const AdapterExec* adapter,
                 const std::vector<LayerWeights>* layers, int slots)
    : cfg_(model.config()),
      w_(weights_view_of(model, layers)),
      pool_(pool),
      inv_freq_(rope_inverse_frequencies(model.config())),
      adapter_(adapter) {
  if (context <= 0) fail("context must be positive, got {}", context);
  if (context > cfg_.max_position_embeddings)
    fail("context {} exceeds the model's max_position_embeddings {}", context, cfg_.max_position_embeddings);
  if (slots <= 0) fail("slots must be positive, got {}", slots);
  FLORA_ASSERT(static_cast<int64_t>(w_.layers.size()) == cfg_.num_hidden_layers);
  caches_.reserve(slots);
  for (int i = 0; i < slots; ++i) caches_.emplace_back(model.config(), context);
  slot_used_.assign(slots, 0);
  block_scores_.resize(static_cast<size_t>(pool.size()) * ops::kAttentionBlock * context);
}

Forward::Forward(const LlamaConfig& config, const WeightsView& weights, ThreadPool& pool)
    : cfg_(config), w_(weights), pool_(pool), inv_freq_(rope_inverse_frequencies(config)) {
  FLORA_ASSERT(static_cast<int64_t>(w_.layers.size()) == cfg_.num_hidden_layers);
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
    if (!acts_) {  // forward_train writes these into its LayerActivations
      xn_.resize(static_cast<size_t>(pool_.size()) * T * d);
      qkv_.resize(T * (cfg_.q_dim() + 2 * cfg_.kv_dim()));
      att_.resize(T * cfg_.q_dim());
      gate_.resize(T * f);
      up_.resize(T * f);
    }
    capacity_T_ = T;
  }
  logits_.resize(n_out * cfg_.vocab_size);
}

void Forward::bind_layer(int64_t layer) {
  act_ = acts_ ? &(*acts_)[layer] : nullptr;
  if (act_) {
    qkv_p_ = act_->qkv, att_p_ = act_->att, gate_p_ = act_->gate, up_p_ = act_->up, h_p_ = act_->h;
  } else {
    qkv_p_ = qkv_.data(), att_p_ = att_.data(), gate_p_ = gate_.data(), up_p_ = up_.data();
    h_p_ = gate_p_;  // SwiGLU in place: h overwrites gate
  }
  for (AdapterStrategy* s : active_) s->save_to(act_ ? &act_->adapter : nullptr);
}

// The site's input; under dropout (forward_train), each adapted target's A
// reads its own masked copy of u, formed here in one region per target.
SiteInput Forward::site_input(int64_t layer, const Site& site, const float* u, int64_t ld_u, int64_t n_in, int64_t T) {
  SiteInput in{u, ld_u, {u, u, u}, ld_u};
  if (dropout_.p <= 0 || active_.empty()) return in;
  const AdapterExec& e = active_[0]->exec();  // forward_train runs one adapter
  const size_t stride = static_cast<size_t>(T) * std::max({cfg_.hidden_size, cfg_.q_dim(), cfg_.intermediate_size});
  if (dropped_.size() < 3 * stride) dropped_.resize(3 * stride);
  in.a_ld = n_in;
  for (int j = 0; j < site.n_targets; ++j) {
    const Target m = site.targets[j];
    if (!e.forward[index(m)]) continue;
    float* out = dropped_.data() + j * stride;
    dropout_.apply(pool_, out, u, ld_u, T, n_in, layer, m);
    in.a_u[j] = out;
  }
  return in;
}

// RoPE and the cache write of head h (of the stack [q; k; v]) for every row:
// each row at its own position, into its own sequence's slot.
void Forward::rope_and_cache(int64_t layer, int64_t h, int64_t T) {
  const int64_t hd = cfg_.head_dim, half = hd / 2, ld = cfg_.q_dim() + 2 * cfg_.kv_dim();
  const int64_t nq = cfg_.num_attention_heads, nkv = cfg_.num_key_value_heads;
  if (h < nq + nkv)  // RoPE on q and k heads
    for (int64_t i = 0; i < T; ++i)
      ops::rope_forward(qkv_p_ + i * ld + h * hd, rope_cos_.data() + i * half, rope_sin_.data() + i * half, hd);
  if (h >= nq && !acts_) {  // k and v heads go to the cache (forward_train has none: attention reads qkv)
    const bool is_k = h < nq + nkv;
    const int64_t kv_head = is_k ? h - nq : h - nq - nkv;
    for (int64_t i = 0; i < T; ++i) {
      const float* src = qkv_p_ + i * ld + h * hd;
      KVCache& cache = caches_[segments_[row_segment_[i]].slot];
      float* dst = (is_k ? cache.k(layer, row_pos_[i]) : cache.v(layer, row_pos_[i])) + kv_head * hd;
      std::copy(src, src + hd, dst);
    }
  }
}

Forward::SitePlan Forward::plan_site(const Site& site) const {
  SitePlan plan;
  for (AdapterStrategy* s : active_) {
    for (int64_t i = 0, n = s->region_items(site); i < n; ++i) plan.items.push_back({s, i});
    plan.defers = plan.defers || s->defers(site);
    plan.follow_up = plan.follow_up || s->needs_follow_up(site);
  }
  return plan;
}

// Region 1: RMSNorm, the fused q|k|v product, RoPE and the KV cache write.
// Threads own whole heads of the stacked q|k|v rows, so RoPE and the cache
// write need no further synchronisation. When an adapter defers the outputs
// (LoRA), RoPE and the cache write move to a follow-up region. Each thread
// normalises its own copy of the rows, except in forward_train, which saves
// one (a region of its own, as is dropout's).
void Forward::attention_entry(int64_t layer, int64_t T) {
  const LayerView& w = w_.layers[layer];
  const Site& site = kAttentionEntry;
  const int64_t hd = cfg_.head_dim, ld = cfg_.q_dim() + 2 * cfg_.kv_dim();
  const int64_t heads_total = cfg_.num_attention_heads + 2 * cfg_.num_key_value_heads;
  const MatrixRef* mats[3] = {&w.q, &w.k, &w.v};
  const int64_t offsets[3] = {0, w.q.rows, w.q.rows + w.k.rows};  // of q, k, v in the stack
  const SiteOutput outs[3] = {{qkv_p_, ld}, {qkv_p_ + offsets[1], ld}, {qkv_p_ + offsets[2], ld}};
  const SitePlan plan = plan_site(site);
  ops::ProductRegion g;
  g.T = T, g.n_operands = 3, g.stacked = true, g.chunk = hd;
  for (int j = 0; j < 3; ++j) g.operands[j] = {mats[j], outs[j].y, ld, false};
  if (!plan.defers)
    g.chunk_done = [&](int, int64_t c0, int64_t c1) {
      for (int64_t h = c0 / hd; h < c1 / hd; ++h) rope_and_cache(layer, h, T);
    };
  entry_region(g, layer, site, plan, w.attn_norm, act_ ? act_->xn1 : nullptr, act_ ? act_->rstd1 : nullptr, outs);
  if (!plan.defers) return;
  ops::for_chunks(pool_, heads_total, 1, [&](int t, int64_t h0, int64_t h1) {
    // The adapters' follow-up work (partially fused LoRA's B products) on these heads, then RoPE and the cache.
    for (int j = 0; plan.follow_up && j < 3; ++j) {
      const int64_t r0 = std::max(h0 * hd, offsets[j]) - offsets[j];
      const int64_t r1 = std::min(h1 * hd, offsets[j] + mats[j]->rows) - offsets[j];
      if (r0 < r1)
        for (AdapterStrategy* s : active_) s->late_epilogue(t, layer, site, j, outs[j], r0, r1);
    }
    for (int64_t h = h0; h < h1; ++h) rope_and_cache(layer, h, T);
  });
}

// Region 2: causal grouped-query attention of every row over the positions
// of its own sequence (ops::attention_rows): the KV cache of its slot, or in
// forward_train its sequence's own rows (the backward recomputes the probabilities).
void Forward::attention(int64_t layer) {
  const int64_t hd = cfg_.head_dim, qd = cfg_.q_dim(), kvd = cfg_.kv_dim(), ld = qd + 2 * kvd;
  const int64_t heads = cfg_.num_attention_heads;
  attention_segments_.resize(segments_.size());
  for (size_t i = 0; i < segments_.size(); ++i) {
    const Segment& s = segments_[i];
    ops::AttentionSegment& a = attention_segments_[i];
    a.row0 = s.row0, a.n = s.n, a.p0 = s.p0;
    if (act_) {  // the sequence's own rows
      a.k = qkv_p_ + s.row0 * ld + qd, a.v = a.k + kvd, a.ld_kv = ld;
    } else {
      KVCache& cache = caches_[s.slot];
      a.k = cache.k(layer, 0), a.v = cache.v(layer, 0), a.ld_kv = kvd;
    }
  }
  ops::attention_rows(pool_, att_p_, qd, qkv_p_, ld, attention_segments_, heads, cfg_.num_key_value_heads, hd,
                      block_scores_.data(), act_ ? train_T_ : context());
}

// The product region of an entry site (q|k|v, gate|up) on the normalised rows:
// each thread normalises its own copy of x inside the region (no barrier), or
// in forward_train the one saved copy (norm_out, rstd_out) is formed first;
// the strategies' before_chunks, epilogues, items and after_chunks ride on it,
// then their extra regions (unfused LoRA) on thread 0's copy.
void Forward::entry_region(ops::ProductRegion& g, int64_t layer, const Site& site, const SitePlan& plan,
                           const float* norm_w, float* norm_out, float* rstd_out, const SiteOutput* outs) {
  const int64_t d = cfg_.hidden_size, T = g.T;
  const float eps = float(cfg_.rms_norm_eps);
  if (act_) ops::rmsnorm_rows(pool_, norm_out, rstd_out, x_.data(), norm_w, T, d, eps);
  const SiteInput saved_in = act_ ? site_input(layer, site, norm_out, d, d, T) : SiteInput{};
  auto input_of = [&](const float* xn) { return act_ ? saved_in : SiteInput{xn, d, {xn, xn, xn}, d}; };
  g.ldx = d;
  g.input = [&](int t) -> const float* {
    if (act_) return norm_out;
    float* xn = xn_.data() + static_cast<size_t>(t) * T * d;
    for (int64_t i = 0; i < T; ++i) ops::rmsnorm(xn + i * d, x_.data() + i * d, norm_w, d, eps);
    return xn;
  };
  g.before = [&](int t, const float* xn) {
    for (AdapterStrategy* s : active_) s->before_chunks(t, layer, site, input_of(xn));
  };
  g.epilogue = [&](int t, int j, int64_t r0, int64_t r1) {
    for (AdapterStrategy* s : active_) s->epilogue(t, layer, site, j, outs[j], r0, r1);
  };
  add_items(g, layer, site, plan, input_of);
  ops::product_region(pool_, g);
  if (plan.defers)
    for (AdapterStrategy* s : active_) s->extra_regions(pool_, layer, site, input_of(xn_.data()), outs);
}

// The strategies' own work items of a site's product region (partially fused LoRA's A products).
template <typename InputOf>
void Forward::add_items(ops::ProductRegion& g, int64_t layer, const Site& site, const SitePlan& plan,
                        const InputOf& input_of) {
  g.items = static_cast<int64_t>(plan.items.size());
  if (g.items)
    g.item = [&, layer](int t, int64_t i, const float* x) {
      plan.items[i].first->region_item(t, layer, site, plan.items[i].second, input_of(x));
    };
  g.after = [&, layer](int t) {
    for (AdapterStrategy* s : active_) s->after_chunks(t, layer, site);
  };
}

// Regions 3 and 5: x += W u, with the adapters of the exit site, the
// residual add in the product's epilogue.
void Forward::exit_product(int64_t layer, const Site& site, const MatrixRef& w, const float* u, int64_t ld_u,
                           int64_t T) {
  const int64_t d = cfg_.hidden_size;
  const SiteOutput out{x_.data(), d};
  const SiteInput in = site_input(layer, site, u, ld_u, w.cols, T);
  auto input_of = [&](const float*) { return in; };
  const SitePlan plan = plan_site(site);
  ops::ProductRegion g;
  g.T = T, g.chunk = product_row_chunk(T), g.ldx = ld_u;
  g.operands[0] = {&w, x_.data(), d, true};
  g.input = [&](int) { return u; };
  g.before = [&](int t, const float*) {
    for (AdapterStrategy* s : active_) s->before_chunks(t, layer, site, in);
  };
  g.epilogue = [&](int t, int, int64_t r0, int64_t r1) {
    for (AdapterStrategy* s : active_) s->epilogue(t, layer, site, 0, out, r0, r1);
  };
  add_items(g, layer, site, plan, input_of);
  ops::product_region(pool_, g);
  for (AdapterStrategy* s : active_) s->extra_regions(pool_, layer, site, in, &out);
  if (!plan.follow_up) return;
  ops::for_chunks(pool_, d, product_row_chunk(T), [&](int t, int64_t r0, int64_t r1) {
    for (AdapterStrategy* s : active_) s->late_epilogue(t, layer, site, 0, out, r0, r1);  // x += B (s A u)
  });
}

// Region 4: RMSNorm -> gate|up (+ adapters) -> SiLU(gate) * up; SwiGLU moves
// to a follow-up region when an adapter defers the outputs (LoRA). The norm
// as in region 1.
void Forward::ffn_entry(int64_t layer, int64_t T) {
  const LayerView& w = w_.layers[layer];
  const Site& site = kFfnEntry;
  const int64_t f = cfg_.intermediate_size;
  const SiteOutput outs[2] = {{gate_p_, f}, {up_p_, f}};
  auto swiglu = [&](int64_t r0, int64_t r1) {
    for (int64_t i = 0; i < T; ++i)
      ops::swiglu_forward(h_p_ + i * f + r0, gate_p_ + i * f + r0, up_p_ + i * f + r0, r1 - r0);
  };
  const SitePlan plan = plan_site(site);
  ops::ProductRegion g;
  g.T = T, g.n_operands = 2, g.chunk = product_row_chunk(T);
  g.operands[0] = {&w.gate, gate_p_, f, false};
  g.operands[1] = {&w.up, up_p_, f, false};
  if (!plan.defers) g.chunk_done = [&](int, int64_t r0, int64_t r1) { swiglu(r0, r1); };
  entry_region(g, layer, site, plan, w.ffn_norm, act_ ? act_->xn2 : nullptr, act_ ? act_->rstd2 : nullptr, outs);
  if (!plan.defers) return;
  ops::for_chunks(pool_, f, product_row_chunk(T), [&](int t, int64_t r0, int64_t r1) {
    // (partially fused LoRA: the B products and adds,) then SwiGLU
    for (AdapterStrategy* s : active_)
      for (int j = 0; plan.follow_up && j < 2; ++j) s->late_epilogue(t, layer, site, j, outs[j], r0, r1);
    swiglu(r0, r1);
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

// A chunk may name any AdapterExec: one made for another model would read
// out of bounds, so its matrices are checked against this model's (ADAPTERS.md
// shapes: A (r, in) where forward, B (out, r) where backward, C (r, r) where a
// FLoRA carry), L x 21 comparisons per chunk.
void Forward::check_adapter_shapes(const AdapterExec& a, int slot) const {
  if (static_cast<int64_t>(a.layers.size()) != cfg_.num_hidden_layers || a.rank <= 0)
    fail("forward: slot {}: the adapter has {} layers of rank {}, expected {} layers (the model's) of rank > 0", slot,
         a.layers.size(), a.rank, cfg_.num_hidden_layers);
  const int64_t r = a.rank;
  for (size_t l = 0; l < a.layers.size(); ++l) {
    const LayerView& w = w_.layers[l];
    for (int m = 0; m < kTargets; ++m) {
      auto check = [&](bool present, const MatrixRef& x, char which, int64_t rows, int64_t cols) {
        if (present && (!x.data || x.rows != rows || x.cols != cols))
          fail("forward: slot {}: adapter layer {} {} {}: expected ({}, {}) for this model (r = {}), found {}", slot, l,
               target_short_name(static_cast<Target>(m)), which, rows, cols, r,
               x.data ? fmt::format("({}, {})", x.rows, x.cols) : "no matrix");
      };
      const AdapterExec::Layer& al = a.layers[l];
      const MatrixRef& base = projection(w, static_cast<Target>(m));
      check(a.forward[m], al.A[m], 'A', r, base.cols);
      check(a.backward[m], al.B[m], 'B', base.rows, r);
      check(a.mode == AdapterMode::FLoRA && a.carry[m], al.C[m], 'C', r, r);
    }
  }
}

// Groups the rows of the call by adapter: consecutive chunks with the same
// adapter and scale form one run, and each distinct adapter gets a strategy
// of its mode (taken from the pool, so its buffers are reused) over its runs.
void Forward::plan_adapters(const std::vector<Chunk>& chunks) {
  std::vector<const AdapterExec*> execs;
  std::vector<std::vector<AdapterRows>> runs;
  int64_t row = 0;
  for (const Chunk& c : chunks) {
    const AdapterExec* a = c.adapter ? *c.adapter : adapter_;
    if (a) {
      const float scale = c.scale.value_or(a->scale);
      const size_t k = static_cast<size_t>(std::find(execs.begin(), execs.end(), a) - execs.begin());
      if (k == execs.size()) execs.push_back(a), runs.emplace_back();
      std::vector<AdapterRows>& r = runs[k];
      if (!r.empty() && r.back().row0 + r.back().n == row && r.back().scale == scale)
        r.back().n += c.n;
      else
        r.push_back({row, c.n, scale});
    }
    row += c.n;
  }
  active_.clear();
  std::array<size_t, 3> used{};
  for (size_t k = 0; k < execs.size(); ++k) {
    const size_t mode = static_cast<size_t>(execs[k]->mode);
    auto& pool = strategy_pool_.at(mode);
    if (used[mode] == pool.size()) pool.push_back(make_adapter_strategy(execs[k]->mode));
    AdapterStrategy* s = pool[used[mode]++].get();
    s->begin(*execs[k], std::move(runs[k]), pool_.size());
    active_.push_back(s);
  }
}

// Segments chunk by chunk (chunk i at positions p0s[i]..), each row's segment
// and position, the attention items, and the RoPE angles of every row.
void Forward::lay_out(const std::vector<Chunk>& chunks, const std::vector<int64_t>& p0s) {
  const int64_t half = cfg_.head_dim / 2;
  int64_t T = 0;
  for (const Chunk& c : chunks) T += c.n;
  segments_.clear();
  row_segment_.resize(T);
  row_pos_.resize(T);
  int64_t row = 0;
  for (size_t k = 0; k < chunks.size(); ++k) {
    const Chunk& c = chunks[k];
    const int32_t seg = static_cast<int32_t>(segments_.size());
    segments_.push_back({c.slot, row, c.n, p0s[k]});
    for (int64_t i = 0; i < c.n; ++i) row_segment_[row + i] = seg, row_pos_[row + i] = p0s[k] + i;
    row += c.n;
  }
  rope_cos_.resize(T * half);
  rope_sin_.resize(T * half);
  for (int64_t i = 0; i < T; ++i)
    rope_angles(inv_freq_, row_pos_[i], rope_cos_.data() + i * half, rope_sin_.data() + i * half);
}

// The layer function: decode, prefill, batched rows of many sequences and the training forward.
void Forward::layers(int64_t T) {
  const int64_t d = cfg_.hidden_size;
  for (int64_t l = 0; l < cfg_.num_hidden_layers; ++l) {
    const LayerView& w = w_.layers[l];
    bind_layer(l);
    if (act_) std::copy(x_.begin(), x_.begin() + T * d, act_->x);
    attention_entry(l, T);
    attention(l);
    exit_product(l, kAttentionExit, w.o, att_p_, cfg_.q_dim(), T);
    if (act_) std::copy(x_.begin(), x_.begin() + T * d, act_->x_mid);
    ffn_entry(l, T);
    exit_product(l, kFfnExit, w.down, h_p_, cfg_.intermediate_size, T);
  }
}

const float* Forward::run(const std::vector<Chunk>& chunks, bool all_logits) {
  // Check everything before any state changes, so that a refused call leaves the caches as they were.
  const int64_t V = cfg_.vocab_size;
  if (caches_.empty()) fail("forward: this Forward is for forward_train only (it has no KV cache)");
  int64_t T = 0;
  std::fill(slot_used_.begin(), slot_used_.end(), 0);
  std::vector<int64_t> p0s;
  p0s.reserve(chunks.size());
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
    const AdapterExec* a = c.adapter ? *c.adapter : adapter_;
    if (a) check_adapter_shapes(*a, c.slot);
    if (c.scale && !std::isfinite(*c.scale)) fail("forward: slot {}: adapter scale {} is not finite", c.slot, *c.scale);
    T += c.n;
    p0s.push_back(p0);
  }
  const uint64_t sync0 = pool_.sync_points();
  const int64_t d = cfg_.hidden_size;

  lay_out(chunks, p0s);
  // The rows whose logits are returned: each segment's last, or all.
  out_rows_.clear();
  for (const Segment& s : segments_)
    for (int64_t i = all_logits ? 0 : s.n - 1; i < s.n; ++i) out_rows_.push_back(s.row0 + i);
  const int64_t n_out = static_cast<int64_t>(out_rows_.size());
  ensure_buffers(T, n_out);
  int64_t row = 0;
  for (const Chunk& c : chunks)
    for (int64_t i = 0; i < c.n; ++i) embedding_row(w_.embed, c.tokens[i], x_.data() + row++ * d);
  plan_adapters(chunks);
  layers(T);

  // Final norm (each thread its own copy) and LM head, for the rows asked for.
  ops::ProductRegion head;
  head.T = n_out, head.chunk = 512, head.ldx = d;
  head.operands[0] = {&w_.lm_head, logits_.data(), V, false};
  head.input = [&](int t) -> const float* {
    float* xn = xn_.data() + static_cast<size_t>(t) * T * d;
    for (int64_t i = 0; i < n_out; ++i)
      ops::rmsnorm(xn + i * d, x_.data() + out_rows_[i] * d, w_.final_norm, d, float(cfg_.rms_norm_eps));
    return xn;
  };
  ops::product_region(pool_, head);
  for (const Segment& s : segments_) caches_[s.slot].set_size(s.p0 + s.n);
  last_sync_points_ = pool_.sync_points() - sync0;
  return logits_.data();
}

const float* Forward::forward_train(const int32_t* tokens, int64_t B, int64_t T, const AdapterExec* adapter,
                                    const AdapterDropout& dropout, const std::vector<LayerActivations>& acts) {
  FLORA_ASSERT(B > 0 && T > 0 && static_cast<int64_t>(acts.size()) == cfg_.num_hidden_layers);
  if (T > cfg_.max_position_embeddings)
    fail("sequence length {} exceeds the model's max_position_embeddings {}", T, cfg_.max_position_embeddings);
  if (adapter) check_adapter_shapes(*adapter, 0);
  const int64_t N = B * T, d = cfg_.hidden_size;
  std::vector<Chunk> chunks;
  for (int64_t b = 0; b < B; ++b) chunks.emplace_back(0, tokens + b * T, T, adapter);
  acts_ = &acts;
  dropout_ = dropout;
  train_T_ = T;
  const size_t scores = static_cast<size_t>(pool_.size()) * ops::kAttentionBlock * T;
  if (block_scores_.size() < scores) block_scores_.resize(scores);
  ensure_buffers(N, 0);
  lay_out(chunks, std::vector<int64_t>(B, 0));
  for (int64_t t = 0; t < N; ++t) embedding_row(w_.embed, tokens[t], x_.data() + t * d);
  plan_adapters(chunks);
  layers(N);
  acts_ = nullptr, act_ = nullptr;
  dropout_ = AdapterDropout{};
  for (AdapterStrategy* s : active_) s->save_to(nullptr);
  return x_.data();
}

}  // namespace flora
