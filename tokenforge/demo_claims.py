"""Measuring helpers for the demo's "paper claim, measured here" stages, which the methods' demo parts define.

Claims about compute run the methods' own bench code at tiny sizes with random weights (`bench_json`; speed and
memory do not depend on training, `PeakMemory` measures the latter); claims about quality read the demo's own
fitted models and reconstructions (`tokenforge.demo_stages.token_histogram` for token frequencies). Every claim stage returns
``{"claim": text, "rows": [...], "verdict": text}``; the verdict says what was seen here, which after seconds of
training may not be what the paper reports. Timings vary with the CPU and its load; ratios are the point.
"""

from __future__ import annotations

import ctypes
import json
import tempfile
from pathlib import Path
from typing import Any


class PeakMemory:
    """Peak resident memory (MiB) added inside a ``with`` block on Linux: frees the C heap back to the system
    (``malloc_trim``), resets the kernel's high-water mark (``/proc/self/clear_refs``), reads ``VmHWM`` after.
    ``mib`` stays None where /proc cannot be reset (not Linux)."""

    def __init__(self) -> None:
        self.mib: float | None = None

    @staticmethod
    def _status() -> dict[str, int]:
        fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
        return {key: int(fields[key].split()[0]) for key in ("VmRSS", "VmHWM")}

    def __enter__(self) -> PeakMemory:
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            Path("/proc/self/clear_refs").write_text("5")
            self._base = self._status()["VmRSS"]
        except OSError:
            self._base = None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._base is not None:
            self.mib = round((self._status()["VmHWM"] - self._base) / 1024, 1)


def bench_json(argv: list[str]) -> Any:
    """Run ``tokenforge bench ARGV --json TMP`` and return the JSON it wrote."""
    from tokenforge.bench import main as bench

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.json"
        code = bench([*argv, "--json", str(path)])
        if code != 0:
            raise RuntimeError(f"tokenforge bench {' '.join(argv)} exited with {code}")
        return json.loads(path.read_text())
