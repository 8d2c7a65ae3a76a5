"""Mixed soak of the service: valid and malformed traffic, slow clients and overload bursts at once.

    python benchmarks/serve_soak.py export/defects-mobilenetv2 --seconds 60 --out soak.json
    python benchmarks/serve_soak.py model.onnx --seconds 10 --out soak.json

One ``python -m edgecnn.serve`` process; from this process, for ``--seconds``:

* ``--workers`` client threads send a mix of valid requests (JSON integers, binary FP32, binary
  UINT8, PNG and JPEG uploads) and ``--malformed`` of malformed ones (bad JSON, wrong shape,
  out-of-range pixels, unknown fields, empty-list amplification, oversized bodies, truncated
  images, unknown models), each with the one status it must get;
* a slow-client thread keeps ``--slow`` connections sending bodies and headers slowly (each must
  end in 408);
* every ``--burst-every`` seconds a burst of ``--burst`` concurrent valid requests overloads
  the server (200 or 503 allowed while a burst runs).

Writes JSON: statuses per kind, unexpected answers (kind, wanted, got), lost valid requests (a
valid request answered anything but 200 outside a burst, or not answered), shed ones (503 during
a burst, valid or not), the server's RSS after warm-up (which includes a first burst), at the end
and its peak, request rates and the machine.
"""
from __future__ import annotations

import argparse
import io
import json
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from edgecnn.serve import InferenceClient

