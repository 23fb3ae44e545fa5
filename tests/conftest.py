"""Test setup: CPU only, no network, and a persistent XLA cache so repeated tiny runs compile once."""

import os

import jax
import pytest
from child_process import COMPILATION_CACHE, REPO_ROOT

os.environ.setdefault("HF_HUB_OFFLINE", "1")
jax.config.update("jax_platforms", "cpu")
jax.config.update("jax_compilation_cache_dir", COMPILATION_CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture
def repo_root():
  return REPO_ROOT
