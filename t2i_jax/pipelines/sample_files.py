"""What `python -m experiments.sample` does: prompts in, PNG files and a captioned grid out."""

import logging
import os
import re

import numpy as np

from t2i_jax.pipelines.text_to_image import TextToImage
from t2i_jax.train import summaries
from t2i_jax.train.checkpoint import CheckpointMismatchError

# Errors whose message tells the user what to fix (printed without a traceback).
USER_ERRORS = (FileNotFoundError, ValueError, CheckpointMismatchError)


def read_prompts(prompts, prompts_file) -> list[str]:
  prompts = list(prompts or [])
  if prompts_file:
    with open(prompts_file, encoding="utf-8") as f:
      prompts += [line.strip() for line in f if line.strip()]
  if not prompts:
    raise ValueError("No prompts: pass --prompt=... (repeatable) or --prompts_file=FILE.")
  return prompts


def file_name(index: int, prompt: str) -> str:
  slug = re.sub(r"[^a-z0-9]+", "_", prompt.lower()).strip("_")[:60]
  return f"{index:03d}_{slug or 'prompt'}.png"


def run(*, workdir, prompts, prompts_file, out, **generate_kwargs) -> list[str]:
  """Generates every prompt and writes `out/<index>_<prompt>.png` and `out/grid.png`.

  Returns:
    The written image paths (grid last).
  """
  prompts = read_prompts(prompts, prompts_file)
  pipe = TextToImage.from_workdir(workdir)
  images = pipe.generate(prompts, **generate_kwargs)
  os.makedirs(out, exist_ok=True)
  paths = []
  for i, (prompt, image) in enumerate(zip(prompts, images, strict=True)):
    paths.append(os.path.join(out, file_name(i, prompt)))
    image.save(paths[-1])
  pixels = np.stack([np.asarray(image) for image in images])
  grid = summaries.image_grid(pixels, min(len(images), 8), prompts)
  paths.append(os.path.join(out, "grid.png"))
  summaries.save_png(paths[-1], grid)
  logging.info("Wrote %d images and %s.", len(images), paths[-1])
  print("\n".join(paths))
  return paths
