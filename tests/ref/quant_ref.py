#!/usr/bin/python3
"""An independent numpy reference of GGML's block quantization formats.

  quant_ref.py emit DIR    writes DIR/input.f32 (rows x cols float32, row-major), DIR/meta.json,
                           and for each type DIR/<TYPE>.bin (the quantized rows) and
                           DIR/<TYPE>.deq.f32 (those rows dequantized)
  quant_ref.py dequantize STORE VARIANT OUTDIR
                           writes variant VARIANT of the strata store STORE as a Hugging Face
                           directory of float32 weights: quant tensors dequantized here, the
                           others widened (config.json and tokenizer files copied), read from the
                           store's files as formats/STORE_FORMAT.md describes them

Written from the format descriptions (ggml-common.h's block layouts and the reference
quantizers' arithmetic, described in docs/quantization.md), not from strata's code. Every
quantizer works on all blocks of all rows at once: each step is one float32 operation applied
elementwise across blocks, and sums over a block's elements are taken one element at a time in
index order, so the rounding is that of the scalar C reference. numpy's float16 conversion
rounds to nearest even, as ggml's FP32_TO_FP16 does.
"""

import json
import os
import sys

import numpy as np

f32 = np.float32
EPS = f32(1e-15)


def nearest(v):
    """ggml's nearest_int: adding 1.5 * 2^23 rounds to the nearest integer (ties to even)."""
    t = (np.asarray(v, dtype=f32) + f32(12582912.0)).astype(f32)
    return (t.view(np.int32) & 0x007FFFFF) - 0x00400000


def half(v):
    return np.asarray(v, dtype=f32).astype(np.float16)


def unhalf(h):
    return h.astype(f32)


def round_away(v):
    """C roundf: halves away from zero."""
    t = np.trunc(v).astype(f32)
    frac = (v - t).astype(f32)
    return (t + np.where(np.abs(frac) >= f32(0.5), np.sign(v), f32(0))).astype(f32)


def absmax_signed(x):
    """amax and the signed value that has it, scanning in order (first of equal magnitudes)."""
    amax = np.zeros(x.shape[0], f32)
    mx = np.zeros(x.shape[0], f32)
    for i in range(x.shape[1]):
        ax = np.abs(x[:, i])
        upd = amax < ax
        amax = np.where(upd, ax, amax)
        mx = np.where(upd, x[:, i], mx)
    return amax, mx


# ---- the 32-element types ------------------------------------------------------------------

def q4_0(b):  # b: (nb, 32)
    _, mx = absmax_signed(b)
    d = (mx / f32(-8)).astype(f32)
    idv = np.where(d != 0, f32(1) / np.where(d != 0, d, f32(1)), f32(0)).astype(f32)
    q = np.minimum(15, ((b * idv[:, None]).astype(f32) + f32(8.5)).astype(f32).astype(np.int32))
    qs = (q[:, :16] | (q[:, 16:] << 4)).astype(np.uint8)
    return np.concatenate([half(d).view(np.uint8).reshape(-1, 2), qs], axis=1)


def q5_0(b):
    _, mx = absmax_signed(b)
    d = (mx / f32(-16)).astype(f32)
    idv = np.where(d != 0, f32(1) / np.where(d != 0, d, f32(1)), f32(0)).astype(f32)
    q = np.minimum(31, ((b * idv[:, None]).astype(f32) + f32(16.5)).astype(f32).astype(np.int32))
    return pack_q5(d, None, q)


def q5_1(b):
    mn = b[:, 0].copy()
    mx = b[:, 0].copy()
    for i in range(1, 32):
        mn = np.minimum(mn, b[:, i])
        mx = np.maximum(mx, b[:, i])
    d = ((mx - mn).astype(f32) / f32(31)).astype(f32)
    idv = np.where(d != 0, f32(1) / np.where(d != 0, d, f32(1)), f32(0)).astype(f32)
    q = ((((b - mn[:, None]).astype(f32) * idv[:, None]).astype(f32) + f32(0.5)).astype(f32)).astype(np.int32)
    return pack_q5(d, mn, q)


