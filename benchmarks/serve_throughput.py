"""Service throughput vs in-process onnxruntime, same model, same thread budget, same concurrency.

    python benchmarks/serve_throughput.py export/defects-mobilenetv2 --out serve.json
    python benchmarks/serve_throughput.py model.onnx --threads 2 --concurrency 4 --out serve.json

In-process: ``concurrency`` Python threads call one onnxruntime session (``threads`` intra-op
threads) on a batch-1 image. Service: ``python -m edgecnn.serve`` with the same ``threads``, and
``concurrency`` client threads sending the same image to ``/infer`` over loopback, as JSON, with
the binary tensor extension (FP32) and as binary UINT8 pixels (``--modes``); ``--dynamic-batch 0,4``
also measures a server that batches concurrent requests (up to 4 images). The client runs on
the same machine and its CPU time is reported, because on a small machine it competes with the
server. ``--scaling 1,8,16`` also measures binary requests and in-process calls at those levels.

Each measurement is warm-up requests, then ``--requests`` timed ones. The in-process baseline is
measured before and after the service, with onnxruntime's spin-waiting on (the runtime default)
and off (what the service uses); the ratio divides by the faster of the two means, so drift on a
shared machine shows and the baseline is never the weaker configuration. Writes one JSON file:
p50/p90/p99 and spread, throughput, CPU per request, the server's own split (inference vs. the
rest, from /metrics), the single-thread cost of encoding and decoding a request, machine info
and the ratios.

``--sections`` adds two measurements the service tests only check the behaviour of (a timing is
never asserted in a test):

* ``overload``: a server admitting one inference at a time (``--max-concurrency 1``) gets
  ``--overload-clients`` requests of ``--overload-batch`` images at once, ``--overload-rounds``
  times; the latency of the 503 refusals against that of the admitted requests (a refusal must
  not wait for them).
* ``reload``: ``--concurrency`` clients send binary requests while the model is reloaded
  ``--reloads`` times, ``--reload-every`` answers apart (a copy of the ONNX file with another doc
  string, so every reload really builds a session); statuses (all must be 200), the throughput
  and p99 during the reloads against a steady run of the same length in the same server.

    python benchmarks/serve_throughput.py RUN_OR_ONNX --sections overload,reload --out o.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

from edgecnn.export.manifest import MANIFEST, add_artifact, init_manifest
from edgecnn.runtime import load_runner
from edgecnn.serve import InferenceClient
from edgecnn.serve.protocol import decode_input, parse_infer_request, split_binary_inputs


def machine() -> dict:
    import onnxruntime

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "loadavg_at_start": os.getloadavg(), "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "numpy": np.__version__}


def stats(latencies_s: list[float], wall: float) -> dict:
    ms = np.array(latencies_s) * 1e3
    return {"requests": len(ms), "throughput_rps": len(ms) / wall, "wall_s": wall,
            "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean()), "std_ms": float(ms.std()),
            "min_ms": float(ms.min()), "max_ms": float(ms.max())}


def closed_loop(fn_factory, n: int, concurrency: int) -> dict:
    """``concurrency`` threads, each with its own ``fn``, share ``n`` calls; latency per call."""
    lock, counter, latencies = threading.Lock(), iter(range(n)), []

    def worker():
        fn, mine = fn_factory(), []
        while True:
            with lock:
                if next(counter, None) is None:
                    break
            t0 = time.perf_counter()
            fn()
            mine.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    cpu0, t0 = os.times(), time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall, cpu1 = time.perf_counter() - t0, os.times()
    out = stats(latencies, wall)
    out["client_cpu_ms_per_request"] = ((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)) * 1e3 / n
    return out


def in_process(onnx: Path, image: np.ndarray, threads: int, concurrency: int, n: int, warmup: int,
               spinning: bool) -> dict:
    runner = load_runner(onnx, threads=threads)
    if not spinning:            # what the service does (edgecnn.serve.repository)
        import onnxruntime as ort

        from edgecnn.runtime.ort_runner import session_options

        opts = session_options(threads)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        runner.session = ort.InferenceSession(str(onnx), opts, providers=["CPUExecutionProvider"])
    closed_loop(lambda: (lambda: runner(image)), warmup, concurrency)
    result = closed_loop(lambda: (lambda: runner(image)), n, concurrency)
    result["process_cpu_ms_per_request"] = result.pop("client_cpu_ms_per_request")
    result["ort_spinning"] = spinning
    return result


def scrape(url: str) -> dict[str, float]:
    status, _, data = InferenceClient(url).request("GET", "/metrics")
    values: dict[str, float] = {}
    for line in data.decode().splitlines():
        if line.startswith("#") or not line:
            continue
        name, value = line.rsplit(" ", 1)
        if name.startswith(("edgecnn_inference_duration_seconds_sum", "edgecnn_inference_duration_seconds_count",
                            "process_cpu_seconds_total")) or (
                name.startswith("edgecnn_request_duration_seconds_") and "/infer" in name and "_bucket" not in name):
            values[name.split("{")[0]] = values.get(name.split("{")[0], 0.0) + float(value)
    return values


def service(url: str, model: str, input_name: str, image: np.ndarray, concurrency: int, n: int, warmup: int,
            mode: str) -> dict:
    """``mode``: json (FP32 values in JSON), binary (FP32 bytes), binary-uint8 (the same pixels as UINT8 bytes)."""
    body, headers = encode(image, input_name, mode)
    path = f"/v2/models/{model}/infer"

    def factory():
        c = InferenceClient(url)

        def call():
            status, _, _ = c.request("POST", path, body, headers)
            if status != 200:
                raise RuntimeError(f"service answered {status}")
        return call

    closed_loop(factory, warmup, concurrency)
    before = scrape(url)
    result = closed_loop(factory, n, concurrency)
    after = scrape(url)
    d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    result["body_bytes"] = len(body)
    result["server_cpu_ms_per_request"] = d.get("process_cpu_seconds_total", 0.0) * 1e3 / n
    if d.get("edgecnn_inference_duration_seconds_count"):
        result["server_inference_ms_mean"] = (d["edgecnn_inference_duration_seconds_sum"]
                                              / d["edgecnn_inference_duration_seconds_count"] * 1e3)
    if d.get("edgecnn_request_duration_seconds_count"):
        result["server_request_ms_mean"] = (d["edgecnn_request_duration_seconds_sum"]
                                            / d["edgecnn_request_duration_seconds_count"] * 1e3)
    return result


def encode(image: np.ndarray, input_name: str, mode: str) -> tuple[bytes, dict[str, str]]:
    """A request body in ``mode``: json (whole-number pixels as JSON integers), binary (FP32 bytes),
    binary-uint8 (the same pixels as UINT8 bytes, the client's default for whole-number pixels)."""
    return InferenceClient("http://127.0.0.1:1").encode_infer(
        image, input_name, binary=mode != "json", datatype="UINT8" if mode == "binary-uint8" else "FP32")


def decode_costs(image: np.ndarray, input_name: str, hwc: tuple[int, int, int], reps: int = 50) -> dict:
    """Single-thread cost of the protocol work per request, measured in this process."""
    out = {}
    for mode in ("json", "binary", "binary-uint8"):
        t0 = time.perf_counter()
        for _ in range(reps):
            body, headers = encode(image, input_name, mode)
        encode_s = (time.perf_counter() - t0) / reps
        hl = headers.get("Inference-Header-Content-Length")
        t0 = time.perf_counter()
        for _ in range(reps):
            req, tail = parse_infer_request(body, hl)
            bins = split_binary_inputs(req, tail) if hl else {}
            decode_input(req.inputs[0], bins.get(input_name), hwc, 64)
        decode = (time.perf_counter() - t0) / reps
        out[mode] = {"body_bytes": len(body), "client_encode_ms": encode_s * 1e3, "server_decode_ms": decode * 1e3}
    return out


def prepare(target: Path, tmp: Path) -> tuple[Path, Path]:
    """(what to serve, the .onnx file); a bare .onnx gets a temporary run directory with a manifest."""
    if target.is_dir():
        return target, target / "model.onnx"
    if (target.parent / MANIFEST).is_file():
        return target, target
    run = tmp / "run"
    run.mkdir()
    shutil.copyfile(target, run / "model.onnx")     # a copy: the service refuses links out of the run
    runner = load_runner(target, threads=1)
    classes = runner.output.shape[1]
    init_manifest(run, name=target.stem.replace(".", "-"), labels=[f"class_{i}" for i in range(classes)],
                  preprocessing={"resize": list(runner.input.shape[1:3])})
    add_artifact(run, "model.onnx", format="onnx", precision="fp32", runtime="onnxruntime", stage="export",
                 input=runner.input.to_json(), output=runner.output.to_json())
    return run, run / "model.onnx"


def _http_parser() -> str:
    """What uvicorn's ``http="auto"`` picks: httptools (C) when installed, else h11 (pure Python)."""
    import importlib.util

    return "httptools" if importlib.util.find_spec("httptools") else "h11"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(target: Path, log_path: Path, *flags: str) -> tuple[subprocess.Popen, str]:
    """``python -m edgecnn.serve TARGET FLAGS`` on a free loopback port, once it answers ready; (process, url).
    Its output goes to ``log_path`` (a file: a pipe could fill and stall it)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "edgecnn.serve", str(target), "--port", str(port), *flags],
                                stdout=log, stderr=subprocess.STDOUT)
    client = InferenceClient(url)
    deadline = time.monotonic() + 120
    while True:
        try:
            if client.request("GET", "/v2/health/ready")[0] == 200:
                return proc, url
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"server did not start:\n{log_path.read_text()[-2000:]}")
        time.sleep(0.2)


def overload(serve_target: Path, tmp: Path, hwc: tuple[int, int, int], clients: int, rounds: int,
             batch: int, threads: int) -> dict:
    """``clients`` requests of ``batch`` images at once, ``rounds`` times, against ``--max-concurrency 1``."""
    proc, url = start_server(serve_target, tmp / "overload.log", "--threads", str(threads), "--max-concurrency", "1")
    seen: dict[str, list[float]] = {}
    try:
        client = InferenceClient(url)
        model = client.models()[0]["name"]
        input_name = client.model_metadata(model)["inputs"][0]["name"]
        images = np.random.default_rng(5).integers(0, 256, (batch, *hwc)).astype(np.float32)
        body, headers = encode(images, input_name, "json")
        lock = threading.Lock()
        for _ in range(rounds):
            barrier = threading.Barrier(clients)

            def one(barrier=barrier):
                c = InferenceClient(url, timeout=60)
                barrier.wait()
                t0 = time.perf_counter()
                try:
                    status = str(c.request("POST", f"/v2/models/{model}/infer", body, headers)[0])
                except OSError as e:
                    status = type(e).__name__
                with lock:
                    seen.setdefault(status, []).append(time.perf_counter() - t0)

            ts = [threading.Thread(target=one) for _ in range(clients)]
            for t in ts:
                t.start()
            for t in ts:
                t.join(120)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    def spread(seconds: list[float]) -> dict:
        ms = np.array(seconds) * 1e3
        return {**{f"p{q}_ms": float(np.percentile(ms, q)) for q in (50, 90, 99)},
                "min_ms": float(ms.min()), "max_ms": float(ms.max())}

    out = {"clients": clients, "rounds": rounds, "batch": batch, "body_bytes": len(body),
           "statuses": {k: len(v) for k, v in sorted(seen.items())},
           "latency": {k: spread(v) for k, v in sorted(seen.items())}}
    if "503" in seen and "200" in seen:
        out["refused_over_admitted_p50"] = out["latency"]["503"]["p50_ms"] / out["latency"]["200"]["p50_ms"]
    return out


def reload_under_load(serve_target: Path, onnx: Path, tmp: Path, image: np.ndarray, concurrency: int,
                      reloads: int, between: int, warmup: int, threads: int) -> dict:
    """Binary requests from ``concurrency`` clients while the model reloads ``reloads`` times, ``between``
    answers apart, and as long again without reloads (the same server, after ``warmup`` answers)."""
    import onnx as onnx_lib

    run = tmp / "reload-run"
    shutil.copytree(serve_target if serve_target.is_dir() else serve_target.parent, run)  # never the user's files
    target = run / onnx.name
    variants = []
    for i in range(2):
        m = onnx_lib.load(str(onnx))
        m.doc_string = f"serve_throughput reload variant {i}"
        variants.append(m.SerializeToString())
    proc, url = start_server(run, tmp / "reload.log", "--threads", str(threads))
    try:
        client = InferenceClient(url)
        model = client.models()[0]["name"]
        input_name = client.model_metadata(model)["inputs"][0]["name"]
        body, headers = encode(image, input_name, "binary")
        path = f"/v2/models/{model}/infer"
        statuses: Counter = Counter()
        lock = threading.Lock()

        def measure(during) -> dict:
            stop, latencies = threading.Event(), []

            def worker():
                c, mine = InferenceClient(url), []
                while not stop.is_set():
                    t0 = time.perf_counter()
                    try:
                        status = str(c.request("POST", path, body, headers)[0])
                    except OSError as e:
                        status = type(e).__name__
                    mine.append(time.perf_counter() - t0)
                    with lock:
                        statuses[status] += 1
                with lock:
                    latencies.extend(mine)

            ts = [threading.Thread(target=worker) for _ in range(concurrency)]
            t0 = time.perf_counter()
            for t in ts:
                t.start()
            extra = during()
            stop.set()
            for t in ts:
                t.join(120)
            return {**stats(latencies, time.perf_counter() - t0), **extra}

        def answers(n: int) -> None:
            with lock:
                target = sum(statuses.values()) + n
            while sum(statuses.values()) < target:
                time.sleep(0.001)

        def do_reloads() -> dict:
            took = []
            for i in range(reloads):
                answers(between)
                tmp_file = run / f".{onnx.name}.tmp"
                tmp_file.write_bytes(variants[i % 2])
                os.replace(tmp_file, target)
                spec = load_runner(target, threads=1)
                add_artifact(run, onnx.name, format="onnx", precision="fp32", runtime="onnxruntime", stage="export",
                             input=spec.input.to_json(), output=spec.output.to_json())
                t0 = time.perf_counter()
                status, _, data = client.request("POST", f"/v2/repository/models/{model}/load")
                took.append(time.perf_counter() - t0)
                if status != 200:
                    raise SystemExit(f"reload {i + 1} answered {status}: {data[:300]!r}")
            return {"reloads": reloads, "reload_ms": [round(t * 1e3, 1) for t in took]}

        measure(lambda: answers(warmup) or {})
        during = measure(do_reloads)

        def as_long() -> dict:
            time.sleep(during["wall_s"])
            return {}

        steady = measure(as_long)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    return {"concurrency": concurrency, "statuses": dict(statuses), "during_reloads": during, "steady": steady,
            "throughput_ratio": during["throughput_rps"] / steady["throughput_rps"],
            "p99_ratio": during["p99_ms"] / steady["p99_ms"]}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("target", type=Path, help="run directory or .onnx file")
    ap.add_argument("--out", type=Path, required=True, help="JSON result path")
    ap.add_argument("--sections", default="throughput",
                    help="comma-separated: throughput (in-process vs service), overload, reload (see above)")
    ap.add_argument("--threads", type=int, default=min(os.cpu_count() or 1, 4), help="intra-op threads (both sides)")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--warmup", type=int, default=40)
    ap.add_argument("--workers", type=int, default=1, help="service worker processes (each with --threads)")
    ap.add_argument("--scaling", default="1,8,16",
                    help="other concurrency levels to measure (binary mode and in-process, no spinning); '' = none")
    ap.add_argument("--modes", default="json,binary,binary-uint8",
                    help="request encodings to measure: json, binary (FP32), binary-uint8")
    ap.add_argument("--dynamic-batch", default="0",
                    help="service configurations: 0 = no dynamic batching, N = --dynamic-batch N; e.g. 0,4")
    ap.add_argument("--batch-delay-ms", type=float, default=2.0, help="--batch-delay-ms of the batching server")
    ap.add_argument("--overload-clients", type=int, default=12, help="overload: requests sent at once")
    ap.add_argument("--overload-rounds", type=int, default=20)
    ap.add_argument("--overload-batch", type=int, default=64, help="overload: images per request (JSON)")
    ap.add_argument("--reloads", type=int, default=10, help="reload: model reloads under load")
    ap.add_argument("--reload-every", type=int, default=200, help="reload: answers between two reloads")
    args = ap.parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(sections) - {"throughput", "overload", "reload"})
    if unknown:
        ap.error(f"--sections takes throughput, overload, reload; received {unknown}")

    with tempfile.TemporaryDirectory() as tmp:
        serve_target, onnx = prepare(args.target, Path(tmp))
        runner = load_runner(onnx, threads=1)
        hwc = tuple(int(s) for s in runner.input.shape[1:])
        image = np.random.default_rng(0).integers(0, 256, (1, *hwc)).astype(np.float32)
        result = {"target": str(args.target), "sections": sections, "input_shape": [1, *hwc],
                  "threads": args.threads, "switch_interval_s": sys.getswitchinterval(),
                  "service_workers": args.workers, "http_parser": _http_parser(),
                  "concurrency": args.concurrency, "requests": args.requests, "warmup": args.warmup,
                  "machine": machine()}
        summary = {}
        if "throughput" in sections:
            result["protocol_cost_single_thread"] = decode_costs(image, runner.input.name, hwc)
            del runner
            result.update(throughput(args, serve_target, onnx, image, Path(tmp)))
            summary.update({"ratio": result["ratio"], "p99_over_p50": result["p99_over_p50"],
                            "in_process_rps": result["in_process"]["throughput_rps_baseline"],
                            "service_rps": {m: r["throughput_rps"] for m, r in result["service"].items()},
                            "scaling_binary": {c: {"ratio": round(v["ratio"], 3),
                                                   "service_rps": round(v["service_binary"]["throughput_rps"], 1),
                                                   "in_process_rps": round(v["in_process"]["throughput_rps"], 1),
                                                   "service_p50_ms": round(v["service_binary"]["p50_ms"], 2),
                                                   "in_process_p50_ms": round(v["in_process"]["p50_ms"], 2)}
                                               for c, v in result["scaling"].items()}})
        if "overload" in sections:
            result["overload"] = overload(serve_target, Path(tmp), hwc, args.overload_clients, args.overload_rounds,
                                          args.overload_batch, args.threads)
            lat = result["overload"]["latency"]
            summary["overload"] = {"statuses": result["overload"]["statuses"],
                                   **{q: {k: round(v[q], 1) for k, v in lat.items()} for q in ("p50_ms", "p99_ms")}}
        if "reload" in sections:
            result["reload"] = reload_under_load(serve_target, onnx, Path(tmp), image, args.concurrency, args.reloads,
                                                 args.reload_every, args.warmup, args.threads)
            summary["reload"] = {k: result["reload"][k] for k in ("statuses", "throughput_ratio", "p99_ratio")}

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return result


def throughput(args, serve_target: Path, onnx: Path, image: np.ndarray, tmp: Path) -> dict:
    """The in-process baseline, the service in each mode (and batching configuration), the scaling levels."""
    base = [in_process(onnx, image, args.threads, args.concurrency, args.requests, args.warmup, spin)
            for spin in (True, False)]

    runs, scaling = {}, {}
    for batch in [int(b) for b in args.dynamic_batch.split(",")]:
        proc, url = start_server(serve_target, tmp / "server.log", "--threads", str(args.threads),
                                 "--workers", str(args.workers), "--max-concurrency", str(4 * args.concurrency),
                                 "--dynamic-batch", str(batch), "--batch-delay-ms", str(args.batch_delay_ms))
        try:
            client = InferenceClient(url)
            model = client.models()[0]["name"]
            input_name = client.model_metadata(model)["inputs"][0]["name"]
            for mode in args.modes.split(","):
                runs[mode if batch == 0 else f"{mode}+dynamic-batch-{batch}"] = service(
                    url, model, input_name, image, args.concurrency, args.requests, args.warmup, mode)
            if batch == 0:
                levels = [int(c) for c in args.scaling.split(",") if c.strip()]
                scaling = {c: {"service_binary": service(url, model, input_name, image, c, args.requests,
                                                         args.warmup, "binary")} for c in levels}
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    base += [in_process(onnx, image, args.threads, args.concurrency, args.requests, args.warmup, spin)
             for spin in (True, False)]

    # The baseline is the faster in-process configuration, averaged over the runs before and after.
    spin = (base[0]["throughput_rps"] + base[2]["throughput_rps"]) / 2
    nospin = (base[1]["throughput_rps"] + base[3]["throughput_rps"]) / 2
    baseline = max(spin, nospin)
    result = {"in_process": {"runs": base, "throughput_rps_spinning": spin, "throughput_rps_no_spinning": nospin,
                             "throughput_rps_baseline": baseline},
              "service": runs}
    for c, entry in scaling.items():
        entry["in_process"] = in_process(onnx, image, args.threads, c, args.requests, args.warmup, False)
        entry["ratio"] = entry["service_binary"]["throughput_rps"] / entry["in_process"]["throughput_rps"]
    result["scaling"] = {str(c): v for c, v in scaling.items()}
    result["ratio"] = {mode: r["throughput_rps"] / baseline for mode, r in runs.items()}
    result["p99_over_p50"] = {mode: r["p99_ms"] / r["p50_ms"] for mode, r in runs.items()}
    result["target_ratio"] = 0.85
    return result


if __name__ == "__main__":
    main()
