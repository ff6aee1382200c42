#include "model/adapter_strategy.h"

#include <algorithm>

#include "ops/backward.h"
#include "ops/ops.h"
#include "ops/rows.h"
#include "util/error.h"
#include "util/random.h"

namespace flora {

void AdapterStrategy::begin(const AdapterExec& exec, std::vector<AdapterRows> runs, int threads) {
  exec_ = &exec;
  runs_ = std::move(runs);
  packed_row_.resize(runs_.size());
  packed_rows_ = 0;
  for (size_t i = 0; i < runs_.size(); ++i) packed_row_[i] = packed_rows_, packed_rows_ += runs_[i].n;
  prepare(threads);
}

bool AdapterDropout::keep(int64_t layer, Target m, int64_t row, int64_t col) const {
  uint64_t st = seed ^ (static_cast<uint64_t>(layer) * 0x9e3779b97f4a7c15ull) ^
                (static_cast<uint64_t>(index(m) + 1) << 56) ^ (static_cast<uint64_t>(row) << 24) ^
                static_cast<uint64_t>(col);
  return uniform01(st) >= p;
}

void AdapterDropout::apply(ThreadPool& pool, float* out, const float* u, int64_t ld_u, int64_t n, int64_t n_in,
                           int64_t layer, Target m) const {
  const float inv = 1.0f / (1.0f - p);
  ops::for_chunks(pool, n, 8, [&](int, int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t c = 0; c < n_in; ++c) out[t * n_in + c] = keep(layer, m, t, c) ? u[t * ld_u + c] * inv : 0.0f;
  });
}

void AdapterDropout::add_masked(ThreadPool& pool, float* du, const float* g, int64_t n, int64_t n_in, int64_t layer,
                                Target m) const {
  const float inv = p > 0 ? 1.0f / (1.0f - p) : 1.0f;
  ops::for_chunks(pool, n, 8, [&](int, int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t c = 0; c < n_in; ++c)
        if (p <= 0 || keep(layer, m, t, c)) du[t * n_in + c] += g[t * n_in + c] * inv;
  });
}

namespace {

bool any_forward(const AdapterExec& e, const Site& site) {
  for (int j = 0; j < site.n_targets; ++j)
    if (e.forward[index(site.targets[j])]) return true;
  return false;
}

// Repeat-and-add of n rows over output rows [row0, row1): y[t, i] += s z[t, i mod r].
// y: (n, *) row stride ldy; z: (n, r).
void repeat_add(float* y, int64_t ldy, int64_t n, const float* z, int64_t r, float s, int64_t row0, int64_t row1) {
  for (int64_t t = 0; t < n; ++t) ops::tile_add_range(y + t * ldy, z + t * r, row0, row1, r, s);
}

// FLoRA, fused (ADAPTERS.md): per sub-block, z = sum over the entry targets of
// A_m u (+ the carry of the previous sub-block), p = phi(z); the exit product
// reads [c; s p] through [W, B]; repeat-and-add adds s z_m tiled to y_m; the
// exit's carry z' = A_exit c + C p joins the next sub-block's sum. Every thread
// computes the z_m of all its rows itself (r rows, a few percent of its share
// of the base rows) so that repeat-and-add can run in each output chunk's
// epilogue; thread 0 alone forms p and the carry, which are read only after the
// next synchronisation point. No region of its own.
class FloraStrategy final : public AdapterStrategy {
 public:
  void prepare(int threads) override {
    zs_ = static_cast<size_t>(packed_rows() * rank());
    fit(z_entry_, static_cast<size_t>(threads) * 3 * zs_);
    fit(z_exit_, static_cast<size_t>(threads) * zs_);
    fit(phi_, zs_);
    fit(phi_s_, zs_);
    fit(carry_, zs_);
    std::fill(carry_.begin(), carry_.begin() + static_cast<int64_t>(zs_), 0.0f);  // the first layer has none
  }