def pack_q5(d, m, q):
    qs = ((q[:, :16] & 0xF) | ((q[:, 16:] & 0xF) << 4)).astype(np.uint8)
    bits = ((q >> 4) & 1).astype(np.uint64)
    qh = np.zeros(q.shape[0], np.uint64)
    for j in range(32):
        qh |= bits[:, j] << np.uint64(j)
    parts = [half(d).view(np.uint8).reshape(-1, 2)]
    if m is not None:
        parts.append(half(m).view(np.uint8).reshape(-1, 2))
    parts += [qh.astype("<u4").view(np.uint8).reshape(-1, 4), qs]
    return np.concatenate(parts, axis=1)


def q8_0(b):
    amax = np.zeros(b.shape[0], f32)
    for i in range(32):
        amax = np.maximum(amax, np.abs(b[:, i]))
    d = (amax / f32(127)).astype(f32)
    idv = np.where(d != 0, f32(1) / np.where(d != 0, d, f32(1)), f32(0)).astype(f32)
    q = round_away((b * idv[:, None]).astype(f32)).astype(np.int32).astype(np.int8)
    return np.concatenate([half(d).view(np.uint8).reshape(-1, 2), q.view(np.uint8)], axis=1)


# ---- the 256-element K types ---------------------------------------------------------------

def make_qkx2(x, w, nmax, rmin, rdelta, nstep):
    """Scale, min and levels of each 32-element group (rows of x), searching nstep+1 scales."""
    n = x.shape[1]
    mn = x[:, 0].copy()
    mx = x[:, 0].copy()
    sum_w = w[:, 0].copy()
    sum_x = (sum_w * x[:, 0]).astype(f32)
    for i in range(1, n):
        mn = np.where(x[:, i] < mn, x[:, i], mn)
        mx = np.where(x[:, i] > mx, x[:, i], mx)
        sum_w = (sum_w + w[:, i]).astype(f32)
        sum_x = (sum_x + (w[:, i] * x[:, i]).astype(f32)).astype(f32)
    mn = np.where(mn > 0, f32(0), mn).astype(f32)
    flat = mx == mn
    rng = np.where(flat, f32(1), (mx - mn).astype(f32)).astype(f32)
    xm = (x - mn[:, None]).astype(f32)
    iscale = (f32(nmax) / rng).astype(f32)
    scale = (f32(1) / iscale).astype(f32)
    L = np.clip(nearest(iscale[:, None] * xm), 0, nmax)
    best = np.zeros(x.shape[0], f32)
    for i in range(n):
        diff = ((scale * L[:, i].astype(f32)).astype(f32) + mn - x[:, i]).astype(f32)
        best = (best + (w[:, i] * (diff * diff).astype(f32)).astype(f32)).astype(f32)
    for s in range(nstep + 1):
        # The search goes on from the best min found so far, as the C loop does.
        rng = np.where(flat, f32(1), (mx - mn).astype(f32)).astype(f32)
        xm = (x - mn[:, None]).astype(f32)
        iscale = ((f32(rmin) + (f32(rdelta) * f32(s)).astype(f32)).astype(f32) + f32(nmax)).astype(f32) / rng
        iscale = iscale.astype(f32)
        La = np.clip(nearest(iscale[:, None] * xm), 0, nmax)
        sum_l = np.zeros(x.shape[0], f32)
        sum_l2 = np.zeros(x.shape[0], f32)
        sum_xl = np.zeros(x.shape[0], f32)
        for i in range(n):
            lf = La[:, i].astype(f32)
            wl = (w[:, i] * lf).astype(f32)
            sum_l = (sum_l + wl).astype(f32)
            sum_l2 = (sum_l2 + (wl * lf).astype(f32)).astype(f32)
            sum_xl = (sum_xl + (wl * x[:, i]).astype(f32)).astype(f32)
        D = ((sum_w * sum_l2).astype(f32) - (sum_l * sum_l).astype(f32)).astype(f32)
        ok = D > 0
        Ds = np.where(ok, D, f32(1))
        this_scale = (((sum_w * sum_xl).astype(f32) - (sum_x * sum_l).astype(f32)).astype(f32) / Ds).astype(f32)
        this_min = (((sum_l2 * sum_x).astype(f32) - (sum_l * sum_xl).astype(f32)).astype(f32) / Ds).astype(f32)
        pos = this_min > 0
        this_min = np.where(pos, f32(0), this_min).astype(f32)
        this_scale = np.where(pos, (sum_xl / np.where(sum_l2 != 0, sum_l2, f32(1))).astype(f32), this_scale)
        err = np.zeros(x.shape[0], f32)
        for i in range(n):
            diff = ((this_scale * La[:, i].astype(f32)).astype(f32) + this_min - x[:, i]).astype(f32)
            err = (err + (w[:, i] * (diff * diff).astype(f32)).astype(f32)).astype(f32)
        better = ok & (err < best) & ~flat
        L = np.where(better[:, None], La, L)
        best = np.where(better, err, best)
        scale = np.where(better, this_scale, scale)
        mn = np.where(better, this_min, mn)
    L = np.where(flat[:, None], 0, L)
    scale = np.where(flat, f32(0), scale)
    return scale.astype(f32), (-mn).astype(f32), L


