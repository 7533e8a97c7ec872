#!/usr/bin/python3
"""Independent reference of mergekit's merge methods (numpy + PyYAML only, no torch).

Works out, from a mergekit plan and a Hugging Face cache directory, the checkpoint
mergekit would write for linear, task_arithmetic, ties, dare_ties, dare_linear,
breadcrumbs, breadcrumbs_ties, della, della_linear, slerp, nuslerp, multislerp, karcher,
nearswap, ram, model_stock, sce and arcee_fusion merges, and compares a directory exported by
strata against it.  It is a separate reading of mergekit (merge_methods/{linear,slerp,
generalized_task_arithmetic,registry,nuslerp,multislerp,karcher,nearswap,ram,model_stock,sce,
arcee_fusion,easy_define}.py, sparsify.py,
plan.py, config.py, io/tasks.py) and of strata's contract docs/merge_methods.md;
it shares no code with strata or mergekit.  The safetensors, HF-cache, parameter
and shard-layout building blocks come from mergekit_ref.py (same folder).
passthrough plans are handed to mergekit_ref.py.

  merge_ref.py expect  PLAN.yml --hf-cache DIR --out-dir OUT [--random-seed N] [--shard-size B]
  merge_ref.py compare PLAN.yml --hf-cache DIR --export DIR  [--random-seed N] [--shard-size B]
                                                              [--ulps K]
  merge_ref.py order   PLAN.yml --hf-cache DIR [--shard-size B]
  merge_ref.py selftest

PyTorch's arithmetic is emulated op by op: every op is computed in float32 and
rounded to the compute dtype D (round to nearest even), Python numbers meeting a
tensor are rounded to float32 first, a sum over the models accumulates in float32
from +0.0 in input order and rounds once.  The random draws of DARE/DELLA are
strata's deterministic ones (docs/merge_methods.md); slerp's norms and dot product
are computed in float64 as strata does (mergekit's are float32 numpy); so are the
full reductions of model_stock, sce, nuslerp, multislerp, karcher and arcee_fusion (norms,
dot products, means, softmax sums: float64, rounded to float32, then to the dtype), where
torch's own summation order is not reproduced, and acos/sin/cos/exp/log are taken in float64
and rounded to float32 once.  arcee_fusion's quantiles come from every element (mergekit
samples 1e6 of a larger tensor).
"""

import argparse
import json
import os
import signal
import struct
import sys
from collections import namedtuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mergekit_ref as mr  # noqa: E402

import numpy as np  # noqa: E402
import yaml  # noqa: E402

RefError = mr.RefError
F32 = np.float32

GTA_METHODS = {
    # name: (consensus, sparsification, default normalize, default rescale)
    "task_arithmetic": (False, None, False, False),
    "ties": (True, "magnitude", True, False),
    "dare_ties": (True, "random", False, True),
    "dare_linear": (False, "random", False, True),
    "breadcrumbs": (False, "magnitude_outliers", False, False),
    "breadcrumbs_ties": (True, "magnitude_outliers", False, False),
    "della": (True, "della_magprune", True, True),
    "della_linear": (False, "della_magprune", False, True),
}
# mergekit's easy_define methods and model_stock: (global parameters and
# defaults, least number of models, most number of models); every one needs a
# base_model and refuses models of different dtypes without a plan dtype.
BASE_METHODS = {
    "nearswap": ({"t": None}, 2, 2),
    "ram": ({"epsilon": 1e-5}, 1, None),
    "model_stock": ({"filter_wise": False}, 3, None),
    "sce": ({"int8_mask": False, "select_topk": 1.0}, 1, None),
}
# The spherical methods: (global parameters and defaults, whether a base_model
# is used, exactly how many models besides the base or None: any).
SPHERE_METHODS = {
    "nuslerp": ({"nuslerp_row_wise": False, "nuslerp_flatten": True}, True, 2),
    "multislerp": ({"normalize_weights": True, "eps": 1e-8}, True, None),
    "karcher": ({"max_iter": 10, "tol": 1e-5}, False, None),
}
METHODS = (["linear", "slerp"] + list(GTA_METHODS) + list(BASE_METHODS) + list(SPHERE_METHODS)
           + ["arcee_fusion"])


# ----------------------------------------------------------------------------
# rounding: arrays are float32 holding values representable in the dtype


def rd(x, dtype):
    """Round float32 values to `dtype` (BF16/F16/F32), returned as float32."""
    x = np.asarray(x, dtype=F32)
    if dtype == "F32":
        return x
    if dtype == "F16":
        with np.errstate(over="ignore", invalid="ignore"):
            return x.astype(np.float16).astype(F32)
    if dtype == "BF16":
        u = np.ascontiguousarray(x).view(np.uint32)
        with np.errstate(over="ignore"):
            r = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) \
                & np.uint32(0xFFFF0000)
        r = np.where(np.isnan(x), np.uint32(0x7FC00000), r).astype(np.uint32)
        return r.view(F32).reshape(x.shape)
    raise RefError(f"unsupported compute dtype {dtype}")


def f32(v):
    """A Python number meeting a tensor: rounded to float32 first."""
    return F32(v)


def msum(arrays):
    """sum(dim=0) over the models: float32 accumulation from +0.0, in input order."""
    acc = None
    for a in arrays:
        acc = (F32(0.0) + a) if acc is None else acc + a
    if acc is None:
        raise RefError("internal: empty sum")
    return np.asarray(acc, dtype=F32)


# ----------------------------------------------------------------------------
# deterministic draws (strata's deviation: mergekit uses torch's global RNG)

_M64 = (1 << 64) - 1


def fnv1a64(data):
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & _M64
    return h


def draws(seed, salt, k, n):
    """u(i), i = 0..n-1, for the input with index k of a merge of tensor `salt`."""
    key = np.uint64(fnv1a64(f"{seed}:{salt}:{k}".encode("utf-8")))
    with np.errstate(over="ignore"):
        z = key + np.arange(1, n + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float64) / float(1 << 24)


# ----------------------------------------------------------------------------
# sparsification (mergekit/sparsify.py semantics, strata's stable sorts)


def _l1_rescale(x, masked, wdt):
    """rescaled_masked_tensor(norm=l1) in work dtype wdt (sums in float64, as strata)."""
    before = rd(F32(np.sum(np.abs(x), dtype=np.float64)), wdt)
    after = rd(F32(np.sum(np.abs(masked), dtype=np.float64)), wdt)
    eps = rd(f32(1e-7), wdt)
    if before < eps or after < eps:
        return masked
    ratio = rd(before / after, wdt)
    return rd(masked * ratio, wdt)


def _finish(x, mask, rescale, wdt):
    masked = rd(x * mask, wdt)          # x * 0 keeps the sign of x
    if rescale:
        masked = _l1_rescale(x, masked, wdt)
    return masked