  void before_chunks(int t, int64_t layer, const Site& site, const SiteInput& in) override {
    const AdapterExec& e = exec();
    const AdapterExec::Layer& a = e.layers[layer];
    const int64_t r = rank();
    if (site.exit) {
      // A u of the exit: every thread needs it for repeat-and-add (ffa), else thread 0 for the carry.
      const int m = index(site.targets[0]);
      if (e.forward[m] && (e.repeat_add[m] || t == 0)) products(z_exit(t), in.a_u[0], in.a_ld, a.A[m]);
      return;
    }
    for (int j = 0; j < site.n_targets; ++j)
      if (e.forward[index(site.targets[j])]) products(z_entry(t, j), in.a_u[j], in.a_ld, a.A[index(site.targets[j])]);
    if (t != 0) return;
    // z = the carry + the sum of the z_m in target order, then p = phi(z), s p.
    for (size_t i = 0; i < runs_.size(); ++i) {
      const float s = runs_[i].scale;
      const size_t b = static_cast<size_t>(packed_row(i) * r), n = static_cast<size_t>(runs_[i].n * r);
      for (size_t k = b; k < b + n; ++k) {
        float z = carry_[k];
        for (int j = 0; j < site.n_targets; ++j)
          if (e.forward[index(site.targets[j])]) z += z_entry(0, j)[k];
        phi_[k] = apply_nonlinearity(e.nonlinearity, z);
        phi_s_[k] = s * phi_[k];
        if (saved_) {  // the backward's z and p, at the run's rows of the call
          const size_t at = static_cast<size_t>(runs_[i].row0 * r) + (k - b);
          saved_->zsum[site.sub_block][at] = z;
          saved_->p[site.sub_block][at] = phi_[k];
        }
      }
    }
  }

  void epilogue(int t, int64_t layer, const Site& site, int j, SiteOutput out, int64_t r0, int64_t r1) override {
    const AdapterExec& e = exec();
    const int m = index(site.targets[j]);
    const int64_t r = rank();
    const bool tile = e.forward[m] && e.repeat_add[m];
    const float* z = site.exit ? z_exit(t) : z_entry(t, j);
    for (size_t i = 0; i < runs_.size(); ++i) {
      const AdapterRows& run = runs_[i];
      float* y = out.y + run.row0 * out.ldy;
      const int64_t p = packed_row(i) * r;
      // The widened exit input [c; s p]: y += B (s p) for the same rows.
      if (site.exit && e.backward[m])
        ops::matmul_rows(y, out.ldy, phi_s_.data() + p, r, run.n, e.layers[layer].B[m], r0, r1, true);
      if (tile) repeat_add(y, out.ldy, run.n, z + p, r, run.scale, r0, r1);
    }
  }

  void after_chunks(int t, int64_t layer, const Site& site) override {
    if (!site.exit || t != 0) return;
    const AdapterExec& e = exec();
    const int m = index(site.targets[0]);
    const int64_t r = rank();
    if (!e.carry[m]) {
      std::fill(carry_.begin(), carry_.begin() + static_cast<int64_t>(zs_), 0.0f);
      return;
    }
    // z' = A u + C p joins the next sub-block's sum.
    for (size_t i = 0; i < runs_.size(); ++i) {
      const int64_t p = packed_row(i) * r;
      ops::matmul_rows(carry_.data() + p, r, phi_.data() + p, r, runs_[i].n, e.layers[layer].C[m], 0, r, false);
    }
    const float* ze = z_exit(0);
    for (size_t k = 0; k < zs_; ++k) carry_[k] += ze[k];
  }

 private:
  // z (rows, r) = A u over the strategy's runs, packed.
  void products(float* z, const float* u, int64_t ld_u, const MatrixRef& A) const {
    const int64_t r = rank();
    for (size_t i = 0; i < runs_.size(); ++i)
      ops::matmul_rows(z + packed_row(i) * r, r, u + runs_[i].row0 * ld_u, ld_u, runs_[i].n, A, 0, r, false);
  }
  float* z_entry(int t, int j) { return z_entry_.data() + (static_cast<size_t>(t) * 3 + j) * zs_; }
  float* z_exit(int t) { return z_exit_.data() + static_cast<size_t>(t) * zs_; }

  size_t zs_ = 0;                // packed rows * r
  std::vector<float> z_entry_;   // (threads, 3, rows, r) each thread's z_m of the entry targets
  std::vector<float> z_exit_;    // (threads, rows, r) each thread's A u of the exit
  std::vector<float> phi_;       // (rows, r) p = phi(z) of the sub-block (thread 0)
  std::vector<float> phi_s_;     // (rows, r) s p
  std::vector<float> carry_;     // (rows, r) z carried to the next sub-block (thread 0)
};

// What both LoRA executions share: z_m = s A_m u per adapted target, (rows, r)
// packed, and its B product y_m += B_m z_m over output rows [r0, r1).
class LoraStrategy : public AdapterStrategy {
 public:
  void prepare(int) override {
    zs_ = static_cast<size_t>(packed_rows() * rank());
    fit(z_, kTargets * zs_);
  }
  bool defers(const Site& site) const override { return any_forward(exec(), site); }

