"""``make test-portable``: run pytest on the given paths under every CPU capability this CPU can run, then
with one thread; exit non-zero if any run failed.

Other CPUs round differently: PyTorch picks its kernels per instruction set (``ATEN_CPU_CAPABILITY``).
A capability above what this CPU has is skipped, saying so: torch honours ``ATEN_CPU_CAPABILITY=avx512``
on an AVX2-only CPU (it then reports AVX512) and dies of an illegal instruction in the first AVX-512
kernel (measured on this project's AVX2 machine, 2026-12-01). What the CPU has is what torch itself picks
when the variable is unset. A capability torch does not honour (it reports another one) is skipped too.

    python tests/portable.py tests/agreement tests/properties
"""

from __future__ import annotations

import os
import subprocess
import sys

#: torch's x86 capabilities, weakest first.
ORDER = ("default", "avx2", "avx512")


def capability(env: dict[str, str]) -> str:
    """The capability torch uses in a fresh interpreter with ``env``."""
    probe = "import torch; print(torch.backends.cpu.get_cpu_capability().lower())"
    return subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True).stdout.strip()


def main(paths: list[str]) -> int:
    base = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    native = capability(base)
    best = ORDER.index(native) if native in ORDER else 0
    runs = []
    for rank, cap in enumerate(ORDER):
        if rank > best:
            print(f"== ATEN_CPU_CAPABILITY={cap}: this CPU's best is {native}, skipped (illegal instructions here)")
            continue
        env = {**base, "ATEN_CPU_CAPABILITY": cap}
        got = capability(env)
        if got != cap:
            print(f"== ATEN_CPU_CAPABILITY={cap}: not honoured (torch uses {got}), skipped")
            continue
        runs.append((f"ATEN_CPU_CAPABILITY={cap}", env))
    runs.append(("OMP_NUM_THREADS=1", {**base, "OMP_NUM_THREADS": "1"}))
    failed = []
    for name, env in runs:
        print(f"== {name}", flush=True)
        if subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *paths], env=env):
            failed.append(name)
    if failed:
        print(f"== failed under: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
