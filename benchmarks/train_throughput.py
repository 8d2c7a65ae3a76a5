"""Training throughput: images/s and achieved GMAC/s of a training step, against the CPU's peak.

For the default recipe's fine-tuning step (MobileNetV2-1.0 at 128 px, every block trainable,
BatchNorm training, batch 32) and the auto recipe's EfficientNet-Lite0 (96 px), each timed apart:

* ``input``: the training tf.data pipeline alone (decode from the memory cache, shuffle, batch, flips), one epoch;
* ``forward``: ``model(x, training=True)`` on one fixed batch;
* ``forward_backward``: the same plus the gradients of the loss;
* ``step``: the same plus the optimizer's update (``optimizer`` = step - forward_backward);
* ``fit``: ``model.fit`` on the real training split, one warm-up epoch and then timed epochs; ``val`` the
  validation pass alone (what every fit epoch adds).

Each configuration runs in its own process (op determinism and the mixed-precision policy are process-wide),
so the levers can be compared one at a time: ``--config NAME`` runs one; ``--all`` runs them all and writes
``benchmarks/results/train_throughput.json`` with the machine. Work per image: forward MACs from
``edgecnn.arch.inspect``; a training step is the forward and, from the lowest trainable layer up, the backward's
two products per layer (input and weight gradient): 3x the forward when every layer trains (:func:`training_macs`).
The peak is that of the CPU's fp32 FMA units, read from its flags (docs in :func:`cpu_peak`).

    python benchmarks/train_throughput.py --all
    python benchmarks/train_throughput.py --config mnv2-128-finetune
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "train_throughput.json"
TIMEOUT_S = 240   # one configuration's process: the default's takes about 90 s

BASE = {"model": "mobilenet_v2", "size": 128, "args": {"alpha": 1.0, "weights": "imagenet", "dropout": 0.2},
        "batch": 32, "trainable": "all", "determinism": True, "jit": False, "precision": "float32",
        "flip": "horizontal_and_vertical", "zoom": 0.0, "contrast": 0.0}
LITE0 = {"model": "efficientnet_lite0", "size": 96, "args": {"weights": "imagenet", "dropout": 0.2},
         "flip": "none", "zoom": 0.1, "contrast": 0.1}
# One lever at a time against the default recipe's step (and the code as it was: determinism on, no XLA).
CONFIGS: dict[str, dict] = {
    "mnv2-128-finetune": {},
    "mnv2-128-head": {"trainable": "head"},
    "mnv2-128-nondeterministic": {"determinism": False},
    "mnv2-128-xla": {"jit": True},
    "mnv2-128-batch64": {"batch": 64},
    "mnv2-128-bf16": {"precision": "mixed_bfloat16", "determinism": False},
    "mnv2-128-top9": {"trainable": 9},
    "mnv2-96-finetune": {"size": 96},
    "mnv2-128-onednn-off": {"env": {"TF_ENABLE_ONEDNN_OPTS": "0"}},
    "mnv2-128-threads-2-1": {"intra": 2, "inter": 1},
    "lite0-96-finetune": LITE0,
}


def cpu_peak() -> dict:
    """fp32 multiply-accumulates per second the CPU's FMA units can do, at most, on the cores this process may use.

    FMAs a cycle a core: two FMA pipes on every x86 core with ``fma`` since Haswell / Zen; 256-bit wide (8 fp32)
    with AVX2, and on AMD Zen 4 also with AVX-512 (it runs a 512-bit op as two 256-bit halves); 512-bit (16)
    with AVX-512 on Intel. The clock is the one /proc/cpuinfo reports now (``cpu MHz``): a lower bound of
    the boost clock, so the peak is an estimate, stated as such.
    """
    info = {}
    for line in open("/proc/cpuinfo"):
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    flags = set(info.get("flags", "").split())
    amd = info.get("vendor_id") == "AuthenticAMD"
    lanes = 16 if "avx512f" in flags and not amd else 8 if "fma" in flags or "avx2" in flags else 4
    fmas = 2 * lanes
    ghz = float(info.get("cpu MHz", 0)) / 1000
    cores = len(os.sched_getaffinity(0))
    return {"vendor": info.get("vendor_id"), "model_name": info.get("model name"),
            "family": info.get("cpu family"), "model": info.get("model"), "cores": cores, "ghz": ghz,
            "avx2": "avx2" in flags, "avx512f": "avx512f" in flags, "avx512_vnni": "avx512_vnni" in flags,
            "avx512_bf16": "avx512_bf16" in flags, "fp32_fmas_per_cycle_per_core": fmas,
            "peak_gmacs": round(fmas * ghz * cores, 1)}


def training_macs(model) -> int:
    """MACs of one image's training step: the forward once, and the backward's two products (input and weight
    gradient, 2x the layer's MACs) for every layer from the lowest one with trainable weights up (below it the
    backward stops)."""
    from edgecnn.arch.inspect import layer_table

    rows = layer_table(model)
    trainable = {layer.name for layer in model.layers if layer.trainable_weights}
    first = next((i for i, row in enumerate(rows) if row.name in trainable), len(rows))
    return sum(row.macs for row in rows) + 2 * sum(row.macs for row in rows[first:])


def _timed(fn, warmup: int, runs: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def measure(cfg: dict) -> dict:
    """One configuration, in this process."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from edgecnn._tf import keras, tf
    from edgecnn.arch import create_model
    from edgecnn.arch.inspect import count_macs
    from edgecnn.data.config import AugmentConfig
    from edgecnn.data.folders import discover
    from edgecnn.data.loader import make_dataset
    from edgecnn.train import backbone_blocks, set_trainable

    if cfg["determinism"]:
        tf.config.experimental.enable_op_determinism()
    if cfg.get("intra"):
        tf.config.threading.set_intra_op_parallelism_threads(cfg["intra"])
    if cfg.get("inter"):
        tf.config.threading.set_inter_op_parallelism_threads(cfg["inter"])
    if cfg["precision"] != "float32":
        keras.mixed_precision.set_global_policy(cfg["precision"])
    keras.utils.set_random_seed(0)
    ds = discover(ROOT / "data" / "defects")
    size, bs = cfg["size"], cfg["batch"]
    model = create_model(cfg["model"], num_classes=len(ds.classes), input_size=size, **cfg["args"])
    macs = count_macs(model)
    if cfg["trainable"] == "head":
        set_trainable(model, set())
    elif cfg["trainable"] == "all":
        set_trainable(model, None)
    else:
        set_trainable(model, set(backbone_blocks(model)[-int(cfg["trainable"]):]), True)
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    opt = keras.optimizers.Adam(3e-4)
    model.compile(optimizer=opt, loss=loss_fn, metrics=["accuracy"], jit_compile=cfg["jit"])

    x = tf.constant(np.random.default_rng(0).uniform(0, 255, (bs, size, size, 3)).astype(np.float32))
    y = tf.constant(np.arange(bs) % len(ds.classes))
    jit = cfg["jit"]

    @tf.function(jit_compile=jit)
    def forward():
        return model(x, training=True)

    @tf.function(jit_compile=jit)
    def forward_backward():
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return tape.gradient(loss, model.trainable_variables)

    @tf.function(jit_compile=jit)
    def step():
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))

    def sync(fn):
        return lambda: tf.nest.map_structure(lambda t: t.numpy(), fn())

    parts = {}
    for name, fn in (("forward", forward), ("forward_backward", forward_backward), ("step", step)):
        t = _timed(sync(fn) if name != "step" else lambda: (step(), opt.iterations.numpy()), 3, 15)
        parts[name] = {"p50_ms": 1e3 * float(np.median(t)), "p95_ms": 1e3 * float(np.percentile(t, 95)),
                       "images_per_s": bs / float(np.median(t))}
    parts["optimizer"] = {"p50_ms": parts["step"]["p50_ms"] - parts["forward_backward"]["p50_ms"]}

    aug = AugmentConfig(flip=cfg["flip"], rotation=0.0, zoom=cfg["zoom"], contrast=cfg["contrast"])
    train_ds = make_dataset(ds, "train", size, bs, training=True, augment=aug, seed=0)
    val_ds = make_dataset(ds, "val", size, bs)
    n_train, n_val = len(ds.paths("train")), len(ds.paths("val"))
    for _ in train_ds:   # fill the memory cache (the fit's first epoch does this)
        pass
    t0 = time.perf_counter()
    for _ in train_ds:
        pass
    parts["input"] = {"images_per_s": n_train / (time.perf_counter() - t0)}

    epochs = 3
    times = []

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t0)

    model.fit(train_ds, epochs=epochs, verbose=0, callbacks=[EpochTimer()])
    fit_s = float(np.median(times[1:]))
    parts["fit"] = {"first_epoch_s": times[0], "epoch_s": fit_s, "images_per_s": n_train / fit_s}
    model.evaluate(val_ds, verbose=0)
    t0 = time.perf_counter()
    model.evaluate(val_ds, verbose=0)
    parts["val"] = {"s": time.perf_counter() - t0, "images_per_s": n_val / (time.perf_counter() - t0)}
    train_macs = training_macs(model)
    return {"config": cfg, "forward_macs": macs, "train_macs_per_image": train_macs,
            "trainable_params": trainable, "parts": parts,
            "fit_gmacs": train_macs * parts["fit"]["images_per_s"] / 1e9,
            "step_gmacs": train_macs * parts["step"]["images_per_s"] / 1e9}


