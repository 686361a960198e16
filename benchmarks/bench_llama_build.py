"""Tokens/s of the bundled model: Cairn's llama.cpp build (this CPU's flags, no AMX) against pip's native one.

    .venv/bin/python benchmarks/bench_llama_build.py [--rounds 7] [--tokens 128] [--threads 2] [--avx2]

The native build is pip's default (``GGML_NATIVE``, ``-march=native``), built once into
~/.cache/cairn/llama-wheels/native-* (minutes) and unpacked beside the venv's; the venv holds Cairn's
build (``models/llama_build.py``); ``--avx2`` adds a build for any x86-64-v3 CPU (no AVX-512). Each
build runs llama.cpp's server on the bundled SmolLM2-135M; round by round (the order rotated each
round) each is asked the same prompt at temperature 0 for ``--tokens`` tokens (the end-of-text tokens
banned by ``logit_bias``, so every reply runs to the limit and the rate is the generation's). Reported
per build: generation tokens/s (median, min, max, request time included) and the ratio of the medians.
Results: benchmarks/results/llama_build.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, write_result
from cairn.processes import ChildProcess, free_port, http_ok
from models import llama_build
from models.embedded import bundled_gguf

PROMPT = "List the numbers from one to two hundred in words, separated by commas."


def native_wheel() -> Path:
    """Return pip's default (native) build of the same llama-cpp-python, building it once."""
    key = llama_build.build_key(llama_build.REQUIREMENT, ["native"])
    folder = llama_build.wheel_home() / f"native-{key}"
    if folder.is_dir() and any(folder.glob("*.whl")):
        return llama_build.wheel_in(folder)
    return llama_build.build_wheel(llama_build.REQUIREMENT, [], folder, sys.executable)


def avx2_args() -> list[str]:
    """The flags of a build for any x86-64-v3 CPU (AVX2, FMA, F16C, BMI2; no AVX-512): what portability costs."""
    wide = {"avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw", "avx512_vbmi", "avx512_vnni", "avx512_bf16",
            "avx_vnni"}  # fmt: skip
    return llama_build.cmake_args(llama_build.cpu_flags() - wide)


def wheel_for(args: list[str]) -> Path:
    """Return a build of the same llama-cpp-python with ``args``, building it once."""
    folder = llama_build.wheel_home() / llama_build.build_key(llama_build.REQUIREMENT, args)
    if folder.is_dir() and any(folder.glob("*.whl")):
        return llama_build.wheel_in(folder)
    return llama_build.build_wheel(llama_build.REQUIREMENT, args, folder, sys.executable)


def unpack(wheel: Path, target: Path) -> Path:
    """Install ``wheel`` (no dependencies) into ``target``, for PYTHONPATH."""
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                    str(wheel)], check=True)  # fmt: skip
    return target


def serve(pythonpath: str | None, threads: int, log: Path) -> tuple[ChildProcess, str]:
    port = free_port()
    env = dict(__import__("os").environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(bundled_gguf()), "--port", str(port),
               "--n_ctx", "2048", "--n_threads", str(threads)]  # fmt: skip
    child = ChildProcess(command, name="llama.cpp server", env=env, log_path=log)
    base = f"http://127.0.0.1:{port}/v1"
    child.start(lambda: http_ok(base + "/models"), timeout=120)
    return child, base


#: SmolLM2's end tokens (<|endoftext|>, <|im_start|>, <|im_end|>), banned so every reply runs to ``max_tokens``.
NO_END = {"0": -100, "1": -100, "2": -100}


def complete(base: str, tokens: int) -> dict[str, float]:
    body = {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": tokens, "temperature": 0,
            "logit_bias": NO_END}  # fmt: skip
    request = urllib.request.Request(base + "/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=300) as response:
        reply = json.loads(response.read())
    elapsed = time.perf_counter() - started
    made = reply["usage"]["completion_tokens"]
    return {"seconds": elapsed, "tokens": made, "tokens_per_s": made / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--avx2", action="store_true", help="also an AVX2-only build (any x86-64-v3 CPU)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-llama-"))
    builds: dict[str, str | None] = {
        "cairn": None,  # the venv's own build
        "native": str(unpack(native_wheel(), work / "native")),
    }
    if args.avx2:
        builds["avx2"] = str(unpack(wheel_for(avx2_args()), work / "avx2"))
    flags = " ".join(llama_build.cmake_args(llama_build.cpu_flags()))
    servers = {name: serve(path, args.threads, work / f"{name}.log") for name, path in builds.items()}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in builds}
    try:
        for _, base in servers.values():  # warm each once (page cache, first allocation)
            complete(base, 8)
        order = list(builds)
        for round_ in range(args.rounds):
            for name in order[round_ % len(order) :] + order[: round_ % len(order)]:
                runs[name].append(complete(servers[name][1], args.tokens))
    finally:
        for child, _ in servers.values():
            child.stop()

    report: dict[str, Any] = {"machine": machine(), "flags": flags, "rounds": args.rounds, "tokens": args.tokens,
                              "threads": args.threads, "builds": {}}  # fmt: skip
    for name, results in runs.items():
        rates = [r["tokens_per_s"] for r in results]
        report["builds"][name] = {"tokens_per_s_median": round(statistics.median(rates), 1),
                                  "tokens_per_s_min": round(min(rates), 1), "tokens_per_s_max": round(max(rates), 1),
                                  "tokens_median": statistics.median(r["tokens"] for r in results)}  # fmt: skip
    cairn, native = (report["builds"][n]["tokens_per_s_median"] for n in ("cairn", "native"))
    report["cairn_over_native"] = round(cairn / native, 3)
    if "avx2" in report["builds"]:
        report["avx2_over_native"] = round(report["builds"]["avx2"]["tokens_per_s_median"] / native, 3)
    path = write_result("llama_build", report)
    print(json.dumps(report, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
