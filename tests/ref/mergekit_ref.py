#!/usr/bin/python3
"""Independent reference of mergekit's `passthrough` merge (numpy + PyYAML only).

Computes, from a mergekit plan and a Hugging Face cache directory, the checkpoint
mergekit would write (safetensors shards, model.safetensors.index.json, config.json),
and compares a directory exported by strata against it.  Written from a reading of
mergekit (plan.py, config.py, graph.py, io/tasks.py, io/tensor_writer.py,
merge_methods/passthrough.py) and of the safetensors serializer; no code is shared
with either, nor with strata.  See README.md next to this file.

  mergekit_ref.py expect  PLAN.yml --hf-cache DIR --out-dir OUTDIR [--shard-size B]
  mergekit_ref.py compare PLAN.yml --hf-cache DIR --export DIR     [--shard-size B]
  mergekit_ref.py distinct-layers PLAN.yml [--hf-cache DIR]
  mergekit_ref.py check-show PLAN.yml --hf-cache DIR --show-json FILE
  mergekit_ref.py source-blobs PLAN.yml [PLAN.yml ...] --hf-cache DIR
  mergekit_ref.py store-blobs PLAN.yml [PLAN.yml ...] --hf-cache DIR --blobs DIR
  mergekit_ref.py models PLAN.yml [PLAN.yml ...]
  mergekit_ref.py order PLAN.yml --hf-cache DIR      (prints the write order)
  mergekit_ref.py selftest
  mergekit_ref.py verify-order --mergekit-graph MERGEKIT/mergekit/graph.py [PLAN ...]

--order mergekit (default) reproduces the order in which mergekit's executor hands
tensors to its writer; --order plan uses the plain plan order (embed, layers, norm,
lm_head).  The order decides shard boundaries and the weight_map order of the index.
"""

import argparse
import hashlib
import heapq
import json
import mmap
import os
import signal
import struct
import sys
from collections import namedtuple

import numpy as np
import yaml

DEFAULT_SHARD_SIZE = 5_000_000_000
MERGEKIT_VERSION = "0.1.4"

# safetensors dtype names, byte sizes, and the rank used by its serializer
# (tensors are laid out by dtype rank descending, then by name).
# (safetensors' Dtype enum order; newer releases insert F4/F6/F8 variants and C64,
# which keeps the relative order of the others.)
DTYPE_RANK = ["BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3",
              "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "I16", "U16", "F16", "BF16",
              "I32", "U32", "F32", "C64", "F64", "I64", "U64"]
DTYPE_SIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2,
              "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "F64": 8,
              "I64": 8, "U64": 8, "F8_E8M0": 1, "F8_E4M3FNUZ": 1, "F8_E5M2FNUZ": 1,
              "C64": 8}
FLOAT_DTYPES = ("BF16", "F16", "F32")
# mergekit.common.dtype_from_name (int64 exists there but is useless for passthrough)
PLAN_DTYPES = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}

LLAMA_LAYER = ["input_layernorm.weight", "self_attn.q_proj.weight",
               "self_attn.k_proj.weight", "self_attn.v_proj.weight",
               "self_attn.o_proj.weight", "post_attention_layernorm.weight",
               "mlp.up_proj.weight", "mlp.gate_proj.weight", "mlp.down_proj.weight"]
QWEN2_LAYER = ["input_layernorm.weight", "mlp.down_proj.weight", "mlp.gate_proj.weight",
               "mlp.up_proj.weight", "post_attention_layernorm.weight",
               "self_attn.k_proj.bias", "self_attn.k_proj.weight",
               "self_attn.o_proj.weight", "self_attn.q_proj.bias",
               "self_attn.q_proj.weight", "self_attn.v_proj.bias",
               "self_attn.v_proj.weight"]
ARCH_LAYER_ROLES = {"LlamaForCausalLM": LLAMA_LAYER, "MistralForCausalLM": LLAMA_LAYER,
                    "Qwen2ForCausalLM": QWEN2_LAYER}
EMBED = "model.embed_tokens.weight"
NORM = "model.norm.weight"
LM_HEAD = "lm_head.weight"   # optional: skipped when the source model lacks it


class RefError(Exception):
    pass


# ----------------------------------------------------------------------------
# safetensors reading and writing


class SafetensorsFile:
    """Minimal reader: 8-byte LE header length, JSON header, data section."""

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            raw_len = f.read(8)
            if len(raw_len) != 8:
                raise RefError(f"{path}: truncated safetensors file")
            (n,) = struct.unpack("<Q", raw_len)
            self.header_bytes = f.read(n)
            if len(self.header_bytes) != n:
                raise RefError(f"{path}: truncated safetensors header")
        self.header = json.loads(self.header_bytes)
        self.metadata = self.header.pop("__metadata__", None)
        self.data_start = 8 + n
        self._mm = None

    def names(self):
        return list(self.header)

    def info(self, name):
        e = self.header[name]
        return e["dtype"], tuple(e["shape"])

    def raw(self, name):
        if self._mm is None:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        b, e = self.header[name]["data_offsets"]
        return bytes(self._mm[self.data_start + b:self.data_start + e])


def st_serialize(tensors, metadata=None):
    """Bytes of a safetensors file as safetensors' save_file lays it out.

    tensors: iterable of (name, dtype, shape, data bytes)."""
    if metadata is None:
        metadata = {"format": "pt"}
    order = sorted(tensors, key=lambda t: (-DTYPE_RANK.index(t[1]), t[0]))
    parts = ['"__metadata__":' + _cjson(metadata)] if metadata else []
    offset = 0
    for name, dtype, shape, data in order:
        if len(data) != _numel(shape) * DTYPE_SIZE[dtype]:
            raise RefError(f"{name}: {len(data)} bytes for {dtype}{list(shape)}")
        parts.append(_cjson(name) + ':{"dtype":' + _cjson(dtype) + ',"shape":' +
                     _cjson([int(d) for d in shape]) + ',"data_offsets":[%d,%d]}'
                     % (offset, offset + len(data)))
        offset += len(data)
    header = ("{" + ",".join(parts) + "}").encode("utf-8")
    header += b" " * ((8 - len(header) % 8) % 8)
    return struct.pack("<Q", len(header)) + header + b"".join(t[3] for t in order)


def _cjson(v):
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)


def _numel(shape):
    n = 1
    for d in shape:
        n *= int(d)
    return n


# ----------------------------------------------------------------------------
# numerics (bf16 is carried as uint16 bit patterns)


def to_f32(data, dtype):
    if dtype == "F32":
        return np.frombuffer(data, dtype="<f4").copy()
    if dtype == "F16":
        return np.frombuffer(data, dtype="<f2").astype(np.float32)
    if dtype == "BF16":
        u = np.frombuffer(data, dtype="<u2").astype(np.uint32)
        return (u << np.uint32(16)).view(np.float32)
    raise RefError(f"cannot convert {dtype} to float32")


def from_f32(f, dtype):
    f = np.ascontiguousarray(f, dtype=np.float32)
    if dtype == "F32":
        return f.astype("<f4").tobytes()
    if dtype == "F16":
        # numpy float32->float16 rounds to nearest even, overflowing to inf.
        with np.errstate(over="ignore"):
            return f.astype("<f2").tobytes()
    if dtype == "BF16":
        u = f.view(np.uint32)
        r = ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1)))
             >> np.uint32(16)).astype(np.uint16)
        r[np.isnan(f)] = 0x7FC0
        return r.astype("<u2").tobytes()
    raise RefError(f"cannot convert float32 to {dtype}")