def pack_scales(ls, lm):  # (nb, 8) each
    s = np.zeros((ls.shape[0], 12), np.int32)
    for j in range(8):
        if j < 4:
            s[:, j] = ls[:, j]
            s[:, j + 4] = lm[:, j]
        else:
            s[:, j + 4] = (ls[:, j] & 0xF) | ((lm[:, j] & 0xF) << 4)
            s[:, j - 4] |= (ls[:, j] >> 4) << 6
            s[:, j] |= (lm[:, j] >> 4) << 6
    return s.astype(np.uint8)


def k_levels(b, nmax, rmin, rdelta, nstep):
    """Q4_K/Q5_K: (d, dmin, packed scales, levels (nb, 256))."""
    nb = b.shape[0]
    g = b.reshape(nb * 8, 32)
    sum_x2 = np.zeros(nb * 8, f32)
    for i in range(32):
        sum_x2 = (sum_x2 + (g[:, i] * g[:, i]).astype(f32)).astype(f32)
    av_x = np.sqrt((sum_x2 / f32(32)).astype(f32)).astype(f32)
    w = (av_x[:, None] + np.abs(g)).astype(f32)
    scales, mins, L = make_qkx2(g, w, nmax, rmin, rdelta, nstep)
    scales = scales.reshape(nb, 8)
    mins = mins.reshape(nb, 8)
    L = L.reshape(nb, 256)
    max_scale = np.zeros(nb, f32)
    max_min = np.zeros(nb, f32)
    for j in range(8):
        max_scale = np.where(scales[:, j] > max_scale, scales[:, j], max_scale)
        max_min = np.where(mins[:, j] > max_min, mins[:, j], max_min)
    inv_scale = np.where(max_scale > 0, f32(63) / np.where(max_scale > 0, max_scale, f32(1)), f32(0)).astype(f32)
    inv_min = np.where(max_min > 0, f32(63) / np.where(max_min > 0, max_min, f32(1)), f32(0)).astype(f32)
    ls = np.minimum(63, nearest(inv_scale[:, None] * scales) & 0xFF)
    lm = np.minimum(63, nearest(inv_min[:, None] * mins) & 0xFF)
    d = half((max_scale / f32(63)).astype(f32))
    dmin = half((max_min / f32(63)).astype(f32))
    for j in range(8):
        dj = (unhalf(d) * ls[:, j].astype(f32)).astype(f32)
        dm = (unhalf(dmin) * lm[:, j].astype(f32)).astype(f32)
        xj = b[:, 32 * j:32 * j + 32]
        lj = np.clip(nearest(((xj + dm[:, None]).astype(f32) / np.where(dj != 0, dj, f32(1))[:, None]).astype(f32)),
                     0, nmax)
        L[:, 32 * j:32 * j + 32] = np.where((dj != 0)[:, None], lj, L[:, 32 * j:32 * j + 32])
    head = np.concatenate([d.view(np.uint8).reshape(-1, 2), dmin.view(np.uint8).reshape(-1, 2), pack_scales(ls, lm)],
                          axis=1)
    return head, L