def sparsify(kind, delta, D, p, rescale, draw):
    """delta: float32 array of D values; p: the input's evaluated parameters."""
    density = p["density"]
    if density >= 1:
        return delta
    n = delta.size
    flat = delta.reshape(-1)
    if kind == "magnitude":
        k = int(density * n)
        if k <= 0:
            raise RefError(f"ties: density {density} keeps no element of a "
                           f"{n}-element tensor (mergekit asserts k > 0)")
        order = np.argsort(-np.abs(flat), kind="stable")   # stable descending
        mask = np.zeros(n, F32)
        mask[order[:k]] = 1
        return _finish(flat, mask, rescale, D).reshape(delta.shape)
    if kind == "magnitude_outliers":
        gamma = p["gamma"]
        target = int(density * n)
        n_top = int(gamma * n)
        n_bot = n - target - n_top
        if n_bot < 0:
            n_top += n_bot
            n_bot = 0
        order = np.argsort(np.abs(flat), kind="stable")
        mask = np.zeros(n, F32)
        mask[order[n_bot:-n_top]] = 1      # python slicing: nothing when n_top == 0
        return _finish(flat, mask, rescale, D).reshape(delta.shape)
    wdt = "BF16" if D == "BF16" else "F32"   # no float16 bernoulli on the CPU
    if kind == "random":
        prob = rd(f32(density), wdt)
        mask = (draw(n) < prob).astype(F32)
        return rd(_finish(flat, mask, rescale, wdt), D).reshape(delta.shape)
    if kind == "della_magprune":
        eps_ = p["epsilon"]
        if density + eps_ >= 1 or density - eps_ <= 0:
            raise RefError(f"della: density {density} +/- epsilon {eps_} must lie in (0, 1)")
        rows = flat.reshape(1, -1) if delta.ndim < 2 else delta.reshape(delta.shape[0], -1)
        if delta.ndim > 2:
            raise RefError("della: tensors of more than 2 dimensions are not covered")
        order = np.argsort(np.abs(rows), axis=1, kind="stable")
        rank0 = np.empty_like(order)
        np.put_along_axis(rank0, order,
                          np.broadcast_to(np.arange(rows.shape[1]), rows.shape), axis=1)
        r = rd(rd(rank0.astype(F32), wdt) + F32(1), wdt)
        mn = r.min(axis=1, keepdims=True)
        mx = r.max(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            rn = rd(rd(r - mn, wdt) / rd(mx - mn, wdt), wdt)
        rn = np.clip(rn, F32(0), F32(1))              # NaN stays NaN
        prob = rd(f32(density - eps_) + rd(rd(rn * F32(2), wdt) * f32(eps_), wdt), wdt)
        mask = (draw(n) < prob.reshape(-1)).astype(F32)
        return rd(_finish(flat, mask, rescale, wdt), D).reshape(delta.shape)
    raise RefError(f"internal: sparsification {kind}")


# ----------------------------------------------------------------------------
# merge methods on float32 arrays of D values


def merge_linear(xs, params, gparams, D):
    ws = [rd(f32(p["weight"]), D) for p in params]
    res = rd(msum([rd(w * x, D) for w, x in zip(ws, xs)]), D)
    if gparams["normalize"]:
        with np.errstate(divide="ignore", invalid="ignore"):
            res = rd(res / rd(msum(ws), D), D)
    return res


def merge_gta(method, xs, base_idx, params, gparams, D, draw_for):
    consensus, kind, _, _ = GTA_METHODS[method]
    base = xs[base_idx]
    tv = [(k, rd(x - base, D), params[k]) for k, x in enumerate(xs) if k != base_idx]
    if not tv:
        return base
    rescale = bool(gparams["rescale"])
    deltas, ws = [], []
    for k, delta, p in tv:
        if kind is not None:
            delta = sparsify(kind, delta, D, p, rescale, draw_for(k))
        deltas.append(delta)
        ws.append(rd(f32(p["weight"]), D))
    wd = [rd(d * w, D) for d, w in zip(deltas, ws)]
    if consensus:
        s = rd(msum(wd), D)
        majority = np.where(s >= 0, F32(1), F32(-1))
        masks = [(np.sign(x) == majority).astype(F32) for x in wd]
        mixed = rd(msum([x * m for x, m in zip(wd, masks)]), D)
        div = rd(msum([w * m for w, m in zip(ws, masks)]), D)
        div = np.where(div == 0, F32(1), div)
    else:
        mixed = rd(msum(wd), D)
        div = rd(msum(ws), D)
        if abs(div) < rd(f32(1e-8), D):
            div = F32(1)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if gparams["normalize"]:
            mixed = rd(mixed / div, D)
        if gparams["lambda"] != 1:
            mixed = rd(mixed * f32(gparams["lambda"]), D)
        return rd(base + mixed, D)


SLERP_SCALARS = "f64"     # --slerp-scalars: how theta, s0, s1 are computed


def merge_slerp(v0, v1, t, Dout):
    """v0 = base, v1 = the other model, both float32; result rounded to Dout.

    mergekit (numpy) holds the norms, the normalized tensors and the dot product as
    float32; their sums are taken here in float64 and rounded to float32 (numpy's
    pairwise/BLAS order is not reproduced).  theta, s0 and s1 are float64 (strata's
    contract) or, with --slerp-scalars f32, float32 numpy scalars as mergekit
    computes them under NumPy 2."""
    def norm(v):
        return F32(np.sqrt(np.dot(v.astype(np.float64).ravel(), v.astype(np.float64).ravel())))

    n0, n1 = norm(v0), norm(v1)
    a = v0 / n0 if n0 > 1e-8 else v0
    b = v1 / n1 if n1 > 1e-8 else v1
    dot = F32(np.dot(a.astype(np.float64).ravel(), b.astype(np.float64).ravel()))
    with np.errstate(over="ignore", invalid="ignore"):
        if abs(dot) > 0.9995:
            res = f32(1 - t) * v0 + f32(t) * v1
        else:
            if SLERP_SCALARS == "f32":
                theta = np.arccos(dot)
                sin_t = np.sin(theta)
                s0 = np.sin(theta - theta * F32(t)) / sin_t
                s1 = np.sin(theta * F32(t)) / sin_t
            else:
                theta = np.arccos(np.float64(dot))
                sin_t = np.sin(theta)
                s0 = np.sin(theta - theta * t) / sin_t
                s1 = np.sin(theta * t) / sin_t
            res = f32(s0) * v0 + f32(s1) * v1
    return rd(res, Dout)


def _full_sum(x):
    """A full reduction of a tensor (torch's sum/norm/mean): taken here in float64
    and rounded to float32 (torch's own summation order is not reproduced)."""
    return F32(np.sum(np.asarray(x, dtype=np.float64)))


def merge_nearswap(a, b, t, D):
    """nearswap_merge(tensors=[b], base_tensor=a, t)."""
    absdiff = np.abs(rd(a - b, D))
    c = np.maximum(absdiff, rd(f32(1e-6), D))          # .clamp(min=1e-6), bound in D
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        w = rd(rd(F32(1) / c, D) * f32(t), D)          # t / x == x.reciprocal() * t
    w = np.clip(w, F32(0), F32(1))
    return rd(rd(w * b, D) + rd(rd(F32(1) - w, D) * a, D), D)


def merge_ram(base, xs, eps, D):
    """ram_merge(tensors=xs, base_tensor=base, epsilon)."""
    tv = [rd(x - base, D) for x in xs]
    nz = [np.abs(v) > rd(f32(eps), D) for v in tv]     # scalar compared in D
    counts = np.sum(np.stack(nz), axis=0)
    unique = (counts == 1).astype(F32)
    overlap = (counts > 1).astype(F32)
    div = np.maximum(counts, 1).astype(F32)
    tz = [v * m.astype(F32) for v, m in zip(tv, nz)]   # exact: signed zeros kept
    parts = [rd(z * unique + rd(z * overlap / div, D), D) for z in tz]
    return rd(base + rd(msum(parts), D), D)


def merge_model_stock(w0, ws, filter_wise, D):
    """ModelStockMergeTask.execute: ws in the plan's order, the base excluded."""
    shape = w0.shape
    if filter_wise:
        rows = w0.reshape(1, -1) if w0.ndim == 1 else w0.reshape(-1, shape[-1])
        wsr = [w.reshape(rows.shape) for w in ws]
    else:
        rows = w0.reshape(1, -1)
        wsr = [w.reshape(1, -1) for w in ws]
    offs = [rd(w - rows, D) for w in wsr]
    lo = rd(f32(1e-6), D)
    norms = [np.array([rd(np.sqrt(_full_sum(r * r.astype(np.float64))), D) for r in o]) for o in offs]
    cos = []
    for i in range(len(offs)):
        for j in range(i + 1, len(offs)):
            npd = np.maximum(rd(norms[i] * norms[j], D), lo)
            dot = np.array([rd(_full_sum(rd(a * b, D)), D) for a, b in zip(offs[i], offs[j])])
            with np.errstate(divide="ignore", invalid="ignore"):
                cos.append(np.clip(rd(dot / npd, D), F32(-1), F32(1)))
    c = rd(msum(cos) / F32(len(cos)), D)[:, None]
    n = len(ws)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = rd(rd(c * F32(n), D) / rd(rd(c * F32(n - 1), D) + F32(1), D), D)
    avg = None
    for w in wsr:                                      # Python's sum(): 0 + w0 + w1 ...
        avg = rd(F32(0) + w, D) if avg is None else rd(avg + w, D)
    avg = rd(avg / F32(n), D)
    out = rd(rd(t * avg, D) + rd(rd(F32(1) - t, D) * rows, D), D)
    return out.reshape(shape)


def merge_sce(base, xs, topk, D):
    """sce_merge(tensors=xs, base_tensor=base, select_topk); int8_mask changes nothing."""
    tv = np.stack([rd(x - base, D).reshape(-1) for x in xs])
    k_models = tv.shape[0]
    if topk < 1:
        mask = np.zeros(tv.shape[1], dtype=F32)
        if topk > 0:
            t64 = tv.astype(np.float64)
            var = rd(F32(np.mean((t64 - t64.mean(axis=0)) ** 2, axis=0)), D)
            k = int(F32(F32(np.count_nonzero(var)) * F32(topk)))
            if k > 0:
                # torch.topk(largest): equal values in index order (strata's rule)
                order = np.argsort(-np.abs(var), kind="stable")
                mask[order[:k]] = 1
        tv = tv * mask[None, :]
    s = rd(msum(list(tv)), D)
    majority = np.where(s >= 0, F32(1), F32(-1))
    erase = (np.sign(tv) == majority[None, :]).astype(F32)
    w = np.array([rd(_full_sum(rd(v * v, D)) / F32(v.size), D) for v in tv], dtype=F32)
    wsum = float(rd(msum(list(w)), D))
    if abs(wsum) < 1e-6:
        w = np.full(k_models, rd(F32(1) / F32(k_models), D), dtype=F32)
    else:
        w = rd(w / F32(wsum), D)
    ew = w[:, None] * erase
    merged = rd(msum([rd(v * e, D) for v, e in zip(tv, ew)]), D)
    den = np.maximum(rd(msum(list(ew)), D), rd(f32(1e-6), D))
    return rd(base.reshape(-1) + rd(merged / den, D), D).reshape(base.shape)


def _f64(fn):
    """torch's float32 acos/sin/cos/exp/log: here in float64, rounded once (strata's
    contract, docs/merge_methods.md; numpy's float32 versions are not correctly rounded)."""
    return lambda x: np.asarray(fn(np.asarray(x, dtype=np.float64)), dtype=F32)


ACOS, SIN, COS, EXP, LOG = (_f64(f) for f in (np.arccos, np.sin, np.cos, np.exp, np.log))


def _row_sums(x):
    """Sums along the last axis: float64, rounded to float32 once."""
    return np.sum(np.asarray(x, dtype=np.float64), axis=-1).astype(F32)


def merge_nuslerp(v0, v1, base, w0, w1, row_wise, flatten, D):
    """NuSlerpTask.execute and nuslerp(): v0, v1 the two models in plan order."""
    s = w0 + w1
    t = 0.5 if abs(s) < 1e-6 else w1 / s
    if base is not None:
        v0, v1 = rd(v0 - base, D), rd(v1 - base, D)
    shape = v0.shape
    swap = not flatten and row_wise and v0.ndim > 1      # transpose(0, -1)
    if flatten:
        a, b = v0.reshape(1, -1), v1.reshape(1, -1)
    else:
        a, b = (np.swapaxes(v0, 0, -1), np.swapaxes(v1, 0, -1)) if swap else (v0, v1)
    sh = a.shape
    a, b = a.reshape(-1, sh[-1]), b.reshape(-1, sh[-1])
    lo = rd(f32(1e-7), D)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        def unit(x):
            n = np.maximum(rd(np.sqrt(_row_sums(x.astype(np.float64) ** 2)), D), lo)
            return rd(x / n[:, None], D)
        cos = np.clip(rd(_row_sums(rd(unit(a) * unit(b), D)), D), F32(-1), F32(1))
        theta = rd(ACOS(cos), D)
        sin = rd(SIN(theta), D)
        s0 = rd(SIN(rd(f32(1 - t) * theta, D)), D)[:, None]
        s1 = rd(SIN(rd(f32(t) * theta, D)), D)[:, None]
        res = rd(rd(rd(s0 * a, D) + rd(s1 * b, D), D) / sin[:, None], D)
        lin = rd(rd(f32(1 - t) * a, D) + rd(f32(t) * b, D), D)
    res = np.where((np.abs(sin) < rd(f32(1e-8), D))[:, None], lin, res).reshape(sh)
    if swap:
        res = np.swapaxes(res, 0, -1)
    res = np.ascontiguousarray(res).reshape(shape)
    return res if base is None else rd(base + res, D)


def merge_multislerp(xs, base, weights, normalize, eps, D):
    """multislerp(tensors=xs, weight, base_tensor, normalize_weights, eps)."""
    if len(xs) == 1:
        return xs[0]
    X = [rd(x - base, D) if base is not None else x for x in xs]
    w = [rd(f32(v), D) for v in weights]               # torch.tensor(weight, dtype=D)
    if normalize:
        tot = rd(msum(w), D)
        w = [rd(v / tot, D) for v in w]
    e = rd(f32(eps), D)                                # a Python number added in D
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        def norm(x):
            return rd(np.sqrt(_full_sum(np.asarray(x, np.float64) ** 2)), D)
        norms = [norm(x) for x in X]
        units = [rd(x / rd(n + e, D), D) for x, n in zip(X, norms)]
        mean = rd(msum([rd(u * wk, D) for u, wk in zip(units, w)]), D)
        mn = norm(mean)
        if mn < e:
            if len(X) != 2:
                raise RefError("multislerp: the weighted mean of the directions is zero")
            res = rd(rd(X[0] * w[0], D) + rd(X[1] * w[1], D), D)
            return res if base is None else rd(res + base, D)
        mean = rd(mean / mn, D)
        dots = [rd(_full_sum(rd(u * mean, D)), D) for u in units]
        tr = rd(msum([rd(rd(u - rd(dk * mean, D), D) * wk, D)
                      for u, dk, wk in zip(units, dots, w)]), D)
        tn = rd(norm(tr) + e, D)
        res = rd(rd(mean * rd(COS(tn), D), D) + rd(tr * rd(rd(SIN(tn), D) / tn, D), D), D)
        res = rd(res * rd(msum([rd(n * wk, D) for n, wk in zip(norms, w)]), D), D)
    return res if base is None else rd(res + base, D)


def merge_karcher(xs, max_iter, tol, D):
    """KarcherTask.execute: karcher_merge_tensors(xs, equal alphas, max_iter, tol)."""
    k = len(xs)
    if k == 1:
        return xs[0]

    def norm(x):                                       # torch.linalg.norm(x.float())
        return np.sqrt(_full_sum(np.asarray(x, np.float64) ** 2))

    alphas = [1.0 / k] * k
    norms, units = [], []
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        for x in xs:
            n = norm(x)
            if float(n) == 0.0:
                norms.append(0.0)
                units.append(np.zeros_like(x))
            else:
                norms.append(float(n))
                units.append(rd(x / n, D))
        valid = [i for i, n in enumerate(norms) if n > tol]
        if not valid:
            return np.zeros_like(xs[0])
        va = [alphas[i] for i in valid]
        asum = sum(va)
        na = [a / asum for a in va]
        vu = [units[i] for i in valid]
        u = np.zeros_like(vu[0])
        for a, ui in zip(na, vu):
            u = rd(u + rd(f32(a) * ui, D), D)
        nu = float(norm(u))
        u = vu[0].copy() if nu < tol else rd(u / f32(nu), D)
        for _ in range(max(0, int(max_iter))):
            T = np.zeros_like(u)
            for a, ui in zip(na, vu):
                dot = np.clip(rd(_full_sum(u.astype(np.float64) * ui), D), F32(-1), F32(1))
                theta = rd(ACOS(dot), D)
                if float(theta) < tol:
                    continue
                coef = rd(f32(a) * rd(theta / rd(SIN(theta), D), D), D)
                T = rd(T + rd(coef * rd(ui - rd(dot * u, D), D), D), D)
            nt = norm(T)
            if float(nt) < tol:
                break
            # cos(norm_T) * u: the float32 scalar comes first, so torch rounds it to D
            c, s = rd(COS(nt), D), rd(SIN(nt), D)
            u = rd(rd(c * u, D) + rd(s * rd(T / nt, D), D), D)
            un = norm(u)
            if float(un) > tol:
                u = rd(u / un, D)
    s = 0.0
    for a, n in zip(alphas, norms):
        s += a * n
    return rd(u * f32(s), D)


def merge_arcee_fusion(base, p, D):
    """ArceeFusionMergeTask.execute; the quantiles over every element (strata's rule:
    mergekit samples 1e6 elements of a larger tensor).  The result is float32."""
    shape = base.shape
    P, B = p.reshape(-1, shape[-1]), base.reshape(-1, shape[-1])
    e = rd(f32(1e-8), D)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        def softmax(x):                                # float32: exp(x - max) * (1 / sum)
            ex = EXP(x - x.max(axis=1, keepdims=True))
            return rd(rd(ex * (F32(1) / _row_sums(ex)[:, None]), D) + e, D)
        sp, sq = softmax(P), softmax(B)
        kl = rd(_row_sums(rd(sp * rd(LOG(rd(sp / sq, D)), D), D)), D)
        imp = rd(np.abs(rd(P - B, D)) * kl[:, None], D).reshape(-1)
    srt = np.sort(imp)                                 # NaN last, as torch.sort
    n = srt.size

    def q(v):                                          # sorted[(q * (n - 1)).long()]
        return srt[min(n - 1, int(F32(v) * F32(n - 1)))]
    thr = rd(q(0.5) + rd(f32(1.5) * rd(q(0.75) - q(0.25), D), D), D)
    delta = rd(P - B, D).reshape(-1)
    return (base.reshape(-1) + delta * (imp >= thr).astype(F32)).reshape(shape)


# ----------------------------------------------------------------------------
# plans


def _floatify(v):
    """YAML booleans count as numbers (pydantic's float accepts them)."""
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, list):
        return [_floatify(e) for e in v]
    if isinstance(v, dict):
        return {k: (_floatify(x) if k == "value" else x) for k, x in v.items()}
    return v


