#!/usr/bin/python3
"""A small independent GGUF v3 reader, written from the GGUF specification (ggml's docs/gguf.md).

  gguf_read.py FILE.gguf      prints {"version", "kv": {key: value}, "tensors": [{name, type, ne, offset}]}
                              as JSON (string arrays of more than 8 entries are summarized)

As a module: read(path) -> (kv dict, tensor list, data start offset).
"""

import json
import struct
import sys

SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


class Reader:
    def __init__(self, data):
        self.d, self.p = data, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.d, self.p)[0]
        self.p += struct.calcsize(fmt)
        return v

    def string(self):
        n = self.take("<Q")
        s = self.d[self.p:self.p + n]
        self.p += n
        return s.decode("utf-8")

    def value(self, t):
        if t in SCALARS:
            return self.take(SCALARS[t])
        if t == 8:
            return self.string()
        if t == 9:
            et, n = self.take("<I"), self.take("<Q")
            return [self.value(et) for _ in range(n)]
        raise ValueError("unknown GGUF value type %d" % t)


def read(path):
    with open(path, "rb") as f:
        data = f.read()
    r = Reader(data)
    if data[:4] != b"GGUF":
        raise ValueError("bad magic")
    r.p = 4
    version, n_tensors, n_kv = r.take("<I"), r.take("<Q"), r.take("<Q")
    kv = {"__version__": version}
    for _ in range(n_kv):
        k = r.string()
        kv[k] = r.value(r.take("<I"))
    tensors = []
    for _ in range(n_tensors):
        name = r.string()
        nd = r.take("<I")
        ne = [r.take("<Q") for _ in range(nd)]
        tensors.append({"name": name, "type": r.take("<I"), "ne": ne, "offset": r.take("<Q")})
    align = kv.get("general.alignment", 32)
    start = (r.p + align - 1) // align * align
    return kv, tensors, start, data


def main():
    kv, tensors, start, _ = read(sys.argv[1])
    summary = {k: (v if not (isinstance(v, list) and len(v) > 8) else "[%d entries]" % len(v)) for k, v in kv.items()}
    print(json.dumps({"kv": summary, "tensors": tensors, "data_start": start}, indent=1))


if __name__ == "__main__":
    main()