def cast(data, src, dst):
    """tensor.to(dst): floats convert through float32 (exact for bf16/f16 inputs)."""
    if src == dst:
        return data
    if src not in FLOAT_DTYPES or dst not in FLOAT_DTYPES:
        raise RefError(f"unsupported cast {src} -> {dst}")
    return from_f32(to_f32(data, src), dst)


def scale_bytes(data, dtype, scale):
    """tensor * scale for a python scalar: float32 math, rounded to the tensor dtype."""
    if dtype not in FLOAT_DTYPES:
        raise RefError(f"scale on a {dtype} tensor is not supported")
    with np.errstate(all="ignore"):
        prod = to_f32(data, dtype) * np.float32(scale)
    return from_f32(prod, dtype)


# ----------------------------------------------------------------------------
# Hugging Face cache and source models


class SourceModel:
    def __init__(self, ref, hf_cache):
        self.ref = ref
        self.dir = resolve_model_dir(ref, hf_cache)
        cfg_path = os.path.join(self.dir, "config.json")
        if not os.path.isfile(cfg_path):
            raise RefError(f"{ref}: no config.json in {self.dir}")
        with open(cfg_path, encoding="utf-8") as f:
            self.config = json.load(f)
        archs = self.config.get("architectures") or []
        if not archs or archs[0] not in ARCH_LAYER_ROLES:
            raise RefError(f"{ref}: unsupported architecture {archs!r} "
                           f"(supported: {', '.join(ARCH_LAYER_ROLES)})")
        self.arch = archs[0]
        self.num_layers = int(self.config["num_hidden_layers"])
        self._files = {}
        self.tensor_file = {}
        index_path = os.path.join(self.dir, "model.safetensors.index.json")
        single = os.path.join(self.dir, "model.safetensors")
        if os.path.isfile(index_path):
            with open(index_path, encoding="utf-8") as f:
                wm = json.load(f)["weight_map"]
            for name, fn in wm.items():
                self.tensor_file[name] = os.path.join(self.dir, fn)
        elif os.path.isfile(single):
            for name in self._file(single).names():
                self.tensor_file[name] = single
        else:
            raise RefError(f"{ref}: no model.safetensors or index in {self.dir}")

    def _file(self, path):
        if path not in self._files:
            self._files[path] = SafetensorsFile(path)
        return self._files[path]

    def has(self, name):
        return name in self.tensor_file

    def info(self, name):
        if name not in self.tensor_file:
            raise RefError(f"tensor {name} required but not present in model {self.ref}")
        return self._file(self.tensor_file[name]).info(name)

    def raw(self, name):
        self.info(name)
        return self._file(self.tensor_file[name]).raw(name)


def resolve_model_dir(ref, hf_cache):
    if os.path.isdir(ref):
        return ref
    if "+" in ref:
        raise RefError(f"{ref}: LoRA model references are not supported")
    repo, _, rev = ref.partition("@")
    if hf_cache is None:
        raise RefError(f"{ref}: --hf-cache is required")
    repo_dir = os.path.join(hf_cache, "models--" + repo.replace("/", "--"))
    ref_name = rev or "main"
    ref_file = os.path.join(repo_dir, "refs", ref_name)
    if os.path.isfile(ref_file):
        with open(ref_file, encoding="utf-8") as f:
            commit = f.read().strip()
    elif rev:
        commit = rev
    else:
        raise RefError(f"{ref}: not in the HF cache ({ref_file} missing)")
    d = os.path.join(repo_dir, "snapshots", commit)
    if not os.path.isdir(d):
        raise RefError(f"{ref}: snapshot directory {d} missing")
    return d


# ----------------------------------------------------------------------------
# plans

Source = namedtuple("Source", "model layer_range parameters")
Slice = namedtuple("Slice", "source parameters")

PLAN_KEYS = {"slices", "models", "merge_method", "dtype", "out_dtype", "base_model",
             "parameters", "tokenizer_source", "chat_template"}


def _model_ref(v, where):
    if isinstance(v, dict) and "model" in v:   # {model: {path: ...}} spelled out
        v = v["model"]
        if isinstance(v, dict):
            v = v.get("path")
    if not isinstance(v, str) or not v:
        raise RefError(f"{where}: model must be a string, got {v!r}")
    return v


def _check_setting(v, where):
    """Validate a parameter setting the way mergekit's pydantic types would accept it."""
    def scalar(x):
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    if scalar(v):
        return float(v)
    if isinstance(v, list) and v and all(scalar(e) for e in v):
        return [float(e) for e in v]
    if isinstance(v, list) and all(isinstance(e, dict) for e in v):
        out = []
        for e in v:
            extra = set(e) - {"filter", "value"}
            if extra or "value" not in e:
                raise RefError(f"{where}: bad conditional parameter {e!r}")
            val = e["value"]
            if scalar(val):
                val = float(val)
            elif isinstance(val, list) and val and all(scalar(x) for x in val):
                val = [float(x) for x in val]
            else:
                raise RefError(f"{where}: conditional value must be a number or a "
                               f"list of numbers, got {val!r}")
            filt = e.get("filter")
            if filt is not None and not isinstance(filt, str):
                raise RefError(f"{where}: filter must be a string, got {filt!r}")
            out.append({"filter": filt, "value": val})
        return out
    raise RefError(f"{where}: unsupported parameter setting {v!r}")


def _check_params(p, where):
    if p is None:
        return None
    if not isinstance(p, dict):
        raise RefError(f"{where}: parameters must be a mapping")
    return {k: _check_setting(v, f"{where}.{k}") for k, v in p.items()}