def layer_profile(model_name: str = "mobilenet_v2", size: int = 128, batch: int = 32, runs: int = 10) -> dict:
    """Where a training step's time goes: every layer's forward and backward (input and weight gradients) timed
    alone at its own input shape, summed by kind (1x1 convolution, depthwise, other convolutions, BatchNorm,
    activations, the rest), with each kind's MACs and the GMAC/s it reaches. Timed alone a layer pays its own
    dispatch, so the sum is above the whole step's time; the shares are what the profile is for."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from edgecnn._tf import keras, tf
    from edgecnn.arch import create_model
    from edgecnn.arch.inspect import layer_table

    keras.utils.set_random_seed(0)
    model = create_model(model_name, num_classes=4, input_size=size, weights="imagenet")
    macs = {row.name: row.macs for row in layer_table(model)}

    def kind(layer) -> str:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            return "depthwise conv"
        if isinstance(layer, keras.layers.Conv2D):
            return "1x1 conv" if tuple(layer.kernel_size) == (1, 1) else "full conv (stem)"
        if isinstance(layer, keras.layers.BatchNormalization):
            return "batchnorm"
        if isinstance(layer, (keras.layers.ReLU, keras.layers.Activation)):
            return "activation"
        return "other"

    kinds: dict[str, dict] = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer) or isinstance(layer.input, (list, tuple)):
            continue   # multi-input layers (Add) are counted under "other" by the step's remainder
        shape = (batch, *layer.input.shape[1:])
        x = tf.random.uniform(shape)

        @tf.function
        def fwd_bwd(x=x, layer=layer):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=True)
                loss = tf.reduce_sum(tf.cast(y, tf.float32))
            return tape.gradient(loss, [x, *layer.trainable_variables])

        t = _timed(lambda f=fwd_bwd: [g.numpy() for g in f() if g is not None], 2, runs)
        k = kinds.setdefault(kind(layer), {"layers": 0, "ms": 0.0, "train_macs": 0})
        k["layers"] += 1
        k["ms"] += 1e3 * float(np.median(t))
        k["train_macs"] += 3 * batch * macs.get(layer.name, 0)
    total = sum(k["ms"] for k in kinds.values())
    for k in kinds.values():
        k["share"] = round(k["ms"] / total, 3)
        k["gmacs"] = round(k["train_macs"] / (k["ms"] / 1e3) / 1e9, 1) if k["train_macs"] else None
        k["ms"] = round(k["ms"], 1)
    return {"model": model_name, "input_size": size, "batch": batch, "sum_ms": round(total, 1), "kinds": kinds}


def run_config(name: str) -> dict:
    cfg = {**BASE, **CONFIGS[name]}
    env = {**os.environ, **cfg.pop("env", {})}
    try:
        proc = subprocess.run([sys.executable, __file__, "--one", json.dumps(cfg)], env=env, capture_output=True,
                              text=True, cwd=ROOT, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:   # XLA's CPU compile of the training step: it did not finish
        return {"name": name, "error": f"did not finish in {TIMEOUT_S} s"}
    if proc.returncode:
        return {"name": name, "error": proc.stderr[-2000:]}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["name"], result["env"] = name, CONFIGS[name].get("env", {})
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", action="append", choices=sorted(CONFIGS))
    p.add_argument("--all", action="store_true")
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--profile", action="store_true", help="the per-layer-kind profile of the default step")
    p.add_argument("--out", default=str(OUT))
    a = p.parse_args()
    if a.one:
        print(json.dumps(measure(json.loads(a.one))))
        return
    from edgecnn.runtime.latency import machine_info

    peak = cpu_peak()
    out = Path(a.out)
    doc = json.loads(out.read_text()) if out.exists() else {}
    doc.update({"machine": machine_info(), "cpu_peak": peak,
                "method": "median of 15 timed steps after 3 warm-up (parts); fit: median epoch after the first"})
    if a.profile:
        doc["profile"] = prof = layer_profile()
        for name, k in sorted(prof["kinds"].items(), key=lambda kv: -kv[1]["ms"]):
            print(f"{name:18s} {k['layers']:3d} layers {k['ms']:7.1f} ms {k['share']:6.1%}  {k['gmacs']} GMAC/s")
        out.write_text(json.dumps(doc, indent=1) + "\n")
        return
    names = sorted(CONFIGS) if a.all else (a.config or ["mnv2-128-finetune"])
    results = doc.setdefault("configs", {})
    for name in names:
        r = run_config(name)
        if "error" not in r:
            r["share_of_peak_fit"] = round(r["fit_gmacs"] / peak["peak_gmacs"], 3)
            r["share_of_peak_step"] = round(r["step_gmacs"] / peak["peak_gmacs"], 3)
            parts = r["parts"]
            print(f"{name:32s} fit {parts['fit']['images_per_s']:6.1f} img/s ({r['fit_gmacs']:5.1f} GMAC/s, "
                  f"{r['share_of_peak_fit']:.0%} of peak)  fwd {parts['forward']['p50_ms']:6.1f} ms  "
                  f"fwd+bwd {parts['forward_backward']['p50_ms']:6.1f} ms  step {parts['step']['p50_ms']:6.1f} ms  "
                  f"input {parts['input']['images_per_s']:6.0f} img/s  val {parts['val']['images_per_s']:5.0f} img/s",
                  flush=True)
        else:
            print(f"{name}: error {r['error'][-300:]}", flush=True)
        results[name] = r
        out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
