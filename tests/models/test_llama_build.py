"""llama.cpp is built for the CPU it runs on, never with AMX, and the venv holds that build."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from models import llama_build

ROOT = Path(__file__).resolve().parents[2]
# The flags line of /proc/cpuinfo on the VM where pip's native build died with SIGILL (issue 24).
AMX_VM_FLAGS = set(
    "fpu sse4_2 avx avx2 bmi2 fma f16c avx_vnni avx512f avx512cd avx512vl avx512dq avx512bw avx512_vbmi "
    "avx512_vnni avx512_bf16 avx512_fp16 amx_tile amx_int8 amx_bf16".split()
)


def test_amx_is_never_compiled_in_even_where_the_cpu_lists_it() -> None:
    args = llama_build.cmake_args(AMX_VM_FLAGS, machine="x86_64")
    assert "-DGGML_NATIVE=OFF" in args
    assert {"-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF"} <= set(args)
    assert "-DGGML_AVX512=ON" in args and "-DGGML_AVX512_BF16=ON" in args and "-DGGML_AVX2=ON" in args


def test_only_what_the_cpu_lists_is_turned_on() -> None:
    old = {"sse4_2", "avx", "avx2", "fma", "f16c", "bmi2", "avx512f"}  # AVX-512F alone is not ggml's AVX512
    args = llama_build.cmake_args(old, machine="x86_64")
    assert "-DGGML_AVX2=ON" in args and "-DGGML_AVX512=OFF" in args and "-DGGML_AVX_VNNI=OFF" in args
    assert all(a.endswith("=OFF") for a in llama_build.cmake_args(set(), machine="x86_64") if "NATIVE" not in a)
    assert llama_build.cmake_args(AMX_VM_FLAGS, machine="aarch64") == []  # ggml's defaults elsewhere


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu avx2 amx_tile\n\nprocessor\t: 1\n")
    assert llama_build.cpu_flags(cpuinfo) == {"fpu", "avx2", "amx_tile"}
    assert llama_build.cpu_flags(tmp_path / "missing") == set()


def test_a_build_with_other_flags_has_another_key() -> None:
    ours = llama_build.cmake_args(AMX_VM_FLAGS, machine="x86_64")
    assert llama_build.build_key(llama_build.REQUIREMENT, ours) != llama_build.build_key(llama_build.REQUIREMENT, [])
    assert llama_build.build_key(llama_build.REQUIREMENT, ours) == llama_build.build_key(llama_build.REQUIREMENT, ours)


def test_the_pinned_version_is_the_one_built() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    pinned = re.search(r'"llama-cpp-python\[server\]==([\d.]+)"', pyproject)
    assert pinned and f"llama-cpp-python=={pinned.group(1)}" == llama_build.REQUIREMENT


def test_the_venv_holds_this_machines_build() -> None:
    """`make install` put Cairn's build in the venv (not pip's native one), for this very CPU."""
    venv = Path(sys.prefix)
    recorded = llama_build.installed_key(venv)
    assert recorded is not None, f"no {llama_build.MARKER} in {venv}: run make install"
    args = llama_build.cmake_args(llama_build.cpu_flags())
    assert recorded == llama_build.build_key(llama_build.REQUIREMENT, args), "rebuild: make rebuild-model"


@pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump (binutils) is not installed")
def test_the_installed_library_has_no_amx_instructions() -> None:
    spec = importlib.util.find_spec("llama_cpp")
    assert spec is not None and spec.origin
    library = Path(spec.origin).parent / "lib" / "libggml-cpu.so"
    listing = subprocess.run(["objdump", "-d", str(library)], capture_output=True, text=True, check=True).stdout
    assert len(listing) > 100_000  # it did disassemble something
    assert not re.search(r"\b(tilezero|tileloadd|tdpbssd|tdpbf16ps|ldtilecfg)\b", listing)


@pytest.mark.integration
def test_the_built_library_completes_on_this_machine(llama) -> None:
    """The real server on the bundled model started (its start-up already completed a token) and answers."""
    import httpx

    question = {"messages": [{"role": "user", "content": "Count to five."}], "max_tokens": 16}
    reply = httpx.post(f"{llama.base_url}/chat/completions", json=question, timeout=120)
    assert reply.status_code == 200
    assert reply.json()["usage"]["completion_tokens"] > 0
    assert llama.process.running
