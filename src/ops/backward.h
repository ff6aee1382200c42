// The ops of the Llama layer with their backward, as llm.c writes them: for
// every op that training differentiates, the forward (shared with inference:
// attention_block is the forward pass's attention) and the backward. Each works on one thread over one slice (a row, a
// head of one sequence); model/train_pass.cpp decides what runs in parallel. Products go through the kernels of ops.h,
// so the backward of y = x W^T is two more products: dx = dy W by ops::matmul_cols on W as stored (no copy of W^T), and
// dW += dy^T x by ops::matmul_cols on dy^T (formed with transpose() below) and x as it is (ops::weight_grad).
//
// Conventions: arguments are outputs, inputs, sizes. Gradients of inputs and
// parameters accumulate (+=) unless a comment says they are overwritten, so
// accumulation over micro-batches and over the heads of a KV group is free.
// Every function is checked against central finite differences by the op
// harness of tests/test_ops.cpp (tests/op_harness.h).
#pragma once
#include <cstdint>

#include "ops/activations.h"

namespace flora::ops {

// The backward of ops::rmsnorm (ops.h), from the rstd it returned.
// dx += d out/dx . dout;  dw += dout * x * rstd (dw may be null: a frozen norm).
void rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w, float rstd, int64_t n);

// RoPE, rotate-half pairs (j, j + head_dim/2) by the angle whose cos and sin
// are given, in place on one head vector v (head_dim); cos, sin: (head_dim / 2).
void rope_forward(float* v, const float* cos, const float* sin, int64_t head_dim);
// The transpose of the rotation (rotation by minus the angle), in place on the gradient.
void rope_backward(float* dv, const float* cos, const float* sin, int64_t head_dim);

// h = silu(g) * u, elementwise. h, g, u: (n)
void swiglu_forward(float* h, const float* g, const float* u, int64_t n);
// dg = dh * u * silu'(g), du = dh * silu(g): both overwritten (g and u feed nothing else).
void swiglu_backward(float* dg, float* du, const float* dh, const float* g, const float* u, int64_t n);

// Causal softmax attention of a block of tq queries of one head, the first at
// position p0 (it sees keys 0..p0), query i at p0 + i (keys 0..p0 + i):
//   S = softmax(q K^T / sqrt(hd)) by row (the sum in double), out = S V.
// The one attention of the model: decode (tq = 1 over the KV cache), prefill
// and the training forward (blocks of queries).
// q (tq, hd) row stride ld_q; k, v (p0 + tq, hd) row stride ld_kv; out (tq, hd)
// row stride ld_out, overwritten; S (tq, p0 + tq) row stride ld_s: the
// probabilities on return (attention_probabilities).
void attention_block(float* out, int64_t ld_out, float* S, int64_t ld_s, const float* q, int64_t ld_q, int64_t tq,
                     const float* k, const float* v, int64_t ld_kv, int64_t p0, int64_t hd);
// attention_block's S alone, exact zeros after each row's visible keys. Each
// value depends on its row's query and keys only, never on tq, p0's block or
// ld_s (each score is one dot of hd on the matrix kernel, each row's softmax its
// own), so the training backward recomputes a whole sequence's P (p0 = 0,
// tq = T) bit for bit equal to what the forward's blocks computed.
void attention_probabilities(float* S, int64_t ld_s, const float* q, int64_t ld_q, int64_t tq, const float* k,
                             int64_t ld_kv, int64_t p0, int64_t hd);
// The backward over one sequence of T positions with P (T, T) its
// attention_probabilities(p0 = 0, tq = T) (zeros above the diagonal).
// dq, dk, dv += the gradients, from dout (T, hd) row stride ld_dout and the
// given P. dq has row stride ld_q, dk and dv ld_kv (the layouts of q, k, v);
// several query heads of one KV group call this in turn on the same dk, dv.
// scratch: attention_scratch_floats(T, hd) floats, contents ignored.
void attention_backward(float* dq, float* dk, float* dv, const float* dout, int64_t ld_dout, const float* P,
                        const float* q, int64_t ld_q, const float* k, const float* v, int64_t ld_kv, int64_t T,
                        int64_t hd, float* scratch);
int64_t attention_scratch_floats(int64_t T, int64_t hd);

// Cross-entropy of one row of logits (V) against `target`, fused with its
// backward: returns loss = logsumexp(logits) - logits[target] (as double) and
// overwrites logits with d loss/d logits * grad_scale = (softmax - onehot) * grad_scale.
// A target outside [0, V) is an error (flora::fail), for both functions.
double cross_entropy_forward_backward(float* logits, int64_t V, int32_t target, float grad_scale);
// The same loss without the gradient; logits are left unchanged.
double cross_entropy_forward(const float* logits, int64_t V, int32_t target);

// Repeat-and-add: y[i] += s * z[i mod r] for i < n.  y: (n), z: (r)
void tile_add(float* y, const float* z, int64_t n, int64_t r, float s);
// The same over elements [i0, i1) of y only (an output chunk of a product).
void tile_add_range(float* y, const float* z, int64_t i0, int64_t i1, int64_t r, float s);
// Its transpose: dz[j] += s * sum over i < n with i mod r == j of dy[i].  dz: (r), dy: (n)
void fold_add(float* dz, const float* dy, int64_t n, int64_t r, float s);

// out (cols, rows) = in (rows, cols) transposed; in has row stride ld_in, out is dense.
void transpose(float* out, const float* in, int64_t rows, int64_t cols, int64_t ld_in);
// out (cols, rows) += in (rows, cols) transposed, one addition per element;
// in has row stride ld_in, out ld_out.
void transpose_add(float* out, int64_t ld_out, const float* in, int64_t rows, int64_t cols, int64_t ld_in);

}  // namespace flora::ops