def q4_k(b):
    head, L = k_levels(b, 15, -1.0, 0.1, 20)
    qs = np.concatenate([(L[:, j:j + 32] | (L[:, j + 32:j + 64] << 4)) for j in range(0, 256, 64)], axis=1)
    return np.concatenate([head, qs.astype(np.uint8)], axis=1)


def q5_k(b):
    head, L = k_levels(b, 31, -0.5, 0.1, 15)
    qh = np.zeros((b.shape[0], 32), np.int32)
    ql = []
    for c, n in enumerate(range(0, 256, 64)):
        lo, hi = L[:, n:n + 32], L[:, n + 32:n + 64]
        qh |= ((lo > 15).astype(np.int32) << (2 * c)) | ((hi > 15).astype(np.int32) << (2 * c + 1))
        ql.append((lo & 0xF) | ((hi & 0xF) << 4))
    return np.concatenate([head, qh.astype(np.uint8), np.concatenate(ql, axis=1).astype(np.uint8)], axis=1)


def make_qx(x, nmax):
    """Symmetric scale of each 16-element group, weights x^2, 19 candidate scales."""
    n = x.shape[1]
    amax, mx = np.zeros(x.shape[0], f32), np.zeros(x.shape[0], f32)
    for i in range(n):
        ax = np.abs(x[:, i])
        upd = ax > amax
        amax = np.where(upd, ax, amax)
        mx = np.where(upd, x[:, i], mx)
    zero = amax < EPS
    safe = np.where(zero, f32(1), mx)

    def sums(iscale):
        l = np.clip(nearest(iscale[:, None] * x), -nmax, nmax - 1)
        slx = np.zeros(x.shape[0], f32)
        sl2 = np.zeros(x.shape[0], f32)
        for i in range(n):
            lf = l[:, i].astype(f32)
            w = (x[:, i] * x[:, i]).astype(f32)
            slx = (slx + ((w * x[:, i]).astype(f32) * lf).astype(f32)).astype(f32)
            sl2 = (sl2 + ((w * lf).astype(f32) * lf).astype(f32)).astype(f32)
        return l, slx, sl2

    iscale = (f32(-nmax) / safe).astype(f32)
    l, sumlx, suml2 = sums(iscale)
    L = l + nmax
    scale = np.where(suml2 != 0, (sumlx / np.where(suml2 != 0, suml2, f32(1))).astype(f32), f32(0)).astype(f32)
    best = (scale * sumlx).astype(f32)
    for s in range(-9, 10):
        if s == 0:
            continue
        iscale = (-(f32(nmax) + (f32(0.1) * f32(s)).astype(f32)).astype(f32) / safe).astype(f32)
        l, sumlx, suml2 = sums(iscale)
        upd = (suml2 > 0) & ((sumlx * sumlx).astype(f32) > (best * suml2).astype(f32))
        L = np.where(upd[:, None], l + nmax, L)
        scale = np.where(upd, (sumlx / np.where(suml2 != 0, suml2, f32(1))).astype(f32), scale).astype(f32)
        best = np.where(upd, (scale * sumlx).astype(f32), best).astype(f32)
    L = np.where(zero[:, None], 0, L)
    scale = np.where(zero, f32(0), scale)
    return scale.astype(f32), L


