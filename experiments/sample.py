"""Generates images from prompts with a trained (or converted) text-to-image model.

  python -m experiments.sample --workdir=runs/ldm_shapes --prompt="a large red star in the center" \
    --prompt="a small blue circle in the top left" --out=samples/

Writes one PNG per prompt (`<index>_<prompt>.png`) and `grid.png` to --out.
"""

from absl import app, flags

from t2i_jax import cli
from t2i_jax.pipelines import sample_files

_WORKDIR = flags.DEFINE_string("workdir", None, "A configs/ldm_* run or a pipeline export folder.")
_PROMPT = flags.DEFINE_multi_string("prompt", [], "A prompt; repeat the flag for several.")
_PROMPTS_FILE = flags.DEFINE_string("prompts_file", None, "A text file with one prompt per line.")
_NEGATIVE = flags.DEFINE_string("negative_prompt", None, "Steer away from this prompt.")
_OUT = flags.DEFINE_string("out", "samples", "Output folder.")
_STEPS = flags.DEFINE_integer("num_steps", 50, "Sampler steps.")
_SCALE = flags.DEFINE_float("guidance_scale", 7.5, "Classifier-free guidance scale.")
_SAMPLER = flags.DEFINE_string(
  "sampler", "ddim", "ddim | ddpm | dpmpp_2m | euler | euler_ancestral"
)
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")
_HEIGHT = flags.DEFINE_integer("height", None, "Image height (default: the training resolution).")
_WIDTH = flags.DEFINE_integer("width", None, "Image width (default: the training resolution).")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  cli.run(
    lambda: sample_files.run(
      workdir=_WORKDIR.value,
      prompts=_PROMPT.value,
      prompts_file=_PROMPTS_FILE.value,
      out=_OUT.value,
      negative_prompt=_NEGATIVE.value,
      num_steps=_STEPS.value,
      guidance_scale=_SCALE.value,
      sampler=_SAMPLER.value,
      seed=_SEED.value,
      height=_HEIGHT.value,
      width=_WIDTH.value,
    ),
    sample_files.USER_ERRORS,
  )


if __name__ == "__main__":
  app.run(main)
