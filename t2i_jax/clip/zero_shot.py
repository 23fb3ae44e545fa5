"""Zero-shot attribute classification and cross-modal retrieval for CLIP-style models.

Zero-shot on captioned shapes: every single-object caption of the grammar (8 colours x 4 shapes x
2 sizes x 5 positions = 320 prompts, held-out pairs included) is embedded once; an image's
probability for, say, "red" is the softmax mass of all prompts that say red. The argmax per
attribute is compared with the image's first object.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from t2i_jax.data import shapes

ATTRIBUTES = ("color", "shape", "size", "position")
VALUES = {
  "color": shapes.COLORS,
  "shape": shapes.SHAPES,
  "size": shapes.SIZES,
  "position": shapes.POSITIONS,
}


def single_object_prompts() -> tuple[list[str], np.ndarray]:
  """All single-object captions and their attribute indices.

  Returns:
    (captions [N], int32[N, 4] indices into VALUES[a] for a in ATTRIBUTES), N = 320.
  """
  captions, indices = [], []
  for combo in itertools.product(*(range(len(VALUES[a])) for a in ATTRIBUTES)):
    obj = {a: VALUES[a][i] for a, i in zip(ATTRIBUTES, combo, strict=True)}
    captions.append(shapes.caption_of([obj]))
    indices.append(combo)
  return captions, np.asarray(indices, np.int32)


def attribute_targets(attributes: np.ndarray) -> np.ndarray:
  """int32[B, 4] attribute indices of each example's first object (from shapes `attributes`)."""
  return np.asarray(
    [[VALUES[a].index(objects[0][a]) for a in ATTRIBUTES] for objects in attributes], np.int32
  )


def zero_shot_hits(image_embeds, prompt_embeds, prompt_attributes, targets, logit_scale):
  """Correct zero-shot predictions per attribute, summed over the batch.

  Args:
    image_embeds: float32[B, P] L2-normalised.
    prompt_embeds: float32[N, P] L2-normalised embeddings of `single_object_prompts()`.
    prompt_attributes: int32[N, 4].
    targets: int32[B, 4].
    logit_scale: scalar.

  Returns:
    {attribute: float32 count of correct images}.
  """
  probs = jax.nn.softmax(logit_scale * image_embeds @ prompt_embeds.T, axis=-1)  # [B, N]
  hits = {}
  for a, name in enumerate(ATTRIBUTES):
    onehot = jax.nn.one_hot(prompt_attributes[:, a], len(VALUES[name]), dtype=probs.dtype)
    predicted = jnp.argmax(probs @ onehot, axis=-1)  # marginal over the other attributes
    hits[name] = jnp.sum(predicted == targets[:, a]).astype(jnp.float32)
  return hits


def retrieval_hits(image_embeds, text_embeds, token_ids, ks=(1, 5)):
  """Image->text and text->image recall@k hits, summed over the batch.

  A retrieved caption counts as correct when its text equals the query's own caption (the same
  caption can describe several images of a batch).

  Args:
    image_embeds, text_embeds: float32[B, P] L2-normalised, row i of each is a pair.
    token_ids: int32[B, L] the captions, to tell equal captions apart from different ones.

  Returns:
    {"i2t_r{k}", "t2i_r{k}": float32 hit counts}.
  """
  similarity = image_embeds @ text_embeds.T  # [B_images, B_texts]
  same = jnp.all(token_ids[:, None, :] == token_ids[None, :, :], axis=-1)  # [B, B]
  hits = {}
  for k in ks:
    k_eff = min(k, similarity.shape[0])
    _, top_texts = jax.lax.top_k(similarity, k_eff)  # [B, k]
    _, top_images = jax.lax.top_k(similarity.T, k_eff)
    rows = jnp.arange(similarity.shape[0])[:, None]
    hits[f"i2t_r{k}"] = jnp.sum(jnp.any(same[rows, top_texts], axis=-1)).astype(jnp.float32)
    hits[f"t2i_r{k}"] = jnp.sum(jnp.any(same[rows, top_images], axis=-1)).astype(jnp.float32)
  return hits