 protected:
  // Columns [a0, a1) of z_m = s A_m u for every run, u the input of m's A
  // (the saved activations get A_m u before the scale).
  void a_products(int m, int64_t layer, const float* u, int64_t ld_u, int64_t a0, int64_t a1) {
    const int64_t r = rank();
    float* z = z_m(m);
    for (size_t i = 0; i < runs_.size(); ++i) {
      const AdapterRows& run = runs_[i];
      float* zr = z + packed_row(i) * r;
      ops::matmul_rows(zr, r, u + run.row0 * ld_u, ld_u, run.n, exec().layers[layer].A[m], a0, a1, false);
      float* keep = saved_ ? saved_->z[m] + run.row0 * r : nullptr;
      for (int64_t t = 0; t < run.n; ++t)
        for (int64_t k = a0; k < a1; ++k) {
          if (keep) keep[t * r + k] = zr[t * r + k];
          zr[t * r + k] *= run.scale;
        }
    }
  }
  void b_products(int m, int64_t layer, SiteOutput out, int64_t r0, int64_t r1) {
    const int64_t r = rank();
    for (size_t i = 0; i < runs_.size(); ++i)
      ops::matmul_rows(out.y + runs_[i].row0 * out.ldy, out.ldy, z_m(m) + packed_row(i) * r, r, runs_[i].n,
                       exec().layers[layer].B[m], r0, r1, true);
  }
  float* z_m(int m) { return z_.data() + static_cast<size_t>(m) * zs_; }

  size_t zs_ = 0;         // packed rows * r
  std::vector<float> z_;  // (kTargets, rows, r) s A_m u
};

// LoRA as PEFT and llama.cpp run it: for each adapted projection, after the
// base product, one region for z = s A u and one for y += B z.
class LoraUnfusedStrategy final : public LoraStrategy {
 public:
  void extra_regions(ThreadPool& pool, int64_t layer, const Site& site, const SiteInput& in,
                     const SiteOutput* outs) override {
    for (int j = 0; j < site.n_targets; ++j) {
      const int m = index(site.targets[j]);
      if (!exec().forward[m]) continue;
      ops::for_chunks(pool, rank(), 4,
                      [&](int, int64_t r0, int64_t r1) { a_products(m, layer, in.a_u[j], in.a_ld, r0, r1); });
      ops::for_chunks(pool, exec().layers[layer].B[m].rows, product_row_chunk(packed_rows()),
                      [&](int, int64_t r0, int64_t r1) { b_products(m, layer, outs[j], r0, r1); });
    }
  }
};

// LoRA partially fused: the A products are work items of the base product's
// region (one per adapted target), the B products and adds run in the site's
// follow-up region, beside RoPE or SwiGLU.
class LoraPartiallyFusedStrategy final : public LoraStrategy {
 public:
  int64_t region_items(const Site& site) const override { return any_forward(exec(), site) ? site.n_targets : 0; }
  void region_item(int, int64_t layer, const Site& site, int64_t item, const SiteInput& in) override {
    const int m = index(site.targets[item]);
    if (exec().forward[m]) a_products(m, layer, in.a_u[item], in.a_ld, 0, rank());
  }
  bool needs_follow_up(const Site& site) const override { return any_forward(exec(), site); }
  void late_epilogue(int, int64_t layer, const Site& site, int j, SiteOutput out, int64_t r0, int64_t r1) override {
    const int m = index(site.targets[j]);
    if (exec().forward[m]) b_products(m, layer, out, r0, r1);
  }
};

}  // namespace

std::unique_ptr<AdapterStrategy> make_adapter_strategy(AdapterMode mode) {
  switch (mode) {
    case AdapterMode::FLoRA: return std::make_unique<FloraStrategy>();
    case AdapterMode::LoRAUnfused: return std::make_unique<LoraUnfusedStrategy>();
    case AdapterMode::LoRAPartiallyFused: return std::make_unique<LoraPartiallyFusedStrategy>();
  }
  fail("adapter mode {} has no execution strategy", static_cast<int>(mode));
}

}  // namespace flora
