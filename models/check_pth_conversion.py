#!/usr/bin/env python3
"""Checks xtask's .pth -> safetensors conversion against Python's own pickle machine.

Independent of xtask's Rust reader: Python's pickle VM parses the legacy torch.save file,
with find_class restricted to the three names a state dict needs (nothing else can be
loaded), and every tensor is compared value for value with the stored safetensors.
Needs only the standard library.

usage: check_pth_conversion.py WHEEL_OR_PTH MODEL_SAFETENSORS
"""
import collections
import io
import json
import pickle
import struct
import sys
import zipfile

ELEMENT = {"FloatStorage": ("f", 4, "F32"), "LongStorage": ("q", 8, "I64"),
           "DoubleStorage": ("d", 8, "F64"), "IntStorage": ("i", 4, "I32")}


class Storage:
    def __init__(self, kind):
        self.kind = kind


def rebuild_tensor_v2(storage, offset, size, stride, *rest):
    return ("tensor", storage, offset, tuple(size), tuple(stride))


class RestrictedUnpickler(pickle.Unpickler):
    allowed = {("collections", "OrderedDict"): collections.OrderedDict,
               ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor_v2}

    def find_class(self, module, name):
        if (module, name) in self.allowed:
            return self.allowed[(module, name)]
        if module == "torch" and name in ELEMENT:
            return Storage(name)
        raise pickle.UnpicklingError(f"refusing {module}.{name}")

    def persistent_load(self, pid):
        _, storage_type, key, _location, _numel = pid[:5]
        return (key, storage_type.kind)


def load_legacy(data):
    f = io.BytesIO(data)
    for _ in range(3):  # magic number, protocol version, sys info
        RestrictedUnpickler(f).load()
    state = RestrictedUnpickler(f).load()
    keys = RestrictedUnpickler(f).load()
    kinds = {t[1][0]: t[1][1] for t in state.values()}
    storages = {}
    for key in keys:
        (numel,) = struct.unpack("<q", f.read(8))
        code, size, _ = ELEMENT[kinds[key]]
        storages[key] = struct.unpack(f"<{numel}{code}", f.read(numel * size))
    tensors = {}
    for name, (_, (key, kind), offset, shape, stride) in state.items():
        values = []
        def walk(dim, pos):
            if dim == len(shape):
                values.append(storages[key][pos])
                return
            for i in range(shape[dim]):
                walk(dim + 1, pos + i * stride[dim])
        walk(0, offset)
        tensors[name] = (ELEMENT[kind][2], list(shape), values)
    return tensors


def load_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    header.pop("__metadata__", None)
    out = {}
    for name, info in header.items():
        code = {"F32": "f", "I64": "q", "F64": "d", "I32": "i"}[info["dtype"]]
        start, end = info["data_offsets"]
        count = (end - start) // struct.calcsize(code)
        out[name] = (info["dtype"], info["shape"], list(struct.unpack(f"<{count}{code}", data[start:end])))
    return out


def main():
    source, converted = sys.argv[1], sys.argv[2]
    if source.endswith(".whl"):
        with zipfile.ZipFile(source) as wheel:
            name = next(n for n in wheel.namelist() if n.endswith(".pth"))
            raw = wheel.read(name)
    else:
        raw = open(source, "rb").read()
    expected = load_legacy(raw)
    actual = load_safetensors(converted)
    assert set(expected) == set(actual), set(expected) ^ set(actual)
    for name, (dtype, shape, values) in expected.items():
        a_dtype, a_shape, a_values = actual[name]
        assert (dtype, shape) == (a_dtype, a_shape), (name, dtype, shape, a_dtype, a_shape)
        assert values == a_values, f"{name}: values differ"
    count = sum(len(v[2]) for v in expected.values())
    print(f"OK: {len(expected)} tensors, {count} values identical")


if __name__ == "__main__":
    main()