class Plan:
    def __init__(self, path, hf_cache=None, need_models=True):
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
        if not isinstance(raw, dict):
            raise RefError(f"{path}: not a mapping")
        unknown = set(raw) - PLAN_KEYS
        if unknown:
            raise RefError(f"{path}: unsupported keys {sorted(unknown)}")
        if raw.get("merge_method") != "passthrough":
            raise RefError(f"{path}: merge_method must be passthrough, "
                           f"got {raw.get('merge_method')!r}")
        if raw.get("tokenizer_source") is not None:
            raise RefError(f"{path}: tokenizer_source rewrites the embeddings; "
                           "not covered by this reference")
        self.path = path
        self.hf_cache = hf_cache
        self.dtype = self._dtype(raw.get("dtype"), "dtype")
        self.out_dtype = self._dtype(raw.get("out_dtype"), "out_dtype")
        self.base_model = (_model_ref(raw["base_model"], "base_model")
                           if raw.get("base_model") is not None else None)
        self.parameters = _check_params(raw.get("parameters"), "parameters")
        self._models = {}
        has_slices, has_models = bool(raw.get("slices")), bool(raw.get("models"))
        if has_slices == has_models:
            raise RefError(f"{path}: exactly one of 'slices' or 'models' must be present")

        self.slices = []
        self.slices_syntax = has_slices
        if has_slices:
            for i, s in enumerate(raw["slices"]):
                where = f"slices[{i}]"
                if not isinstance(s, dict) or not isinstance(s.get("sources"), list):
                    raise RefError(f"{where}: needs a 'sources' list")
                extra = set(s) - {"sources", "parameters", "base_model", "residual_weight"}
                if extra:
                    raise RefError(f"{where}: unsupported keys {sorted(extra)}")
                if len(s["sources"]) != 1:
                    raise RefError(f"{where}: passthrough takes exactly one source per "
                                   f"slice, got {len(s['sources'])}")
                src = s["sources"][0]
                extra = set(src) - {"model", "layer_range", "parameters"}
                if extra:
                    raise RefError(f"{where}.sources[0]: unsupported keys {sorted(extra)}")
                lr = src.get("layer_range")
                if (not isinstance(lr, list) or len(lr) != 2 or
                        not all(isinstance(x, int) and not isinstance(x, bool) for x in lr)):
                    raise RefError(f"{where}: layer_range must be [a, b], got {lr!r}")
                self.slices.append(Slice(
                    Source(_model_ref(src.get("model"), where), (lr[0], lr[1]),
                           _check_params(src.get("parameters"), f"{where}.sources[0].parameters")),
                    _check_params(s.get("parameters"), f"{where}.parameters")))
        else:
            models = raw["models"]
            entries = []
            for i, m in enumerate(models):
                if not isinstance(m, dict) or set(m) - {"model", "parameters"}:
                    raise RefError(f"models[{i}]: expected {{model, parameters}}")
                entries.append((_model_ref(m.get("model"), f"models[{i}]"),
                                _check_params(m.get("parameters"), f"models[{i}].parameters")))
            refs = [e[0] for e in entries]
            if self.base_model and self.base_model not in refs:
                entries.append((self.base_model, None))   # mergekit adds the base model
            if len(entries) != 1:
                raise RefError(f"{path}: passthrough takes exactly one model, "
                               f"got {len(entries)}")
            ref, params = entries[0]
            n = self.model(ref).num_layers if need_models else None
            if n is None:
                raise RefError(f"{path}: 'models' syntax needs --hf-cache")
            self.slices.append(Slice(Source(ref, (0, n), params), None))

        for i, s in enumerate(self.slices):
            a, b = s.source.layer_range
            if not 0 <= a <= b:
                raise RefError(f"slices[{i}]: bad layer_range [{a}, {b}]")
            if need_models:
                m = self.model(s.source.model)
                if b > m.num_layers:
                    raise RefError(f"slices[{i}]: layer_range [{a}, {b}] beyond the "
                                   f"{m.num_layers} layers of {s.source.model}")
        if need_models:
            archs = {self.model(r).arch for r in self.referenced_models()}
            if len(archs) != 1:
                raise RefError(f"{path}: models of different architectures {sorted(archs)}")

    @staticmethod
    def _dtype(v, key):
        if v is None:
            return None
        name = v[len("torch."):] if isinstance(v, str) and v.startswith("torch.") else v
        if name not in PLAN_DTYPES:
            raise RefError(f"{key}: unsupported dtype {v!r}")
        return PLAN_DTYPES[name]

    def model(self, ref):
        if ref not in self._models:
            self._models[ref] = SourceModel(ref, self.hf_cache)
        return self._models[ref]

    def referenced_models(self):
        out = []
        for r in ([self.base_model] if self.base_model else []) + \
                 [s.source.model for s in self.slices]:
            if r not in out:
                out.append(r)
        return out

    def total_layers(self):
        return sum(s.source.layer_range[1] - s.source.layer_range[0] for s in self.slices)

    def layer_roles(self, ref=None):
        if ref is None:
            ref = self.slices[0].source.model
        return ARCH_LAYER_ROLES[self.model(ref).arch]


def evaluate_setting(tensor_name, setting, t):
    """mergekit.config.evaluate_setting, for already-validated settings."""
    if isinstance(setting, float):
        return setting
    if all(isinstance(e, float) for e in setting):
        scaled = t * (len(setting) - 1)
        i0 = int(scaled)
        i1 = min(len(setting) - 1, i0 + 1)
        frac = scaled - i0
        return (1 - frac) * setting[i0] + frac * setting[i1]
    for cond in setting:
        f = cond["filter"]
        if f is None or f == "*" or (tensor_name and f in tensor_name):
            return evaluate_setting(tensor_name, cond["value"], t)
    return None


def lookup_param(plan, name, slc, tensor_name, t):
    """Source parameters, then slice parameters, then global; first non-None wins."""
    for params in (slc.source.parameters, slc.parameters, plan.parameters):
        if params and name in params:
            v = evaluate_setting(tensor_name, params[name], t)
            if v is not None:
                return v
    return None


# ----------------------------------------------------------------------------
# the merge plan, tensor by tensor

Entry = namedtuple("Entry", "out_name model src_name scale")


def plan_entries(plan):
    """Output tensors in mergekit's planning order (the order of its save tasks)."""
    first, last = plan.slices[0], plan.slices[-1]
    out = [Entry(EMBED, first.source.model, EMBED,
                 lookup_param(plan, "scale", first, EMBED, 0))]
    k = 0
    for slc in plan.slices:
        a, b = slc.source.layer_range
        n = b - a
        roles = plan.layer_roles(slc.source.model)
        for idx in range(n):
            t = idx / (n - 1) if n > 1 else 1
            for role in roles:
                src = f"model.layers.{a + idx}.{role}"
                out.append(Entry(f"model.layers.{k}.{role}", slc.source.model, src,
                                 lookup_param(plan, "scale", slc, src, t)))
            k += 1
    m = last.source.model
    out.append(Entry(NORM, m, NORM, lookup_param(plan, "scale", last, NORM, 0)))
    if plan.model(m).has(LM_HEAD):
        out.append(Entry(LM_HEAD, m, LM_HEAD, lookup_param(plan, "scale", last, LM_HEAD, 0)))
    return out


def entry_info(plan, e):
    """(dtype, shape) of the output tensor."""
    dtype, shape = plan.model(e.model).info(e.src_name)
    if plan.dtype:
        dtype = plan.dtype
    if plan.out_dtype:
        dtype = plan.out_dtype
    return dtype, shape


def entry_value(plan, e):
    """(dtype, shape, bytes): LoadTensor cast, passthrough scale, SaveTensor cast."""
    m = plan.model(e.model)
    dtype, shape = m.info(e.src_name)
    data = m.raw(e.src_name)
    if plan.dtype and plan.dtype != dtype:
        data, dtype = cast(data, dtype, plan.dtype), plan.dtype
    if e.scale is not None:
        data = scale_bytes(data, dtype, e.scale)
    if plan.out_dtype and plan.out_dtype != dtype:
        data, dtype = cast(data, dtype, plan.out_dtype), plan.out_dtype
    return dtype, shape, data


# ----------------------------------------------------------------------------
# write order
#
# mergekit does not hand tensors to its writer in planning order: its Executor runs
# networkx.lexicographical_topological_sort over the task graph with the key
# (group_label or "", -priority), ties broken by the node's position in the graph
# (first appearance in the edge list that build_schedule collects while draining a
# python set of TaskHandles, whose hash is the task's index in the TaskUniverse).
# For passthrough the group label of LoadTensor/GatherTensors/merge task/SaveTensor is
# the source tensor name, so the writes come grouped by source tensor name in string
# order (lm_head, embed_tokens, layers.0, layers.1, layers.10, ..., norm).  The
# simulation below rebuilds the same graph (same task identities and dedup, same
# indices, same set operations) to get the exact tie-breaks.

PRIO = {"W": 10000, "L": -1000, "G": -10, "P": 0, "S": 1000, "F": 0}


