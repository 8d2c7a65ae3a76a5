"""An arm64 Debian root that runs Python with the aarch64 wheels of LiteRT and onnxruntime under qemu-user.

The arm64 runtimes (``litert-arm64``, ``onnxruntime-arm64``) run an artifact with the *aarch64* builds of
the runtimes, so their int8 answers come from the NEON / dot-product kernels a phone or a board runs,
not from the build machine's AVX2 / VNNI ones. Nothing here is simulated: the root is Debian's own
arm64 packages, the wheels are the registry's aarch64 wheels, and the CPU is qemu-user emulating an
aarch64 core instruction by instruction (exact numerics, about 60x slower than native: no latency).

How the root is made (:func:`ensure_root`, once per machine, then cached):

1. ``qemu-user-static`` and ``debootstrap`` on the host; where missing and the process is root with
   ``apt-get``, they are installed with it (``EDGECNN_ARM64_NO_APT=1`` forbids that).
2. ``debootstrap --foreign --arch=arm64 --variant=minbase`` downloads Debian's arm64 packages (Release
   signatures checked by debootstrap against the host's Debian keyring) and unpacks the required ones;
   the ``--include``'d ones (Python) are unpacked with the host's ``dpkg-deb`` and ``tar``. The second stage
   (maintainer scripts) is not run: it needs binfmt_misc to run arm64 programs from arm64 programs,
   and nothing here needs it - Python only needs the unpacked files.
3. The aarch64 wheels in :data:`WHEELS` are fetched with ``pip download --platform ... --only-binary``
   (through the host's pip configuration, so a mirror works), each checked against its pinned sha256,
   and unpacked into ``<root>/opt/edgecnn/site``.
4. A smoke run: the root's ``python3`` under ``qemu-aarch64-static -L <root>`` imports both runtimes and
   reports ``platform.machine() == "aarch64"``; only then is the root moved into the cache (atomically,
   under a file lock, so concurrent builds do not collide).

The cache is ``$EDGECNN_HOME/arm64-root/<key>`` (default ``~/.cache/edgecnn``), where ``<key>`` digests
the suite, the package list and the wheel pins: changing a pin builds a new root. Measured: about
3 minutes for a first build on a 2-core VM with a nearby mirror (``docs/arm64.md``).

    root = ensure_root()                      # builds once, then returns the cached folder
    cmd = python_command(root)                # [qemu-aarch64-static, -L, root, root/usr/bin/python3.11, ...]
    why = root_refusal()                      # None, or why this machine cannot build or run the root
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from edgecnn.errors import RuntimeRefusal

log = logging.getLogger("edgecnn.runtime.arm64")

SUITE = "bookworm"                       # Debian 12: python3.11 (cp311 wheels), glibc 2.36 (manylinux_2_28 ok)
PYTHON = "usr/bin/python3.11"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("python3.11-minimal", "libpython3.11-stdlib", "libstdc++6", "libgcc-s1", "zlib1g")
SITE = "opt/edgecnn/site"                # where the wheels are unpacked inside the root
QEMU_CPU = "cortex-a76"                  # the emulated core: a phone's big core (ARMv8.2: NEON, dot product)
CPUINFO_PROCESSORS = 64
HOST_TOOLS = {"qemu-aarch64-static": "qemu-user-static", "debootstrap": "debootstrap"}
BUILD_TIMEOUT_S = 1800


@dataclass(frozen=True)
class Wheel:
    """One pinned aarch64 (or pure-Python) wheel: the file pip must return and its sha256."""

    name: str
    version: str
    filename: str
    sha256: str


# ai-edge-litert publishes Linux aarch64 wheels only up to 1.4.0 (the host runs whatever is installed, e.g.
# 2.x); onnxruntime is the same version on both sides. numpy is the one both aarch64 wheels import.
WHEELS: tuple[Wheel, ...] = (
    Wheel("ai-edge-litert", "1.4.0", "ai_edge_litert-1.4.0-cp311-cp311-manylinux_2_17_aarch64.whl",
          "131d1c12dedc0c45aa683106d71ea895117c2332b0efb52712965f8b5e63781d"),
    Wheel("onnxruntime", "1.32.0", "onnxruntime-1.32.0-cp311-cp311-manylinux_2_28_aarch64.whl",
          "2303372a85299b6757b0e11e1cbf13e410ddf7e10c37f4b37e99d1c90e7daf7c"),
    Wheel("numpy", "2.4.6", "numpy-2.4.6-cp311-cp311-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl",
          "0ab0a9c4ffb1a6d95ef519fe4247dba8eb6b18ad93999f76b7f657039acabd47"),
    Wheel("flatbuffers", "25.12.19", "flatbuffers-25.12.19-py2.py3-none-any.whl",
          "7634f50c427838bb021c2d66a3d1168e9d199b0607e6329399f04846d42e20b4"),
)
WHEEL_VERSIONS = {w.name: w.version for w in WHEELS}


def cache_dir() -> Path:
    """``$EDGECNN_HOME`` or ``~/.cache/edgecnn`` (the weights cache's rule, :func:`edgecnn.arch.weights.cache_dir`)."""
    return Path(os.environ.get("EDGECNN_HOME") or "~/.cache/edgecnn").expanduser()


def root_key() -> str:
    """A digest of everything the root is made of: a change of pin builds a new root beside the old."""
    spec = {"suite": SUITE, "packages": PACKAGES, "wheels": [w.__dict__ for w in WHEELS], "cpu": QEMU_CPU, "layout": 2}
    return f"{SUITE}-" + hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def root_path() -> Path:
    """Where the root for the current pins lives (it may not exist yet)."""
    return cache_dir() / "arm64-root" / root_key()


def is_built(root: Path | None = None) -> bool:
    """True when the cached root is complete (its build wrote ``.edgecnn-ready`` last)."""
    return ((root or root_path()) / ".edgecnn-ready").is_file()


def qemu_binary() -> str | None:
    """The host's ``qemu-aarch64-static`` (or ``qemu-aarch64``), or None."""
    return shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")


def root_refusal() -> str | None:
    """None when this machine can run the root (built, or buildable), else why not, in one line.

    Cheap: probes tools and permissions, builds nothing (the runtime registry calls it for every run).
    """
    if platform.system() != "Linux":
        return f"the arm64 root needs Linux (qemu-user); this is {platform.system()}"
    if platform.machine() not in ("x86_64", "AMD64", "aarch64"):
        return f"the arm64 root is built on x86_64 hosts; this is {platform.machine()}"
    if is_built() and qemu_binary():
        return None
    if os.geteuid() != 0:
        if is_built():
            return "qemu-aarch64-static is missing (apt-get install qemu-user-static)"
        return ("no cached arm64 root and building one needs root (debootstrap); run `make arm64-root` once "
                f"as root, or copy a built root to {root_path()}")
    missing = [pkg for tool, pkg in HOST_TOOLS.items() if not _have_tool(tool)]
    if missing and (os.environ.get("EDGECNN_ARM64_NO_APT") or not shutil.which("apt-get")):
        return f"{' and '.join(missing)} missing and not installable here (apt-get install {' '.join(missing)})"
    return None


def _have_tool(tool: str) -> bool:
    return shutil.which(tool) is not None or (tool == "qemu-aarch64-static" and qemu_binary() is not None)


def ensure_root(*, log_to=None) -> Path:
    """The arm64 root for the current pins: built once (minutes), then reused from the cache.

    Args:
        log_to: a callable taking one line per build step (default: this module's logger).

    Returns:
        The root folder.

    Raises:
        RuntimeRefusal: this machine cannot build it (no root, no network, no apt-get), with the reason.
    """
    root = root_path()
    if is_built(root) and qemu_binary():
        return root
    why = root_refusal()
    if why is not None:
        raise RuntimeRefusal(why)
    say = log_to or log.warning
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f"{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)          # a second process waits for the first build, then reuses it
        if is_built(root) and qemu_binary():
            return root
        t0 = time.monotonic()
        say(f"building the arm64 root (once; cached in {root}) ...")
        try:
            _install_host_tools(say)
            if is_built(root):          # only qemu was missing
                return root
            _build(root, say)
        except RuntimeRefusal:
            raise
        except (OSError, subprocess.SubprocessError) as e:
            raise RuntimeRefusal(f"could not build the arm64 root: {type(e).__name__}: {e}"[:600]) from e
        say(f"arm64 root ready in {time.monotonic() - t0:.0f} s: {root}")
    return root


def _run(cmd: list[str], what: str, timeout: float = BUILD_TIMEOUT_S, env: dict | None = None) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-5:]
        raise RuntimeRefusal(f"{what} failed (exit {p.returncode}): {' | '.join(tail)}"[:800])
    return p.stdout


