#!/usr/bin/env python3
"""An independent twin of flora's Q8_0 and Q4_0 codecs (src/ops/quant.h), in numpy.

Written from the format description alone (ggml's block layouts and the
reference rule of each format), not from flora's C++ or ggml's C, so that the
committed fixture it writes checks flora's quantizer against a second reading
of the format. Every step is an IEEE float32 operation, as in the C of either
side: numpy float32 arrays round each product, quotient and sum to float32, and
float16 narrowing is round-to-nearest-even.

  Q8_0: blocks of 32 values in 34 bytes: the scale d = amax / 127 as f16
        (little-endian), then 32 int8 levels round(x / d) -- x times the f32
        inverse 1 / d, rounded half away from zero.
  Q4_0: blocks of 32 values in 18 bytes: the value of largest magnitude m (the
        first of equals) gives d = m / -8 as f16, then 16 bytes, value j in the
        low nibble of byte j and value 16 + j in its high nibble, each
        min(15, trunc(x / d + 8.5)) with x / d taken as x times the f32 inverse.
  Both: the inverse is 0 when d is 0; values dequantize as level * d in f32
        (Q4_0: (nibble - 8) * d), d widened from its f16.

Usage: quant_twin.py OUT_DIR   (the repository's fixture is tests/fixtures/quant)
Writes inputs.f32 (rows x n float32), <TYPE>.blocks (the twin's blocks, row
after row), <TYPE>.dequant.f32 (the twin's values of those blocks) and meta.json.
"""
import json
import os
import sys

import numpy as np

F32 = np.float32
QK = 32


def round_half_away(v):
    """roundf of float32 values, exactly: |v| + 0.5 is exact in float64."""
    a = np.floor(np.abs(v.astype(np.float64)) + 0.5)
    return np.where(v < 0, -a, a)


def quantize_q8_0(x):
    out = bytearray()
    for blk in x.reshape(-1, QK):
        amax = np.max(np.abs(blk)) if blk.size else F32(0)
        d = F32(amax) / F32(127)
        inv = F32(1) / d if d != 0 else F32(0)
        levels = round_half_away(blk * inv).astype(np.int64)
        out += np.array([d], dtype=np.float16).astype("<f2").tobytes()
        out += levels.astype(np.int8).tobytes()
    return bytes(out)


def quantize_q4_0(x):
    out = bytearray()
    for blk in x.reshape(-1, QK):
        m = blk[int(np.argmax(np.abs(blk)))]  # argmax: the first of equals
        d = F32(m) / F32(-8)
        inv = F32(1) / d if d != 0 else F32(0)
        shifted = (blk * inv) + F32(8.5)  # two float32 roundings, as in C
        levels = np.minimum(15, np.trunc(shifted.astype(np.float64)).astype(np.int64))
        packed = (levels[: QK // 2] | (levels[QK // 2 :] << 4)).astype(np.uint8)
        out += np.array([d], dtype=np.float16).astype("<f2").tobytes()
        out += packed.tobytes()
    return bytes(out)


def dequantize(type_name, data, n):
    size = {"Q8_0": 34, "Q4_0": 18}[type_name]
    values = []
    for b in range(n // QK):
        blk = data[b * size : (b + 1) * size]
        d = F32(np.frombuffer(blk[:2], dtype="<f2")[0])
        if type_name == "Q8_0":
            levels = np.frombuffer(blk[2:], dtype=np.int8).astype(F32)
        else:
            q = np.frombuffer(blk[2:], dtype=np.uint8).astype(np.int64)
            levels = np.concatenate([(q & 0xF) - 8, (q >> 4) - 8]).astype(F32)
        values.append(levels * d)
    return np.concatenate(values).astype("<f4")


def rows(n, rng):
    """The fixture's rows: each kind the quantizers treat specially."""
    out = []
    out.append(rng.standard_normal(n))
    out.append(rng.standard_normal(n) * 0.02)
    outliers = rng.standard_normal(n)
    outliers[::37] *= 100
    out.append(outliers)
    out.append(np.zeros(n))
    out.append(np.full(n, 0.37))
    out.append(rng.standard_normal(n) * 1e-20)
    ties8 = rng.integers(-127, 128, n) + 0.5
    ties8[::QK] = 127
    out.append(ties8)
    ties4 = rng.integers(-8, 8, n) + 0.5
    ties4[::QK] = -8
    out.append(ties4)
    return np.stack(out).astype(F32)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    n = 256
    x = rows(n, np.random.default_rng(20260413))
    with open(os.path.join(out_dir, "inputs.f32"), "wb") as f:
        f.write(x.astype("<f4").tobytes())
    types = {"Q8_0": quantize_q8_0, "Q4_0": quantize_q4_0}
    for name, quantize in types.items():
        blocks = b"".join(quantize(row) for row in x)
        size = {"Q8_0": 34, "Q4_0": 18}[name] * (n // QK)
        values = np.concatenate([dequantize(name, blocks[r * size : (r + 1) * size], n) for r in range(len(x))])
        with open(os.path.join(out_dir, name + ".blocks"), "wb") as f:
            f.write(blocks)
        with open(os.path.join(out_dir, name + ".dequant.f32"), "wb") as f:
            f.write(values.tobytes())
    meta = {"generator": "tools/quant_twin.py", "rows": int(x.shape[0]), "n": n, "types": list(types)}
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
