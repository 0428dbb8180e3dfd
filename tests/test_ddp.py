"""DistributedDataParallel through the torchrun environment: 2 CPU processes (gloo) end with identical weights."""

import json
import os
import socket
import subprocess
import sys

import torch
from test_train import make_corpus, tiny_cfg

DRIVER = """
import json, sys
import torch
torch.set_num_threads(1)
from caption_model.train import fit
cfg, store, ann, out = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
result = fit(cfg, store, [ann], progress=False)
torch.save({"model": result.model.state_dict(),
            "losses": [h["loss"] for h in result.history if h["kind"] == "train"]}, out)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_ranks(cfg: dict, store, ann, tmp_path) -> tuple[dict, dict]:
    """`fit` in two gloo CPU processes under torchrun's environment; what each rank saved."""
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    port = free_port()
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, str(driver), json.dumps(cfg), str(store), str(ann),
                                       str(tmp_path / f"rank{rank}.pt")], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err[-3000:]
    return tuple(torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))


def test_two_cpu_ranks_hold_identical_weights(tmp_path):
    store, ann = make_corpus(tmp_path, n_videos=12, missing=0)
    # gloo on the CPU: `auto` would give rank 1 a second GPU (LOCAL_RANK=1) that a one-GPU machine lacks
    cfg = tiny_cfg(tmp_path / "run", epochs=2, batch_size=4, device="cpu")
    r0, r1 = run_two_ranks(cfg, store, ann, tmp_path)
    for name, tensor in r0["model"].items():
        assert torch.equal(tensor, r1["model"][name]), name
    # each rank trained on its own shard: same number of steps, different batches (so different losses)
    assert len(r0["losses"]) == len(r1["losses"]) > 0 and r0["losses"] != r1["losses"]
    assert (tmp_path / "run" / "last.pt").is_file() and not (tmp_path / "run" / "rank1").exists()
