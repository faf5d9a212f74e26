"""Run the PDE gallery's examples (docs/gallery.md) at full size and print
their errors, which the page quotes.

    KERAS_BACKEND=jax python benchmarks/pde_gallery.py [page.md ...]

Other pages with examples of the same form (the high-dimensional guide's
Poisson problem) run the same way: `docs/guides/high_dimensional.md`.

The page's code blocks are the examples; this runs each one with its size
constant (`ITERATIONS`, `STEPS`) raised to the full run's, as its comment
says, so the page and the full run cannot drift apart.
"""

import pathlib
import re
import sys
import time

PAGE = pathlib.Path(__file__).parents[1] / "docs" / "gallery.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
# `NAME = small  # 10,000 in the full run`
SIZE = re.compile(r"^(\w+) = \d+(\s+# ([\d,]+) in the full run)", re.M)


def full_size(code):
    return SIZE.sub(lambda m: f"{m.group(1)} = {m.group(3).replace(',', '')}", code)


def main():
    pages = [pathlib.Path(p) for p in sys.argv[1:]] or [PAGE]
    blocks = [
        (page, code) for page in pages for code in BLOCK.findall(page.read_text())
    ]
    for page, code in blocks:
        if not SIZE.search(code):
            continue  # not a worked example
        heading = next(line for line in code.splitlines() if line.startswith("# "))
        start = time.perf_counter()
        scope = {"__name__": "__gallery__"}
        exec(compile(full_size(code), str(page), "exec"), scope)
        seconds = time.perf_counter() - start
        print(f"{heading[2:60]}: error {scope['error']:.1e} ({seconds:.0f} s)")


if __name__ == "__main__":
    main()
