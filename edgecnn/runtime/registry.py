"""The runtime registry: the one list of runtimes, what each runs, and how to open an artifact in one.

A runtime is one module, ``edgecnn/runtime/<name>_runner.py``, whose Runner class is decorated
with :func:`register_runtime`. Every module named ``*_runner.py`` in this package is registered on
first use, so adding a runtime is that module plus its tests. Registration imports nothing heavy:
a runtime's own package (TensorFlow, onnxruntime, LiteRT, OpenVINO) is imported only when a runner
is built or :meth:`RuntimeSpec.available` probes it, so ``runtime_names()`` is cheap and works in a
serving install without TensorFlow.

    >>> runtime_names()
    ('keras', 'litert', 'onnxruntime', 'openvino', 'tflm')
    >>> [r.name for r in runtimes_for("model.int8.onnx")]     # the default runtime first
    ['onnxruntime', 'openvino']
    >>> runner = load_runner("export/run/model.int8.onnx", threads=1, runtime="openvino")  # doctest: +SKIP
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version
from pathlib import Path
from types import MappingProxyType
from typing import Any

from edgecnn.errors import EdgecnnError, RuntimeRefusal, did_you_mean
from edgecnn.runtime.base import Runner


@dataclass(frozen=True)
class RuntimeSpec:
    """What one runtime declares about itself.

    Attributes:
        name: the name recipes, budgets, reports and ``load_runner(runtime=...)`` use.
        suffixes: artifact suffixes it opens (``.onnx``, ``.tflite``, ``.xml``, ...).
        default_for: the suffixes for which it is the default runtime (each suffix has at most one).
        package: the PyPI distribution whose version is reported.
        module: the module that must be importable for the runtime to be available.
        runner: the Runner subclass; its constructor takes ``(path, threads, **options)``.
        options: options beyond ``threads`` with their defaults, passed to the runner.
        server_options: options overridden when the runner shares the CPU with a server.
        platform: the KServe model-metadata platform string; None = never served.
        thread_safe: one runner may be called from several threads at once (else the service locks).
        smoke: a check run once by :meth:`available` (raises when the runtime cannot run here).
        description: one line for docs and ``--help``.
        install: what to ``pip install`` when the package is missing (default: ``package``).
        evaluated_by_default: measured by the evaluate stage unless the recipe's ``evaluate.runtimes``
            says otherwise (False: opt-in, e.g. TFLite Micro's slow reference kernels).
        accepts: a check of one artifact beyond its suffix: None when the runtime runs it, else why not
            (TFLite Micro refuses float ``.tflite`` files); None = every file with a listed suffix.
    """

    name: str
    suffixes: tuple[str, ...]
    default_for: tuple[str, ...]
    package: str
    module: str
    runner: type[Runner]
    options: Mapping[str, Any] = field(default_factory=dict)
    server_options: Mapping[str, Any] = field(default_factory=dict)
    platform: str | None = None
    thread_safe: bool = True
    smoke: Callable[[], None] | None = None
    description: str = ""
    install: str = ""
    evaluated_by_default: bool = True
    accepts: Callable[[Path], str | None] | None = None
    pinned_version: str | None = None

    def runs(self, path: str | os.PathLike) -> bool:
        """Whether this runtime opens this artifact: its suffix, and its content where ``accepts`` checks it."""
        return self.refusal(path) is None

    def refusal(self, path: str | os.PathLike) -> str | None:
        """None when this runtime runs the artifact, else why not."""
        if _suffix(path) not in self.suffixes:
            return f"it runs {', '.join(self.suffixes)} artifacts"
        return None if self.accepts is None else self.accepts(Path(path))

    def version(self) -> str | None:
        """The installed version of the runtime's package, or None when it is not installed; a runtime that runs a
        pinned build elsewhere (the arm64 wheels in their emulated root) reports that pinned version."""
        if self.pinned_version is not None:
            return self.pinned_version
        try:
            return _dist_version(self.package)
        except PackageNotFoundError:
            return None

    def available(self) -> tuple[bool, str]:
        """``(True, "")`` when the runtime can run here, else ``(False, why)``; probed once per process."""
        with _probe_lock:
            if self.name not in _availability:
                _availability[self.name] = self._probe()
            return _availability[self.name]

    def _probe(self) -> tuple[bool, str]:
        if importlib.util.find_spec(self.module) is None:
            return False, f"{self.package} is not installed (pip install '{self.install or self.package}')"
        if self.smoke is not None:
            try:
                self.smoke()
            except Exception as e:  # any failure means "cannot run here"; the reason is reported, not raised
                return False, f"{self.package} {self.version()} failed its smoke test: {type(e).__name__}: {e}"[:400]
        return True, ""

    def open(self, path: str | os.PathLike, threads: int | None = None, *, server: bool = False,
             **options: Any) -> Runner:
        """Build a runner for ``path`` with the declared defaults, server tuning, then ``options``."""
        unknown = set(options) - set(self.options)
        if unknown:
            bad = sorted(unknown)[0]
            raise EdgecnnError(f"runtime {self.name!r} has no option {bad!r}; its options: "
                               f"{', '.join(self.options) or 'none'}.{did_you_mean(bad, self.options)}")
        merged = {**self.options, **(self.server_options if server else {}), **options}
        return self.runner(path, threads, **merged)


_RUNTIMES: dict[str, RuntimeSpec] = {}
_availability: dict[str, tuple[bool, str]] = {}
_probe_lock = threading.Lock()
_loaded = False


def register_runtime(name: str, *, suffixes: tuple[str, ...], package: str, module: str | None = None,
                     default_for: tuple[str, ...] | None = None, options: Mapping[str, Any] | None = None,
                     server_options: Mapping[str, Any] | None = None, platform: str | None = None,
                     thread_safe: bool = True, smoke: Callable[[], None] | None = None, description: str = "",
                     install: str = "", accepts: Callable[[Path], str | None] | None = None,
                     evaluated_by_default: bool = True, pinned_version: str | None = None):
    """Class decorator: register a Runner subclass as the runtime ``name``.

    Args:
        name: the runtime's name.
        suffixes: artifact suffixes it runs, lower case with the dot.
        package: PyPI distribution (its version is reported).
        module: importable module that proves the package is installed (default: ``package``).
        default_for: suffixes for which it is the default (default: all of ``suffixes``).
        options, server_options, platform, thread_safe, smoke, description, install, accepts: see
            :class:`RuntimeSpec`.
        evaluated_by_default: the evaluate stage also measures files in this runtime when the recipe's
            ``evaluate.runtimes`` is unset (False: only when named there, e.g. a slow reference interpreter).
        pinned_version: the version that runs, when it is a pinned build outside this environment.

    Raises:
        EdgecnnError: the name is taken, or another runtime is already the default for a suffix.
    """
    default_for = tuple(suffixes if default_for is None else default_for)

    def wrap(cls: type[Runner]) -> type[Runner]:
        if name in _RUNTIMES and _RUNTIMES[name].runner is not cls:
            raise EdgecnnError(f"runtime {name!r} is registered twice ({_RUNTIMES[name].runner.__name__} and "
                               f"{cls.__name__}); pick another name.")
        for other in _RUNTIMES.values():
            clash = set(other.default_for) & set(default_for)
            if other.name != name and clash:
                raise EdgecnnError(f"runtimes {other.name!r} and {name!r} both claim to be the default for "
                                   f"{', '.join(sorted(clash))}; one of them must leave it out of default_for.")
        cls.backend = name
        _RUNTIMES[name] = RuntimeSpec(
            name=name, suffixes=tuple(suffixes), default_for=default_for, package=package,
            module=module or package, runner=cls, options=MappingProxyType(dict(options or {})),
            server_options=MappingProxyType(dict(server_options or {})), platform=platform,
            thread_safe=thread_safe, smoke=smoke, description=description, install=install, accepts=accepts,
            evaluated_by_default=evaluated_by_default, pinned_version=pinned_version,
        )
        return cls

    return wrap


def _ensure_loaded() -> None:
    """Import every ``*_runner`` module of this package once (cheap: they import their runtime lazily)."""
    global _loaded
    if _loaded:
        return
    import edgecnn.runtime as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name.endswith("_runner"):
            importlib.import_module(f"edgecnn.runtime.{info.name}")
    _loaded = True


def list_runtimes() -> list[RuntimeSpec]:
    """Every registered runtime, by name."""
    _ensure_loaded()
    return [_RUNTIMES[n] for n in sorted(_RUNTIMES)]


def runtime_names() -> tuple[str, ...]:
    """The names of every registered runtime (what recipes and budgets may name)."""
    return tuple(r.name for r in list_runtimes())


def get_runtime(name: str) -> RuntimeSpec:
    """The runtime called ``name``.

    Raises:
        EdgecnnError: no such runtime (with the closest name and the list).
    """
    _ensure_loaded()
    if name not in _RUNTIMES:
        raise EdgecnnError(f"unknown runtime {name!r}.{did_you_mean(str(name), _RUNTIMES)} "
                           f"Known runtimes: {', '.join(sorted(_RUNTIMES))}.")
    return _RUNTIMES[name]


def runtimes_for(path: str | os.PathLike) -> list[RuntimeSpec]:
    """The runtimes that run this artifact: its default runtime first, then the others by name."""
    runs = [r for r in list_runtimes() if r.runs(path)]
    suffix = _suffix(path)
    return sorted(runs, key=lambda r: (suffix not in r.default_for, r.name))


def runner_kinds() -> list[str]:
    """Every artifact suffix some runtime opens."""
    return sorted({s for r in list_runtimes() for s in r.suffixes})


def load_runner(path: str | os.PathLike, threads: int | None = None, *, runtime: str | None = None,
                server: bool = False, options: Mapping[str, Any] | None = None) -> Runner:
    """Open an artifact in a runtime: the one named, or the default for its suffix.

    Args:
        path: the artifact (a file; an OpenVINO IR may also be its folder).
        threads: intra-op threads (None = the runtime's default, usually all cores).
        runtime: a name from :func:`runtime_names`; None = the default runtime for the suffix.
        server: tune for sharing the CPU with a server (the runtime's ``server_options``).
        options: runtime options beyond threads (see ``get_runtime(name).options``).

    Returns:
        A :class:`Runner`: float32 NHWC RGB 0-255 in, float32 probabilities out.

    Raises:
        EdgecnnError: a missing file, an unknown runtime, a runtime that does not run this file,
            or one that is not available on this machine.

    Example:
        >>> load_runner("export/run/model.int8.onnx", threads=1, runtime="openvino")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.exists():
        raise EdgecnnError(f"artifact not found: {str(path)!r}. Run `edgecnn export` on the run directory first.")
    candidates = runtimes_for(path)
    if runtime is None:
        if not candidates:
            raise EdgecnnError(f"no runtime runs {path.name!r} (suffix {_suffix(path)!r}); supported suffixes: "
                               f"{', '.join(runner_kinds())}.")
        spec = candidates[0]
    else:
        spec = get_runtime(runtime)
        why = spec.refusal(path)
        if why is not None:
            others = ", ".join(r.name for r in candidates) or "none"
            raise RuntimeRefusal(f"runtime {runtime!r} cannot run {path.name!r}: {why}. "
                               f"Runtimes for this file: {others}.")
    ok, why = spec.available()
    if not ok:
        raise RuntimeRefusal(f"runtime {spec.name!r} is not available on this machine: {why}.")
    return spec.open(path, threads, server=server, **dict(options or {}))


def _suffix(path: str | os.PathLike) -> str:
    return Path(path).suffix.lower()
