import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Run each test with one intra-op thread: the inputs are tiny, and on a shared 2-core machine
    extra OpenMP threads oversubscribe the cores and make the DCDC layers ~20x slower.
    (Tests that start subprocesses set OMP_NUM_THREADS=1 for them.)"""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
