"""Builds the latent-diffusion text-to-image `Task` from a config.

Needs an exported autoencoder (`config.model.vae_checkpoint`, from configs/vae_*.py or a converted
diffusers AutoencoderKL). Captions are encoded by a frozen exported CLIP (text_encoder.name="clip")
or by a small word-level transformer trained with the UNet ("word"). At num_steps the run exports
a self-contained pipeline folder (t2i_jax/ldm/export.py) that `TextToImage` loads.
"""

import functools
import logging
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from t2i_jax.clip import export as clip_export
from t2i_jax.data import shapes
from t2i_jax.diffusion import predictions, samplers
from t2i_jax.diffusion.losses import WEIGHTINGS
from t2i_jax.diffusion.schedules import make_schedule
from t2i_jax.eval import shapes_adherence
from t2i_jax.gan.task import shapes_grid_prompts
from t2i_jax.ldm import export, steps
from t2i_jax.ldm.parts import LDMParts
from t2i_jax.models.clip import TextTransformer
from t2i_jax.models.text_encoder import WordTextEncoder
from t2i_jax.models.unet import UNet
from t2i_jax.text.word_tokenizer import WordTokenizer
from t2i_jax.train.optim import make_optimizer
from t2i_jax.train.task import Task
from t2i_jax.vae import export as vae_export

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# AutoencoderKL fields recorded in the pipeline folder.
VAE_FIELDS = (
  "out_channels",
  "block_out_channels",
  "layers_per_block",
  "latent_channels",
  "norm_num_groups",
  "mid_attention",
  "use_quant_conv",
  "use_post_quant_conv",
  "scaling_factor",
  "shift_factor",
)


def unet_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
  u = config.model.unet
  if u.dtype not in DTYPES:
    raise ValueError(f"Unknown config.model.unet.dtype {u.dtype!r}; valid: {', '.join(DTYPES)}.")
  return dict(
    block_out_channels=tuple(u.block_out_channels),
    cross_attention=tuple(u.cross_attention),
    layers_per_block=u.layers_per_block,
    num_heads=u.num_heads,
    transformer_depth=u.transformer_depth,
    norm_num_groups=u.norm_num_groups,
    remat=u.remat,
  )


def clip_text_kwargs(clip_kwargs: dict[str, Any]) -> dict[str, Any]:
  """`TextTransformer` kwargs of a `CLIP(**clip_kwargs)`'s text tower."""
  return dict(
    vocab_size=clip_kwargs["vocab_size"],
    context_length=clip_kwargs["context_length"],
    width=clip_kwargs["text_width"],
    layers=clip_kwargs["text_layers"],
    heads=clip_kwargs["text_heads"],
    activation=clip_kwargs.get("activation", "quick_gelu"),
    eos_id=clip_kwargs.get("eos_id"),
    layer_norm_eps=clip_kwargs.get("layer_norm_eps", 1e-5),
  )


def _text(config, tokenizer_length: int):
  """(kind, module kwargs, module, frozen params or None, tokenizer, context length)."""
  te = config.model.text_encoder
  if te.name == "clip":
    if not te.checkpoint:
      raise ValueError(
        "config.model.text_encoder.name='clip' needs config.model.text_encoder.checkpoint: an "
        "exported CLIP folder (the export/ of a configs/clip_shapes.py run, or "
        "`python -m experiments.convert --hf_clip=...`); or use name='word'."
      )
    path = os.path.abspath(os.path.expanduser(te.checkpoint))
    _, params, tokenizer = clip_export.load_clip(path)
    kwargs = clip_text_kwargs(clip_export.read_clip_kwargs(path))
    # The UNet attends to the text tower's hidden states: no projection, no vision tower.
    return (
      "clip",
      kwargs,
      TextTransformer(**kwargs),
      params["text"],
      tokenizer,
      kwargs["context_length"],
    )
  if te.name != "word":
    raise ValueError(f"Unknown config.model.text_encoder.name {te.name!r}; valid: word, clip.")
  if config.data.name != "shapes":
    raise ValueError(
      f"text_encoder.name='word' builds its vocabulary from the shapes grammar; for "
      f"{config.data.name!r} use an exported CLIP (text_encoder.name='clip')."
    )
  tokenizer = WordTokenizer(shapes.vocabulary())
  kwargs = dict(
    vocab_size=tokenizer.vocab_size,
    embed_dim=te.embed_dim,
    num_layers=te.num_layers,
    num_heads=te.num_heads,
    max_length=tokenizer_length,
    pad_id=tokenizer.pad_id,
  )
  return "word", kwargs, WordTextEncoder(**kwargs), None, tokenizer, tokenizer_length


