"""Starting child Pythons from tests (multi-device, multi-host, signal tests)."""

import os
import pathlib
import subprocess
import sys
import tempfile

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# Shared by the test process and its children, so each distinct program compiles once per run.
COMPILATION_CACHE = os.path.join(tempfile.gettempdir(), "t2i_jax_test_xla_cache")


def subprocess_env(num_devices: int | None = None) -> dict[str, str]:
  """Environment for a child Python: repo importable, CPU, shared compile cache, fake devices."""
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
  env["JAX_PLATFORMS"] = "cpu"
  env["JAX_COMPILATION_CACHE_DIR"] = COMPILATION_CACHE
  env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
  env["PYTHONUNBUFFERED"] = "1"
  if num_devices is not None:
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={num_devices}"
  return env


def run_python(args, *, num_devices=None, timeout=300, **kwargs) -> subprocess.CompletedProcess:
  """Runs `python args...` from the repo root and returns the finished process (text output)."""
  return subprocess.run(
    [sys.executable, *args],
    cwd=REPO_ROOT,
    env=subprocess_env(num_devices),
    capture_output=True,
    text=True,
    timeout=timeout,
    **kwargs,
  )