def _check_params(p, where):
    if p is None:
        return None
    if not isinstance(p, dict):
        raise RefError(f"{where}: parameters must be a mapping")
    out = {}
    for k, v in p.items():
        v = _floatify(v)
        if isinstance(v, list) and not v:
            raise RefError(f"{where}.{k}: empty list")
        out[k] = mr._check_setting(v, f"{where}.{k}")
    return out


MSource = namedtuple("MSource", "model layer_range parameters")
MSlice = namedtuple("MSlice", "sources parameters base_model")

PLAN_KEYS = {"slices", "models", "merge_method", "dtype", "out_dtype", "base_model",
             "parameters", "tokenizer_source", "chat_template", "tokenizer", "modules"}


class MergePlan:
    def __init__(self, path, hf_cache):
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
        if not isinstance(raw, dict):
            raise RefError(f"{path}: not a mapping")
        unknown = set(raw) - PLAN_KEYS
        if unknown:
            raise RefError(f"{path}: unsupported keys {sorted(unknown)}")
        for k in ("tokenizer_source", "tokenizer", "modules"):
            if raw.get(k) is not None:
                raise RefError(f"{path}: '{k}' is not covered by this reference")
        self.method = raw.get("merge_method")
        if self.method not in METHODS:
            raise RefError(f"{path}: merge_method {self.method!r} not covered "
                           f"(covered: {', '.join(METHODS)}; passthrough: mergekit_ref.py)")
        self.path = path
        self.hf_cache = hf_cache
        self._models = {}
        self.dtype = mr.Plan._dtype(raw.get("dtype"), "dtype")
        self.out_dtype = mr.Plan._dtype(raw.get("out_dtype"), "out_dtype")
        self.base_model = (mr._model_ref(raw["base_model"], "base_model")
                           if raw.get("base_model") is not None else None)
        self.parameters = _check_params(raw.get("parameters"), "parameters")
        has_slices, has_models = bool(raw.get("slices")), bool(raw.get("models"))
        if has_slices == has_models:
            raise RefError(f"{path}: exactly one of 'slices' or 'models' must be present")
        self.slices_syntax = has_slices
        self.slices = []
        if has_slices:
            for i, s in enumerate(raw["slices"]):
                where = f"slices[{i}]"
                if not isinstance(s, dict) or not isinstance(s.get("sources"), list) \
                        or not s["sources"]:
                    raise RefError(f"{where}: needs a non-empty 'sources' list")
                extra = set(s) - {"sources", "parameters", "base_model", "residual_weight"}
                if extra:
                    raise RefError(f"{where}: unsupported keys {sorted(extra)}")
                if s.get("residual_weight") is not None:
                    raise RefError(f"{where}: residual_weight is not covered")
                srcs = []
                for j, src in enumerate(s["sources"]):
                    w = f"{where}.sources[{j}]"
                    if not isinstance(src, dict) or set(src) - {"model", "layer_range",
                                                                "parameters"}:
                        raise RefError(f"{w}: expected {{model, layer_range, parameters}}")
                    lr = src.get("layer_range")
                    if (not isinstance(lr, list) or len(lr) != 2 or not all(
                            isinstance(x, int) and not isinstance(x, bool) for x in lr)):
                        raise RefError(f"{w}: layer_range must be [a, b], got {lr!r}")
                    srcs.append(MSource(mr._model_ref(src.get("model"), w), (lr[0], lr[1]),
                                        _check_params(src.get("parameters"),
                                                      f"{w}.parameters")))
                bm = (mr._model_ref(s["base_model"], f"{where}.base_model")
                      if s.get("base_model") is not None else None)
                self.slices.append(MSlice(srcs, _check_params(s.get("parameters"),
                                                              f"{where}.parameters"), bm))
        else:
            srcs = []
            for i, m in enumerate(raw["models"]):
                if not isinstance(m, dict) or set(m) - {"model", "parameters"}:
                    raise RefError(f"models[{i}]: expected {{model, parameters}}")
                ref = mr._model_ref(m.get("model"), f"models[{i}]")
                srcs.append(MSource(ref, (0, self.model(ref).num_layers),
                                    _check_params(m.get("parameters"),
                                                  f"models[{i}].parameters")))
            if self.base_model and self.base_model not in [s.model for s in srcs]:
                srcs.append(MSource(self.base_model,
                                    (0, self.model(self.base_model).num_layers), None))
            self.slices.append(MSlice(srcs, None, None))

        for i, s in enumerate(self.slices):
            refs = [src.model for src in s.sources]
            if len(set(refs)) != len(refs):
                raise RefError(f"slices[{i}]: a model is listed twice "
                               "(mergekit keeps one of them silently)")
            lens = set()
            for src in s.sources:
                a, b = src.layer_range
                m = self.model(src.model)
                if not 0 <= a <= b or b > m.num_layers:
                    raise RefError(f"slices[{i}]: layer_range [{a}, {b}] outside the "
                                   f"{m.num_layers} layers of {src.model}")
                lens.add(b - a)
            if len(lens) != 1:
                raise RefError(f"slices[{i}]: sources span different numbers of layers")
            base = self.slice_base(s)
            if self.method in SPHERE_METHODS:
                _, uses_base, others = SPHERE_METHODS[self.method]
                if self.method == "nuslerp" and base is not None and base not in refs:
                    raise RefError(f"slices[{i}]: nuslerp's base_model {base} is not one "
                                   "of the slice's sources")
                n_others = len(refs) - (1 if uses_base and base in refs else 0)
                if others and n_others != others:
                    raise RefError(f"slices[{i}]: {self.method} takes {others} models "
                                   f"besides the base, got {n_others}")
            elif self.method != "linear":
                if base is None:
                    raise RefError(f"slices[{i}]: {self.method} needs a base_model")
                if base not in refs:
                    raise RefError(f"slices[{i}]: base_model {base} is not one of the "
                                   "slice's sources")
            if self.method in ("slerp", "arcee_fusion") and len(refs) != 2:
                raise RefError(f"slices[{i}]: {self.method} takes exactly two models, "
                               f"got {len(refs)}")
            if self.method in BASE_METHODS:
                _, least, most = BASE_METHODS[self.method]
                if len(refs) < least or (most and len(refs) > most):
                    raise RefError(f"slices[{i}]: {self.method} takes {least} to "
                                   f"{most or 'any number of'} models, got {len(refs)}")
        if self.total_layers() == 0:
            raise RefError(f"{path}: every slice is empty")
        archs = {self.model(r).arch for r in self.referenced_models()}
        if len(archs) != 1:
            raise RefError(f"{path}: models of different architectures {sorted(archs)}")

    def model(self, ref):
        if ref not in self._models:
            self._models[ref] = mr.SourceModel(ref, self.hf_cache)
        return self._models[ref]

    def slice_base(self, slc):
        return slc.base_model or self.base_model

    def referenced_models(self):
        out = [self.base_model] if self.base_model else []
        for s in self.slices:
            out += [src.model for src in s.sources if src.model not in out]
        if self.base_model is None:
            out = list(dict.fromkeys(out))
        return out

    def total_layers(self):
        return sum(s.sources[0].layer_range[1] - s.sources[0].layer_range[0]
                   for s in self.slices)

    def config_source(self):
        return self.base_model or self.slices[0].sources[0].model

    # mergekit's ConfigReader.parameter
    def parameter(self, slc, name, model, tensor_name, t):
        if model is not None:
            for s in slc.sources:
                if s.model == model and s.parameters and name in s.parameters:
                    v = mr.evaluate_setting(tensor_name, s.parameters[name], t)
                    if v is not None:
                        return v
        for params in (slc.parameters, self.parameters):
            if params and name in params:
                v = mr.evaluate_setting(tensor_name, params[name], t)
                if v is not None:
                    return v
        return None


