"""Shared pytest set-up: make the repository root importable (``import zipformer_rwkv``), shared fixtures."""
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="module")
def single_thread():
    """One intra-op thread for modules of tiny tensors: they gain nothing from threads, and on a busy
    machine OpenMP threads waiting for each other make them ~20x slower. Restored afterwards.
    Use with `pytestmark = pytest.mark.usefixtures("single_thread")`."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
