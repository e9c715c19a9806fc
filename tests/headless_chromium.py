"""Headless Chromium for the page tests (`browser` marker): the flags that keep it off the network, one
profile folder per test, and the two things the tests ask of it: the DOM after the page's scripts ran, and a
screenshot."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


class Chromium:
    def __init__(self, binary: str, profile: Path) -> None:
        self.command = [binary, *FLAGS, f"--user-data-dir={profile}"]

    def dump_dom(self, url: str) -> str:
        return subprocess.run([*self.command, "--dump-dom", url], capture_output=True, text=True, timeout=120,
                              check=True).stdout

    def screenshot(self, url: str, out: Path, width: int, height: int) -> Path:
        subprocess.run([*self.command, f"--screenshot={out}", f"--window-size={width},{height}", url],
                       capture_output=True, timeout=120, check=True)
        return out


@pytest.fixture()
def chromium(tmp_path: Path) -> Chromium:
    """Chromium on PATH, else a skip (a failure under CI=true, where .ci/run installs it)."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing under CI=true: .ci/run installs Debian's chromium package")
        pytest.skip("no chromium on PATH (apt-get install -y chromium)")
    return Chromium(binary, Path(tempfile.mkdtemp(dir=tmp_path)))