# ----------------------------------------------------------------------------
# the merge plan, tensor by tensor

# inputs: [(model, source tensor name)]; base: index into inputs or None;
# gparams: evaluated global parameters; tparams: per input
MEntry = namedtuple("MEntry", "out_name inputs base gparams tparams label")


def _gparam_defs(method):
    if method == "linear":
        return {"normalize": True}
    if method == "slerp":
        return {"t": None}
    if method in BASE_METHODS:
        return dict(BASE_METHODS[method][0])
    if method in SPHERE_METHODS:
        return dict(SPHERE_METHODS[method][0])
    if method == "arcee_fusion":
        return {}
    _, _, norm, resc = GTA_METHODS[method]
    return {"int8_mask": False, "normalize": norm, "rescale": resc, "lambda": 1.0}


def _tparam_defs(method):
    if method == "linear":
        return {"weight": None}
    if method in ("nuslerp", "multislerp"):
        return {"weight": None}
    if method in ("slerp", "karcher", "arcee_fusion") or method in BASE_METHODS:
        return {}
    d = {"weight": None, "density": 1.0}
    kind = GTA_METHODS[method][1]
    if kind == "magnitude_outliers":
        d["gamma"] = 0.01
    if kind == "della_magprune":
        d["epsilon"] = 0.15
    return d


def _plan_tensor(plan, slc, out_name, pairs, t, entries):
    """pairs: [(model, source name)] in input order (mergekit's plan_tensor)."""
    method = plan.method
    base_ref = plan.slice_base(slc)
    if out_name == mr.LM_HEAD:
        have = [plan.model(m).has(n) for m, n in pairs]
        if not any(have):
            return
        if not all(have):
            raise RefError(f"{out_name}: present in only some of the merged models "
                           "(mergekit merges the ones that have it; not covered)")
    gparams = {}
    for name, default in _gparam_defs(method).items():
        v = plan.parameter(slc, name, None, out_name, t)
        if v is None:
            if default is None:
                raise RefError(f"{out_name}: missing required parameter {name}")
            v = default
        gparams[name] = v
    tparams = []
    base = None
    weighs_base = method in ("linear", "karcher")      # the base is a model like the others
    for k, (m, src) in enumerate(pairs):
        is_base = (m == base_ref) and not weighs_base
        if is_base:
            base = k
        p = {}
        for name, default in _tparam_defs(method).items():
            v = plan.parameter(slc, name, m, src, t)
            p[name] = default if v is None else v
        if "weight" in p and p["weight"] is None and not is_base:
            raise RefError(f"{m}:{src}: missing required parameter weight")
        if method in GTA_METHODS and not is_base:
            dens = p["density"]
            if not 0 < dens <= 1:
                raise RefError(f"{m}:{src}: density {dens} outside (0, 1]")
        tparams.append(p)
    optional_base = weighs_base or method in ("nuslerp", "multislerp")
    if method == "nuslerp" and len(pairs) - (base is not None) != 2:
        raise RefError(f"{out_name}: nuslerp of {len(pairs)} inputs, "
                       f"{'one' if base is not None else 'none'} of them the base")
    if not optional_base and base is None and not (method == "slerp" and len(pairs) == 1):
        # (a one-input slerp returns its input; GTATask indexes tensors[base_model])
        raise RefError(f"{out_name}: base model {base_ref} is not among the inputs")
    for m, src in pairs:
        plan.model(m).info(src)       # raises when missing
    label = max(src for _, src in pairs)
    entries.append(MEntry(out_name, list(pairs), base, gparams, tparams, label))


def plan_entries(plan):
    """Output tensors in mergekit's planning order (MergePlanner.plan_module)."""
    entries = []
    first, last = plan.slices[0], plan.slices[-1]
    _plan_tensor(plan, first, mr.EMBED, [(s.model, mr.EMBED) for s in first.sources],
                 0, entries)
    k = 0
    roles = mr.ARCH_LAYER_ROLES[plan.model(plan.config_source()).arch]
    for slc in plan.slices:
        n = slc.sources[0].layer_range[1] - slc.sources[0].layer_range[0]
        for idx in range(n):
            t = idx / (n - 1) if n > 1 else 1
            for role in roles:
                pairs = [(s.model, f"model.layers.{s.layer_range[0] + idx}.{role}")
                         for s in slc.sources]
                _plan_tensor(plan, slc, f"model.layers.{k}.{role}", pairs, t, entries)
            k += 1
    # post weights: mergekit zips the first slice's source count with the last
    # slice's models, so the last slice's extra sources are dropped
    n_first = len(first.sources)
    for name in (mr.NORM, mr.LM_HEAD):
        _plan_tensor(plan, last, name, [(s.model, name) for s in last.sources[:n_first]],
                     0, entries)
    return entries