sys.path.insert(0, str(Path(__file__).parent))
from serve_throughput import machine, prepare, start_server  # noqa: E402


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def request_mix(client: InferenceClient, model: str, input_name: str, hwc: tuple[int, int, int],
                max_body: int) -> tuple[list, list]:
    """(valid, malformed): ``(kind, method, path, body, headers, wanted status)`` each."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (1, *hwc)).astype(np.float32)
    infer = f"/v2/models/{model}/infer"
    classify = f"/v2/models/{model}/classify?top_k=2"
    json_body, json_headers = client.encode_infer(pixels, input_name, binary=False)
    bin_body, bin_headers = client.encode_infer(pixels, input_name, datatype="FP32")
    u8_body, u8_headers = client.encode_infer(pixels, input_name)      # whole numbers: UINT8
    images = {}
    for fmt in ("PNG", "JPEG"):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (hwc[0] * 2, hwc[1] * 2, 3), dtype=np.uint8)).save(buf, format=fmt)
        images[fmt] = buf.getvalue()
    js = {"Content-Type": "application/json"}

    def body(**change) -> bytes:
        inp = {"name": input_name, "shape": [1, *hwc], "datatype": "FP32", "data": [0] * int(np.prod(hwc))}
        inp.update(change)
        return json.dumps({"inputs": [inp]}).encode()

    valid = [
        ("json", "POST", infer, json_body, json_headers, 200),
        ("binary-fp32", "POST", infer, bin_body, bin_headers, 200),
        ("binary-uint8", "POST", infer, u8_body, u8_headers, 200),
        ("png", "POST", classify, images["PNG"], {"Content-Type": "image/png"}, 200),
        ("jpeg", "POST", classify, images["JPEG"], {"Content-Type": "image/jpeg"}, 200),
    ]
    bomb_head = f'{{"inputs":[{{"name":"{input_name}","shape":[1,{hwc[0]},{hwc[1]},{hwc[2]}],"datatype":"FP32","data":['
    malformed = [
        ("bad-json", "POST", infer, b"{not json", js, 400),
        ("wrong-shape", "POST", infer, body(shape=[1, 8, 8, 3], data=[0] * 192), js, 400),
        ("out-of-range", "POST", infer, body(data=[300] * int(np.prod(hwc))), js, 400),
        ("unknown-field", "POST", infer, body(dtype="FP32"), js, 400),
        ("shape-strings", "POST", infer, body(shape=["1", *map(str, hwc)]), js, 400),
        ("amplification", "POST", infer, bomb_head.encode() + b"[]," * (2**20 // 3) + b"[]]}]}", js, 400),
        ("oversized", "POST", infer, b" " * (max_body + 1), js, 413),
        ("truncated-png", "POST", classify, images["PNG"][: len(images["PNG"]) // 2], {"Content-Type": "image/png"},
         400),
        ("unknown-model", "POST", "/v2/models/nope/infer", json_body, json_headers, 404),
    ]
    return valid, malformed


class Soak:
    def __init__(self, url: str, valid: list, malformed: list, malformed_share: float, seed: int = 1):
        self.url, self.valid, self.malformed, self.share = url, valid, malformed, malformed_share
        self.lock = threading.Lock()
        self.statuses: Counter = Counter()
        self.unexpected: Counter = Counter()
        self.lost: Counter = Counter()
        self.shed: Counter = Counter()
        self.sent = 0
        self.bursting = 0          # bursts running now
        self.stop = threading.Event()
        self.seed = seed

    def record(self, kind: str, wanted: int, got, during_burst: bool, valid: bool) -> None:
        with self.lock:
            self.sent += 1
            self.statuses[(kind, str(got))] += 1
            if got == wanted:
                return
            if during_burst and got == 503:       # overload sheds whatever comes, malformed or not
                self.shed[kind] += 1
            elif valid:
                self.lost[(kind, str(got))] += 1
            else:
                self.unexpected[(kind, wanted, str(got))] += 1

    def one(self, client: InferenceClient, req, valid: bool) -> None:
        kind, method, path, body, headers, wanted = req
        burst = self.bursting > 0
        try:
            got, _, _ = client.request(method, path, body, headers)
        except OSError as e:
            got = type(e).__name__
            client.close()
        self.record(kind, wanted, got, burst or self.bursting > 0, valid)

    def worker(self, index: int) -> None:
        rng = np.random.default_rng(self.seed + index)
        client = InferenceClient(self.url, timeout=60)
        while not self.stop.is_set():
            if rng.random() < self.share:
                self.one(client, self.malformed[rng.integers(len(self.malformed))], False)
            else:
                self.one(client, self.valid[rng.integers(len(self.valid))], True)
        client.close()

    def bursts(self, size: int, every: float) -> None:
        """One burst at once (so the RSS baseline after warm-up has seen one), then every ``every`` s."""
        delay = 0.5
        while not self.stop.wait(delay):
            delay = every
            with self.lock:
                self.bursting += 1
            threads = [threading.Thread(target=self._burst_one, args=(i,)) for i in range(size)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            with self.lock:
                self.bursting -= 1

    def _burst_one(self, i: int) -> None:
        client = InferenceClient(self.url, timeout=60)
        self.one(client, self.valid[i % len(self.valid)], True)
        client.close()

    def slow_clients(self, port: int, n: int, path: str) -> None:
        """``n`` connections at a time that send a body (or headers) one byte a second; each must get 408."""
        conns: list[tuple[socket.socket, str]] = []
        while not self.stop.is_set():
            while len(conns) < n:
                sock = socket.create_connection(("127.0.0.1", port), timeout=60)
                sock.setblocking(False)
                kind = "slow-body" if len(conns) % 2 else "slow-headers"
                first = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         + ("Content-Length: 100000\r\n\r\n{" if kind == "slow-body" else ""))
                sock.sendall(first.encode())
                conns.append((sock, kind))
            time.sleep(0.5)
            for sock, kind in list(conns):
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    try:
                        sock.send(b" " if kind == "slow-body" else b"X")
                    except OSError:
                        pass
                    continue
                except OSError as e:
                    data = type(e).__name__.encode()
                status = data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/1.1 ") else data[:40].decode()
                got = int(status) if status.isdigit() else status
                # a byte sent just as the server closed makes the close a reset: also the server's refusal
                self.record(kind, got if got == "ConnectionResetError" else 408, got, False, False)
                sock.close()
                conns.remove((sock, kind))
        for sock, _ in conns:
            sock.close()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("target", type=Path, help="run directory or .onnx file")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads of the server's session")
    ap.add_argument("--workers", type=int, default=4, help="steady client threads")
    ap.add_argument("--max-concurrency", type=int, default=8)
    ap.add_argument("--malformed", type=float, default=0.2, help="share of malformed requests")
    ap.add_argument("--slow", type=int, default=8, help="slow connections held open at a time")
    ap.add_argument("--burst", type=int, default=32, help="concurrent requests per overload burst")
    ap.add_argument("--burst-every", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds of load before the RSS baseline")
    args = ap.parse_args(argv)

    max_body = 4 * 2**20
    with tempfile.TemporaryDirectory() as tmp:
        serve_target, _ = prepare(args.target, Path(tmp))
        log_path = Path(tmp) / "server.log"
        proc, url = start_server(serve_target, log_path, "--threads", str(args.threads), "--max-concurrency",
                                 str(args.max_concurrency), "--max-body-bytes", str(max_body), "--max-buffered-bytes",
                                 str(8 * max_body), "--header-timeout", "2", "--body-timeout", "3",
                                 "--log-level", "warning")
        port = int(url.rsplit(":", 1)[1])
        try:
            client = InferenceClient(url)
            model = client.models()[0]["name"]
            meta = client.model_metadata(model)
            hwc = tuple(meta["inputs"][0]["shape"][1:])
            valid, malformed = request_mix(client, model, meta["inputs"][0]["name"], hwc, max_body)
            soak = Soak(url, valid, malformed, args.malformed)
            threads = [threading.Thread(target=soak.worker, args=(i,)) for i in range(args.workers)]
            threads.append(threading.Thread(target=soak.bursts, args=(args.burst, args.burst_every)))
            threads.append(threading.Thread(target=soak.slow_clients,
                                            args=(port, args.slow, f"/v2/models/{model}/infer")))
            started = time.perf_counter()
            for t in threads:
                t.start()
            time.sleep(args.warmup)
            rss_start = rss_kib(proc.pid)
            Path(f"/proc/{proc.pid}/clear_refs").write_text("5")
            sent_at_start = soak.sent
            time.sleep(max(0.0, args.seconds - args.warmup))
            soak.stop.set()
            for t in threads:
                t.join(120)
            wall = time.perf_counter() - started
            time.sleep(1.0)      # let the last responses be freed
            rss_end, rss_peak = rss_kib(proc.pid), rss_kib(proc.pid, "VmHWM")
            healthy = client.request("GET", "/v2/health/ready")[0]
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        errors = [line for line in log_path.read_text(errors="replace").splitlines()
                  if '"level": "error"' in line or "Traceback" in line]

    result = {
        "target": str(args.target), "seconds": wall, "input_shape": [1, *hwc], "threads": args.threads,
        "workers": args.workers, "max_concurrency": args.max_concurrency, "malformed_share": args.malformed,
        "slow_connections": args.slow, "burst": args.burst, "burst_every_s": args.burst_every,
        "requests": soak.sent, "requests_per_s": soak.sent / wall,
        "requests_after_warmup": soak.sent - sent_at_start,
        "statuses": {f"{k} {s}": n for (k, s), n in sorted(soak.statuses.items())},
        "unexpected": {f"{k}: wanted {w}, got {g}": n for (k, w, g), n in soak.unexpected.items()},
        "lost_valid": {f"{k}: got {g}": n for (k, g), n in soak.lost.items()},
        "shed_during_bursts": dict(soak.shed),
        "rss_mib": {"after_warmup": rss_start / 1024, "end": rss_end / 1024, "peak": rss_peak / 1024,
                    "growth": (rss_end - rss_start) / 1024, "peak_growth": (rss_peak - rss_start) / 1024},
        "healthy_after": healthy == 200, "server_error_log_lines": errors[:20], "machine": machine(),
    }
    result["ok"] = (not result["unexpected"] and not result["lost_valid"] and result["rss_mib"]["growth"] <= 20
                    and result["healthy_after"] and not errors)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("ok", "seconds", "requests", "requests_per_s", "unexpected",
                                             "lost_valid", "shed_during_bursts", "rss_mib")}, indent=2))
    return result


if __name__ == "__main__":
    main()