def q6_k(b):
    nb = b.shape[0]
    scales, L = make_qx(b.reshape(nb * 16, 16), 32)
    scales = scales.reshape(nb, 16)
    L = L.reshape(nb, 256)
    max_scale, max_abs = np.zeros(nb, f32), np.zeros(nb, f32)
    for ib in range(16):
        a = np.abs(scales[:, ib])
        upd = a > max_abs
        max_abs = np.where(upd, a, max_abs)
        max_scale = np.where(upd, scales[:, ib], max_scale)
    zero = max_abs < EPS
    iscale = (f32(-128) / np.where(zero, f32(1), max_scale)).astype(f32)
    d = half((f32(1) / iscale).astype(f32))
    sc = np.minimum(127, nearest(iscale[:, None] * scales)).astype(np.int8)
    for j in range(16):
        dj = (unhalf(d) * sc[:, j].astype(f32)).astype(f32)
        xj = b[:, 16 * j:16 * j + 16]
        lj = np.clip(nearest((xj / np.where(dj != 0, dj, f32(1))[:, None]).astype(f32)), -32, 31) + 32
        L[:, 16 * j:16 * j + 16] = np.where((dj != 0)[:, None], lj, L[:, 16 * j:16 * j + 16])
    ql, qh = [], []
    for j in range(0, 256, 128):
        a, bb, c, e = (L[:, j + k:j + k + 32] for k in (0, 32, 64, 96))
        ql += [(a & 0xF) | ((c & 0xF) << 4), (bb & 0xF) | ((e & 0xF) << 4)]
        qh.append((a >> 4) | ((bb >> 4) << 2) | ((c >> 4) << 4) | ((e >> 4) << 6))
    out = np.concatenate([np.concatenate(ql, axis=1).astype(np.uint8), np.concatenate(qh, axis=1).astype(np.uint8),
                          sc.view(np.uint8), d.view(np.uint8).reshape(-1, 2)], axis=1)
    out[zero] = 0
    return out


# ---- dequantization --------------------------------------------------------------------------

def h(q, at):
    return unhalf(q[:, at:at + 2].copy().view(np.float16).reshape(-1))


def deq_q4_0(q):
    d = h(q, 0)
    qs = q[:, 2:18].astype(np.int32)
    v = np.concatenate([(qs & 0xF) - 8, (qs >> 4) - 8], axis=1)
    return (v.astype(f32) * d[:, None]).astype(f32)


def deq_q5(q, with_min):
    d = h(q, 0)
    at = 4 if with_min else 2
    qh = q[:, at:at + 4].copy().view("<u4").reshape(-1).astype(np.int64)
    qs = q[:, at + 4:at + 20].astype(np.int64)
    hb = np.stack([(qh >> j) & 1 for j in range(32)], axis=1)
    v = np.concatenate([qs & 0xF, qs >> 4], axis=1) | (hb << 4)
    if with_min:
        return ((v.astype(f32) * d[:, None]).astype(f32) + h(q, 2)[:, None]).astype(f32)
    return ((v - 16).astype(f32) * d[:, None]).astype(f32)


def deq_q8_0(q):
    return (q[:, 2:].view(np.int8).astype(f32) * h(q, 0)[:, None]).astype(f32)


def unpack_scales(s):
    s = s.astype(np.int32)
    sc, m = np.zeros((s.shape[0], 8), np.int32), np.zeros((s.shape[0], 8), np.int32)
    for j in range(8):
        if j < 4:
            sc[:, j], m[:, j] = s[:, j] & 63, s[:, j + 4] & 63
        else:
            sc[:, j] = (s[:, j + 4] & 0xF) | ((s[:, j - 4] >> 6) << 4)
            m[:, j] = (s[:, j + 4] >> 4) | ((s[:, j] >> 6) << 4)
    return sc, m