class _Handle:
    __slots__ = ("idx",)

    def __init__(self, idx):
        self.idx = idx

    def __hash__(self):
        return self.idx

    def __eq__(self, other):
        return isinstance(other, _Handle) and other.idx == self.idx


def mergekit_order(entries):
    """Indices into `entries` in the order mergekit's executor saves them."""
    keys, index, args, group = [], {}, [], []

    def add(key, deps, label=""):
        if key in index:
            return index[key]
        i = index[key] = len(keys)
        keys.append(key)
        group.append(label)
        args.append(None)
        args[i] = [d() for d in deps]   # arguments are added depth-first, in order
        return i

    def save_task(e):
        load = ("L", e.model, e.src_name)
        gather = ("G", e.model, e.src_name)
        # python float equality, as pydantic task equality would compare it
        merge = ("P", e.model, e.src_name, e.scale)
        g = e.src_name   # LoadTensor's label (resolved name), inherited downstream
        return add(("S", e.out_name), [
            lambda: add(("W",), []),
            lambda: add(merge, [lambda: add(gather, [lambda: add(load, [], g)], g)], g)],
            g)

    save_idx = [save_task(e) for e in entries]
    final_idx = add(("F",), [lambda: add(("W",), [])] + [lambda i=i: i for i in save_idx])
    targets = [_Handle(i) for i in save_idx + [final_idx]]

    explored, to_explore, edges = set(), set(targets), []
    while to_explore:
        task = to_explore.pop()
        if task in explored:
            continue
        explored.add(task)
        for d in args[task.idx]:
            dh = _Handle(d)
            to_explore.add(dh)
            edges.append((d, task.idx))
    dummy = -1
    edges.extend((dummy, t.idx) for t in targets)

    node_id, succ, indeg = {}, {}, {}
    for u, v in edges:
        for n in (u, v):
            if n not in node_id:
                node_id[n] = len(node_id)
                succ[n] = []
                indeg[n] = 0
        if v not in succ[u]:
            succ[u].append(v)
            indeg[v] += 1

    def label(n):
        if n == dummy:
            return ("", 0)
        return (group[n], -PRIO[keys[n][0]])

    heap = [(label(n), node_id[n], n) for n in node_id if indeg[n] == 0]
    heapq.heapify(heap)
    pos_of_save = {s: p for p, s in enumerate(save_idx)}
    order = []
    while heap:
        _, _, n = heapq.heappop(heap)
        if n in pos_of_save:
            order.append(pos_of_save[n])
        for c in succ[n]:
            indeg[c] -= 1
            if indeg[c] == 0:
                heapq.heappush(heap, (label(c), node_id[c], c))
    if len(order) != len(entries):
        raise RefError("internal: schedule lost tensors")
    return order


def write_order(entries, how):
    if how == "plan":
        return list(range(len(entries)))
    return mergekit_order(entries)


# ----------------------------------------------------------------------------
# the expected checkpoint


class Expected:
    def __init__(self, plan, shard_size, order="mergekit"):
        self.plan = plan
        self.entries = plan_entries(plan)
        names = [e.out_name for e in self.entries]
        if len(set(names)) != len(names):
            raise RefError("duplicate output tensor names")
        self.order = write_order(self.entries, order)
        self.info = {e.out_name: entry_info(plan, e) for e in self.entries}
        # TensorWriter.save_tensor: close the shard when the next tensor overflows it.
        shards, cur, cur_size = [], [], 0
        for i in self.order:
            e = self.entries[i]
            dtype, shape = self.info[e.out_name]
            nbytes = _numel(shape) * DTYPE_SIZE[dtype]
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
        self.total_size = sum(_numel(s) * DTYPE_SIZE[d] for d, s in self.info.values())
        self.by_name = {e.out_name: e for e in self.entries}

    def weight_map(self):
        wm = {}
        for fn, shard in zip(self.shard_names, self.shards):
            for i in shard:
                wm[self.entries[i].out_name] = fn
        return wm

    def index_bytes(self):
        if len(self.shards) == 1:
            return None
        content = {"metadata": {"total_size": self.total_size,
                                "mergekit_version": MERGEKIT_VERSION},
                   "weight_map": self.weight_map()}
        return json.dumps(content, indent=2).encode("utf-8")

    def tensor(self, name):
        return entry_value(self.plan, self.by_name[name])

    def shard_bytes(self, j):
        tensors = []
        for i in self.shards[j]:
            e = self.entries[i]
            dtype, shape, data = entry_value(self.plan, e)
            tensors.append((e.out_name, dtype, shape, data))
        return st_serialize(tensors)

    def config(self):
        p = self.plan
        src = p.base_model or p.slices[0].source.model
        cfg = json.loads(json.dumps(p.model(src).config))
        if p.out_dtype or p.dtype:
            cfg["torch_dtype"] = _plan_dtype_name(p.out_dtype or p.dtype)
        if p.slices_syntax:
            cfg["num_hidden_layers"] = p.total_layers()
        return cfg


def _plan_dtype_name(st):
    return {v: k for k, v in PLAN_DTYPES.items()}[st]


# ----------------------------------------------------------------------------
# commands


def cmd_expect(a):
    plan = Plan(a.plan, a.hf_cache)
    ex = Expected(plan, a.shard_size, a.order)
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


class Diff:
    """Differences grouped by topic; each topic prints its first few lines."""

    PER_TOPIC = 8

    def __init__(self):
        self.topics = {}
        self.count = 0

    def add(self, topic, msg):
        self.count += 1
        self.topics.setdefault(topic, []).append(msg)

    def __bool__(self):
        return self.count > 0

    def print(self):
        first = ["order", "files"]
        topics = sorted(self.topics.items(),
                        key=lambda kv: first.index(kv[0]) if kv[0] in first else len(first))
        for topic, msgs in topics:
            print(f"  [{topic}] {len(msgs)} difference(s)")
            for m in msgs[:self.PER_TOPIC]:
                print("    " + m)
            if len(msgs) > self.PER_TOPIC:
                print(f"    ... and {len(msgs) - self.PER_TOPIC} more")


def _describe_tensor_diff(name, dtype, exp, got):
    size = DTYPE_SIZE[dtype]
    ea = np.frombuffer(exp, dtype=np.uint8).reshape(-1, size)
    ga = np.frombuffer(got, dtype=np.uint8).reshape(-1, size)
    bad = np.nonzero((ea != ga).any(axis=1))[0]
    i = int(bad[0])

    def show(b):
        s = b[::-1].hex()
        if dtype in FLOAT_DTYPES:
            s += f" ({float(to_f32(b, dtype)[0])!r})"
        return s

    return (f"{name}: {len(bad)} of {len(ea)} elements differ; first at element {i}: "
            f"expected {show(exp[i * size:(i + 1) * size])}, "
            f"got {show(got[i * size:(i + 1) * size])}")


def _first_difference(a, b):
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


