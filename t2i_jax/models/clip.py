"""CLIP (Radford et al., 2021): a causal text transformer and a ViT trained contrastively.

Layout and numerics follow OpenAI CLIP / Hugging Face ``CLIPModel`` so pretrained checkpoints
convert exactly (``t2i_jax.convert.hf_clip``). Params (``CLIP.init``):

  text/             token_embed/embedding [V, Dt], position_embed [L, Dt],
                    block_{i}/{ln_attn, attn/{query,key,value,out}, ln_mlp, mlp/{fc1,fc2}},
                    ln_final
  vision/           patch_embed/kernel [p, p, 3, Dv], class_embed [Dv], position_embed [N+1, Dv],
                    ln_pre, block_{i}/..., ln_post
  text_projection/kernel [Dt, P], vision_projection/kernel [Dv, P]   (no bias, as CLIP)
  logit_scale []    log of the softmax temperature's inverse; exp(min(s, ln 100)) is used

The generative models use ``encode_text`` (per-token hidden states and the pooled, unprojected
EOT feature) as a frozen text encoder with the same ``(hidden, pooled)`` API as
``WordTextEncoder``.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from t2i_jax.layers import initializers
from t2i_jax.layers.embeddings import embed_tokens
from t2i_jax.layers.transformer import TransformerBlock, layer_norm

Dtype = Any

# Per-channel RGB statistics of CLIP's training images (OpenAI `clip/clip.py` preprocessing).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# exp(logit_scale) is clamped to 100, as in OpenAI CLIP, so the temperature cannot collapse.
MAX_LOG_LOGIT_SCALE = math.log(100.0)

_INIT = initializers.normal(0.02)


def normalize_images(images) -> jax.Array:
  """Maps images to the normalised input CLIP expects (no resizing or cropping is done here).

  Args:
    images: uint8[..., 3] in [0, 255], or float[..., 3] in [0, 1].

  Returns:
    float32[..., 3], (x - CLIP_MEAN) / CLIP_STD per channel.
  """
  images = jnp.asarray(images)
  scale = 1.0 / 255.0 if images.dtype == jnp.uint8 else 1.0
  x = images.astype(jnp.float32) * scale
  return (x - jnp.asarray(CLIP_MEAN, jnp.float32)) / jnp.asarray(CLIP_STD, jnp.float32)


def _l2_normalize(x: jax.Array) -> jax.Array:
  return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


class TextTransformer(nn.Module):
  """CLIP text tower: causal pre-LN transformer over BPE ids, pooled at the end-of-text token.

  Captions are padded *after* their end-of-text (EOT) token, so the causal mask alone keeps every
  real token (and the EOT token the pooled feature is read from) from attending to padding; no
  padding mask is needed. Hidden states at pad positions are computed but meaningless.

  Attributes:
    vocab_size: Rows of the token embedding table.
    context_length: Rows of the position table; inputs may be at most this long.
    width: Model width D.
    layers: Transformer blocks.
    heads: Attention heads; must divide ``width``.
    activation: MLP activation ("quick_gelu" for OpenAI CLIP, "gelu", "gelu_tanh").
    eos_id: EOT token id; pooled features are read at its first occurrence per row. None reads
      them at the largest token id instead (OpenAI CLIP's rule: EOT is the highest id).
    layer_norm_eps: LayerNorm epsilon.
    dtype: Computation dtype; outputs are float32.
  """

  vocab_size: int
  context_length: int
  width: int
  layers: int
  heads: int
  activation: str = "quick_gelu"
  eos_id: int | None = None
  layer_norm_eps: float = 1e-5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, token_ids: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Encodes token ids.

    Args:
      token_ids: int32[B, L], L <= context_length, each row holding one EOT token.

    Returns:
      hidden: float32[B, L, D] per-token features after the final LayerNorm.
      pooled: float32[B, D] ``hidden`` at each row's EOT position (unprojected).
    """
    x = embed_tokens(
      self,
      token_ids,
      vocab_size=self.vocab_size,
      width=self.width,
      max_length=self.context_length,
      position_stddev=0.01,
      dtype=self.dtype,
      length_field="context_length",
    )

    mask = nn.make_causal_mask(token_ids)  # bool[B, 1, L, L]
    for i in range(self.layers):
      x = TransformerBlock(
        num_heads=self.heads,
        activation=self.activation,
        layer_norm_eps=self.layer_norm_eps,
        dtype=self.dtype,
        name=f"block_{i}",
      )(x, mask)
    hidden = layer_norm(self.dtype, "ln_final", self.layer_norm_eps)(x).astype(jnp.float32)

    if self.eos_id is None:
      eot = jnp.argmax(token_ids, axis=-1)
    else:
      # argmax of a bool row is its first True: the first EOT even when pads are EOT ids too.
      eot = jnp.argmax(token_ids == self.eos_id, axis=-1)
    pooled = jnp.take_along_axis(hidden, eot[:, None, None], axis=1)[:, 0]
    return hidden, pooled


class VisionTransformer(nn.Module):
  """CLIP image tower: ViT with a class token, a LayerNorm before the blocks and one after.

  Attributes:
    image_size: Input height and width (square); fixes the position table.
    patch_size: Patch side; must divide ``image_size``.
    width: Model width D.
    layers: Transformer blocks.
    heads: Attention heads; must divide ``width``.
    activation: MLP activation.
    layer_norm_eps: LayerNorm epsilon.
    dtype: Computation dtype; outputs are float32.
  """

  image_size: int
  patch_size: int
  width: int
  layers: int
  heads: int
  activation: str = "quick_gelu"
  layer_norm_eps: float = 1e-5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Encodes images.

    Args:
      images: float32[B, H, W, 3], H = W = image_size, normalised with ``normalize_images``.

    Returns:
      hidden: float32[B, N + 1, D] output of the last block (class token first, then the
        N = (image_size / patch_size)^2 patches row by row); no final LayerNorm, as in HF.
      pooled: float32[B, D] the class token after the post-LayerNorm (unprojected).
    """
    batch, height, width, channels = images.shape
    if (height, width, channels) != (self.image_size, self.image_size, 3):
      raise ValueError(
        f"images must be [B, {self.image_size}, {self.image_size}, 3], got {images.shape}."
      )
    if self.image_size % self.patch_size:
      raise ValueError(f"patch_size={self.patch_size} does not divide {self.image_size}.")
    num_patches = (self.image_size // self.patch_size) ** 2

    x = nn.Conv(
      self.width,
      (self.patch_size, self.patch_size),
      strides=(self.patch_size, self.patch_size),
      padding="VALID",
      use_bias=False,
      dtype=self.dtype,
      kernel_init=nn.with_logical_partitioning(_INIT, ("conv_h", "conv_w", "conv_in", "embed")),
      name="patch_embed",
    )(images)
    x = x.reshape(batch, num_patches, self.width)  # row-major, as torch's flatten(2)
    class_embed = self.param(
      "class_embed",
      nn.with_logical_partitioning(initializers.normal(self.width**-0.5), ("embed",)),
      (self.width,),
    )
    class_tokens = jnp.broadcast_to(class_embed.astype(x.dtype), (batch, 1, self.width))
    positions = self.param(
      "position_embed",
      nn.with_logical_partitioning(_INIT, ("length", "embed")),
      (num_patches + 1, self.width),
    )
    x = jnp.concatenate([class_tokens, x], axis=1) + positions[None].astype(self.dtype)
    x = layer_norm(self.dtype, "ln_pre", self.layer_norm_eps)(x)

    for i in range(self.layers):
      x = TransformerBlock(
        num_heads=self.heads,
        activation=self.activation,
        layer_norm_eps=self.layer_norm_eps,
        dtype=self.dtype,
        name=f"block_{i}",
      )(x)
    pooled = layer_norm(self.dtype, "ln_post", self.layer_norm_eps)(x[:, 0])
    return x.astype(jnp.float32), pooled.astype(jnp.float32)


class CLIP(nn.Module):
  """Text and image towers with linear projections into a shared P-dim embedding space.

  Every field but ``dtype`` is a JSON-serialisable constructor argument; ``clip_config.json`` of
  an exported CLIP folder holds exactly these (``t2i_jax.clip.export``).

  Attributes:
    vocab_size, context_length, text_width, text_layers, text_heads: Text tower.
    image_size, patch_size, vision_width, vision_layers, vision_heads: Image tower.
    projection_dim: Joint embedding width P.
    activation: MLP activation of both towers.
    eos_id: End-of-text id for text pooling; None pools at the largest id (OpenAI CLIP).
    layer_norm_eps: LayerNorm epsilon of both towers.
    logit_scale_init: Initial log logit scale, ln(1 / 0.07).
    dtype: Computation dtype (not serialised); params and outputs are float32.
  """

  vocab_size: int
  context_length: int
  text_width: int
  text_layers: int
  text_heads: int
  image_size: int
  patch_size: int
  vision_width: int
  vision_layers: int
  vision_heads: int
  projection_dim: int
  activation: str = "quick_gelu"
  eos_id: int | None = None
  layer_norm_eps: float = 1e-5
  logit_scale_init: float = 2.6592
  dtype: Dtype = jnp.float32

  def setup(self):
    # setup rather than @nn.compact: several methods (encode_text, encode_image, ...) share these.
    self.text = TextTransformer(
      vocab_size=self.vocab_size,
      context_length=self.context_length,
      width=self.text_width,
      layers=self.text_layers,
      heads=self.text_heads,
      activation=self.activation,
      eos_id=self.eos_id,
      layer_norm_eps=self.layer_norm_eps,
      dtype=self.dtype,
    )
    self.vision = VisionTransformer(
      image_size=self.image_size,
      patch_size=self.patch_size,
      width=self.vision_width,
      layers=self.vision_layers,
      heads=self.vision_heads,
      activation=self.activation,
      layer_norm_eps=self.layer_norm_eps,
      dtype=self.dtype,
    )
    self.text_projection = self._projection(self.text_width)
    self.vision_projection = self._projection(self.vision_width)
    self.logit_scale = self.param(
      "logit_scale",
      nn.with_logical_partitioning(nn.initializers.constant(self.logit_scale_init), ()),
      (),
    )

  def _projection(self, width: int) -> nn.Dense:
    return nn.Dense(
      self.projection_dim,
      use_bias=False,
      dtype=self.dtype,
      # The projection's output axis is its "mlp" (feature) axis for the sharding rules.
      kernel_init=nn.with_logical_partitioning(initializers.normal(width**-0.5), ("embed", "mlp")),
    )

  def encode_text(self, token_ids: jax.Array) -> tuple[jax.Array, jax.Array]:
    """int32[B, L] -> (hidden float32[B, L, Dt], pooled float32[B, Dt]), before projection."""
    return self.text(token_ids)

  def encode_image(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """float32[B, H, W, 3] normalised -> (hidden [B, N + 1, Dv], pooled [B, Dv]), float32."""
    return self.vision(images)

  def embed_text(self, token_ids: jax.Array) -> jax.Array:
    """int32[B, L] -> float32[B, P] projected text features (not normalised)."""
    return self.text_projection(self.encode_text(token_ids)[1]).astype(jnp.float32)

  def embed_image(self, images: jax.Array) -> jax.Array:
    """float32[B, H, W, 3] normalised -> float32[B, P] projected image features (not normalised)."""
    return self.vision_projection(self.encode_image(images)[1]).astype(jnp.float32)

  def __call__(self, token_ids: jax.Array, images: jax.Array) -> dict[str, jax.Array]:
    """Scores every caption against every image.

    Args:
      token_ids: int32[B, L].
      images: float32[B, H, W, 3] normalised.

    Returns:
      text_embeds, image_embeds: float32[B, P] L2-normalised.
      logit_scale: float32[] exp(min(logit_scale param, ln 100)).
      logits_per_image: float32[B, B] scale * image_embeds @ text_embeds.T.
      logits_per_text: float32[B, B] its transpose.
    """
    text_embeds = _l2_normalize(self.embed_text(token_ids))
    image_embeds = _l2_normalize(self.embed_image(images))
    scale = jnp.exp(jnp.minimum(self.logit_scale, MAX_LOG_LOGIT_SCALE))
    logits_per_text = scale * text_embeds @ image_embeds.T
    return {
      "text_embeds": text_embeds,
      "image_embeds": image_embeds,
      "logit_scale": scale,
      "logits_per_image": logits_per_text.T,
      "logits_per_text": logits_per_text,
    }


def text_padding_mask(token_ids: jax.Array, eos_id: int | None) -> jax.Array:
  """bool[B, L]: True up to and including each row's end-of-text token (the pooled position).

  Hidden states after it are computed but meaningless; consumers such as cross-attention mask
  them with this. eos_id None means the EOT is the largest id of the row (OpenAI's convention).
  """
  if eos_id is None:
    eot = jnp.argmax(token_ids, axis=-1)
  else:
    eot = jnp.argmax(token_ids == eos_id, axis=-1)
  return jnp.arange(token_ids.shape[1])[None, :] <= eot[:, None]


def encode_text(model: CLIP, params: Any, token_ids: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Frozen-encoder API: ``(hidden float32[B, L, Dt], pooled float32[B, Dt])`` of ``token_ids``."""
  return model.apply({"params": params}, token_ids, method=CLIP.encode_text)


def clip_contrastive_loss(
  image_embeds: jax.Array, text_embeds: jax.Array, logit_scale: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Symmetric InfoNCE over the in-batch image-text similarity matrix.

  Row i of ``image_embeds`` and ``text_embeds`` is a positive pair; the other B - 1 rows are the
  negatives. Under ``jax.jit`` with the batch sharded over the data axis the loss is over the
  GLOBAL batch, with no code for it: the [B, B] logits need all of one side's [B, P] embeddings,
  so GSPMD all-gathers those (P floats per example, not images) and reduces the row losses
  across devices (tests/models/test_clip.py checks both on 8 devices).

  Args:
    image_embeds: float[B, P], L2-normalised.
    text_embeds: float[B, P], L2-normalised.
    logit_scale: float[] the already exponentiated (and clamped) scale, e.g. ``CLIP()``'s
      ``"logit_scale"`` output.

  Returns:
    loss: float32[] mean of the image->text and text->image cross-entropies, labels arange(B).
    metrics: ``i2t_accuracy``, ``t2i_accuracy``: float32[] in-batch top-1 retrieval accuracy.
  """
  image_embeds = image_embeds.astype(jnp.float32)
  text_embeds = text_embeds.astype(jnp.float32)
  logits_per_image = logit_scale * image_embeds @ text_embeds.T  # [B, B]
  labels = jnp.arange(logits_per_image.shape[0])

  def cross_entropy(logits: jax.Array) -> jax.Array:
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=-1))

  def accuracy(logits: jax.Array) -> jax.Array:
    return jnp.mean(jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)

  loss = 0.5 * (cross_entropy(logits_per_image) + cross_entropy(logits_per_image.T))
  metrics = {
    "i2t_accuracy": accuracy(logits_per_image),
    "t2i_accuracy": accuracy(logits_per_image.T),
  }
  return loss, metrics