def deq_k(q, five):
    d, dmin = h(q, 0), h(q, 2)
    sc, m = unpack_scales(q[:, 4:16])
    qs = q[:, 48:176].astype(np.int32) if five else q[:, 16:144].astype(np.int32)
    qh = q[:, 16:48].astype(np.int32) if five else None
    out = []
    for c in range(4):
        raw = qs[:, 32 * c:32 * c + 32]
        lo, hi = raw & 0xF, raw >> 4
        if five:
            lo = lo + ((qh >> (2 * c)) & 1) * 16
            hi = hi + ((qh >> (2 * c + 1)) & 1) * 16
        for k, lv in ((2 * c, lo), (2 * c + 1, hi)):
            dk = (d * sc[:, k].astype(f32)).astype(f32)
            mk = (dmin * m[:, k].astype(f32)).astype(f32)
            out.append(((dk[:, None] * lv.astype(f32)).astype(f32) - mk[:, None]).astype(f32))
    return np.concatenate(out, axis=1)


def deq_q6_k(q):
    d = h(q, 208)
    sc = q[:, 192:208].view(np.int8).astype(f32)
    out = np.zeros((q.shape[0], 256), f32)
    for c in range(2):
        ql = q[:, 64 * c:64 * c + 64].astype(np.int32)
        qh = q[:, 128 + 32 * c:128 + 32 * c + 32].astype(np.int32)
        vals = [(ql[:, :32] & 0xF) | ((qh & 3) << 4), (ql[:, 32:] & 0xF) | (((qh >> 2) & 3) << 4),
                (ql[:, :32] >> 4) | (((qh >> 4) & 3) << 4), (ql[:, 32:] >> 4) | (((qh >> 6) & 3) << 4)]
        for k, v in enumerate(vals):
            for half_ in range(2):
                g = 8 * c + 2 * k + half_
                cols = slice(128 * c + 32 * k + 16 * half_, 128 * c + 32 * k + 16 * half_ + 16)
                ds = (d * sc[:, g]).astype(f32)
                out[:, cols] = (ds[:, None] * (v[:, 16 * half_:16 * half_ + 16] - 32).astype(f32)).astype(f32)
    return out


TYPES = {  # name: (block elements, block bytes, quantize, dequantize)
    "Q4_0": (32, 18, q4_0, deq_q4_0), "Q5_0": (32, 22, q5_0, lambda q: deq_q5(q, False)),
    "Q5_1": (32, 24, q5_1, lambda q: deq_q5(q, True)), "Q8_0": (32, 34, q8_0, deq_q8_0),
    "Q4_K": (256, 144, q4_k, lambda q: deq_k(q, False)), "Q5_K": (256, 176, q5_k, lambda q: deq_k(q, True)),
    "Q6_K": (256, 210, q6_k, deq_q6_k),
}