def _compare_index(ex, exp_dir, d):
    idx_path = os.path.join(exp_dir, "model.safetensors.index.json")
    idx_exp = ex.index_bytes()
    if idx_exp is None:
        if os.path.exists(idx_path):
            d.add("index", "model.safetensors.index.json present but the checkpoint "
                  "has a single shard")
        return None
    if not os.path.isfile(idx_path):
        d.add("index", "model.safetensors.index.json missing")
        return None
    with open(idx_path, "rb") as f:
        idx_got = f.read()
    try:
        got = json.loads(idx_got)
    except ValueError as err:
        d.add("index", f"not JSON ({err})")
        return None
    want = json.loads(idx_exp)
    before = d.count
    if got.get("metadata") != want["metadata"]:
        d.add("index", f"metadata: expected {want['metadata']}, got {got.get('metadata')}")
    gwm, wwm = got.get("weight_map") or {}, want["weight_map"]
    for name in wwm:
        if name not in gwm:
            d.add("index", f"weight_map: {name} missing (expected in {wwm[name]})")
        elif gwm[name] != wwm[name]:
            d.add("index", f"weight_map: {name} in {gwm[name]}, expected {wwm[name]}")
    for name in gwm:
        if name not in wwm:
            d.add("index", f"weight_map: unexpected tensor {name}")
    if set(gwm) == set(wwm) and list(gwm) != list(wwm):
        gl, wl = list(gwm), list(wwm)
        k = _first_difference(gl, wl)
        d.add("index", f"weight_map order differs from the write order at entry {k}: "
              f"expected {wl[k]}, got {gl[k]}")
    if d.count == before and idx_got != idx_exp:
        d.add("index", "file bytes differ from json.dump(indent=2) of the same content")
    return gwm


def _compare_config(ex, exp_dir, d):
    """config.json of the export against ex.config(), key by key (value and type)."""
    cfg_path = os.path.join(exp_dir, "config.json")
    if not os.path.isfile(cfg_path):
        d.add("config.json", "missing")
    else:
        try:
            with open(cfg_path, encoding="utf-8") as f:
                got = json.load(f)
        except ValueError as err:
            got = None
            d.add("config.json", f"not JSON ({err})")
        if got is not None:
            want = ex.config()
            for k in sorted(set(want) | set(got)):
                if k not in got:
                    d.add("config.json", f"key {k} missing (expected {want[k]!r})")
                elif k not in want:
                    d.add("config.json", f"unexpected key {k} = {got[k]!r}")
                elif got[k] != want[k] or type(got[k]) is not type(want[k]):
                    d.add("config.json", f"{k}: expected {want[k]!r}, got {got[k]!r}")


def cmd_compare(a):
    plan = Plan(a.plan, a.hf_cache)
    ex = Expected(plan, a.shard_size, a.order)
    d = Diff()
    exp_dir = a.export

    present = sorted(f for f in os.listdir(exp_dir) if f.endswith(".safetensors"))
    for fn in ex.shard_names:
        if fn not in present:
            d.add("files", f"missing shard file {fn}")
    for fn in present:
        if fn not in ex.shard_names:
            d.add("files", f"unexpected shard file {fn}")

    got_wm = _compare_index(ex, exp_dir, d)

    want_map = ex.weight_map()
    exported_in = {}
    headers = {}
    for fn in present:
        try:
            headers[fn] = SafetensorsFile(os.path.join(exp_dir, fn))
        except (RefError, ValueError, OSError) as err:
            d.add("files", f"{fn}: unreadable ({err})")
            continue
        for name in headers[fn].names():
            exported_in.setdefault(name, fn)

    # which order does the export follow, if not the expected one?
    if got_wm is None and len(present) > 0:
        got_wm = exported_in
    if got_wm is not None and any(want_map.get(n) != f for n, f in got_wm.items()):
        other = "plan" if a.order == "mergekit" else "mergekit"
        alt = Expected(plan, a.shard_size, other)
        if alt.weight_map() == dict(got_wm):
            d.add("order", f"the export's shard assignment matches --order {other}, "
                  f"not --order {a.order}")

    n_ok = 0
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
        tensors_ok = True
        for name in want_names:
            if name not in st.header:
                tensors_ok = False
                continue
            dtype, shape, data = ex.tensor(name)
            gdt, gshape = st.info(name)
            if gdt != dtype or gshape != tuple(shape):
                d.add("tensors", f"{fn}: {name}: expected {dtype}{list(shape)}, "
                      f"got {gdt}{list(gshape)}")
                tensors_ok = False
                continue
            got = st.raw(name)
            if got != data:
                d.add("tensors", _describe_tensor_diff(name, dtype, data, got))
                tensors_ok = False
                continue
            n_ok += 1
        if tensors_ok and set(got_names) == set(want_names):
            with open(os.path.join(exp_dir, fn), "rb") as f:
                got_file = f.read()
            want_file = ex.shard_bytes(j)
            if got_file != want_file:
                wl = struct.unpack("<Q", want_file[:8])[0]
                whdr = want_file[8:8 + wl].decode("utf-8", "replace")
                ghdr = st.header_bytes.decode("utf-8", "replace")
                if whdr != ghdr:
                    k = _first_difference(whdr, ghdr)
                    d.add("file bytes", f"{fn}: header differs at byte {k}: expected "
                          f"...{whdr[max(0, k - 40):k + 80]!r}..., got "
                          f"...{ghdr[max(0, k - 40):k + 80]!r}...")
                else:
                    d.add("file bytes", f"{fn}: file bytes differ ({len(got_file)} vs "
                          f"{len(want_file)} bytes) though header and tensors match")

    _compare_config(ex, exp_dir, d)

    if d:
        print(f"MISMATCH: {a.plan} vs {exp_dir}: {d.count} difference(s) "
              f"({len(ex.entries)} tensors expected in {len(ex.shard_names)} shard(s), "
              f"{n_ok} identical)")
        d.print()
        return 1
    print(f"ok: {n_ok} tensors")
    return 0


def layer_keys(plan, hf_cache_given):
    """Per output layer: (source model, source layer, per-role scale as float32 bytes).

    Two output layers can share one layer node exactly when their keys are equal;
    "no scale" (None) is kept distinct from an explicit 1.0."""
    keys = []
    for slc in plan.slices:
        a, b = slc.source.layer_range
        n = b - a
        roles = plan.layer_roles(slc.source.model) if hf_cache_given else LLAMA_LAYER
        for idx in range(n):
            t = idx / (n - 1) if n > 1 else 1
            scales = tuple(
                lookup_param(plan, "scale", slc, f"model.layers.{a + idx}.{r}", t)
                for r in roles)
            keys.append((slc.source.model, a + idx,
                         tuple(None if v is None else np.float32(v).tobytes()
                               for v in scales)))
    return keys


def cmd_distinct_layers(a):
    plan = Plan(a.plan, a.hf_cache, need_models=a.hf_cache is not None)
    print(len(set(layer_keys(plan, a.hf_cache is not None))))
    return 0


def cmd_models(a):
    """Model ids the plans reference (base_model, slice sources, models), in order."""
    seen = []
    for p in a.plans:
        with open(p, encoding="utf-8") as f:
            raw = yaml.safe_load(f) or {}
        refs = [raw["base_model"]] if raw.get("base_model") else []
        for s in raw.get("slices") or []:
            refs += [src.get("model") for src in s.get("sources") or []]
        refs += [m.get("model") for m in raw.get("models") or []]
        for r in refs:
            r = _model_ref(r, p)
            if r not in seen:
                seen.append(r)
    for r in seen:
        print(r)
    return 0


