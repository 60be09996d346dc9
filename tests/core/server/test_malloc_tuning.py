"""heron serve's glibc malloc thresholds: set in the process, exported to the processes it starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys

CHECK = """
import json, os
from heron.server.malloc_tuning import tune_malloc
set_any = tune_malloc()
print(json.dumps({"set": set_any, "env": {k: os.environ.get(k) for k in
                  ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")}}))
"""


def run_check(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", CHECK], env={**clean, **env}, capture_output=True, text=True,
                         timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_thresholds_are_set_and_exported_for_child_processes():
    from heron.server.malloc_tuning import MMAP_THRESHOLD, TRIM_THRESHOLD

    got = run_check()
    assert got == {"set": True, "env": {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD),
                                        "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD)}}


def test_an_operators_own_setting_is_kept():
    from heron.server.malloc_tuning import TRIM_THRESHOLD

    got = run_check(MALLOC_MMAP_THRESHOLD_="262144")  # not heron's own value
    assert got["env"] == {"MALLOC_MMAP_THRESHOLD_": "262144", "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD)}
    tuned = run_check(GLIBC_TUNABLES="glibc.malloc.mmap_threshold=1048576:glibc.malloc.trim_threshold=4096")
    assert tuned == {"set": False, "env": {"MALLOC_MMAP_THRESHOLD_": None, "MALLOC_TRIM_THRESHOLD_": None}}
