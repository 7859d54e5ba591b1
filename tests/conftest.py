"""Shared pytest fixtures. The package is installed (`pip install -e .`, done by local/install_deps.sh);
local/ and bench/ are on the import path through pyproject.toml's pytest `pythonpath`."""
import pytest
import torch


@pytest.fixture(scope="module")
def single_thread():
    """One intra-op thread for modules of tiny tensors: they gain nothing from threads, and on a busy
    machine OpenMP threads waiting for each other make them ~20x slower. Restored afterwards.
    Use with `pytestmark = pytest.mark.usefixtures("single_thread")`."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