def _install_host_tools(say) -> None:
    missing = sorted({pkg for tool, pkg in HOST_TOOLS.items() if not _have_tool(tool)})
    if not missing:
        return
    say(f"installing {' '.join(missing)} with apt-get ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update", "-qq"], "apt-get update", env=env)
    _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], "apt-get install", env=env)


def _build(root: Path, say) -> None:
    with tempfile.TemporaryDirectory(dir=root.parent, prefix=f".{root.name}-") as tmp:
        work = Path(tmp) / "root"
        t0 = time.monotonic()
        mirror = os.environ.get("EDGECNN_DEBIAN_MIRROR") or DEBIAN_MIRROR
        _run(["debootstrap", "--foreign", "--arch=arm64", "--variant=minbase", f"--include={','.join(PACKAGES)}",
              SUITE, str(work), mirror], f"debootstrap --foreign --arch=arm64 {SUITE} from {mirror}")
        _unpack_base(work)
        say(f"debootstrap (arm64 {SUITE}, unpacked): {time.monotonic() - t0:.0f} s")
        t1 = time.monotonic()
        _install_wheels(work / SITE, Path(tmp) / "wheels")
        say(f"aarch64 wheels ({', '.join(f'{w.name} {w.version}' for w in WHEELS)}): {time.monotonic() - t1:.0f} s")
        shutil.rmtree(work / "var" / "cache" / "apt" / "archives", ignore_errors=True)   # the .deb files
        _write_cpuinfo(work)
        info = smoke(work)
        (work / ".edgecnn-root.json").write_text(json.dumps({**info, "suite": SUITE, "key": root.name}, indent=1))
        (work / ".edgecnn-ready").write_text("ok\n")
        if root.exists():                          # an incomplete earlier attempt
            shutil.rmtree(root)
        os.replace(work, root)


_PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_27_aarch64", "manylinux_2_28_aarch64")


def _unpack_base(work: Path) -> None:
    """Unpack what the first stage only downloaded (``--include``'d packages and their dependencies: Python),
    with the host's ``dpkg-deb``, which reads a .deb of any architecture and runs no maintainer script."""
    base = (work / "debootstrap" / "base").read_text().split()
    paths = dict(line.split(None, 1) for line in (work / "debootstrap" / "debpaths").read_text().splitlines() if line)
    for pkg in base:   # tar keeps the merged-/usr links (/lib -> usr/lib) that a plain `dpkg-deb -x` replaces
        deb = work / paths[pkg].strip().lstrip("/")
        data = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "--keep-directory-symlink", "-C", str(work)], input=data, check=True,
                       capture_output=True)


_CPUINFO = """processor\t: {i}
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x4
CPU part\t: 0xd0b
CPU revision\t: 1

"""


def _write_cpuinfo(work: Path) -> None:
    """An arm64 ``/proc/cpuinfo`` (Cortex-A76, :data:`QEMU_CPU`) inside the root.

    qemu-user 7.2 passes the host's x86 ``/proc/cpuinfo`` through, and the cpuinfo library in onnxruntime's
    aarch64 build dereferences NULL parsing it (measured: ``import onnxruntime`` ends with SIGSEGV). With
    ``-L root`` qemu opens ``root/proc/cpuinfo`` first, so the root carries one that matches the emulated
    core; every other ``/proc`` file falls through to the host's.
    """
    proc = work / "proc"
    if proc.is_symlink() or proc.is_file():
        proc.unlink()
    proc.mkdir(exist_ok=True)
    (proc / "cpuinfo").write_text("".join(_CPUINFO.format(i=i) for i in range(CPUINFO_PROCESSORS)))


