"""Builds the StackGAN `Task` (Stage I, or Stage II on a frozen Stage I) from a config.

Stage I exports `workdir/export/` when it reaches num_steps: its generator (EMA params and
BatchNorm statistics), the generator's arguments and which text encoder it was trained with.
Stage II points `config.model.stage1_checkpoint` at that folder (or at the Stage-I workdir) and
inherits the text encoder from it unless one is configured.
"""

import functools
import logging
import math
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from t2i_jax.clip import export as clip_export
from t2i_jax.data import shapes
from t2i_jax.data.sources import make_source
from t2i_jax.eval import shapes_adherence
from t2i_jax.eval.sharpness import sharpness, through_resolution
from t2i_jax.gan import losses
from t2i_jax.gan import stackgan_steps as ss
from t2i_jax.gan.task import shapes_grid_prompts
from t2i_jax.models import stackgan
from t2i_jax.train import export as export_folder
from t2i_jax.train.optim import make_optimizer
from t2i_jax.train.task import Task, UnsupportedPromptsError

EXPORT_DIR = "export"
STAGE1_CONFIG_FILE = "stackgan_stage1.json"
CUB_GRID_CAPTIONS = 16
REAL_SHARPNESS_IMAGES = 64  # held-out real images that set the scale of Stage-II sharpness


