"""The child process of the arm64 runtimes: runs inside the arm64 root's Python under qemu-user.

Standalone on purpose (it imports nothing of edgecnn, which is not installed in the root): the host
starts it once per runner with ``python3.11 _arm64_worker.py`` and talks over its stdin/stdout.

Protocol, both directions: an 8-byte little-endian length, a JSON header of that length, then the
raw bytes of every array the header lists under ``"arrays"`` (``[{"dtype", "shape"}]``, C order).
Requests: ``{"op": "open", "engine": "litert" | "onnxruntime", "path", "threads"}`` (reply: the
input and output tensor specs and the versions), ``{"op": "run"}`` + one input array (reply: every
output, raw: int8 stays int8; the host dequantises), ``{"op": "close"}``. A failure replies
``{"error": "..."}`` and the worker goes on serving.
"""
import json
import os
import platform
import struct
import sys


def _read_exact(stream, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = stream.read(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def read_message(stream, np):
    raw = _read_exact(stream, 8)
    if raw is None:
        return None, []
    header = json.loads(_read_exact(stream, struct.unpack("<Q", raw)[0]))
    arrays = []
    for a in header.get("arrays", []):
        dtype, shape = np.dtype(a["dtype"]), tuple(a["shape"])
        n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        arrays.append(np.frombuffer(_read_exact(stream, n) if n else b"", dtype=dtype).reshape(shape))
    return header, arrays


def write_message(stream, header, arrays=()):
    header = dict(header, arrays=[{"dtype": a.dtype.str, "shape": list(a.shape)} for a in arrays])
    body = json.dumps(header).encode()
    stream.write(struct.pack("<Q", len(body)) + body)
    for a in arrays:
        stream.write(a.tobytes(order="C"))
    stream.flush()


def _quant(scale, zero):
    return [float(scale), int(zero)] if scale else None


class LiteRT:
    """ai_edge_litert's interpreter (XNNPACK, the aarch64 build) at batch 1; larger batches loop."""

    def __init__(self, path, threads):
        from ai_edge_litert.interpreter import Interpreter

        self.interp = Interpreter(model_path=path, num_threads=threads or None)
        inp = self.interp.get_input_details()[0]
        self.interp.resize_tensor_input(inp["index"], [1, *inp["shape"][1:]])
        self.interp.allocate_tensors()
        self.inp = self.interp.get_input_details()[0]
        self.outs = self.interp.get_output_details()

    def describe(self):
        def spec(d):
            scale, zero = d.get("quantization", (0.0, 0))
            shape = [int(s) for s in d.get("shape_signature", d["shape"])]
            return {"name": d["name"], "shape": shape, "dtype": str(d["dtype"].__name__),
                    "quantization": _quant(scale, zero)}

        return {"inputs": [spec(self.inp)], "outputs": [spec(d) for d in self.outs]}

    def run(self, x, np):
        outs = [np.empty((len(x), *d["shape"][1:]), d["dtype"]) for d in self.outs]
        for i in range(len(x)):
            self.interp.set_tensor(self.inp["index"], x[i:i + 1])
            self.interp.invoke()
            for k, d in enumerate(self.outs):
                outs[k][i] = self.interp.get_tensor(d["index"])[0]
        return outs


_ORT_TYPES = {"tensor(float)": "float32", "tensor(uint8)": "uint8", "tensor(int8)": "int8"}


class OnnxRuntime:
    """An onnxruntime session (the aarch64 build: its ARM int8 kernels); batches of up to 64 per run."""

    def __init__(self, path, threads):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

    def describe(self):
        def spec(t):
            return {"name": t.name, "shape": [s if isinstance(s, int) else -1 for s in t.shape],
                    "dtype": _ORT_TYPES.get(t.type, t.type), "quantization": None}

        return {"inputs": [spec(t) for t in self.session.get_inputs()[:1]],
                "outputs": [spec(t) for t in self.session.get_outputs()]}

    def run(self, x, np):
        name = self.session.get_inputs()[0].name
        parts = [self.session.run(None, {name: x[i:i + 64]}) for i in range(0, len(x), 64)]
        return [np.ascontiguousarray(np.concatenate([p[k] for p in parts])) for k in range(len(parts[0]))]


ENGINES = {"litert": LiteRT, "onnxruntime": OnnxRuntime}


def main():
    protocol = os.fdopen(os.dup(1), "wb")   # the replies; anything a library prints goes to stderr
    os.dup2(2, 1)
    requests = sys.stdin.buffer
    import numpy as np

    engine = None
    while True:
        header, arrays = read_message(requests, np)
        if header is None or header.get("op") == "close":
            return
        try:
            if header["op"] == "open":
                from importlib.metadata import version

                engine = ENGINES[header["engine"]](header["path"], header.get("threads"))
                dist = {"litert": "ai-edge-litert", "onnxruntime": "onnxruntime"}[header["engine"]]
                write_message(protocol, {**engine.describe(), "version": version(dist),
                                         "machine": platform.machine(), "numpy": np.__version__})
            elif header["op"] == "run":
                write_message(protocol, {"ok": True}, engine.run(np.ascontiguousarray(arrays[0]), np))
            else:
                write_message(protocol, {"error": f"unknown op {header['op']!r}"})
        except Exception as e:  # noqa: BLE001 - every failure goes back to the host as one line
            write_message(protocol, {"error": f"{type(e).__name__}: {e}"})


if __name__ == "__main__":
    main()
