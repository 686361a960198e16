"""How many threads the embedded model should use when it shares the cores: tokens/s by threads and load.

    .venv/bin/python benchmarks/bench_llama_threads.py [--rounds 3] [--tokens 32]

llama.cpp's server on the bundled SmolLM2-135M, once per thread count (1 .. the cores), asked the same
prompt at temperature 0; each round runs every configuration (order rotated) on an idle machine and
with one core kept busy by another process (what `cairn serve` leaves when it embeds queries, parses
requests and streams answers beside the model). Reported: generation tokens/s, median, min and max.
Results: benchmarks/results/llama_threads.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_llama_build import complete, serve
from benchmarks.common import machine, write_result

BUSY = "import time\nend = time.monotonic() + 3600\nwhile time.monotonic() < end: pass\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    counts = list(range(1, cores + 1))
    work = Path(tempfile.mkdtemp(prefix="bench-threads-"))
    servers = {n: serve(None, n, work / f"t{n}.log") for n in counts}
    runs: dict[str, list[float]] = {f"{n} thread(s), {load}": [] for n in counts for load in ("idle", "one core busy")}
    try:
        for _, base in servers.values():
            complete(base, 8)
        for round_ in range(args.rounds):
            for load in ("idle", "one core busy"):
                busy = subprocess.Popen([sys.executable, "-c", BUSY]) if load != "idle" else None
                try:
                    order = counts[round_ % len(counts) :] + counts[: round_ % len(counts)]
                    for n in order:
                        runs[f"{n} thread(s), {load}"].append(complete(servers[n][1], args.tokens)["tokens_per_s"])
                finally:
                    if busy is not None:
                        busy.kill()
                        busy.wait()
    finally:
        for child, _ in servers.values():
            child.stop()
    report = {"machine": machine(), "cores": cores, "rounds": args.rounds, "tokens": args.tokens,
              "tokens_per_s": {name: {"median": round(statistics.median(r), 1), "min": round(min(r), 1),
                                      "max": round(max(r), 1)} for name, r in runs.items()}}  # fmt: skip
    path = write_result("llama_threads", report)
    print(json.dumps(report, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