def build_stackgan_task(config: ml_collections.ConfigDict) -> Task:
  m, o = config.model, config.optim
  _check_config(config)
  # Reading the eval split first makes a missing dataset the first (and only) error reported.
  eval_source = make_source(config.data, config.data.eval_split)
  stage1 = _load_stage1(m.stage1_checkpoint) if m.stage == 2 else None
  text = _text_setup(config, stage1)

  d_condition = _d_condition(m)
  if m.stage == 1:
    generator = stackgan.Stage1Generator(width=m.g_width, cond_dim=m.cond_dim, z_dim=m.z_dim)
    discriminator = stackgan.Stage1Discriminator(
      width=m.d_width, cond_dim=m.cond_dim, condition=d_condition
    )
    z_dim = m.z_dim
  else:
    generator = stackgan.Stage2Generator(
      width=m.g_width,
      cond_dim=m.cond_dim,
      num_residual=m.num_residual,
      out_resolution=config.data.resolution,
    )
    discriminator = stackgan.Stage2Discriminator(
      width=m.d_width,
      cond_dim=m.cond_dim,
      condition=d_condition,
      resolution=config.data.resolution,
    )
    z_dim = stage1["generator"].z_dim
  halve_every = _halve_every_steps(config)
  setup = ss.StackGANSetup(
    stage=m.stage,
    generator=generator,
    discriminator=discriminator,
    g_tx=make_optimizer("adam", o.g_lr, o.b1, o.b2, halve_every_steps=halve_every),
    d_tx=make_optimizer("adam", o.d_lr, o.b1, o.b2, halve_every_steps=halve_every),
    z_dim=z_dim,
    resolution=config.data.resolution,
    embed_dim=text["embed_dim"],
    text_source=text["source"],
    cond_length=text["cond_length"],
    kl_weight=m.kl_weight,
    loss=m.loss,
    ema_decay=o.ema_decay,
    clip_model=text["clip_model"],
    stage1_generator=None if stage1 is None else stage1["generator"],
    frozen={"text": text["params"], "stage1": {} if stage1 is None else stage1["variables"]},
  )

  captions, grid_inputs, columns = _grid(config, eval_source, text)
  z = np.random.default_rng(config.train.seed).standard_normal((len(captions), z_dim))
  sample_inputs = {"z": z.astype(np.float32), **grid_inputs}
  sample_captions = captions
  if m.stage == 2:  # each caption's Stage-I (upsampled) cell, then its Stage-II cell
    sample_captions = [f"{tag}: {c}" for c in captions for tag in ("I", "II")]
    columns *= 2

  def preprocess(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {"image": batch["image"]}
    if text["source"] == "clip":
      out["tokens"] = text["tokenizer"].encode(list(batch["caption"]), text["cond_length"])
    else:
      out["text_embedding"] = batch["text_embedding"].astype(np.float32)
    return out

  def export_stage1(state: ss.StackGANState, workdir: str) -> None:
    path = os.path.join(workdir, EXPORT_DIR)
    if os.path.exists(os.path.join(path, export_folder.PARAMS_DIR)):
      return  # already exported by an earlier run that reached num_steps
    kwargs = {
      "generator": {"width": m.g_width, "cond_dim": m.cond_dim, "z_dim": m.z_dim},
      "embed_dim": text["embed_dim"],
      "text_encoder": {"name": text["source"], "checkpoint": text["checkpoint"]},
    }
    variables = {"params": state.ema_params, "batch_stats": state.generator.batch_stats}
    export_folder.save_export(path, STAGE1_CONFIG_FILE, kwargs, jax.device_get(variables))
    logging.info("Exported Stage I to %s (Stage II: --config.model.stage1_checkpoint).", path)

  def prompt_inputs(captions, seed: int) -> dict[str, np.ndarray]:
    """Evaluation inputs for any captions: z [N, z_dim] from `seed` and CLIP token ids."""
    if text["source"] != "clip":
      raise UnsupportedPromptsError(
        "This StackGAN reads StackGAN's precomputed char-CNN-RNN embeddings, which exist only "
        "for the dataset's own captions; generating for arbitrary captions needs a CLIP text "
        "encoder (config.model.text_encoder.name='clip')."
      )
    z = np.random.default_rng(seed).standard_normal((len(captions), z_dim)).astype(np.float32)
    return {"z": z, "tokens": text["tokenizer"].encode(list(captions), text["cond_length"])}

  return Task(
    init=functools.partial(ss.init, setup=setup),
    train_step=functools.partial(ss.train_step, setup=setup),
    eval_step=functools.partial(ss.eval_step, setup=setup),
    finalize_eval=ss.finalize_eval,
    sample=functools.partial(ss.sample, setup=setup),
    sample_inputs=sample_inputs,
    sample_captions=sample_captions,
    grid_columns=columns,
    preprocess=preprocess,
    evaluate_samples=functools.partial(
      _evaluate_samples,
      stage=m.stage,
      captions=captions if config.data.name == "shapes" else None,
      real_sharpness=_real_sharpness(eval_source) if m.stage == 2 else None,
    ),
    export=export_stage1 if m.stage == 1 else None,
    prompt_inputs=prompt_inputs,
    generate=functools.partial(_generate, setup=setup),
  )


def _generate(state: ss.StackGANState, inputs, rng: jax.Array, *, setup: ss.StackGANSetup):
  """This stage's final images [N, R, R, 3] with conditioning augmentation sampled, as StackGAN
  evaluates (Stage II: only the refined images, not the grid's Stage-I/II pairs)."""
  embed = ss.text_embedding(setup, state.frozen, inputs)
  return ss.generate(state, inputs["z"], embed, rng, setup=setup, sample=True)[1]


def _d_condition(model_config: ml_collections.ConfigDict) -> str:
  """config.model.d_condition; runs saved before the key existed used the paper's concat D."""
  return model_config.get("d_condition", "concat")


def _check_config(config: ml_collections.ConfigDict) -> None:
  m = config.model
  if m.stage not in (1, 2):
    raise ValueError(f"config.model.stage must be 1 or 2, got {m.stage!r}.")
  if _d_condition(m) not in stackgan.D_CONDITIONS:
    raise ValueError(
      f"Unknown config.model.d_condition {_d_condition(m)!r}; valid: "
      f"{', '.join(stackgan.D_CONDITIONS)}."
    )
  if m.loss not in losses.LOSS_KINDS:
    raise ValueError(
      f"Unknown config.model.loss {m.loss!r}; valid: {', '.join(losses.LOSS_KINDS)}."
    )
  if m.text_encoder.name not in ss.TEXT_SOURCES:
    raise ValueError(
      f"Unknown config.model.text_encoder.name {m.text_encoder.name!r}; valid: "
      f"{', '.join(ss.TEXT_SOURCES)}."
    )
  if m.text_encoder.name == "char_cnn_rnn" and config.data.name != "cub":
    raise ValueError(
      "char-CNN-RNN embeddings exist for CUB only (config.data.name='cub'); on "
      f"{config.data.name!r} use text_encoder.name='clip' with an exported CLIP."
    )
  wants = "char_cnn_rnn" if m.text_encoder.name == "char_cnn_rnn" else None
  if config.data.get("text_embeddings") != wants:
    raise ValueError(
      f"config.model.text_encoder.name={m.text_encoder.name!r} needs "
      f"config.data.text_embeddings={wants!r} (got {config.data.get('text_embeddings')!r}): "
      "char-CNN-RNN embeddings come with the data, a CLIP embeds the captions itself."
    )
  resolution = config.data.resolution
  valid = (stackgan.STAGE1_RESOLUTION,) if m.stage == 1 else stackgan.STAGE2_RESOLUTIONS
  if resolution not in valid:
    raise ValueError(
      f"StackGAN Stage {m.stage} trains at config.data.resolution in {valid}, got {resolution}."
    )
  if m.stage == 2 and not m.stage1_checkpoint:
    raise ValueError(
      "Stage II needs config.model.stage1_checkpoint: the export/ folder (or the workdir) of a "
      "finished Stage-I run of the same data, e.g. --config.model.stage1_checkpoint=runs/stage1."
    )


def _load_stage1(path: str) -> dict[str, Any]:
  """The frozen Stage-I generator: its module, variables (host arrays) and export record."""
  path = os.path.abspath(os.path.expanduser(path))
  if not os.path.exists(os.path.join(path, STAGE1_CONFIG_FILE)) and os.path.isdir(
    os.path.join(path, EXPORT_DIR)
  ):
    path = os.path.join(path, EXPORT_DIR)  # a Stage-I workdir
  missing = export_folder.missing_files(path, (STAGE1_CONFIG_FILE, export_folder.PARAMS_DIR))
  if missing:
    raise FileNotFoundError(
      f"config.model.stage1_checkpoint={path} is not a Stage-I export: missing "
      f"{', '.join(missing)}. A Stage-I run writes <workdir>/{EXPORT_DIR}/ when it reaches "
      "config.train.num_steps."
    )
  record = export_folder.read_kwargs(path, STAGE1_CONFIG_FILE)
  generator = stackgan.Stage1Generator(**record["generator"])
  variables = export_folder.load_tree(path)
  expected = jax.eval_shape(
    functools.partial(generator.init, train=False),
    jax.random.key(0),
    jnp.zeros((1, generator.z_dim)),
    jnp.zeros((1, record["embed_dim"])),
  )
  _check_same_shapes(expected, variables, path)
  return {"generator": generator, "variables": variables, "record": record, "path": path}


def _check_same_shapes(expected, loaded, path: str) -> None:
  def shapes_of(tree):
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return {jax.tree_util.keystr(k): tuple(np.shape(v)) for k, v in leaves}

  want, got = shapes_of(nn.unbox(expected)), shapes_of(loaded)
  problems = [f"missing {k}" for k in sorted(set(want) - set(got))]
  problems += [f"unexpected {k}" for k in sorted(set(got) - set(want))]
  problems += [
    f"{k}: shape {got[k]}, expected {want[k]}"
    for k in sorted(set(want) & set(got))
    if want[k] != got[k]
  ]
  if problems:
    raise ValueError(f"Stage-I export {path} does not match its recorded generator: {problems}")


def _text_setup(config: ml_collections.ConfigDict, stage1) -> dict[str, Any]:
  """Where text embeddings come from: a frozen CLIP (params, tokenizer) or the data."""
  te = config.model.text_encoder
  name, checkpoint = te.name, te.checkpoint
  if stage1 is not None:
    recorded = stage1["record"]["text_encoder"]
    if not checkpoint and name == recorded["name"]:
      checkpoint = recorded["checkpoint"]  # Stage II embeds text as its Stage I did
  if name == "char_cnn_rnn":
    source = make_source(config.data, "train")
    embed_dim = int(source.get_batch([0])["text_embedding"].shape[-1])
    out = dict(source=name, embed_dim=embed_dim, cond_length=0, checkpoint=None)
    out.update(clip_model=None, params={}, tokenizer=None)
  else:
    if not checkpoint:
      raise ValueError(
        "StackGAN embeds captions with a frozen CLIP: set config.model.text_encoder.checkpoint "
        "to an exported CLIP folder (the export/ of a configs/clip_shapes.py or "
        "configs/clip_cub.py run, or `python -m experiments.convert --hf_clip=...`), or use "
        "StackGAN's char-CNN-RNN embeddings on CUB (text_encoder.name='char_cnn_rnn')."
      )
    checkpoint = os.path.abspath(os.path.expanduser(checkpoint))
    model, params, tokenizer = clip_export.load_clip(checkpoint)
    # Only the text tower and its projection are used; the vision tower stays out of the state.
    params = {k: v for k, v in params.items() if not k.startswith("vision")}
    out = dict(source=name, embed_dim=model.projection_dim, cond_length=model.context_length)
    out.update(checkpoint=checkpoint, clip_model=model, params=params, tokenizer=tokenizer)
  if stage1 is not None and stage1["record"]["embed_dim"] != out["embed_dim"]:
    raise ValueError(
      f"Stage I ({stage1['path']}) was trained on {stage1['record']['embed_dim']}-d text "
      f"embeddings but this text encoder gives {out['embed_dim']}-d ones; use the same encoder."
    )
  return out


def _grid(config, eval_source, text) -> tuple[list[str], dict[str, np.ndarray], int]:
  """Grid captions, their encoded inputs and cells per row (before Stage II's doubling)."""
  if config.data.name == "shapes":
    captions, _ = shapes_grid_prompts()
    columns, records = len(shapes.SHAPES), None
  else:  # first caption of images spread over the eval split
    n = min(CUB_GRID_CAPTIONS, len(eval_source))
    indices = np.linspace(0, len(eval_source) - 1, n).round().astype(int)
    records = [eval_source.record(int(i), caption_index=0) for i in indices]
    captions, columns = [r["caption"] for r in records], 4
  if text["source"] == "clip":
    return captions, {"tokens": text["tokenizer"].encode(captions, text["cond_length"])}, columns
  embeds = np.stack([r["text_embedding"] for r in records]).astype(np.float32)
  return captions, {"text_embedding": embeds}, columns


def _halve_every_steps(config: ml_collections.ConfigDict) -> int:
  """StackGAN halves both learning rates every N epochs; N epochs in steps (0: never)."""
  epochs = config.optim.lr_halve_every_epochs
  if not epochs:
    return 0
  steps_per_epoch = math.ceil(len(make_source(config.data, "train")) / config.data.batch_size)
  return int(epochs * steps_per_epoch)


def _real_sharpness(eval_source) -> dict[str, float]:
  """Scale for Stage II's sharpness: held-out real images at its resolution, and the same images
  through 64 px and back (what a perfect Stage I, upsampled, would score)."""
  n = min(REAL_SHARPNESS_IMAGES, len(eval_source))
  indices = np.linspace(0, len(eval_source) - 1, n).round().astype(int)
  real = np.stack([eval_source[int(i)]["image"] for i in indices])
  return {
    "eval/samples_sharpness_real": sharpness(real),
    "eval/samples_sharpness_real_via_64px": sharpness(
      through_resolution(real, stackgan.STAGE1_RESOLUTION)
    ),
  }


def _evaluate_samples(
  images: np.ndarray, *, stage: int, captions, real_sharpness=None
) -> dict[str, float]:
  """Sharpness of the grid (Stage II: of its Stage-I and Stage-II cells, beside the real images'
  `real_sharpness`) and, on shapes, whether the final images show the prompted colour and shape."""
  if stage == 1:
    final, results = images, {"eval/samples_sharpness": sharpness(images)}
  else:
    final = images[1::2]
    results = {
      "eval/samples_sharpness_stage1_upsampled": sharpness(images[0::2]),
      "eval/samples_sharpness_stage2": sharpness(final),
      **(real_sharpness or {}),
    }
  if captions is not None:
    adherence = shapes_adherence.evaluate(final, captions)
    results |= {f"eval/samples_{k}": v for k, v in adherence.items()}
  return results