def build_ldm_task(config: ml_collections.ConfigDict) -> Task:
  m, o, d, s = config.model, config.optim, config.model.diffusion, config.model.sample
  predictions.check_prediction_type(d.prediction_type)
  if d.weighting not in WEIGHTINGS:
    raise ValueError(
      f"Unknown config.model.diffusion.weighting {d.weighting!r}; valid: {WEIGHTINGS}."
    )
  if s.sampler not in samplers.SAMPLERS:
    raise ValueError(
      f"Unknown config.model.sample.sampler {s.sampler!r}; valid: {', '.join(samplers.SAMPLERS)}."
    )
  if config.data.name != "shapes":
    raise ValueError(
      f"configs/ldm_* train on the built-in shapes (their grids and prompt adherence use its "
      f"grammar); config.data.name={config.data.name!r} is not supported yet."
    )
  if not m.vae_checkpoint:
    raise ValueError(
      "config.model.vae_checkpoint is required: the export/ folder (or workdir) of a "
      "configs/vae_shapes.py run, e.g. --config.model.vae_checkpoint=runs/vae_shapes."
    )
  vae, vae_params = vae_export.load_vae(m.vae_checkpoint)
  kind, text_kwargs, text_module, clip_params, tokenizer, length = _text(
    config, config.data.max_caption_length
  )
  unet_kw = unet_kwargs(config)
  unet = UNet(**unet_kw, dtype=DTYPES[m.unet.dtype])
  parts = LDMParts(
    unet=unet,
    vae=vae,
    text_kind=kind,
    text_encoder=text_module,
    pad_id=tokenizer.pad_id,
    eos_id=tokenizer.eos_id,
    context_mask=m.context_mask,
    prediction_type=d.prediction_type,
  )
  resolution = config.data.resolution
  latent_shape = parts.latent_shape(resolution, resolution)
  schedule_kwargs = dict(
    kind=d.schedule,
    num_train_timesteps=d.num_train_timesteps,
    beta_start=d.beta_start,
    beta_end=d.beta_end,
    rescale_zero_terminal_snr=d.rescale_zero_terminal_snr,
  )
  schedule = make_schedule(**schedule_kwargs)
  uncond_tokens = tokenizer.encode([""], length)
  setup = steps.LDMSetup(
    parts=parts,
    tx=make_optimizer(
      "adamw",
      o.lr,
      o.b1,
      o.b2,
      weight_decay=o.weight_decay,
      warmup_steps=o.warmup_steps,
      grad_clip_norm=o.grad_clip_norm,
    ),
    schedule=schedule,
    uncond_tokens=jnp.asarray(uncond_tokens),
    latent_shape=latent_shape,
    cond_length=length,
    train_text=kind == "word",
    weighting=d.weighting,
    min_snr_gamma=d.min_snr_gamma,
    cond_drop_prob=d.cond_drop_prob,
    ema_decay=o.ema_decay,
    sampler=s.sampler,
    num_sample_steps=s.num_steps,
    guidance_scale=s.guidance_scale,
    frozen={"vae": vae_params, "text": {} if clip_params is None else clip_params},
    text_init=text_module.init if kind == "word" else None,
  )

  captions, _ = shapes_grid_prompts()
  grid_inputs = prompt_inputs(captions, config.train.seed, tokenizer, length, latent_shape)

  def preprocess(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"image": batch["image"], "tokens": tokenizer.encode(list(batch["caption"]), length)}

  record = {
    "unet": unet_kw,
    "vae": {k: getattr(vae, k) for k in VAE_FIELDS},
    "text_encoder": {"kind": kind, "kwargs": text_kwargs},
    "schedule": schedule_kwargs,
    "prediction_type": d.prediction_type,
    "context_mask": m.context_mask,
    "resolution": resolution,
    "context_length": length,
    "sampler": {"name": s.sampler, "num_steps": s.num_steps, "guidance_scale": s.guidance_scale},
  }

  def export_pipeline(state: steps.LDMState, workdir: str) -> None:
    path = os.path.join(workdir, export.EXPORT_DIR)
    if export.is_export(path):
      return  # already exported by an earlier run that reached num_steps
    params = steps.all_params(setup, state.ema_params, state.frozen)
    export.save_pipeline(path, record, jax.device_get(params), tokenizer)
    logging.info("Exported the text-to-image pipeline to %s (TextToImage.from_workdir).", path)

  return Task(
    init=functools.partial(steps.init, setup=setup),
    train_step=functools.partial(steps.train_step, setup=setup),
    eval_step=functools.partial(steps.eval_step, setup=setup),
    finalize_eval=steps.finalize_eval,
    sample=functools.partial(steps.sample, setup=setup),
    sample_inputs=grid_inputs,
    sample_captions=captions,
    grid_columns=len(shapes.SHAPES),
    preprocess=preprocess,
    write_assets=lambda workdir: tokenizer.save(os.path.join(workdir, export.TOKENIZER_FILE)),
    evaluate_samples=functools.partial(_adherence, captions=captions),
    export=export_pipeline,
    prompt_inputs=functools.partial(
      prompt_inputs, tokenizer=tokenizer, length=length, latent_shape=latent_shape
    ),
    generate=functools.partial(steps.sample, setup=setup),  # EMA UNet, the config's sampler
  )


def prompt_inputs(
  captions, seed: int, tokenizer, length: int, latent_shape
) -> dict[str, np.ndarray]:
  """Sampler inputs for captions: tokens int32[N, L] and standard-normal noise [N, h, w, C]."""
  noise = np.random.default_rng(seed).standard_normal((len(captions), *latent_shape))
  return {"tokens": tokenizer.encode(list(captions), length), "noise": noise.astype(np.float32)}


def _adherence(images: np.ndarray, *, captions) -> dict[str, float]:
  return {f"eval/samples_{k}": v for k, v in shapes_adherence.evaluate(images, captions).items()}
