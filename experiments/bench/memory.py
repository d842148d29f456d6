"""Peak memory of each attack on the CPU, measured as the live bytes it holds: in a separate process whose
heap hands every large block back to the OS when it is freed (``cli.py bench``'s ``peak_mb`` column).

Why not the benchmark's own process. glibc serves a block above its mmap threshold from a fresh mapping and
returns it to the OS on ``free``; below, from the heap, which keeps what it frees. The threshold starts at
128 KiB and, by default, rises to the size of each mapped block freed (up to 32 MiB), so after the first
attack most tensors come from the heap. A run's resident peak is then its live tensors plus whatever pages
the heap's fragmentation, left by the runs before it, makes it touch afresh: measured on the MNIST CNN, 500
digits, one process (2-core AMD EPYC, torch 2.14.1), the same own PGD L∞ peaked anywhere from 215 to 304 MB
above its start, and foolbox's between 243 and 264 MB, with the order of the libraries deciding which of
the two looked leaner.

What is measured instead. A child process is started with ``MALLOC_MMAP_THRESHOLD_`` set to 128 KiB, which
also turns the rising threshold off (glibc's ``mallopt(M_MMAP_THRESHOLD)``): every block above 128 KiB is a
mapping of its own, resident while live and unmapped when freed, so the resident set follows the bytes the
attack holds. The child loads the same workload (the model from the cache the parent filled, the same
seeded images), warms up (one forward and backward on the whole batch in both memory layouts, one own
FGSM), then runs each attack once per library, in a random order, and reports VmHWM above the level before
the run (after a ``gc``, ``malloc_trim`` and a reset through ``/proc/self/clear_refs``). Measured so, the
same runs agree within about 5 % from one to the next (PGD L∞ on the MNIST CNN: own 190–197 MB, foolbox
195–198 MB). The heap's behaviour is set at process start, so the timed runs keep glibc's defaults (a
pinned threshold slows every library, the references more than own: it is never used for timing).

Only where this applies: a CPU run on Linux with glibc. On CUDA, ``torch.cuda.max_memory_allocated`` counts
live bytes already and the benchmark's rounds report it.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch

from advbridge.experiments.requests import BenchRequest

#: glibc's initial mmap threshold, pinned: every block above it is a mapping returned to the OS when freed.
MMAP_THRESHOLD = 128 * 1024


def applies(device: torch.device) -> bool:
    """Whether the child-process measurement applies: a CPU run on Linux with glibc."""
    return device.type == "cpu" and sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def live_peaks(
    request: BenchRequest, attacks: list[str], libraries: list[str], timeout: float | None = None
) -> dict[tuple[str, str], float]:
    """Peak memory (MB) of each (attack, library) in a child process that loads the workload of ``request``
    (``cli.py bench``'s options) with the mmap threshold pinned (see the module docstring). A pair the child
    could not run (unsupported, or the library failed) is absent. ``timeout`` (seconds) stops the child:
    with every block above 128 KiB mapped afresh, an allocation-heavy reference runs far slower than in the
    timed rounds (ART's DeepFool on resnet18, 200 images: 142 s a run timed, the child still in it after 12
    minutes); :class:`subprocess.TimeoutExpired` then."""
    options = asdict(request)  # every field of a request is a plain value (JSON)
    with tempfile.TemporaryDirectory(prefix="advbridge-memory-") as tmp:
        request_file, answer = Path(tmp) / "request.json", Path(tmp) / "answer.json"
        request_file.write_text(json.dumps({"args": options, "attacks": attacks, "libraries": libraries}))
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)}
        subprocess.run(
            [sys.executable, "-m", "advbridge.experiments.bench.memory", str(request_file), str(answer)],
            env=env,
            check=True,
            timeout=timeout,
        )
        return {(row["attack"], row["library"]): row["peak_mb"] for row in json.loads(answer.read_text())}


def measure(request: BenchRequest, attacks: list[str], libraries: list[str]) -> list[dict]:
    """In the child: one run of each (attack, library) on the workload of ``request``, each row its peak (MB)."""
    from advbridge.bridge.runner import run_attack
    from advbridge.experiments.bench.attacks import (
        bench_spec,
        pass_seconds,
        peak_memory,
        reset_peak_memory,
        runnable_libraries,
    )
    from advbridge.experiments.options import workload_of

    work = workload_of(request)
    work.model.eval()
    device = work.x.device
    pass_seconds(work.model, work.x, work.y, passes=1)  # the kernels' first-call setup, for no one
    run_attack("own", work.model, work.x, work.y, bench_spec("fgsm", work.info.family))  # the runner's, too
    rows = []
    for key in attacks:
        spec = bench_spec(key, work.info.family)
        runnable = runnable_libraries(spec, libraries)
        for library in random.Random(f"memory/{key}").sample(runnable, len(runnable)):
            before = reset_peak_memory(device)
            result = run_attack(library, work.model, work.x, work.y, spec, num_classes=work.info.num_classes)
            peak = peak_memory(device) - before
            if result.status == "ok" and math.isfinite(peak):
                rows.append({"attack": key, "library": library, "peak_mb": peak})
    return rows


def main(argv: list[str] | None = None) -> int:
    request_path, answer_path = argv if argv is not None else sys.argv[1:]
    request = json.loads(Path(request_path).read_text())
    rows = measure(BenchRequest.of(request["args"]), request["attacks"], request["libraries"])
    Path(answer_path).write_text(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