def _load(plan, model, src):
    """LoadTensor: the source tensor as float32, cast to the plan's dtype."""
    m = plan.model(model)
    dtype, shape = m.info(src)
    if dtype not in mr.FLOAT_DTYPES:
        raise RefError(f"{model}:{src}: dtype {dtype} not covered")
    x = mr.to_f32(m.raw(src), dtype).reshape(shape)
    if plan.dtype and plan.dtype != dtype:
        x, dtype = rd(x, plan.dtype), plan.dtype
    return x, dtype, tuple(shape)


def _one_dtype(e, method, loaded):
    """The dtype the methods without a base's dtype compute in: their inputs' one dtype."""
    dts = {d for _, d, _ in loaded}
    if len(dts) != 1:
        raise RefError(f"{e.out_name}: {method} over inputs of dtypes {sorted(dts)} "
                       "without a plan dtype")
    return loaded[0][1]


def entry_value(plan, e, seed):
    """(dtype, shape, float32 array of values) of one output tensor."""
    loaded = [_load(plan, m, src) for m, src in e.inputs]
    shapes = {s for _, _, s in loaded}
    if len(shapes) != 1:
        raise RefError(f"{e.out_name}: inputs of different shapes {sorted(shapes)} "
                       "(mergekit's submatrix rules are not covered)")
    shape = loaded[0][2]
    method = plan.method
    if method == "linear":
        D = _one_dtype(e, method, loaded)
        res = merge_linear([x for x, _, _ in loaded], e.tparams, e.gparams, D)
    elif len(loaded) == 1:
        res, D, _ = loaded[0]       # single input: the input itself
    elif method in SPHERE_METHODS or method == "arcee_fusion":
        D = _one_dtype(e, method, loaded)
        g = e.gparams
        base = loaded[e.base][0] if e.base is not None else None
        ks = [k for k in range(len(loaded)) if k != e.base]
        xs = [loaded[k][0] for k in ks]
        ws = [e.tparams[k].get("weight") for k in ks]
        if method == "nuslerp":
            res = merge_nuslerp(xs[0], xs[1], base, ws[0], ws[1], bool(g["nuslerp_row_wise"]),
                                bool(g["nuslerp_flatten"]), D)
        elif method == "multislerp":
            res = merge_multislerp(xs, base, ws, bool(g["normalize_weights"]), g["eps"], D)
        elif method == "karcher":
            res = merge_karcher(xs, g["max_iter"], g["tol"], D)
        else:
            res, D = merge_arcee_fusion(base, xs[0], D), "F32"
    elif method in BASE_METHODS:
        D = _one_dtype(e, method, loaded)
        base = loaded[e.base][0]
        xs = [x for k, (x, _, _) in enumerate(loaded) if k != e.base]
        g = e.gparams
        if method == "nearswap":
            res = merge_nearswap(base, xs[0], g["t"], D)
        elif method == "ram":
            res = merge_ram(base, xs, g["epsilon"], D)
        elif method == "model_stock":
            res = merge_model_stock(base, xs, bool(g["filter_wise"]), D)
        else:
            res = merge_sce(base, xs, g["select_topk"], D)
    elif method == "slerp":
        v0, D, _ = loaded[e.base]
        v1 = loaded[1 - e.base][0]   # .float() of its own dtype, not cast to the base's
        res = merge_slerp(v0, v1, e.gparams["t"], D)
    else:
        D = loaded[e.base][1]
        xs = [rd(x, D) for x, _, _ in loaded]     # x.to(base.dtype)
        salt = e.inputs[e.base][1]     # the base model's source tensor name

        def draw_for(k):
            return lambda cnt: draws(seed, salt, k, cnt)
        res = merge_gta(method, xs, e.base, e.tparams, e.gparams, D, draw_for)
    if plan.out_dtype and plan.out_dtype != D:
        res, D = rd(res, plan.out_dtype), plan.out_dtype
    return D, shape, np.asarray(res, F32).reshape(shape)


def entry_info(plan, e):
    infos = [plan.model(m).info(src) for m, src in e.inputs]
    shape = infos[0][1]
    if plan.method == "arcee_fusion" and len(infos) == 2:
        D = "F32"                   # the delta times a float32 mask
    elif plan.dtype:
        D = plan.dtype
    elif plan.method == "linear" or len(infos) == 1 or e.base is None:
        D = infos[0][0]
    else:
        D = infos[e.base][0]
    return (plan.out_dtype or D), shape


class Expected:
    """Write order, shards and files (mergekit_ref.Expected's layout rules)."""

    def __init__(self, plan, shard_size, seed):
        self.plan = plan
        self.seed = seed
        self.entries = plan_entries(plan)
        names = [e.out_name for e in self.entries]
        if len(set(names)) != len(names):
            raise RefError("duplicate output tensor names")
        # lexicographic schedule by group label; plan order among equal labels
        self.order = sorted(range(len(self.entries)), key=lambda i: self.entries[i].label)
        self.info = {e.out_name: entry_info(plan, e) for e in self.entries}
        shards, cur, cur_size = [], [], 0
        for i in self.order:
            dtype, shape = self.info[self.entries[i].out_name]
            nbytes = mr._numel(shape) * mr.DTYPE_SIZE[dtype]
            if cur and shard_size > 0 and cur_size + nbytes > shard_size:
                shards.append(cur)
                cur, cur_size = [], 0
            cur.append(i)
            cur_size += nbytes
        if cur:
            shards.append(cur)
        self.shards = shards
        n = len(shards)
        self.shard_names = (["model.safetensors"] if n == 1 else
                            [f"model-{j + 1:05d}-of-{n:05d}.safetensors" for j in range(n)])
        self.total_size = sum(mr._numel(s) * mr.DTYPE_SIZE[d] for d, s in self.info.values())
        self.by_name = {e.out_name: e for e in self.entries}

    weight_map = mr.Expected.weight_map
    index_bytes = mr.Expected.index_bytes

    def value(self, name):
        return entry_value(self.plan, self.by_name[name], self.seed)

    def tensor(self, name):
        dtype, shape, arr = self.value(name)
        return dtype, shape, mr.from_f32(arr.reshape(-1), dtype)

    def shard_bytes(self, j, tensors=None):
        out = []
        for i in self.shards[j]:
            name = self.entries[i].out_name
            dtype, shape, data = tensors[name] if tensors else self.tensor(name)
            out.append((name, dtype, shape, data))
        return mr.st_serialize(out)

    def config(self):
        p = self.plan
        cfg = json.loads(json.dumps(p.model(p.config_source()).config))
        if p.out_dtype or p.dtype:
            cfg["torch_dtype"] = mr._plan_dtype_name(p.out_dtype or p.dtype)
        if p.slices_syntax:
            cfg["num_hidden_layers"] = p.total_layers()
        return cfg

    def kind(self, name):
        e = self.by_name[name]
        return self.plan.method if (len(e.inputs) > 1 or self.plan.method == "linear") \
            else "single input"


# ----------------------------------------------------------------------------
# commands


def _passthrough(a):
    """Hand passthrough plans to mergekit_ref.py (which has no --random-seed/--ulps)."""
    with open(a.plan, encoding="utf-8") as f:
        raw = yaml.safe_load(f)
    if isinstance(raw, dict) and raw.get("merge_method") == "passthrough":
        args = [a.cmd, a.plan, "--hf-cache", a.hf_cache, "--shard-size", str(a.shard_size)]
        args += ["--out-dir", a.out_dir] if a.cmd == "expect" else []
        args += ["--export", a.export] if a.cmd == "compare" else []
        return mr.main(args)
    return None


def cmd_expect(a):
    rc = _passthrough(a)
    if rc is not None:
        return rc
    plan = MergePlan(a.plan, a.hf_cache)
    ex = Expected(plan, a.shard_size, a.random_seed)
    os.makedirs(a.out_dir, exist_ok=True)
    for j, fn in enumerate(ex.shard_names):
        with open(os.path.join(a.out_dir, fn), "wb") as f:
            f.write(ex.shard_bytes(j))
    idx = ex.index_bytes()
    if idx is not None:
        with open(os.path.join(a.out_dir, "model.safetensors.index.json"), "wb") as f:
            f.write(idx)
    with open(os.path.join(a.out_dir, "config.json"), "w", encoding="utf-8") as f:
        json.dump(ex.config(), f, indent=2, sort_keys=True)
        f.write("\n")
    print(f"wrote {len(ex.entries)} tensors in {len(ex.shard_names)} shard(s) to {a.out_dir}")
    return 0


def _ordered(bits, dtype):
    """Float bit patterns mapped to integers that count units in the last place
    (+0 and -0 are one unit apart)."""
    nbits = {"BF16": 16, "F16": 16, "F32": 32}[dtype]
    b = bits.astype(np.int64)
    sign = np.int64(1) << np.int64(nbits - 1)
    return np.where(b & sign, -(b & (sign - 1)) - 1, b)


def _bits(data, dtype):
    return np.frombuffer(data, dtype="<u2" if mr.DTYPE_SIZE[dtype] == 2 else "<u4")


