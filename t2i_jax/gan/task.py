"""Builds the GAN `Task` (DCGAN and its label/text-conditional variant) from a config."""

import functools
import os

import ml_collections
import numpy as np
import optax

from t2i_jax.clip import export, frozen
from t2i_jax.data import shapes
from t2i_jax.eval import shapes_adherence
from t2i_jax.gan import losses, steps
from t2i_jax.models import GANS, TEXT_ENCODERS
from t2i_jax.text.word_tokenizer import WordTokenizer
from t2i_jax.train.optim import make_optimizer
from t2i_jax.train.task import Task

CONDITIONS = ("none", "label", "text")
TOKENIZER_FILE = "tokenizer.json"


def shapes_grid_prompts() -> tuple[list[str], list[int]]:
  """One prompt per colour x shape (rows: colours, columns: shapes), positions and sizes varied.

  Held-out pairs are included on purpose: they show compositional generalisation in the grid.
  """
  captions, labels = [], []
  for ci, color in enumerate(shapes.COLORS):
    for si, shape in enumerate(shapes.SHAPES):
      obj = dict(
        color=color,
        shape=shape,
        size="large",
        position=shapes.POSITIONS[(ci + si) % len(shapes.POSITIONS)],
      )
      captions.append(shapes.caption_of([obj]))
      labels.append(shapes.label_of([obj]))
  return captions, labels


def _make_tokenizer(config: ml_collections.ConfigDict) -> WordTokenizer:
  if config.data.name != "shapes":
    raise ValueError(
      f"Text conditioning needs captions; dataset {config.data.name!r} has none. Use "
      "config.model.condition='none' (or 'label' on a labelled dataset)."
    )
  return WordTokenizer(shapes.vocabulary())