def quantize(name, x):
    """x: (rows, cols) float32 -> (rows, row bytes) uint8."""
    be, bb, qf, _ = TYPES[name]
    rows, cols = x.shape
    return qf(x.reshape(-1, be).astype(f32)).reshape(rows, cols // be * bb)


def dequantize(name, q, cols):
    be, bb, _, df = TYPES[name]
    return df(q.reshape(-1, bb)).reshape(q.shape[0], cols)


def inputs(cols=512):
    """Rows that reach every branch: weight-like and heavy-tailed rows, signs, outliers,
    all-zero and constant blocks, tiny values (subnormal fp16 scales), bf16-rounded rows."""
    rng = np.random.default_rng(20261201)
    rows = []
    for s in (0.02, 0.5, 3.0):
        rows += list(rng.normal(0, s, (6, cols)))
    rows += list(rng.standard_t(2.5, (6, cols)) * 0.05)
    rows += list(rng.uniform(-1, 1, (4, cols)))
    rows += list(rng.uniform(0, 1, (2, cols)))   # no negative values: the min clamp
    rows += list(-rng.uniform(0, 1, (2, cols)))  # no positive values
    spike = rng.normal(0, 0.01, (4, cols))
    spike[np.arange(4), rng.integers(0, cols, 4)] = 5.0
    rows += list(spike)
    rows.append(np.zeros(cols))
    rows.append(np.full(cols, 0.25))
    part = rng.normal(0, 1, cols)
    part[:256] = 0
    part[300:340] = 0
    rows.append(part)
    rows += list(rng.normal(0, 1e-6, (2, cols)))
    rows += list(rng.normal(0, 1e-9, (1, cols)))
    few = np.zeros(cols)
    few[::37] = rng.normal(0, 1, len(few[::37]))
    rows.append(few)
    x = np.array(rows, dtype=f32)
    bf = rng.normal(0, 0.02, (8, cols)).astype(f32)
    bf = ((bf.view(np.uint32) + 0x7FFF + ((bf.view(np.uint32) >> 16) & 1)) & 0xFFFF0000).view(f32)
    return np.concatenate([x, bf], axis=0)


def store_tensor(root, h):
    """A tensor node of the store as float32 (blob, zeros and quant nodes)."""
    n = json.load(open(os.path.join(root, "nodes", h[:2], h)))
    shape = n["shape"]
    if n["op"] == "zeros":
        return np.zeros(shape, f32)
    raw = np.fromfile(os.path.join(root, "blobs", n["blob"][:2], n["blob"]), dtype=np.uint8)
    if n["op"] == "quant":
        return dequantize(n["quant"], raw.reshape(shape[0], -1), shape[1])
    if n["op"] != "blob":
        raise SystemExit("quant_ref.py: op %s is not read here" % n["op"])
    if n["dtype"] == "BF16":
        return (raw.view("<u2").astype(np.uint32) << 16).view(f32).reshape(shape)
    return raw.view({"F16": "<f2", "F32": "<f4"}[n["dtype"]]).astype(f32).reshape(shape)


def dequantize_variant(root, name, out):
    with open(os.path.join(root, "refs", name)) as f:
        vh = f.read().strip()
    v = json.load(open(os.path.join(root, "nodes", vh[:2], vh)))
    tensors = {}
    for t in v["pre"] + v["post"]:
        tensors[t["name"]] = store_tensor(root, t["tensor"])
    for i, l in enumerate(v["layers"]):
        ln = json.load(open(os.path.join(root, "nodes", l["layer"][:2], l["layer"])))
        for role, h in ln["tensors"].items():
            tensors["model.layers.%d.%s" % (i, role)] = store_tensor(root, h)
    os.makedirs(out, exist_ok=True)
    header, off = {}, 0
    for k in sorted(tensors):
        nb = tensors[k].size * 4
        header[k] = {"dtype": "F32", "shape": list(tensors[k].shape), "data_offsets": [off, off + nb]}
        off += nb
    hb = json.dumps(header).encode()
    hb += b" " * (-len(hb) % 8)
    with open(os.path.join(out, "model.safetensors"), "wb") as f:
        f.write(len(hb).to_bytes(8, "little") + hb)
        for k in sorted(tensors):
            f.write(np.ascontiguousarray(tensors[k], dtype="<f4").tobytes())
    cfg = json.load(open(os.path.join(root, "blobs", v["config"][:2], v["config"])))
    cfg["torch_dtype"] = "float32"
    json.dump(cfg, open(os.path.join(out, "config.json"), "w"))
    for fname, bh in v.get("files", {}).items():
        with open(os.path.join(root, "blobs", bh[:2], bh), "rb") as src, open(os.path.join(out, fname), "wb") as dst:
            dst.write(src.read())


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "dequantize":
        dequantize_variant(*sys.argv[2:5])
        return 0
    if len(sys.argv) != 3 or sys.argv[1] != "emit":
        print(__doc__, file=sys.stderr)
        return 2
    out = sys.argv[2]
    os.makedirs(out, exist_ok=True)
    x = inputs()
    x.tofile(os.path.join(out, "input.f32"))
    meta = {"rows": x.shape[0], "cols": x.shape[1], "types": {}}
    with np.errstate(all="ignore"):
        for name in TYPES:
            q = quantize(name, x)
            q.tofile(os.path.join(out, name + ".bin"))
            dequantize(name, q, x.shape[1]).astype(f32).tofile(os.path.join(out, name + ".deq.f32"))
            meta["types"][name] = {"row_bytes": int(q.shape[1])}
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