def _install_wheels(site: Path, download: Path) -> None:
    download.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           *[a for tag in _PLATFORMS for a in ("--platform", tag)], "--python-version", "3.11",
           "--implementation", "cp", "--abi", "cp311", "--abi", "abi3", "--abi", "none", "-d", str(download),
           *[f"{w.name}=={w.version}" for w in WHEELS]]
    _run(cmd, "pip download of the aarch64 wheels")
    site.mkdir(parents=True, exist_ok=True)
    for w in WHEELS:
        path = download / w.filename
        if not path.is_file():
            got = ", ".join(sorted(p.name for p in download.iterdir()))
            raise RuntimeRefusal(f"pip did not return {w.filename} for {w.name}=={w.version} (got: {got})")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != w.sha256:
            raise RuntimeRefusal(f"{w.filename}: sha256 {digest} is not the pinned {w.sha256}; the file from the "
                                 "registry changed - check it and update WHEELS in edgecnn/runtime/arm64_root.py")
        _unpack_wheel(path, site)


def _unpack_wheel(path: Path, site: Path) -> None:
    """A wheel is a zip of the site-packages tree; ``*.data/{purelib,platlib}`` belong in it too."""
    with zipfile.ZipFile(path) as z:
        z.extractall(site)
    for data in site.glob("*.data"):
        for sub in ("purelib", "platlib"):
            if (data / sub).is_dir():
                shutil.copytree(data / sub, site, dirs_exist_ok=True)
        shutil.rmtree(data)


_SMOKE = """
import json, platform, sys
import numpy, onnxruntime
from ai_edge_litert import interpreter
from importlib.metadata import version
print(json.dumps({"machine": platform.machine(), "python": platform.python_version(), "numpy": numpy.__version__,
                  "onnxruntime": onnxruntime.__version__, "ai-edge-litert": version("ai-edge-litert")}))
"""


def python_command(root: Path, *args: str) -> list[str]:
    """The command that runs the root's Python under qemu-user (no binfmt_misc needed), with ``args``."""
    qemu = qemu_binary()
    if qemu is None:
        raise RuntimeRefusal("qemu-aarch64-static is missing (apt-get install qemu-user-static)")
    return [qemu, "-cpu", QEMU_CPU, "-L", str(root), str(root / PYTHON), "-s", *args]


def child_env(root: Path, threads: int | None = None) -> dict[str, str]:
    """A clean environment for the emulated Python (the host's is not passed on): its own site folder first."""
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONPATH": str(root / SITE), "HOME": str(root / "root")}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def smoke(root: Path) -> dict:
    """Import both runtimes in the root's Python under qemu; their versions and the machine, or RuntimeRefusal."""
    cmd = python_command(root, "-c", _SMOKE)
    out = _run(cmd, "the arm64 Python smoke run", timeout=300, env=child_env(root))
    info = json.loads(out.strip().splitlines()[-1])
    if info.get("machine") != "aarch64":
        raise RuntimeRefusal(f"the arm64 root's Python reports machine {info.get('machine')!r}, not aarch64")
    return info


def root_info(root: Path | None = None) -> dict:
    """What the built root runs (``machine``, ``python``, ``numpy``, ``onnxruntime``, ``ai-edge-litert``)."""
    with contextlib.suppress(OSError, ValueError):
        return json.loads(((root or root_path()) / ".edgecnn-root.json").read_text())
    return {}


def qemu_version() -> str | None:
    """``qemu-aarch64 version 7.2.x`` of the host's qemu-user, or None."""
    qemu = qemu_binary()
    if qemu is None:
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run([qemu, "--version"], capture_output=True, text=True, timeout=30).stdout
        return out.splitlines()[0].strip() if out else None
    return None


def main() -> None:
    """``python -m edgecnn.runtime.arm64_root``: build (or find) the root and print where it is."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = ensure_root(log_to=print)
    print(json.dumps({"root": str(root), **root_info(root)}, indent=1))


if __name__ == "__main__":
    main()