def build_gan_task(config: ml_collections.ConfigDict) -> Task:
  m = config.model
  if m.condition not in CONDITIONS:
    raise ValueError(
      f"Unknown config.model.condition {m.condition!r}; valid: {', '.join(CONDITIONS)}."
    )
  if m.name not in GANS:
    raise ValueError(f"Unknown config.model.name {m.name!r}; valid GANs: {', '.join(GANS)}.")
  if m.loss not in losses.LOSS_KINDS:
    raise ValueError(
      f"Unknown config.model.loss {m.loss!r}; valid: {', '.join(losses.LOSS_KINDS)}."
    )
  if m.condition == "label" and config.data.name != "shapes":
    raise ValueError(
      f"Label conditioning needs class labels; dataset {config.data.name!r} has none. "
      "Use config.model.condition='none'."
    )
  if m.condition != "none" and m.num_classes < shapes.NUM_CLASSES:
    raise ValueError(
      f"config.model.num_classes={m.num_classes} is smaller than the {shapes.NUM_CLASSES} "
      "colour x shape labels of captioned shapes."
    )
  generator_cls, discriminator_cls = GANS[m.name]
  resolution = config.data.resolution
  tokenizer, g_text, d_text = None, None, None
  cond_length = config.data.max_caption_length
  prepare_params = lambda params: params  # noqa: E731
  param_labels = None
  te = m.text_encoder
  if m.condition == "text" and te.name == "clip":
    # A frozen, pretrained CLIP text tower (trained by configs/clip_*.py or imported from HF).
    if not te.checkpoint:
      raise ValueError(
        "config.model.text_encoder.name='clip' needs config.model.text_encoder.checkpoint: an "
        "exported CLIP folder (e.g. <clip_shapes workdir>/export)."
      )
    _, clip_params, tokenizer = export.load_clip(te.checkpoint)
    clip_kwargs = export.read_clip_kwargs(te.checkpoint)
    cond_length = clip_kwargs["context_length"]
    g_text = d_text = frozen.FrozenClipText(clip_kwargs=clip_kwargs)
    prepare_params = functools.partial(_load_frozen_clip, clip_params=clip_params)
    param_labels = frozen.frozen_labels
  elif m.condition == "text":
    tokenizer = _make_tokenizer(config)
    if te.name not in TEXT_ENCODERS:
      raise ValueError(
        f"Unknown config.model.text_encoder.name {te.name!r}; valid: "
        f"{', '.join([*TEXT_ENCODERS, 'clip'])}."
      )
    build_te = functools.partial(
      TEXT_ENCODERS[te.name], te, tokenizer.vocab_size, cond_length, tokenizer.pad_id
    )
    g_text, d_text = build_te(), build_te()  # G and D each learn their own text encoder
  generator = generator_cls(
    resolution=resolution,
    width=m.g_width,
    condition=m.condition,
    num_classes=m.num_classes,
    cond_dim=m.cond_dim,
    text_encoder=g_text,
  )
  discriminator = discriminator_cls(
    resolution=resolution,
    width=m.d_width,
    condition=m.condition,
    num_classes=m.num_classes,
    text_encoder=d_text,
    norm=m.d_norm,
  )
  o = config.optim
  setup = steps.GANSetup(
    generator=generator,
    discriminator=discriminator,
    g_tx=_frozen_aware(make_optimizer("adam", o.g_lr, o.b1, o.b2), param_labels),
    d_tx=_frozen_aware(make_optimizer("adam", o.d_lr, o.b1, o.b2), param_labels),
    nz=m.nz,
    resolution=resolution,
    condition=m.condition,
    cond_length=cond_length,
    loss=m.loss,
    ema_decay=o.ema_decay,
    prepare_params=prepare_params,
  )

  num_cells = 32 if m.condition != "none" else 64
  z = np.random.default_rng(config.train.seed).standard_normal((num_cells, m.nz)).astype(np.float32)
  sample_inputs: dict[str, np.ndarray] = {"z": z}
  captions, labels = shapes_grid_prompts()
  sample_captions, evaluate_samples = None, None
  if m.condition == "label":
    sample_inputs["label"] = np.asarray(labels, np.int32)
    sample_captions = [" ".join(c.split()[2:4]) for c in captions]
  elif m.condition == "text":
    sample_inputs["tokens"] = tokenizer.encode(captions, cond_length)
    sample_captions = captions
  if m.condition != "none" and config.data.name == "shapes":
    evaluate_samples = functools.partial(_adherence, captions=captions)  # full prompts

  def preprocess(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {"image": batch["image"]}
    if m.condition == "label":
      out["label"] = batch["label"].astype(np.int32)
    elif m.condition == "text":
      out["tokens"] = tokenizer.encode(list(batch["caption"]), cond_length)
    return out

  def prompt_inputs(captions, seed: int) -> dict[str, np.ndarray]:
    """Evaluation inputs for any captions: z [N, nz] from `seed` and the captions' condition."""
    z = np.random.default_rng(seed).standard_normal((len(captions), m.nz)).astype(np.float32)
    inputs = {"z": z}
    if m.condition == "label":  # the colour x shape class of each caption's first object
      labels = [shapes.label_of(shapes.parse_caption(c)) for c in captions]
      inputs["label"] = np.asarray(labels, np.int32)
    elif m.condition == "text":
      inputs["tokens"] = tokenizer.encode(list(captions), cond_length)
    return inputs

  def write_assets(workdir: str) -> None:
    if tokenizer is not None:
      tokenizer.save(os.path.join(workdir, TOKENIZER_FILE))

  return Task(
    init=functools.partial(steps.init, setup=setup),
    train_step=functools.partial(steps.train_step, setup=setup),
    eval_step=functools.partial(steps.eval_step, setup=setup),
    finalize_eval=steps.finalize_eval,
    sample=functools.partial(steps.sample, setup=setup),
    sample_inputs=sample_inputs,
    sample_captions=sample_captions,
    grid_columns=len(shapes.SHAPES) if m.condition != "none" else 8,
    preprocess=preprocess,
    write_assets=write_assets,
    evaluate_samples=evaluate_samples,
    prompt_inputs=prompt_inputs,
    generate=functools.partial(steps.sample, setup=setup),  # the EMA G on the given z
  )


def _adherence(images: np.ndarray, *, captions) -> dict[str, float]:
  return {f"eval/samples_{k}": v for k, v in shapes_adherence.evaluate(images, captions).items()}


def _load_frozen_clip(params, *, clip_params):
  return frozen.load_into(params, clip_params)


def _frozen_aware(tx: optax.GradientTransformation, param_labels):
  """Leaves a frozen text encoder's params untouched (and without optimizer state)."""
  if param_labels is None:
    return tx
  return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, param_labels)
