"""Inference timesteps against diffusers 0.42.1 `set_timesteps`, for every spacing and offset."""

import os

import numpy as np
import pytest
from child_process import REPO_ROOT

from t2i_jax.diffusion import timesteps

FIXTURE = np.load(
  os.path.join(REPO_ROOT, "tests", "fixtures", "diffusers_schedulers", "timesteps.npz")
)
FUNCTIONS = {  # make_fixtures.FAMILIES
  "ddpm": timesteps.discrete_timesteps,
  "dpm": timesteps.dpm_solver_timesteps,
  "euler": timesteps.euler_timesteps,
}


@pytest.mark.parametrize("family", list(FUNCTIONS))
def test_timesteps_match_diffusers(family):
  keys = [k for k in FIXTURE if k.startswith(f"{family}__")]
  assert len(keys) == 36
  for key in keys:
    _, spacing, num_steps, offset = key.split("__")
    got = FUNCTIONS[family](1000, int(num_steps), spacing, int(offset))
    want = FIXTURE[key]
    assert got.dtype == (np.float32 if family == "euler" else np.int64), key
    np.testing.assert_array_equal(got, want, err_msg=key)


def test_trailing_starts_at_the_last_timestep():
  for fn in FUNCTIONS.values():
    assert fn(1000, 10, "trailing")[0] == 999


def test_invalid_arguments():
  with pytest.raises(ValueError, match="leading"):
    timesteps.discrete_timesteps(1000, 10, "karras")
  with pytest.raises(ValueError, match="num_steps"):
    timesteps.euler_timesteps(1000, 1001, "linspace")
