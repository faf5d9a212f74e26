"""Run the test suite once per Keras backend (TensorFlow, JAX, PyTorch).

    python run_tests.py [pytest arguments]

Each backend runs in its own process (the backend is fixed when keras is
imported). Prints one summary line per backend and a total; exits non-zero
if any backend fails or runs no test.
"""

import os
import re
import subprocess
import sys
import time

BACKENDS = ("tensorflow", "jax", "torch")
COUNTS = re.compile(r"(\d+) (passed|failed|skipped|error|errors)\b")


def main(argv):
    totals = {"passed": 0, "failed": 0, "skipped": 0}
    ok = True
    summaries = []
    for backend in BACKENDS:
        start = time.perf_counter()
        env = {**os.environ, "KERAS_BACKEND": backend}
        print(f"\n===== KERAS_BACKEND={backend} =====", flush=True)
        # Streamed as it runs (a backend takes minutes), the last line kept.
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-q", *argv],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        last = [""]
        for line in proc.stdout:
            print(line, end="", flush=True)
            if line.strip():
                last = [line]
        proc.wait()
        counts = {kind.rstrip("s"): int(n) for n, kind in COUNTS.findall(last[0])}
        passed, failed = (
            counts.get("passed", 0),
            counts.get("failed", 0) + counts.get("error", 0),
        )
        totals["passed"] += passed
        totals["failed"] += failed
        totals["skipped"] += counts.get("skipped", 0)
        ok = ok and proc.returncode == 0 and passed > 0
        skipped = counts.get("skipped", 0)
        seconds = time.perf_counter() - start
        summaries.append(
            f"{backend:<11} {passed} passed, {failed} failed, {skipped} skipped "
            f"in {seconds:.0f} s (exit {proc.returncode})"
        )
    print("\n" + "\n".join(summaries))
    print(
        f"total: {totals['passed']} passed, {totals['failed']} failed, "
        f"{totals['skipped']} skipped"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
