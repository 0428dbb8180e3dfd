"""Freed tensors' memory stays in the process (etspipe/heap.py): re-allocating no longer page-faults."""

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                 reason="glibc's malloc only"),
              pytest.mark.skip_ok_in_ci("a platform fact: the tuning is glibc's, no setup installs it elsewhere")]

PROBE = """
import json, resource, sys
from etspipe.heap import keep_freed_memory
on = keep_freed_memory() if sys.argv[1] == "call" else None
import torch
torch.set_num_threads(1)
x = torch.randn(64, 256, 1024)  # 64 MB: above glibc's largest mmap threshold, as a long batch's tensors are
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    y = torch.tanh(x) * 2
start = faults()
for _ in range(20):
    y = torch.tanh(x) * 2  # two fresh tensors per round, as a training step makes them
print(json.dumps({"on": on, "faults_per_round": (faults() - start) / 20}))
"""


def _run(mode: str, env_value: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "ETSPIPE_KEEP_FREED_MEMORY"}
    if env_value is not None:
        env["ETSPIPE_KEEP_FREED_MEMORY"] = env_value
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_reallocated_tensors_reuse_the_heap_instead_of_fresh_pages():
    default = _run("skip")
    kept = _run("call")
    assert kept["on"] is True
    assert default["faults_per_round"] > 10_000  # 64 MB = 16,384 pages per fresh tensor
    assert kept["faults_per_round"] < default["faults_per_round"] / 4


def test_the_environment_switch_keeps_glibcs_default():
    off = _run("call", "0")
    assert off["on"] is False
    assert off["faults_per_round"] > 10_000
