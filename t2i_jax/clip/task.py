"""Builds the CLIP `Task`: contrastive training, retrieval and zero-shot evaluation, export."""

import functools
import logging
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import struct

from t2i_jax.clip import export, zero_shot
from t2i_jax.data import shapes
from t2i_jax.models.clip import CLIP, clip_contrastive_loss, normalize_images
from t2i_jax.text.clip_tokenizer import ClipTokenizer
from t2i_jax.text.word_tokenizer import WordTokenizer
from t2i_jax.train.optim import make_optimizer
from t2i_jax.train.state import NetworkState
from t2i_jax.train.task import Task

TOKENIZER_FILE = "tokenizer.json"
EXPORT_DIR = "export"
TOKENIZERS = ("word", "clip_bpe")


class ClipState(struct.PyTreeNode):
  step: jax.Array
  clip: NetworkState


def make_tokenizer(config: ml_collections.ConfigDict):
  """The caption tokenizer a config asks for (word-level vocabulary built from the dataset)."""
  kind = config.model.tokenizer
  if kind == "clip_bpe":
    return ClipTokenizer(context_length=config.data.max_caption_length)
  if kind != "word":
    raise ValueError(f"Unknown config.model.tokenizer {kind!r}; valid: {', '.join(TOKENIZERS)}.")
  if config.data.name == "shapes":
    return WordTokenizer(shapes.vocabulary())
  if config.data.name == "cub":
    from t2i_jax.data.sources import make_source  # noqa: PLC0415

    return WordTokenizer.from_corpus(make_source(config.data, "train").all_captions())
  raise ValueError(f"Dataset {config.data.name!r} has no captions to train a CLIP on.")


def clip_kwargs_from_config(config: ml_collections.ConfigDict, tokenizer) -> dict:
  m = config.model
  return dict(
    vocab_size=tokenizer.vocab_size,
    context_length=config.data.max_caption_length,
    text_width=m.text_width,
    text_layers=m.text_layers,
    text_heads=m.text_heads,
    image_size=config.data.resolution,
    patch_size=m.patch_size,
    vision_width=m.vision_width,
    vision_layers=m.vision_layers,
    vision_heads=m.vision_heads,
    projection_dim=m.projection_dim,
    activation=m.activation,
    eos_id=tokenizer.eos_id,
  )


def init(rng, *, model: CLIP, tx, context_length: int, image_size: int) -> ClipState:
  tokens = jnp.ones((2, context_length), jnp.int32)
  images = jnp.zeros((2, image_size, image_size, 3), jnp.float32)
  variables = model.init(rng, tokens, images)
  return ClipState(step=jnp.zeros((), jnp.int32), clip=NetworkState.create(variables, tx))


def train_step(state: ClipState, batch, rng, *, model: CLIP, tx):
  """One AdamW step on the symmetric InfoNCE loss over the global batch.

  Args:
    batch: image uint8[B, H, W, 3], tokens int32[B, L].
  """
  del rng  # deterministic model: no dropout
  images = normalize_images(batch["image"])

  def loss_fn(params):
    out = model.apply({"params": params}, batch["tokens"], images)
    loss, metrics = clip_contrastive_loss(
      out["image_embeds"], out["text_embeds"], out["logit_scale"]
    )
    return loss, (metrics, out["logit_scale"])

  (loss, (metrics, scale)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.clip.params)
  new_state = state.replace(step=state.step + 1, clip=state.clip.apply_gradients(grads, tx))
  return new_state, {
    "train/loss": loss,
    "train/logit_scale": scale,
    **{f"train/{k}": v for k, v in metrics.items()},
  }


def eval_step(state: ClipState, batch, rng, *, model: CLIP, prompt_tokens, prompt_attributes):
  """Retrieval hits within the batch and (shapes) zero-shot attribute hits, as sums."""
  del rng
  out = model.apply(
    {"params": state.clip.params}, batch["tokens"], normalize_images(batch["image"])
  )
  metrics = zero_shot.retrieval_hits(out["image_embeds"], out["text_embeds"], batch["tokens"])
  metrics["num_examples"] = jnp.asarray(batch["tokens"].shape[0], jnp.float32)
  if prompt_tokens is not None and "attribute_targets" in batch:
    prompts = model.apply({"params": state.clip.params}, prompt_tokens, method=CLIP.embed_text)
    prompts = prompts / jnp.linalg.norm(prompts, axis=-1, keepdims=True)
    hits = zero_shot.zero_shot_hits(
      out["image_embeds"],
      prompts,
      prompt_attributes,
      batch["attribute_targets"],
      out["logit_scale"],
    )
    metrics |= {f"zero_shot_{k}": v for k, v in hits.items()}
  return metrics


def finalize_eval(sums: dict[str, float]) -> dict[str, float]:
  n = max(sums.pop("num_examples"), 1.0)
  return {f"eval/{k}": v / n for k, v in sums.items()}


def build_clip_task(config: ml_collections.ConfigDict) -> Task:
  tokenizer = make_tokenizer(config)
  clip_kwargs = clip_kwargs_from_config(config, tokenizer)
  model = CLIP(**clip_kwargs)
  o = config.optim
  tx = make_optimizer("adamw", o.lr, o.b1, o.b2, o.weight_decay, o.warmup_steps, o.grad_clip_norm)
  max_length = config.data.max_caption_length
  prompt_tokens, prompt_attributes = None, None
  if config.data.name == "shapes":
    captions, prompt_attributes = zero_shot.single_object_prompts()
    prompt_tokens = tokenizer.encode(captions, max_length)

  def preprocess(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {
      "image": batch["image"],
      "tokens": tokenizer.encode([str(c) for c in batch["caption"]], max_length),
    }
    if "attributes" in batch:
      out["attribute_targets"] = zero_shot.attribute_targets(batch["attributes"])
    return out

  def write_assets(workdir: str) -> None:
    tokenizer.save(os.path.join(workdir, TOKENIZER_FILE))

  def export_clip(state: ClipState, workdir: str) -> None:
    path = os.path.join(workdir, EXPORT_DIR)
    if os.path.exists(os.path.join(path, export.PARAMS_DIR)):
      return  # already exported by an earlier run that reached num_steps
    export.save_clip(path, clip_kwargs, state.clip.params, tokenizer)
    logging.info("Exported the trained CLIP to %s (point text_encoder.checkpoint at it).", path)

  return Task(
    init=functools.partial(
      init,
      model=model,
      tx=tx,
      context_length=max_length,
      image_size=config.data.resolution,
    ),
    train_step=functools.partial(train_step, model=model, tx=tx),
    eval_step=functools.partial(
      eval_step,
      model=model,
      prompt_tokens=None if prompt_tokens is None else jnp.asarray(prompt_tokens),
      prompt_attributes=None if prompt_attributes is None else jnp.asarray(prompt_attributes),
    ),
    finalize_eval=finalize_eval,
    preprocess=preprocess,
    write_assets=write_assets,
    export=export_clip,
  )