def cmd_check_show(a):
    """Check `strata show NAME --json` against the plan's layer structure."""
    plan = Plan(a.plan, a.hf_cache)
    keys = layer_keys(plan, True)
    with open(a.show_json, encoding="utf-8") as f:
        shown = json.load(f)
    layers = shown.get("layers") if isinstance(shown, dict) else None
    problems = []
    if not isinstance(layers, list):
        print("MISMATCH: show output has no 'layers' list")
        return 1
    if len(layers) != len(keys):
        problems.append(f"{len(layers)} layers shown, plan has {len(keys)}")
    by_hash = {}
    for i, (entry, key) in enumerate(zip(layers, keys)):
        if entry.get("index", i) != i:
            problems.append(f"entry {i} has index {entry.get('index')}")
        if "source_model" in entry and entry["source_model"] != key[0]:
            problems.append(f"layer {i}: source_model {entry['source_model']!r}, "
                            f"expected {key[0]!r}")
        if "source_layer" in entry and entry["source_layer"] != key[1]:
            problems.append(f"layer {i}: source_layer {entry['source_layer']!r}, "
                            f"expected {key[1]}")
        h = entry.get("layer")
        if h is None:
            problems.append(f"layer {i}: no 'layer' hash")
            continue
        by_hash.setdefault(h, []).append(i)
    # same node <=> same (model, source layer, scales)
    for h, idxs in by_hash.items():
        if len({keys[i] for i in idxs if i < len(keys)}) > 1:
            problems.append(f"layers {idxs} share node {h[:16]} but differ in source "
                            "or scale")
    node_of_key = {}
    for i, key in enumerate(keys[:len(layers)]):
        h = layers[i].get("layer")
        if key in node_of_key and node_of_key[key] != h:
            problems.append(f"layer {i} duplicates an earlier layer's source and scales "
                            f"but got its own node")
        node_of_key.setdefault(key, h)
    if problems:
        print(f"MISMATCH: {len(problems)} problem(s)")
        for p in problems[:20]:
            print("  " + p)
        if len(problems) > 20:
            print(f"  ... and {len(problems) - 20} more")
        return 1
    print(f"ok: {len(layers)} layers, {len(by_hash)} distinct nodes")
    return 0


def cmd_source_blobs(a):
    """Distinct contents among the source tensors the plans read."""
    seen = set()
    refs = set()
    for p in a.plans:
        plan = Plan(p, a.hf_cache)
        for e in plan_entries(plan):
            refs.add((e.model, e.src_name))
            m = plan.model(e.model)
            dtype, shape = m.info(e.src_name)
            h = hashlib.sha256(m.raw(e.src_name)).digest()
            seen.add((dtype, shape, h))
    if a.verbose:
        print(f"{len(refs)} source tensors, {len(seen)} distinct contents", file=sys.stderr)
    print(len(seen))
    return 0


def _json_in(data, dicts):
    if not data.lstrip().startswith(b"{"):
        return False
    try:
        return json.loads(data) in dicts
    except ValueError:
        return False


def cmd_store_blobs(a):
    """Classify every file under a content-addressed blob directory.

    Each blob must be byte-identical to a source tensor the plans read, to one of the
    plan files, or to a non-weight file of a source snapshot, or be JSON equal to a
    plan's expected output config.json.  The
    tensor blobs must be exactly the distinct source tensor contents: a scaled or cast
    copy materialized in the store shows up as an unknown blob."""
    tensors, others, configs = {}, {}, []
    for p in a.plans:
        with open(p, "rb") as f:
            others[hashlib.sha256(f.read()).digest()] = f"plan {os.path.basename(p)}"
        plan = Plan(p, a.hf_cache)
        configs.append(Expected(plan, DEFAULT_SHARD_SIZE, "plan").config())
        for e in plan_entries(plan):
            m = plan.model(e.model)
            tensors.setdefault(hashlib.sha256(m.raw(e.src_name)).digest(),
                               f"{e.model}:{e.src_name}")
        for ref in plan.referenced_models():
            d = plan.model(ref).dir
            for fn in sorted(os.listdir(d)):
                path = os.path.join(d, fn)
                if fn.endswith(".safetensors") or not os.path.isfile(path):
                    continue
                with open(path, "rb") as f:
                    others.setdefault(hashlib.sha256(f.read()).digest(), f"{ref}/{fn}")
    found, unknown, n_other = set(), [], 0
    for root, _, files in os.walk(a.blobs):
        for fn in sorted(files):
            path = os.path.join(root, fn)
            with open(path, "rb") as f:
                data = f.read()
            h = hashlib.sha256(data).digest()
            if h in tensors:
                found.add(h)
            elif h in others or _json_in(data, configs):
                n_other += 1
            else:
                unknown.append(f"{os.path.relpath(path, a.blobs)} ({len(data)} bytes)")
    missing = [tensors[h] for h in tensors if h not in found]
    print(f"{len(found)} tensor blobs (expected {len(tensors)} distinct source tensors), "
          f"{n_other} plan/config blobs, {len(unknown)} unknown blobs")
    for u in unknown[:10]:
        print(f"  unknown blob {u}")
    for m in missing[:10]:
        print(f"  no blob holds source tensor {m}")
    return 0 if not unknown and not missing else 1


def cmd_order(a):
    plan = Plan(a.plan, a.hf_cache)
    ex = Expected(plan, a.shard_size, a.order)
    for fn, shard in zip(ex.shard_names, ex.shards):
        for i in shard:
            e = ex.entries[i]
            print(f"{fn}\t{e.out_name}\t{e.model}:{e.src_name}\t"
                  f"scale={e.scale!r}")
    return 0

# ----------------------------------------------------------------------------
# self-checks


