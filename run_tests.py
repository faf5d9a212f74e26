"""Run the test suite once per Keras backend (TensorFlow, JAX, PyTorch).

    python run_tests.py [pytest arguments]

Each backend runs in its own process (the backend is fixed when keras is
imported). JAX, the longest, runs next to TensorFlow then PyTorch: two
processes at a time, each mostly one busy thread (PyTorch is held to one
OpenMP thread, which it otherwise splits with the other process). A
backend's output is printed when it finishes, then one summary line per
backend and a total; exits non-zero if any backend fails or runs no test.
"""

import concurrent.futures
import os
import re
import subprocess
import sys
import time

LANES = (("jax",), ("tensorflow", "torch"))
COUNTS = re.compile(r"(\d+) (passed|failed|skipped|error|errors)\b")


def run(backend, argv):
    """`(backend, output, exit code, seconds)` of the suite on `backend`."""
    start = time.perf_counter()
    env = {**os.environ, "KERAS_BACKEND": backend}
    if backend == "torch":
        env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return backend, proc.stdout, proc.returncode, time.perf_counter() - start


def lane(backends, argv):
    results = []
    for backend in backends:
        result = run(backend, argv)
        _, output, _, _ = result
        print(f"\n===== KERAS_BACKEND={backend} =====\n{output}", end="", flush=True)
        results.append(result)
    return results


def main(argv):
    totals = {"passed": 0, "failed": 0, "skipped": 0}
    ok = True
    with concurrent.futures.ThreadPoolExecutor(len(LANES)) as pool:
        lanes = [pool.submit(lane, backends, argv) for backends in LANES]
        results = {r[0]: r for future in lanes for r in future.result()}
    summaries = []
    for backend in ("tensorflow", "jax", "torch"):
        _, output, code, seconds = results[backend]
        last = next(
            (line for line in reversed(output.splitlines()) if line.strip()), ""
        )
        counts = {kind.rstrip("s"): int(n) for n, kind in COUNTS.findall(last)}
        passed = counts.get("passed", 0)
        failed = counts.get("failed", 0) + counts.get("error", 0)
        skipped = counts.get("skipped", 0)
        totals["passed"] += passed
        totals["failed"] += failed
        totals["skipped"] += skipped
        ok = ok and code == 0 and passed > 0
        summaries.append(
            f"{backend:<11} {passed} passed, {failed} failed, {skipped} skipped "
            f"in {seconds:.0f} s (exit {code})"
        )
    print("\n" + "\n".join(summaries))
    print(
        f"total: {totals['passed']} passed, {totals['failed']} failed, "
        f"{totals['skipped']} skipped"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