def _ulp_diff(exp, got, dtype):
    """Per element: units in the last place between exp and got (NaN bytes: exact)."""
    eb, gb = _bits(exp, dtype), _bits(got, dtype)
    d = np.abs(_ordered(eb, dtype) - _ordered(gb, dtype))
    ev, gv = mr.to_f32(exp, dtype), mr.to_f32(got, dtype)
    nan = (np.isnan(ev) | np.isnan(gv)) & (eb != gb)
    d[nan] = np.iinfo(np.int64).max
    return d


def _describe(name, dtype, shape, exp, got, d=None):
    size = mr.DTYPE_SIZE[dtype]
    ea = np.frombuffer(exp, np.uint8).reshape(-1, size)
    ga = np.frombuffer(got, np.uint8).reshape(-1, size)
    bad = np.nonzero((ea != ga).any(axis=1))[0] if d is None else np.nonzero(d)[0]
    i = int(bad[0])
    where = np.unravel_index(i, shape) if shape else ()

    def show(b):
        return b[::-1].hex() + f" ({float(mr.to_f32(b, dtype)[0])!r})"

    msg = (f"{name}: {len(bad)} of {len(ea)} elements differ; first at element {i} "
           f"{list(int(x) for x in where)}: expected {show(exp[i * size:(i + 1) * size])}, "
           f"got {show(got[i * size:(i + 1) * size])}")
    if d is not None:
        msg += f" ({int(d[i])} ulp; largest {int(d.max())} ulp)"
    return msg


def cmd_compare(a):
    rc = _passthrough(a)
    if rc is not None:
        return rc
    plan = MergePlan(a.plan, a.hf_cache)
    ex = Expected(plan, a.shard_size, a.random_seed)
    d = mr.Diff()
    exp_dir = a.export
    if not os.path.isdir(exp_dir):
        raise RefError(f"{exp_dir}: not a directory")
    present = sorted(f for f in os.listdir(exp_dir) if f.endswith(".safetensors"))
    for fn in ex.shard_names:
        if fn not in present:
            d.add("files", f"missing shard file {fn}")
    for fn in present:
        if fn not in ex.shard_names:
            d.add("files", f"unexpected shard file {fn}")
    mr._compare_index(ex, exp_dir, d)

    want_map = ex.weight_map()
    exported_in, headers = {}, {}
    for fn in present:
        try:
            headers[fn] = mr.SafetensorsFile(os.path.join(exp_dir, fn))
        except (RefError, ValueError, OSError) as err:
            d.add("files", f"{fn}: unreadable ({err})")
            continue
        for name in headers[fn].names():
            exported_in.setdefault(name, fn)

    stats = {}       # kind -> [elements, differing, differing by more than --ulps, max ulp]
    n_ok = n_close = 0
    for j, fn in enumerate(ex.shard_names):
        st = headers.get(fn)
        if st is None:
            continue
        want_names = [ex.entries[i].out_name for i in ex.shards[j]]
        got_names = st.names()
        for name in sorted(set(want_names) - set(got_names)):
            elsewhere = exported_in.get(name)
            d.add("shard assignment", f"{fn}: tensor {name} missing" +
                  (f" (exported in {elsewhere})" if elsewhere else ""))
        for name in sorted(set(got_names) - set(want_names)):
            d.add("shard assignment", f"{fn}: unexpected tensor {name}" +
                  (f" (expected in {want_map[name]})" if name in want_map else ""))
        tensors_ok, all_exact = True, True
        expected = {}
        for name in want_names:
            dtype, shape, data = ex.tensor(name)
            expected[name] = (dtype, shape, data)
            if name not in st.header:
                tensors_ok = False
                continue
            gdt, gshape = st.info(name)
            if gdt != dtype or gshape != tuple(shape):
                d.add("tensors", f"{fn}: {name}: expected {dtype}{list(shape)}, "
                      f"got {gdt}{list(gshape)}")
                tensors_ok = False
                continue
            got = st.raw(name)
            kind = ex.kind(name)
            s = stats.setdefault(kind, [0, 0, 0, 0])
            n = mr._numel(shape)
            s[0] += n
            if got == data:
                n_ok += 1
                continue
            all_exact = False
            if a.ulps > 0 and dtype in mr.FLOAT_DTYPES:
                diff = _ulp_diff(data, got, dtype)
                s[1] += int(np.count_nonzero(diff))
                s[2] += int(np.count_nonzero(diff > a.ulps))
                s[3] = max(s[3], int(diff.max()))
                if int(diff.max()) <= a.ulps:
                    n_close += 1
                    continue
                d.add("tensors", _describe(name, dtype, shape, data, got, diff))
            else:
                d.add("tensors", _describe(name, dtype, shape, data, got))
            tensors_ok = False
        if tensors_ok and set(got_names) == set(want_names):
            want_file = ex.shard_bytes(j, expected)
            with open(os.path.join(exp_dir, fn), "rb") as f:
                got_file = f.read()
            wl = struct.unpack("<Q", want_file[:8])[0]
            whdr = want_file[8:8 + wl].decode("utf-8", "replace")
            ghdr = st.header_bytes.decode("utf-8", "replace")
            if whdr != ghdr:
                k = mr._first_difference(whdr, ghdr)
                d.add("file bytes", f"{fn}: header differs at byte {k}: expected "
                      f"...{whdr[max(0, k - 40):k + 80]!r}..., got "
                      f"...{ghdr[max(0, k - 40):k + 80]!r}...")
            elif len(got_file) != len(want_file):
                d.add("file bytes", f"{fn}: {len(got_file)} bytes, expected {len(want_file)}")
            elif all_exact and got_file != want_file:
                d.add("file bytes", f"{fn}: file bytes differ though header and "
                      "tensors match")

    mr._compare_config(ex, exp_dir, d)

    if a.ulps > 0:
        for kind, (n, nd, nbig, mx) in sorted(stats.items()):
            if not nd:
                print(f"{kind}: 0 of {n} elements differ")
            elif not nbig:
                print(f"{kind}: {nd} of {n} elements differ by at most {a.ulps} ulp, "
                      "none by more")
            else:
                print(f"{kind}: {nd} of {n} elements differ, {nbig} by more than "
                      f"{a.ulps} ulp (up to {mx} ulp)")
    if d:
        print(f"MISMATCH: {a.plan} vs {exp_dir}: {d.count} difference(s) "
              f"({len(ex.entries)} tensors expected in {len(ex.shard_names)} shard(s), "
              f"{n_ok} identical, {n_close} within {a.ulps} ulp)")
        d.print()
        return 1
    print(f"ok: {n_ok + n_close} tensors ({n_ok} identical"
          + (f", {n_close} within {a.ulps} ulp" if a.ulps > 0 else "") + ")")
    return 0


def cmd_order(a):
    plan = MergePlan(a.plan, a.hf_cache)
    ex = Expected(plan, a.shard_size, a.random_seed)
    for fn, shard in zip(ex.shard_names, ex.shards):
        for i in shard:
            e = ex.entries[i]
            ins = ", ".join(f"{m}:{s}" for m, s in e.inputs)
            print(f"{fn}\t{e.out_name}\tbase={e.base}\t{ins}\t{e.gparams}\t{e.tparams}")
    return 0


# ----------------------------------------------------------------------------
# self-checks (hand-computed cases)