def _synth_model(cache, repo, arch, n_layers, seed, dtype="BF16", lm_head=True,
                 sharded=False, hidden=8, inter=16, vocab=32):
    """A tiny random model in HF-cache layout (for selftest)."""
    rng = np.random.default_rng(seed)
    repo_dir = os.path.join(cache, "models--" + repo.replace("/", "--"))
    commit = hashlib.sha1(f"{repo}:{seed}".encode()).hexdigest()
    snap = os.path.join(repo_dir, "snapshots", commit)
    os.makedirs(snap, exist_ok=True)
    os.makedirs(os.path.join(repo_dir, "refs"), exist_ok=True)
    with open(os.path.join(repo_dir, "refs", "main"), "w", encoding="utf-8") as f:
        f.write(commit)
    kv = hidden // 2
    shapes = {"input_layernorm.weight": [hidden], "post_attention_layernorm.weight": [hidden],
              "self_attn.q_proj.weight": [hidden, hidden],
              "self_attn.k_proj.weight": [kv, hidden], "self_attn.v_proj.weight": [kv, hidden],
              "self_attn.o_proj.weight": [hidden, hidden],
              "mlp.up_proj.weight": [inter, hidden], "mlp.gate_proj.weight": [inter, hidden],
              "mlp.down_proj.weight": [hidden, inter], "self_attn.q_proj.bias": [hidden],
              "self_attn.k_proj.bias": [kv], "self_attn.v_proj.bias": [kv]}
    names = [(EMBED, [vocab, hidden])]
    for i in range(n_layers):
        names += [(f"model.layers.{i}.{r}", shapes[r]) for r in ARCH_LAYER_ROLES[arch]]
    names.append((NORM, [hidden]))
    if lm_head:
        names.append((LM_HEAD, [vocab, hidden]))
    tensors = [(n, dtype, sh, from_f32(rng.standard_normal(_numel(sh)).astype(np.float32),
                                       dtype)) for n, sh in names]
    if sharded:
        parts = [tensors[:len(tensors) // 2], tensors[len(tensors) // 2:]]
        wm = {}
        for k, part in enumerate(parts):
            fn = f"model-{k + 1:05d}-of-00002.safetensors"
            with open(os.path.join(snap, fn), "wb") as f:
                f.write(st_serialize(part))
            wm.update({t[0]: fn for t in part})
        with open(os.path.join(snap, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": wm}, f)
    else:
        with open(os.path.join(snap, "model.safetensors"), "wb") as f:
            f.write(st_serialize(tensors))
    cfg = {"architectures": [arch], "hidden_size": hidden, "intermediate_size": inter,
           "num_hidden_layers": n_layers, "vocab_size": vocab,
           "torch_dtype": _plan_dtype_name(dtype), "tie_word_embeddings": not lm_head}
    with open(os.path.join(snap, "config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2)


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

    def bits_bf16(v):
        return np.frombuffer(from_f32(np.array([v], np.float32), "BF16"), "<u2")[0]

    def f32(u):
        return np.array([u], np.uint32).view(np.float32)[0]

    ok(bits_bf16(1.0) == 0x3F80, "bf16: 1.0")
    ok(bits_bf16(f32(0x3F808000)) == 0x3F80, "bf16: tie rounds to even (down)")
    ok(bits_bf16(f32(0x3F818000)) == 0x3F82, "bf16: tie rounds to even (up)")
    ok(bits_bf16(f32(0x3F808001)) == 0x3F81, "bf16: above half rounds up")
    ok(bits_bf16(float("nan")) == 0x7FC0, "bf16: NaN -> 0x7FC0")
    ok(bits_bf16(f32(0x7F7FFFFF)) == 0x7F80, "bf16: max float rounds to inf")
    ok(bits_bf16(-0.0) == 0x8000, "bf16: -0.0 kept")
    ok(np.frombuffer(from_f32(np.array([70000.0], np.float32), "F16"), "<u2")[0] == 0x7C00,
       "f16: overflow to inf")
    neg = from_f32(np.array([-1.5], np.float32), "BF16")
    ok(scale_bytes(neg, "BF16", 0.0) == b"\x00\x80", "scale 0 keeps the sign (-0.0)")
    ok(evaluate_setting("x", [0.5, -2.0], 0.5) == -0.75, "gradient at t=0.5")
    ok(evaluate_setting("a.o_proj.weight", [{"filter": "o_proj", "value": 0.0},
                                            {"filter": None, "value": 1.0}], 0) == 0.0,
       "conditional filter")
    ok(evaluate_setting("a.q_proj.weight", [{"filter": "o_proj", "value": 0.0}], 0) is None,
       "conditional without match is None")
    blob = st_serialize([("a", "BF16", [1], b"\x80\x3f"), ("b", "F32", [], b"\x00\x00\x80\x3f")])
    hdr = ('{"__metadata__":{"format":"pt"},"b":{"dtype":"F32","shape":[],'
           '"data_offsets":[0,4]},"a":{"dtype":"BF16","shape":[1],"data_offsets":[4,6]}}')
    hdr += " " * ((8 - len(hdr) % 8) % 8)
    ok(blob == struct.pack("<Q", len(hdr)) + hdr.encode() + b"\x00\x00\x80\x3f\x80\x3f",
       "safetensors layout: dtype rank desc, then name; padded header")

    tmp = tempfile.mkdtemp(prefix="mergekit_ref_selftest.")
    try:
        cache = os.path.join(tmp, "hf")
        _synth_model(cache, "t/mistral4", "MistralForCausalLM", 4, 1)
        _synth_model(cache, "t/llama4", "LlamaForCausalLM", 4, 2, dtype="F32",
                     lm_head=False, sharded=True)
        _synth_model(cache, "t/qwen4", "Qwen2ForCausalLM", 4, 3, dtype="F16")
        plans = {
            "dus": "slices:\n- sources:\n  - {model: t/mistral4, layer_range: [0, 3]}\n"
                   "- sources:\n  - model: t/mistral4\n    layer_range: [1, 4]\n"
                   "    parameters:\n      scale:\n      - {filter: o_proj, value: 0.0}\n"
                   "      - {filter: down_proj, value: [0.5, -2.0]}\n      - {value: 1.0}\n"
                   "merge_method: passthrough\ndtype: bfloat16\n",
            "cast": "slices:\n- sources:\n  - {model: t/llama4, layer_range: [2, 4]}\n"
                    "- sources:\n  - {model: t/llama4, layer_range: [0, 2]}\n"
                    "  parameters: {scale: [0.1, 3.0]}\n"
                    "merge_method: passthrough\ndtype: bfloat16\nout_dtype: float16\n"
                    "parameters:\n  scale:\n  - {filter: layernorm, value: 2.0}\n",
            "models": "models:\n- model: t/qwen4\n  parameters:\n    scale:\n"
                      "    - {filter: bias, value: [1.0, 0.3333]}\nmerge_method: passthrough\n",
        }
        counts = {"dus": 1 + 6 * 9 + 2, "cast": 1 + 4 * 9 + 1, "models": 1 + 4 * 12 + 2}
        for name, text in plans.items():
            plan_path = os.path.join(tmp, name + ".yml")
            with open(plan_path, "w", encoding="utf-8") as f:
                f.write(text)
            for shard in (DEFAULT_SHARD_SIZE, 1500):
                out = os.path.join(tmp, f"out-{name}-{shard}")
                common = [plan_path, "--hf-cache", cache, "--shard-size", str(shard)]
                with contextlib.redirect_stdout(io.StringIO()):
                    rc1 = main(["expect"] + common + ["--out-dir", out])
                buf = io.StringIO()
                with contextlib.redirect_stdout(buf):
                    rc2 = main(["compare"] + common + ["--export", out])
                ok(rc1 == 0 and rc2 == 0 and
                   buf.getvalue().strip() == f"ok: {counts[name]} tensors",
                   f"{name} (shard size {shard}): expect, then compare passes")
                files = sorted(f for f in os.listdir(out) if f.endswith(".safetensors"))
                ok((len(files) == 1) == (shard == DEFAULT_SHARD_SIZE),
                   f"{name} (shard size {shard}): {len(files)} shard file(s)")
                victim = os.path.join(out, files[-1])
                with open(victim, "rb") as f:
                    data = bytearray(f.read())
                data[-1] ^= 0x01
                with open(victim, "wb") as f:
                    f.write(data)
                with contextlib.redirect_stdout(io.StringIO()):
                    rc3 = main(["compare"] + common + ["--export", out])
                ok(rc3 == 1, f"{name} (shard size {shard}): one flipped bit is caught")
        # spot values of the dus plan: out layer 5 = src layer 3, t=1 -> scale -2.0
        plan = Plan(os.path.join(tmp, "dus.yml"), cache)
        ex = Expected(plan, DEFAULT_SHARD_SIZE)
        src = plan.model("t/mistral4")
        _, _, down = ex.tensor("model.layers.5.mlp.down_proj.weight")
        want = to_f32(src.raw("model.layers.3.mlp.down_proj.weight"), "BF16") * -2
        ok(np.array_equal(to_f32(down, "BF16"), want), "dus: gradient end point scale -2")
        _, _, o = ex.tensor("model.layers.4.self_attn.o_proj.weight")
        ok(not np.any(to_f32(o, "BF16")), "dus: o_proj scaled to zero")
        _, _, q = ex.tensor("model.layers.3.self_attn.q_proj.weight")
        ok(q == src.raw("model.layers.1.self_attn.q_proj.weight"), "dus: scale 1.0 is identity")
        ok(len(set(layer_keys(plan, True))) == 6, "dus: 6 distinct layer nodes")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"selftest: {len(failures)} failure(s)")
    return 1 if failures else 0


def cmd_verify_order(a):
    """Cross-check mergekit_order against mergekit's own graph.py scheduler.

    Needs networkx and a mergekit checkout; torch, tqdm and pydantic are stubbed
    (the scheduler only needs task identity, priority and group labels)."""
    import importlib.util
    import random
    import types
    from dataclasses import dataclass
    from typing import Any, Tuple

    for mod in ("torch", "tqdm", "pydantic", "typing_extensions"):
        try:
            __import__(mod)
        except ImportError:
            m = types.ModuleType(mod)
            if mod == "torch":
                m.device = lambda s: s
                m.Tensor = object
            elif mod == "tqdm":
                m.tqdm = lambda x, **kw: x
            elif mod == "pydantic":
                class BaseModel:
                    def __init_subclass__(cls, **kw):
                        pass
                m.BaseModel = BaseModel
            else:
                import typing
                m.Generic, m.TypeVar = typing.Generic, typing.TypeVar
            sys.modules[mod] = m
    spec = importlib.util.spec_from_file_location("mk_graph", a.mergekit_graph)
    g = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(g)

    @dataclass(frozen=True)
    class Load:
        model: str
        tensor: str
        def arguments(self): return {}
        def priority(self): return -1000
        def group_label(self): return self.tensor

    @dataclass(frozen=True)
    class Gather:
        model: str
        name: str
        def arguments(self): return {f"{self.model}:{self.name}": Load(self.model, self.name)}
        def priority(self): return -10
        def group_label(self): return max(t.group_label() for t in self.arguments().values())

    @dataclass(frozen=True)
    class Merge:
        gather: Any
        scale: Any
        def arguments(self): return {"tensors": self.gather}
        def priority(self): return 0
        def group_label(self): return self.gather.group_label()

    @dataclass(frozen=True)
    class Writer:
        def arguments(self): return {}
        def priority(self): return 10000
        def group_label(self): return None

    @dataclass(frozen=True)
    class Save:
        name: str
        task: Any
        writer: Any
        def arguments(self): return {"writer": self.writer, "tensor": self.task}
        def priority(self): return 1000
        def group_label(self): return self.task.group_label()

    @dataclass(frozen=True)
    class Final:
        saves: Tuple
        writer: Any
        def arguments(self):
            return {"writer": self.writer,
                    **{f"_unused_{i}": t for i, t in enumerate(self.saves)}}
        def priority(self): return 0
        def group_label(self): return None

    def real(entries):
        w = Writer()
        saves = [Save(e.out_name, Merge(Gather(e.model, e.src_name), e.scale), w)
                 for e in entries]
        targets = saves + [Final(tuple(saves), w)]
        uni = g.TaskUniverse(targets)
        handles = [uni.add_task(t) for t in targets]
        pos = {s.name: i for i, s in enumerate(saves)}
        return [pos[h.task().name] for h in g.build_schedule(handles, {}).tasks
                if isinstance(h.task(), Save)]

    cases = []
    for p in a.plans:
        cases.append((p, plan_entries(Plan(p, a.hf_cache))))
    rng = random.Random(a.seed)
    for trial in range(a.random):
        nl = rng.choice([4, 12, 32, 40, 80])
        models = ["a/x", "b/y"][:rng.choice([1, 2])]
        entries = [Entry(EMBED, models[0], EMBED, None)]
        k = 0
        for _ in range(rng.randint(1, 12)):
            m = rng.choice(models)
            lo = rng.randrange(nl)
            hi = rng.randint(lo + 1, min(nl, lo + rng.choice([1, 4, 8, 24, nl])))
            sc = rng.choice([None, None, 0.0, 1.0, 0.5])
            for idx in range(hi - lo):
                for role in LLAMA_LAYER:
                    v = sc if (sc is None or "o_proj" in role or rng.random() < 0.3) else None
                    entries.append(Entry(f"model.layers.{k}.{role}", m,
                                         f"model.layers.{lo + idx}.{role}", v))
                k += 1
        entries.append(Entry(NORM, models[-1], NORM, None))
        if rng.random() < 0.7:
            entries.append(Entry(LM_HEAD, models[-1], LM_HEAD, rng.choice([None, 1.0])))
        cases.append((f"random plan #{trial}", entries))
    bad = 0
    for label, entries in cases:
        if mergekit_order(entries) != real(entries):
            bad += 1
            print(f"DIFFERENT: {label}")
    print(f"verify-order: {len(cases) - bad} of {len(cases)} orders identical")
    return 1 if bad else 0


def main(argv=None):
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p, cache_required=True):
        p.add_argument("plan")
        p.add_argument("--hf-cache", required=cache_required,
                       help="HF hub cache dir (models--ORG--NAME/...)")

    def writer_opts(p):
        p.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE,
                       help=f"max shard size in bytes (default {DEFAULT_SHARD_SIZE})")
        p.add_argument("--order", choices=["mergekit", "plan"], default="mergekit",
                       help="tensor write order (default: mergekit's executor order)")

    p = sub.add_parser("expect", help="write the expected checkpoint")
    common(p)
    writer_opts(p)
    p.add_argument("--out-dir", required=True)
    p.set_defaults(fn=cmd_expect)

    p = sub.add_parser("compare", help="compare an exported checkpoint")
    common(p)
    writer_opts(p)
    p.add_argument("--export", required=True, help="directory exported by strata")
    p.set_defaults(fn=cmd_compare)

    p = sub.add_parser("distinct-layers", help="number of distinct layer nodes")
    common(p, cache_required=False)
    p.set_defaults(fn=cmd_distinct_layers)

    p = sub.add_parser("store-blobs", help="classify the blobs of a strata store")
    p.add_argument("plans", nargs="+")
    p.add_argument("--hf-cache", required=True)
    p.add_argument("--blobs", required=True, help="the store's blob directory")
    p.set_defaults(fn=cmd_store_blobs)

    p = sub.add_parser("models", help="model ids the plans reference")
    p.add_argument("plans", nargs="+")
    p.set_defaults(fn=cmd_models)

    p = sub.add_parser("check-show", help="check `strata show --json` layer nodes")
    common(p)
    p.add_argument("--show-json", required=True)
    p.set_defaults(fn=cmd_check_show)

    p = sub.add_parser("source-blobs", help="distinct source tensor contents read")
    p.add_argument("plans", nargs="+")
    p.add_argument("--hf-cache", required=True)
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(fn=cmd_source_blobs)

    p = sub.add_parser("order", help="print shard / write order")
    common(p)
    writer_opts(p)
    p.set_defaults(fn=cmd_order)

    p = sub.add_parser("selftest", help="check this reference on a synthetic HF cache")
    p.set_defaults(fn=cmd_selftest)

    p = sub.add_parser("verify-order",
                       help="cross-check the write order with mergekit's graph.py")
    p.add_argument("--mergekit-graph", required=True, help="path to mergekit/graph.py")
    p.add_argument("plans", nargs="*")
    p.add_argument("--hf-cache")
    p.add_argument("--random", type=int, default=200, help="random plans to try")
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(fn=cmd_verify_order)

    a = ap.parse_args(argv)
    try:
        return a.fn(a)
    except RefError as err:
        print(f"mergekit_ref: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
