#!/usr/bin/python3
"""Rewrites a GGUF file's header (read with gguf_read.py) to make hostile or unusual files for tests.

  gguf_mutate.py IN OUT EDIT...

EDITs, applied in order:
  kv:KEY=u32:N | kv:KEY=str:S | kv:KEY=f32:X   set (or add) a key
  drop-kv:KEY                                  remove a key
  type:TENSOR=ID                               set a tensor's GGML type id (its data is left as it is)
  offset:TENSOR=OTHER                          give TENSOR the data offset of OTHER (overlapping data)
  offset:TENSOR=+N                             move TENSOR's data offset by N bytes
  rename:TENSOR=NEW                            rename a tensor
  drop:TENSOR                                  remove a tensor's info (its data stays, unreferenced)

The data section is copied as it is, at the same offset from its (re-aligned) start.
"""

import struct
import sys

sys.path.insert(0, __import__("os").path.dirname(__file__))
import gguf_read  # noqa: E402

TYPES = {"u32": (4, "<I"), "str": (8, None), "f32": (6, "<f")}


def string(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def value(t, v):
    if t == 8:
        return string(v)
    if t == 9:
        raise ValueError("arrays are copied raw")
    return struct.pack(gguf_read.SCALARS[t], v)


def main():
    src, dst, edits = sys.argv[1], sys.argv[2], sys.argv[3:]
    kv, tensors, start, data = gguf_read.read(src)
    version = kv.pop("__version__")
    # Keep each key's original bytes so arrays survive unchanged.
    r = gguf_read.Reader(data)
    r.p = 24
    raw_kv = {}
    for _ in range(len(kv)):
        k = r.string()
        begin = r.p
        r.value(r.take("<I"))
        raw_kv[k] = data[begin:r.p]
    for e in edits:
        op, _, arg = e.partition(":")
        name, _, val = arg.partition("=")
        t = next((x for x in tensors if x["name"] == name), None)
        if op == "kv":
            kind, _, v = val.partition(":")
            tid, fmt = TYPES[kind]
            raw_kv[name] = struct.pack("<I", tid) + (string(v) if kind == "str" else struct.pack(fmt, float(v) if kind == "f32" else int(v)))
        elif op == "drop-kv":
            del raw_kv[name]
        elif op == "type":
            t["type"] = int(val)
        elif op == "offset":
            t["offset"] = t["offset"] + int(val[1:]) if val.startswith("+") else next(x for x in tensors if x["name"] == val)["offset"]
        elif op == "rename":
            t["name"] = val
        elif op == "drop":
            tensors.remove(t)
        else:
            raise SystemExit("unknown edit " + e)
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(raw_kv))
    for k, v in raw_kv.items():
        out += string(k) + v
    for t in tensors:
        out += string(t["name"]) + struct.pack("<I", len(t["ne"])) + b"".join(struct.pack("<Q", n) for n in t["ne"])
        out += struct.pack("<IQ", t["type"], t["offset"])
    align = kv.get("general.alignment", 32)
    out += b"\0" * ((align - len(out) % align) % align)
    with open(dst, "wb") as f:
        f.write(out + data[start:])


if __name__ == "__main__":
    main()
