"""The models a service serves: what gets loaded, under which names and versions, and hot reload.

Naming (documented in docs/serving.md):

* one **model** per run directory, named by the manifest's ``name`` (the run);
* its **versions** are the servable artifacts listed in ``manifest.json``, named by file name
  (``model.onnx``, ``model.int8.onnx``, ``model.int8.tflite``, ...), each run by the default runtime
  of its suffix in the runtime registry (ONNX on onnxruntime, TFLite on LiteRT, OpenVINO IR on
  OpenVINO; :func:`serving_runtimes`). Keras/HDF5 files are never loaded (they can execute code on
  load and are not a serving format);
* the **default version** (what ``/v2/models/{name}/infer`` uses) is ``model.onnx``, the fp32
  export whose accuracy equals the Keras reference; else the first ONNX, else the first TFLite
  artifact. ``default_version=`` picks another.
* Given an artifact path instead of a directory, only that artifact is served (its directory
  must hold the manifest).

Every file is checked against the manifest's sha256 before and after its session is built. The
state of a model is an immutable :class:`ModelState`; a reload builds and warms a complete new
state and swaps one reference, so requests in flight finish on the old sessions and none is dropped.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecnn.errors import EdgecnnError, did_you_mean
from edgecnn.export.manifest import MANIFEST, read_manifest, verify_artifact
from edgecnn.runtime import Runner, RuntimeSpec, TensorSpec, list_runtimes, load_runner
from edgecnn.serve.metrics import log_event
from edgecnn.serve.protocol import ProtocolError

# Never loaded: deserialising them can run arbitrary code (Lambda layers, pickles), and they are not
# what an edge service should run.
REFUSED = (".keras", ".h5", ".hdf5", ".pb", ".pkl", ".pickle", ".pt", ".pth")
DEFAULT_VERSION = "model.onnx"


@dataclass(frozen=True)
class LoadedVersion:
    """One artifact, verified, loaded and warmed."""

    model: str
    version: str
    path: Path
    sha256: str
    entry: dict[str, Any]
    runner: Runner
    platform: str
    input_hwc: tuple[int, int, int]
    num_classes: int
    # Set when the runtime declares thread_safe=False (LiteRT, OpenVINO's single infer request).
    lock: threading.Lock | None = field(default=None, compare=False)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """float32 NHWC pixels 0-255 -> the primary output, float32 (a classifier's (N, classes) probabilities)."""
        if self.lock is None:
            return self.runner(images)
        with self.lock:
            return self.runner(images)

    def predict_outputs(self, images: np.ndarray) -> list[np.ndarray]:
        """float32 NHWC pixels 0-255 -> every output, float32, in :attr:`outputs`' order."""
        if self.lock is None:
            return self.runner.predict_outputs(images)
        with self.lock:
            return self.runner.predict_outputs(images)

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        """The artifact's output specs, read from the file by its runner (the first is the primary)."""
        return self.runner.outputs

    def output_metadata(self) -> list[dict[str, Any]]:
        """KServe tensor metadata of every output as ``/infer`` answers it: float32 (quantised outputs come back
        dequantised), the artifact's shape with -1 for the batch and for any other dynamic dimension."""
        return [{"name": o.name, "datatype": "FP32", "shape": tensor_shape(o)} for o in self.outputs]


@dataclass(frozen=True)
class ModelState:
    """Everything served under one model name at one moment; replaced whole on reload."""

    name: str
    run_dir: Path
    manifest: dict[str, Any]
    versions: dict[str, LoadedVersion]
    default: str
    labels: list[str]
    generation: int = 1
    loaded_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class _Target:
    run_dir: Path
    only: str | None        # the artifact named on the command line, or None for "all servable"


class Repository:
    """The served models, keyed by name.

    Args:
        targets: run directories and/or artifact paths (one model each).
        threads: intra-op threads per session (None = runtime default).
        default_version: artifact file name to use when a request names no version.
        warmup_runs: inferences on a zero image before a version is served.

    Raises:
        EdgecnnError: a missing manifest, a hash mismatch, a Keras file, a load failure — at start,
            so a misconfigured service never reports ready.
    """

    def __init__(self, targets: str | os.PathLike | Sequence[str | os.PathLike], *, threads: int | None = None,
                 default_version: str | None = None, warmup_runs: int = 2, load: bool = True):
        self.threads = threads
        self.default_version = default_version
        self.warmup_runs = warmup_runs
        self._targets: dict[str, _Target] = {}
        self._models: dict[str, ModelState] = {}
        self._reload_locks: dict[str, threading.Lock] = {}
        for target in [targets] if isinstance(targets, (str, os.PathLike)) else list(targets):
            t = resolve_target(target)
            manifest = read_manifest(t.run_dir)
            name = str(manifest.get("name") or t.run_dir.resolve().name)
            if name in self._targets:
                raise EdgecnnError(
                    f"two targets serve a model named {name!r} ({self._targets[name].run_dir} and {t.run_dir}); "
                    "serve one run per name."
                )
            self._targets[name] = t
            self._reload_locks[name] = threading.Lock()
            if load:
                self._models[name] = self._build(name, t, manifest, previous=None)
            else:   # check only: hashes and selection, no sessions (the parent of a multi-worker server)
                for version in self._select(name, t, manifest):
                    verify_artifact(t.run_dir, version, manifest)

    # ------------------------------------------------------------------ lookup

    @property
    def names(self) -> list[str]:
        return list(self._targets)

    def state(self, name: str) -> ModelState:
        """The current state of a model; 404 for an unknown name."""
        state = self._models.get(name)
        if state is None:
            raise ProtocolError(f"unknown model {name!r}; served models: {', '.join(self._models)}."
                                f"{did_you_mean(name, self._models)}", status=404)
        return state

    def resolve(self, name: str, version: str | None = None) -> tuple[ModelState, LoadedVersion]:
        """The state and the version a request names (the default when ``version`` is None); 404 if unknown."""
        state = self.state(name)     # one read of the reference: the request sees one consistent state
        key = state.default if version is None else version
        loaded = state.versions.get(key)
        if loaded is None:
            raise ProtocolError(f"model {name!r} has no version {version!r}; versions: {', '.join(state.versions)}."
                                f"{did_you_mean(str(version), state.versions)}", status=404)
        return state, loaded

    def states(self) -> list[ModelState]:
        return [self._models[n] for n in self._targets if n in self._models]

    # ------------------------------------------------------------------ reload

    def reload(self, name: str) -> dict[str, Any]:
        """Re-read the manifest, verify every hash, load what changed, warm it, then swap atomically.

        On any failure the old state keeps serving and an EdgecnnError says why.

        Returns:
            ``{"model", "generation", "default", "loaded": [...], "unchanged": [...], "removed": [...]}``.
        """
        if name not in self._targets:
            self.state(name)         # raises the 404
        lock = self._reload_locks[name]
        if not lock.acquire(blocking=False):
            raise ProtocolError(f"a reload of {name!r} is already running; retry when it has finished.", status=409)
        try:
            target = self._targets[name]
            old = self._models[name]
            manifest = read_manifest(target.run_dir)
            new_name = str(manifest.get("name") or target.run_dir.resolve().name)
            if new_name != name:
                raise EdgecnnError(f"manifest name changed from {name!r} to {new_name!r}; "
                                   "restart the service to rename.")
            new = self._build(name, target, manifest, previous=old)
            self._models[name] = new      # the swap: one reference assignment
            loaded = [v for v in new.versions if v not in old.versions or new.versions[v] is not old.versions[v]]
            result = {
                "model": name, "generation": new.generation, "default": new.default, "loaded": loaded,
                "unchanged": [v for v in new.versions if v not in loaded],
                "removed": [v for v in old.versions if v not in new.versions],
            }
            log_event("model_reloaded", **result)
            return result
        finally:
            lock.release()

    # ------------------------------------------------------------------ building

    def _select(self, name: str, target: _Target, manifest: dict[str, Any]) -> list[str]:
        artifacts = manifest["artifacts"]
        if target.only is not None:
            if target.only not in artifacts:
                raise EdgecnnError(
                    f"{target.only!r} is not listed in {target.run_dir / MANIFEST}; listed: {', '.join(artifacts)}. "
                    "Only artifacts the manifest records (with their sha256) are served."
                )
            return [target.only]
        servable = serving_runtimes()
        selected = [f for f in artifacts if Path(f).suffix.lower() in servable]
        if not selected:
            raise EdgecnnError(
                f"{target.run_dir / MANIFEST} lists no servable artifact ({', '.join(servable)}); listed: "
                f"{', '.join(artifacts) or 'none'}. Run `edgecnn export` with an onnx or tflite format."
            )
        skipped = [f for f in artifacts if f not in selected]
        if skipped:
            log_event("artifacts_not_served", model=name, artifacts=skipped,
                      reason=f"only {', '.join(servable)} are served; Keras/HDF5 files are never loaded")
        return selected

    def _default(self, target: _Target, versions: Sequence[str]) -> str:
        if target.only is not None:
            return target.only
        if self.default_version is not None:
            if self.default_version not in versions:
                raise EdgecnnError(
                    f"default_version={self.default_version!r} is not a served version of {target.run_dir}; "
                    f"versions: {', '.join(versions)}.{did_you_mean(self.default_version, versions)}"
                )
            return self.default_version
        if DEFAULT_VERSION in versions:
            return DEFAULT_VERSION
        onnx = [v for v in versions if v.endswith(".onnx")]
        return (onnx or list(versions))[0]

    def _build(self, name: str, target: _Target, manifest: dict[str, Any], previous: ModelState | None) -> ModelState:
        selected = self._select(name, target, manifest)
        default = self._default(target, selected)
        labels = [str(x) for x in manifest.get("labels") or []]
        versions: dict[str, LoadedVersion] = {}
        for version in selected:
            entry = verify_artifact(target.run_dir, version, manifest)
            old = previous.versions.get(version) if previous else None
            if old is not None and old.sha256 == entry["sha256"]:
                versions[version] = old      # same bytes: keep the warm session
                continue
            versions[version] = self._load(name, version, target.run_dir, entry, manifest)
        for v in versions.values():
            if labels and len(labels) != v.num_classes and manifest.get("task", "classify") == "classify":
                raise EdgecnnError(
                    f"{target.run_dir / MANIFEST} lists {len(labels)} labels but {v.version} outputs "
                    f"{v.num_classes} classes; re-export the run so labels and model agree."
                )
        return ModelState(
            name=name, run_dir=target.run_dir, manifest=manifest, versions=versions, default=default,
            labels=labels or [str(i) for i in range(versions[default].num_classes)],
            generation=(previous.generation + 1) if previous else 1,
        )

    def _load(self, name: str, version: str, run_dir: Path, entry: dict[str, Any],
              manifest: dict[str, Any]) -> LoadedVersion:
        path = run_dir / version
        if not path.resolve().is_relative_to(run_dir.resolve()):
            raise EdgecnnError(f"artifact {version!r} points outside {str(run_dir)!r}; refusing to load it.")
        started = time.perf_counter()
        spec = serving_runtimes()[path.suffix.lower()]
        try:
            runner = load_runner(path, threads=self.threads, runtime=spec.name, server=True)
        except EdgecnnError:
            raise
        except Exception as e:   # a runtime's own error on a corrupt or incompatible file
            raise EdgecnnError(f"could not load {str(path)!r} ({type(e).__name__}: {str(e)[:300]}); "
                               "re-run `edgecnn export` to rewrite it.") from e
        # The file must still be the one we hashed: a swap during loading is refused, not served.
        verify_artifact(run_dir, version, manifest)
        hwc = _input_hwc(runner, manifest, path)
        _check_outputs(runner, entry, path)
        out_shape = runner.output.shape
        classify = manifest.get("task", "classify") == "classify"   # another task's output is its own (a map, a mask)
        if classify and (len(out_shape) != 2 or not isinstance(out_shape[1], int)):
            raise EdgecnnError(f"{path.name}: output shape {out_shape} is not (batch, classes); not a classifier.")
        loaded = LoadedVersion(
            model=name, version=version, path=path, sha256=entry["sha256"], entry=entry, runner=runner,
            platform=str(spec.platform), input_hwc=hwc,
            num_classes=int(out_shape[-1]) if isinstance(out_shape[-1], int) else 0,
            lock=None if spec.thread_safe else threading.Lock(),
        )
        try:
            zeros = np.zeros((1, *hwc), np.float32)
            for _ in range(max(1, self.warmup_runs)):
                probs = loaded.predict(zeros)
        except Exception as e:
            raise EdgecnnError(f"{path.name}: warm-up inference failed ({type(e).__name__}: {str(e)[:300]}).") from e
        if classify and probs.shape != (1, loaded.num_classes):
            raise EdgecnnError(f"{path.name}: warm-up returned shape {probs.shape}, "
                               f"expected (1, {loaded.num_classes}).")
        log_event("model_loaded", model=name, version=version, sha256=entry["sha256"], backend=runner.backend,
                  threads=self.threads, load_ms=round((time.perf_counter() - started) * 1e3, 1))
        return loaded


def serving_runtimes() -> dict[str, RuntimeSpec]:
    """Suffix -> the runtime that serves it: the suffix's default runtime, where it declares a KServe platform."""
    return {suffix: spec for spec in list_runtimes() if spec.platform for suffix in spec.default_for}


def resolve_target(target: str | os.PathLike) -> _Target:
    """A run directory, or an artifact whose directory holds the manifest; Keras files are refused."""
    path = Path(target)
    suffix = path.suffix.lower()
    if suffix in REFUSED:
        raise EdgecnnError(
            f"refusing to serve {str(path)!r}: {suffix} files are never loaded by the service (loading them can "
            "run arbitrary code, and they are not a serving format). Serve the run directory or its model.onnx "
            "/ .tflite artifacts."
        )
    if path.is_dir():
        if not (path / MANIFEST).is_file():
            raise EdgecnnError(f"{str(path)!r} has no {MANIFEST}; serve a run directory written by `edgecnn export`.")
        return _Target(path, None)
    if path.is_file():
        servable = serving_runtimes()
        if suffix not in servable:
            raise EdgecnnError(
                f"cannot serve {path.name!r}: the service runs {', '.join(servable)} artifacts. "
                f"Received suffix {suffix!r}."
            )
        if not (path.parent / MANIFEST).is_file():
            raise EdgecnnError(
                f"{str(path)!r} has no {MANIFEST} beside it; the service only serves artifacts whose sha256 a "
                "manifest records. Serve the run directory it came from."
            )
        return _Target(path.parent, path.name)
    raise EdgecnnError(f"no such run directory or artifact: {str(path)!r}.")


def tensor_shape(spec: TensorSpec) -> list[int]:
    """A tensor's KServe shape: -1 for the batch and for every dynamic dimension."""
    return [-1 if i == 0 or not isinstance(d, int) else int(d) for i, d in enumerate(spec.shape)]


def manifest_outputs(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The output specs a manifest entry records: its ``outputs`` list, else its one (primary) ``output``."""
    if entry.get("outputs"):
        return list(entry["outputs"])
    return [entry["output"]] if entry.get("output") else []


def _check_outputs(runner: Runner, entry: dict[str, Any], path: Path) -> None:
    """Output names an answer can be keyed by (distinct), and the manifest's record of them (logged if it differs:
    the artifact, whose sha256 matched, is what is served)."""
    names = [o.name for o in runner.outputs]
    if len(set(names)) != len(names):
        raise EdgecnnError(f"{path.name}: outputs {names} repeat a name; /infer answers each output under its own "
                           "name. Re-export the model with distinct output names.")
    recorded = [(o.get("name"), tensor_shape(TensorSpec(str(o.get("name")), tuple(o.get("shape") or ()), "")))
                for o in manifest_outputs(entry)]
    actual = [(o.name, tensor_shape(o)) for o in runner.outputs][:len(recorded)]
    if recorded and recorded != actual:
        log_event("manifest_outputs_differ", level=logging.WARNING, artifact=path.name, manifest=recorded,
                  artifact_outputs=actual, note="the artifact's own outputs are served; re-export to rewrite "
                  "manifest.json")


def _input_hwc(runner: Runner, manifest: dict[str, Any], path: Path) -> tuple[int, int, int]:
    shape = runner.input.shape
    if len(shape) != 4:
        raise EdgecnnError(f"{path.name}: input shape {shape} is not NHWC; the service serves image classifiers.")
    h, w, c = shape[1:]
    if not all(isinstance(s, int) for s in (h, w, c)):
        raise EdgecnnError(f"{path.name}: input shape {shape} has dynamic height/width/channels; export with a "
                           "fixed input size (the manifest's preprocessing.resize).")
    resize = (manifest.get("preprocessing") or {}).get("resize")
    if resize and [int(x) for x in resize] != [h, w]:
        log_event("resize_mismatch", artifact=path.name, manifest_resize=resize, model_input=[h, w],
                  note="the model's input shape wins")
    return int(h), int(w), int(c)