def cmd_selftest(a):
    import contextlib
    import io
    import shutil
    import tempfile

    failures = []

    def ok(cond, what):
        print(("ok   " if cond else "FAIL ") + what)
        if not cond:
            failures.append(what)

    A = lambda *v: np.array(v, F32)   # noqa: E731

    def same(x, y):
        x, y = np.asarray(x, F32), np.asarray(y, F32)
        return x.shape == y.shape and x.tobytes() == y.tobytes()

    G = {"normalize": True, "rescale": False, "lambda": 1.0, "int8_mask": False}
    nod = lambda k: None   # noqa: E731

    # rounding
    ok(same(rd(A(1.00390625), "BF16"), A(1.0)), "bf16: tie rounds to even (down)")
    ok(same(rd(A(1.01171875), "BF16"), A(1.015625)), "bf16: tie rounds to even (up)")
    ok(same(rd(A(0.1), "BF16"), A(0.10009765625)), "bf16: 0.1 -> 0.10009765625")
    ok(same(rd(A(-0.0), "BF16"), A(-0.0)), "bf16: -0.0 kept")
    ok(np.isinf(rd(A(70000.0), "F16"))[0], "f16: overflow to inf")
    ok(same(rd(A(1 + 2.0 ** -11), "F16"), A(1.0)), "f16: tie rounds to even")

    # linear
    lp = [{"weight": 1.0}, {"weight": 3.0}]
    ok(same(merge_linear([A(1, 2), A(3, 4)], lp, {"normalize": True}, "F32"), A(2.5, 3.5)),
       "linear normalize: (1*1+3*3)/4 = 2.5, (2+12)/4 = 3.5")
    ok(same(merge_linear([A(1, 2), A(3, 4)], lp, {"normalize": False}, "F32"), A(10, 14)),
       "linear without normalize: weighted sum")
    ok(same(merge_linear([A(1.0)], [{"weight": 0.1}], {"normalize": False}, "BF16"),
            A(0.10009765625)), "linear: bf16 weight rounding (0.1 -> 0.10009765625)")
    # rounded per step, 1 + 2^-8 would be a tie rounding back to 1 each time
    ok(same(merge_linear([A(1.0), A(2.0 ** -8), A(2.0 ** -8)], [{"weight": 1.0}] * 3,
                         {"normalize": False}, "BF16"), A(1.0078125)),
       "linear: the sum over models rounds once (1 + 2^-8 + 2^-8 = 1 + 2^-7 in bf16)")

    # ties: sign election, tie rule, zero deltas
    tp = [{"weight": 1.0, "density": 1.0}] * 3
    got = merge_gta("ties", [A(0, 0, 0), A(1, -1, 2), A(-3, -1, 1)], 0, tp, G, "F32", nod)
    ok(same(got, A(-3, -1, 1.5)), "ties: sign election [1,-1,2],[-3,-1,1] -> [-3,-1,1.5]")
    got = merge_gta("ties", [A(0), A(1), A(-1)], 0, tp, G, "F32", nod)
    ok(same(got, A(1)), "ties: sum 0 elects + (tie rule)")
    got = merge_gta("ties", [A(5), A(5), A(7)], 0, tp, G, "F32", nod)
    ok(same(got, A(7)), "ties: a zero delta is never kept (divisor counts only model 2)")
    got = merge_gta("ties", [A(0, 0), A(1, -2), A(1, -2)], 0,
                    [{}, {"weight": 0.5, "density": 1.0}, {"weight": 0.25, "density": 1.0}],
                    dict(G, normalize=False, **{"lambda": 2.0}), "F32", nod)
    ok(same(got, A(1.5, -3)), "ties: no normalize, lambda 2")
    got = merge_gta("task_arithmetic", [A(1), A(2), A(4)], 0,
                    [{}, {"weight": 1.0, "density": 1.0}, {"weight": -1.0, "density": 1.0}],
                    dict(G, normalize=True), "F32", nod)
    ok(same(got, A(-1)), "task_arithmetic: divisor 0 replaced by 1")
    ok(same(merge_gta("ties", [A(3, 4)], 0, [{}], G, "F32", nod), A(3, 4)),
       "ties: base only -> base")

    # magnitude
    p = {"density": 0.5}
    got = sparsify("magnitude", A(1, -3, 2, 0.5), "F32", p, False, None)
    ok(same(got, A(0, -3, 2, 0)), "magnitude: keeps the 2 largest |delta|")
    got = sparsify("magnitude", A(-1, -1, -1, -1), "F32", p, False, None)
    ok(same(got, A(-1, -1, -0.0, -0.0)), "magnitude: ties keep the lower index; -x*0 = -0")
    got = sparsify("magnitude", A(1, -3, 2, 0.5), "F32", p, True, None)
    ok(same(got, A(0, F32(-3) * F32(1.3), F32(2) * F32(1.3), 0)),
       "magnitude: l1 rescale by 6.5/5")
    # breadcrumbs
    x = A(*range(1, 11))
    got = sparsify("magnitude_outliers", x, "F32", {"density": 0.5, "gamma": 0.01}, False, None)
    ok(not got.any(), "breadcrumbs: n_top = 0 keeps nothing (indices[n_bot:-0])")
    got = sparsify("magnitude_outliers", x, "F32", {"density": 0.5, "gamma": 0.1}, False, None)
    ok(same(got, A(0, 0, 0, 0, 5, 6, 7, 8, 9, 0)),
       "breadcrumbs: density 0.5, gamma 0.1 keeps sorted positions [4, 9)")
    got = sparsify("magnitude_outliers", x, "F32", {"density": 0.9, "gamma": 0.3}, False, None)
    ok(same(got, A(1, 2, 3, 4, 5, 6, 7, 8, 9, 0)),
       "breadcrumbs: n_bot < 0 moves into n_top")

    # draws
    ok(fnv1a64(b"") == 0xCBF29CE484222325 and fnv1a64(b"a") == 0xAF63DC4C8601EC8C,
       "fnv1a64 test vectors")
    key0 = fnv1a64(b"0:s:0")
    z = (key0 + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    z ^= z >> 31
    ok(draws(0, "s", 0, 3)[0] == (z >> 40) / 2 ** 24, "u(0) = splitmix64(key + golden) >> 40")
    # splitmix64 seeded with 0: first output is 0xE220A8397B1DCDAF
    with np.errstate(over="ignore"):
        zz = np.array([0x9E3779B97F4A7C15], np.uint64)
        zz = (zz ^ (zz >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        zz = (zz ^ (zz >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        zz = zz ^ (zz >> np.uint64(31))
    ok(int(zz[0]) == 0xE220A8397B1DCDAF, "splitmix64 test vector (numpy uint64 wraps)")
    n = 200000
    u = draws(7, "model.layers.0.mlp.up_proj.weight", 1, n)
    ok(abs((u < 0.3).mean() - 0.3) < 0.005 and u.min() >= 0 and u.max() < 1,
       "draws: uniform in [0,1), keep rate 0.3")
    x = rd(np.random.default_rng(1).standard_normal(n).astype(F32), "BF16")
    got = sparsify("random", x, "BF16", {"density": 0.3}, False, lambda c: u[:c])
    ok(abs(np.count_nonzero(got) / n - 0.3) < 0.005, "dare: keep rate ~ density")
    ok(same(got[u >= rd(F32(0.3), "BF16")], (x * 0)[u >= rd(F32(0.3), "BF16")]),
       "dare: dropped elements are x*0 (signed zeros)")
    got = sparsify("random", x, "BF16", {"density": 0.3}, True, lambda c: u[:c])
    ok(abs(float(np.abs(got).sum() / np.abs(x).sum()) - 1) < 0.01, "dare: rescale keeps l1")
    got = sparsify("random", A(1, 2), "F16", {"density": 0.3}, False, lambda c: A(0.2, 0.5))
    ok(same(got, A(1, 0)), "dare: keep when u < p")

    # della
    got = sparsify("della_magprune", A(0.1, -0.3, 0.2), "F32",
                   {"density": 0.5, "epsilon": 0.1}, False, lambda c: A(0.39, 0.59, 0.51))
    ok(same(got, rd(A(0.1, -0.3, 0), "F32")),
       "della: probabilities 0.4, 0.6, 0.5 by rank (u = .39, .59, .51)")
    got = sparsify("della_magprune", A(0.1, -0.3, 0.2), "F32",
                   {"density": 0.5, "epsilon": 0.1}, False, lambda c: A(0.41, 0.61, 0.49))
    ok(same(got, A(0, -0.0, 0.2)), "della: ... (u = .41, .61, .49)")
    got = sparsify("della_magprune", A(0.1, -0.3, 0.2, 0.0).reshape(2, 2), "F32",
                   {"density": 0.5, "epsilon": 0.1}, False,
                   lambda c: A(0.43, 0.59, 0.61, 0.39))
    ok(same(got, A(0.1, -0.3, 0.2, 0.0).reshape(2, 2) * A(0, 1, 0, 1).reshape(2, 2)),
       "della: ranks per row (flat ranks would keep element 0)")
    try:
        sparsify("della_magprune", A(1, 2), "F32", {"density": 0.9, "epsilon": 0.15},
                 False, None)
        ok(False, "della: density + epsilon >= 1 is an error")
    except RefError:
        ok(True, "della: density + epsilon >= 1 is an error")

    # slerp
    got = merge_slerp(A(1, 0), A(0, 1), 0.5, "F32")
    ok(np.allclose(got, [np.sqrt(0.5)] * 2, rtol=1e-6, atol=0), "slerp: 45 degrees")
    got = merge_slerp(A(1, 2), A(2, 4), 0.25, "F32")
    ok(same(got, F32(0.75) * A(1, 2) + F32(0.25) * A(2, 4)), "slerp: colinear -> lerp")
    got = merge_slerp(A(2, 0), A(0, 4), 1.0, "F32")
    ok(np.allclose(got, [0, 4], atol=1e-6), "slerp: t = 1 is v1 (norms kept)")
    # nearswap, ram, model_stock, sce on hand-worked values
    got = merge_nearswap(A(0, 1, 5), A(0.001, 1.5, 5), 0.01, "F32")
    ok(got[0] == F32(0.001) and abs(got[1] - 1.01) < 1e-6 and got[2] == 5,
       "nearswap: near elements swapped, others moved by t/|a-b|")
    got = merge_ram(A(0, 0, 0, 0), [A(0.05, 1, 1, 0), A(0.05, 0.05, 3, -2)], 0.1, "F32")
    ok(same(got, A(0, 1, 2, -2)), "ram: small changes dropped, unique kept, shared averaged")
    ok(merge_ram(A(0), [A(0.10009765625)], 0.1, "BF16")[0] == 0,
       "ram: epsilon compared in the dtype")
    c = 1 / np.sqrt(2.0)
    t = 2 * c / (1 + c)
    got = merge_model_stock(A(0, 0), [A(1, 0), A(1, 1)], False, "F32")
    ok(np.allclose(got, [t, t / 2], atol=1e-6), "model_stock: t = 2cos/(1+cos)")
    got = merge_model_stock(A(0, 0, 0, 0).reshape(2, 2), [A(1, 0, 1, 0).reshape(2, 2),
                            A(0, 1, 1, 0).reshape(2, 2)], True, "F32")
    ok(same(got.reshape(-1), A(0, 0, 1, 0)), "model_stock: filter_wise per row")
    got = merge_sce(A(0, 0, 0), [A(1, 2, -1), A(3, -2, -1)], 1.0, "F32")
    ok(np.allclose(got, [2.4, 2, -1], atol=1e-6), "sce: weights by mean square, signs erased")
    got = merge_sce(A(0, 0, 0), [A(1, 2, -1), A(3, -2, -1)], 0.5, "F32")
    ok(same(got, A(0, 2, 0)), "sce: select_topk keeps the largest variance")

    # nuslerp, multislerp, karcher, arcee_fusion
    h = float(np.sqrt(F32(0.5)))
    got = merge_nuslerp(A(1, 0), A(0, 1), None, 3.0, 1.0, False, True, "F32")
    ok(np.allclose(got, [np.cos(np.pi / 8), np.sin(np.pi / 8)], atol=1e-6),
       "nuslerp: t = w1 / (w0 + w1) = 1/4 of the quarter turn")
    got = merge_nuslerp(A(2, 1), A(1, 2), A(1, 1), 1.0, 1.0, False, True, "F32")
    ok(np.allclose(got, [1 + h, 1 + h], atol=1e-6), "nuslerp: offsets from the base")
    got = merge_nuslerp(A(1, 0, 2, 0).reshape(2, 2), A(0, 1, 6, 0).reshape(2, 2), None,
                        3.0, 1.0, False, False, "F32")
    ok(np.allclose(got.reshape(-1), [np.cos(np.pi / 8), np.sin(np.pi / 8), 3, 0], atol=1e-6),
       "nuslerp rows: parallel rows are interpolated linearly")
    got = merge_nuslerp(A(1, 2, 0, 0).reshape(2, 2), A(0, 6, 1, 0).reshape(2, 2), None,
                        3.0, 1.0, True, False, "F32")
    ok(np.allclose(got.reshape(-1), [np.cos(np.pi / 8), 3, np.sin(np.pi / 8), 0], atol=1e-6),
       "nuslerp_row_wise: columns")
    got = merge_multislerp([A(2, 0), A(0, 4)], None, [1.0, 1.0], True, 1e-8, "F32")
    ok(np.allclose(got, [3 * h, 3 * h], atol=1e-5), "multislerp: mean direction, mean norm")
    ok(same(merge_multislerp([A(1, 0), A(-1, 0)], None, [1.0, 1.0], True, 1e-8, "F32"),
            A(0, 0)), "multislerp: two antipodal models fall back to linear")
    try:
        merge_multislerp([A(1, 0), A(-1, 0), A(0, 1)], None, [1.0, 1.0, 0.0], True, 1e-8, "F32")
        ok(False, "multislerp: three cancelling models raise")
    except RefError:
        ok(True, "multislerp: three cancelling models raise")
    got = merge_karcher([A(1, 0), A(0, 1), A(4, 0)], 10, 1e-5, "F32")
    ok(np.allclose(got, [2 * np.cos(np.pi / 6), 2 * np.sin(np.pi / 6)], atol=1e-5),
       "karcher: the Riemannian mean of 0, 90 and 0 degrees is 30")
    got = merge_karcher([A(1, 0), A(0, 1), A(4, 0)], 0, 1e-5, "F32")
    ok(np.allclose(got, [4 / np.sqrt(5), 2 / np.sqrt(5)], atol=1e-5),
       "karcher: max_iter 0 is the normalized mean")
    ok(same(merge_karcher([A(0, 0), A(0, 4)], 10, 1e-5, "F32"), A(0, 2)),
       "karcher: a zero tensor counts in the scale only")
    b8 = np.ones(8, F32)
    p8 = A(1.125, 1.25, 1.375, 1.5, 1.625, 1.75, 1.875, 5)
    for dt in ("BF16", "F32"):
        ok(same(merge_arcee_fusion(b8, p8, dt), A(1, 1, 1, 1, 1, 1, 1, 5)),
           f"arcee_fusion ({dt}): only importances from median + 1.5 IQR are kept")

    # parameters: per-model at the source name, global at the output name
    tmp = tempfile.mkdtemp(prefix="merge_ref_selftest.")
    try:
        cache = os.path.join(tmp, "hf")
        for i, dt in ((1, "BF16"), (2, "BF16"), (3, "F16")):
            mr._synth_model(cache, f"t/m{i}", "MistralForCausalLM", 4, i, dtype=dt)
        plan_text = (
            "merge_method: ties\nbase_model: t/m1\ndtype: bfloat16\n"
            "slices:\n- sources:\n  - {model: t/m1, layer_range: [0, 3]}\n"
            "  - model: t/m2\n    layer_range: [1, 4]\n    parameters:\n"
            "      weight: [{filter: layers.3., value: 2.0}, {value: [0.0, 1.0]}]\n"
            "      density: 0.5\n"
            "  parameters:\n    normalize: [{filter: layers.2., value: false}]\n"
            "- sources:\n  - {model: t/m1, layer_range: [3, 4]}\n"
            "  - {model: t/m3, layer_range: [0, 1]}\n"
            "parameters: {weight: 0.3, normalize: true}\n")
        plan_path = os.path.join(tmp, "p.yml")
        with open(plan_path, "w", encoding="utf-8") as f:
            f.write(plan_text)
        plan = MergePlan(plan_path, cache)
        es = {e.out_name: e for e in plan_entries(plan)}
        q = "self_attn.q_proj.weight"
        ok(es[f"model.layers.0.{q}"].tparams[1]["weight"] == 0.0
           and es[f"model.layers.1.{q}"].tparams[1]["weight"] == 0.5,
           "gradient over the slice: t = idx/(n-1)")
        ok(es[f"model.layers.2.{q}"].tparams[1]["weight"] == 2.0,
           "per-model filter matches the source name (layers.3 -> output layer 2)")
        ok(es[f"model.layers.2.{q}"].gparams["normalize"] == 0.0
           and es[f"model.layers.1.{q}"].gparams["normalize"] == 1.0,
           "global filter matches the output name (layers.2)")
        ok(es[f"model.layers.3.{q}"].tparams[1] == {"weight": 0.3, "density": 1.0},
           "plan-level per-model parameter and density default")
        ok(es[mr.EMBED].tparams[1]["weight"] == 0.0 and
           es[mr.NORM].inputs == [("t/m1", mr.NORM), ("t/m3", mr.NORM)],
           "embed from the first slice at t = 0, norm from the last slice")
        ok(es[f"model.layers.1.{q}"].label == f"model.layers.2.{q}",
           "group label: greatest source name")
        for shard in (mr.DEFAULT_SHARD_SIZE, 2000):
            out = os.path.join(tmp, f"out{shard}")
            common = [plan_path, "--hf-cache", cache, "--shard-size", str(shard)]
            with contextlib.redirect_stdout(io.StringIO()):
                rc1 = main(["expect"] + common + ["--out-dir", out])
                rc2 = main(["compare"] + common + ["--export", out])
            nfiles = len([f for f in os.listdir(out) if f.endswith(".safetensors")])
            ok(rc1 == 0 and rc2 == 0 and (nfiles == 1) == (shard == mr.DEFAULT_SHARD_SIZE),
               f"expect then compare (shard size {shard}, {nfiles} shards)")
            fn = sorted(f for f in os.listdir(out) if f.endswith(".safetensors"))[-1]
            st = mr.SafetensorsFile(os.path.join(out, fn))
            name = st.names()[0]
            off = st.data_start + st.header[name]["data_offsets"][0]
            with open(os.path.join(out, fn), "r+b") as f:
                f.seek(off)
                b = f.read(2)
                f.seek(off)
                f.write(bytes([b[0] ^ 1, b[1]]))
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                rc3 = main(["compare"] + common + ["--export", out])
                rc4 = main(["compare"] + common + ["--export", out, "--ulps", "1"])
            ok(rc3 == 1 and rc4 == 0, "a flipped last bit is caught, and passes --ulps 1")
        for bad, what in (("density: 0.5", "density: 1.5"), ("weight: 0.3, ", "")):
            with open(plan_path, "w", encoding="utf-8") as f:
                f.write(plan_text.replace(bad, what))
            with contextlib.redirect_stdout(io.StringIO()), \
                    contextlib.redirect_stderr(io.StringIO()):
                rc = main(["expect", plan_path, "--hf-cache", cache, "--out-dir",
                           os.path.join(tmp, "bad")])
            ok(rc == 2, f"error exit 2: {what or 'missing weight'}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"selftest: {len(failures)} failure(s)")
    return 1 if failures else 0


def main(argv=None):
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p):
        p.add_argument("plan")
        p.add_argument("--hf-cache", required=True,
                       help="HF hub cache dir (models--ORG--NAME/...)")
        p.add_argument("--shard-size", type=int, default=mr.DEFAULT_SHARD_SIZE,
                       help=f"max shard size in bytes (default {mr.DEFAULT_SHARD_SIZE})")
        p.add_argument("--random-seed", type=int, default=0,
                       help="strata's --random-seed (DARE/DELLA draws; default 0)")

    p = sub.add_parser("expect", help="write the expected checkpoint")
    common(p)
    p.add_argument("--out-dir", required=True)
    p.set_defaults(fn=cmd_expect)

    p = sub.add_parser("compare", help="compare an exported checkpoint")
    common(p)
    p.add_argument("--export", required=True, help="directory exported by strata")
    p.add_argument("--ulps", type=int, default=0,
                   help="allowed units in the last place per float element (default 0)")
    p.set_defaults(fn=cmd_compare)

    p = sub.add_parser("order", help="print write order, shards, inputs and parameters")
    common(p)
    p.set_defaults(fn=cmd_order)

    p = sub.add_parser("selftest", help="hand-computed cases and an expect/compare round trip")
    p.set_defaults(fn=cmd_selftest)

    for name in ("expect", "compare"):
        sub.choices[name].add_argument(
            "--slerp-scalars", choices=["f64", "f32"], default="f64",
            help="slerp's theta, s0, s1 in float64 (strata's contract, default) or as "
                 "float32 numpy scalars (mergekit under NumPy 2)")
    a = ap.parse_args(argv)
    global SLERP_SCALARS
    SLERP_SCALARS = getattr(a, "slerp_scalars", "f64")
    try:
        return a.fn(a)
    except (RefError, OSError, yaml.YAMLError) as err:
        print(f"merge_ref: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
