"""Kill-safe checkpoint writes, RNG state in checkpoints, and the resumable sampler."""
import os
import random
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from dcdc.engine import DCDCCheckpointer, ResumableTrainingSampler


def test_failed_save_keeps_previous_checkpoint(tmp_path):
    model = nn.Linear(3, 2)
    ckpt = DCDCCheckpointer(model, save_dir=str(tmp_path))
    ckpt.save("model_0000001")
    good = (tmp_path / "model_0000001.pth").read_bytes()

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        ckpt.save("model_0000001", broken=Unpicklable())
    assert (tmp_path / "model_0000001.pth").read_bytes() == good
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]  # no temp left


def test_sigkill_during_saves_never_leaves_a_truncated_checkpoint(tmp_path):
    """Kill a process that saves a 40 MB checkpoint in a loop; the pointer always loads."""
    script = textwrap.dedent(f"""
        import torch
        from torch import nn
        from dcdc.engine import DCDCCheckpointer
        ckpt = DCDCCheckpointer(nn.Linear(3200, 3200), save_dir={str(tmp_path)!r})
        i = 0
        while True:
            ckpt.save(f"model_{{i % 2}}")
            i += 1
            print(i, flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    for _ in range(3):  # let it finish a few saves, then kill it in the middle of the next
        proc.stdout.readline()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    pointer = (tmp_path / "last_checkpoint").read_text()
    state = torch.load(tmp_path / pointer, weights_only=False)
    assert state["model"]["weight"].shape == (3200, 3200)
    for name in os.listdir(tmp_path):
        if name.endswith(".pth"):
            torch.load(tmp_path / name, weights_only=False)  # every complete name loads


def test_rng_state_round_trip(tmp_path):
    ckpt = DCDCCheckpointer(nn.Linear(2, 2), save_dir=str(tmp_path))
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    ckpt.save("model_final")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(7), np.random.seed(7), random.seed(7)
    ckpt.resume_or_load(str(tmp_path / "model_final.pth"), resume=True)
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1])
    assert expected[2] == got[2]


def test_resumable_sampler_continues_the_stream():
    full = ResumableTrainingSampler(10, seed=3)
    stream = list(zip(range(25), iter(full)))
    resumed = ResumableTrainingSampler(10, seed=3)
    resumed.skip(12)
    assert [i for _, i in zip(range(13), iter(resumed))] == [i for _, i in stream[12:]]
    with pytest.raises(ValueError, match="negative"):
        resumed.skip(-1)


def test_ddp_saved_checkpoint_of_another_architecture_is_refused(tmp_path):
    """A checkpoint written from a DistributedDataParallel model has "module."-prefixed names;
    the fit check must see the names the model is matched with."""
    narrow = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 4, 1))
    torch.save({"model": {f"module.{k}": v for k, v in narrow.state_dict().items()}},
               tmp_path / "ddp.pth")
    wide = nn.Sequential(nn.Conv2d(3, 16, 3), nn.Conv2d(16, 4, 1))
    with pytest.raises(ValueError, match=r"(?s)ddp\.pth' does not fit.*0\.weight: \(8, 3, 3, 3\)"):
        DCDCCheckpointer(wide).load(str(tmp_path / "ddp.pth"))
    same = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 4, 1))
    DCDCCheckpointer(same).load(str(tmp_path / "ddp.pth"))  # the prefix is stripped, it loads
    assert torch.equal(same[0].weight, narrow[0].weight)


def test_rng_state_of_another_world_size_warns_and_keeps_the_generators(tmp_path, caplog):
    ckpt = DCDCCheckpointer(nn.Linear(2, 2), save_dir=str(tmp_path))
    ckpt.save("model_final")
    state = torch.load(tmp_path / "model_final.pth", weights_only=False)
    assert len(state["rng"]["ranks"]) == 1  # one process: one state
    state["rng"]["ranks"] *= 2  # as written by two processes
    torch.save(state, tmp_path / "two.pth")
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    with caplog.at_level("WARNING"):
        ckpt.load(str(tmp_path / "two.pth"))
    assert "RNG states of 2 processes, this run has 1" in caplog.text
    assert torch.equal(torch.rand(3), expected)


def test_rng_state_of_the_one_state_format_loads(tmp_path):
    """Checkpoints written before the per-rank states held one state at "rng"."""
    ckpt = DCDCCheckpointer(nn.Linear(2, 2), save_dir=str(tmp_path))
    torch.manual_seed(1)
    ckpt.save("model_final")
    expected = torch.rand(3)
    state = torch.load(tmp_path / "model_final.pth", weights_only=False)
    state["rng"] = state["rng"]["ranks"][0]
    torch.save(state, tmp_path / "old.pth")
    torch.manual_seed(7)
    ckpt.load(str(tmp_path / "old.pth"))
    assert torch.equal(torch.rand(3), expected)
