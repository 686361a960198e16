"""Build llama-cpp-python for the machine it is installed on, and install it into Cairn's venv.

pip's default source build of llama-cpp-python compiles ggml with ``GGML_NATIVE`` (``-march=native``).
On a virtual machine whose CPU advertises AMX (``amx_tile amx_int8``) that build puts AMX kernels in
``libggml-cpu.so`` and the first completion dies with SIGILL (``tilezero``): Linux only lets a process
use the AMX tile registers after it asks for them, and the hypervisor may not pass them through at all.
ggml's other route, one library per CPU variant picked at run time (``GGML_BACKEND_DL`` +
``GGML_CPU_ALL_VARIANTS``), scores the AMX variant by CPUID alone (``ggml-cpu/arch/x86/cpu-feats.cpp``),
so the same machine would load the same kernels, and llama-cpp-python 0.3.36 never calls
``ggml_backend_load_all`` to load them.

So the build names its instructions: every x86-64 extension this CPU lists in ``/proc/cpuinfo`` that ggml
has a switch for (SSE4.2, AVX, AVX2, BMI2, FMA, F16C, AVX-VNNI, AVX-512 and its VBMI/VNNI/BF16 parts),
never AMX, with ``GGML_NATIVE=OFF``. The wheel goes into a folder of Cairn's own keyed by those
flags (pip's wheel cache is keyed by the source archive alone and would hand back a wheel built with other
flags), and a marker in the venv names the build installed there, so ``make install`` replaces a build made
another way. Run with the system Python before the venv has anything in it: standard library only.

    python models/llama_build.py install --venv .venv        # build if needed, install if different
    python models/llama_build.py install --venv .venv --rebuild
    python models/llama_build.py flags                       # the CMake flags this machine gets
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

REQUIREMENT = "llama-cpp-python==0.3.36"
MARKER = ".cairn-llama-build"

# (cpuinfo flags that must all be present, the ggml CMake switch they allow). GGML_AVX512 compiles with
# -mavx512f -mavx512cd -mavx512vl -mavx512dq -mavx512bw (ggml-cpu/CMakeLists.txt), so it needs all five.
X86_SWITCHES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("sse4_2",), "GGML_SSE42"),
    (("avx",), "GGML_AVX"),
    (("avx2",), "GGML_AVX2"),
    (("bmi2",), "GGML_BMI2"),
    (("fma",), "GGML_FMA"),
    (("f16c",), "GGML_F16C"),
    (("avx_vnni",), "GGML_AVX_VNNI"),
    (("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"), "GGML_AVX512"),
    (("avx512_vbmi",), "GGML_AVX512_VBMI"),
    (("avx512_vnni",), "GGML_AVX512_VNNI"),
    (("avx512_bf16",), "GGML_AVX512_BF16"),
)
# Never compiled in, whatever the CPU says: see the module docstring.
ALWAYS_OFF = ("GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """Return the feature flags the first CPU lists in ``cpuinfo`` (empty where there is no such file)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return set()


def cmake_args(flags: set[str], machine: str | None = None) -> list[str]:
    """Return the CMake arguments for a build that uses exactly the named ``flags`` (x86-64) or the defaults."""
    machine = machine or platform.machine()
    if machine.lower() not in ("x86_64", "amd64"):
        return []  # ggml's defaults elsewhere; the AMX problem is x86's
    args = ["-DGGML_NATIVE=OFF"]
    for needed, switch in X86_SWITCHES:
        args.append(f"-D{switch}={'ON' if set(needed) <= flags else 'OFF'}")
    args += [f"-D{switch}=OFF" for switch in ALWAYS_OFF]
    return args


def build_key(requirement: str, args: list[str]) -> str:
    """Return the key of a build: the package version, the Python it is for, the machine and the flags."""
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    blob = json.dumps([requirement, tag, platform.machine(), sys.platform, args])
    return f"{tag}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def wheel_home() -> Path:
    """Return the folder built wheels are kept in, one subfolder per build key."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "cairn" / "llama-wheels"


def build_wheel(requirement: str, args: list[str], folder: Path, python: str) -> Path:
    """Build the wheel with ``args`` into ``folder`` (written whole or not at all) and return its path."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CMAKE_ARGS": " ".join(args), "FORCE_CMAKE": "1"}
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".build-"))
    try:
        print(f"cairn: building {requirement} with {' '.join(args) or 'its defaults'} (minutes)", file=sys.stderr)
        subprocess.run(
            [python, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-cache-dir",
             "--no-binary", "llama-cpp-python", "--wheel-dir", str(tmp), requirement],
            check=True, env=env,
        )  # fmt: skip
        (tmp / "build.json").write_text(json.dumps({"requirement": requirement, "cmake_args": args}) + "\n")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return wheel_in(folder)


def wheel_in(folder: Path) -> Path:
    """Return the one wheel file in ``folder``."""
    wheels = sorted(folder.glob("llama_cpp_python-*.whl"))
    if not wheels:
        raise FileNotFoundError(f"no llama_cpp_python wheel in {folder}")
    return wheels[0]


def installed_key(venv: Path) -> str | None:
    """Return the build key recorded in ``venv``, or None when none is recorded."""
    try:
        return json.loads((venv / MARKER).read_text())["key"]
    except (OSError, ValueError, KeyError):
        return None


def install(venv: Path, requirement: str = REQUIREMENT, rebuild: bool = False, extra_args: Sequence[str] = ()) -> str:
    """Make sure ``venv`` holds the build of ``requirement`` for this machine; return what was done."""
    python = str(venv / "bin" / "python")
    args = cmake_args(cpu_flags()) + list(extra_args)
    key = build_key(requirement, args)
    folder = wheel_home() / key
    if rebuild:
        shutil.rmtree(folder, ignore_errors=True)
    elif installed_key(venv) == key:
        return f"llama-cpp-python: build {key} already installed"
    wheel = wheel_in(folder) if folder.is_dir() and any(folder.glob("*.whl")) else None
    if wheel is None:
        wheel = build_wheel(requirement, args, folder, python)
    # --force-reinstall: a build made another way (pip's native default) has the same version number
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall", str(wheel)], check=True
    )
    (venv / MARKER).write_text(json.dumps({"key": key, "requirement": requirement, "cmake_args": args}) + "\n")
    return f"llama-cpp-python: installed build {key} ({wheel.name})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("install", help="build (if not built yet) and install into the venv (if not there yet)")
    run.add_argument("--venv", type=Path, default=Path(".venv"))
    run.add_argument("--requirement", default=REQUIREMENT)
    run.add_argument("--rebuild", action="store_true", help="build again even if a wheel with these flags exists")
    sub.add_parser("flags", help="print the CMake flags this machine gets")
    args = parser.parse_args(argv)
    if args.command == "flags":
        print(" ".join(cmake_args(cpu_flags())))
        return 0
    extra = os.environ.get("CAIRN_LLAMA_CMAKE_ARGS", "").split()
    print(install(args.venv, args.requirement, args.rebuild, extra))
    return 0


if __name__ == "__main__":
    sys.exit(main())
