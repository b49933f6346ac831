"""Shared test settings."""

from __future__ import annotations

import pytest
import torch
from disdiff_support import make_ldm_checkpoint


@pytest.fixture(autouse=True, scope="session")
def _single_thread():
    # The tests use tiny tensors; on a 2-core machine (shared with other work) one thread is far
    # faster for them than several, and timing does not depend on what else is running.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def ldm_ckpt(tmp_path_factory):
    """A small random stage-2 checkpoint, one per test module (see disdiff_support.make_ldm_checkpoint)."""
    return make_ldm_checkpoint(tmp_path_factory.mktemp("stage2") / "checkpoints" / "last.ckpt")


@pytest.fixture
def two_threads():
    """Two torch threads for one test (the quickstart's features process needs two or more)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)
