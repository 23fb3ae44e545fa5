"""Zero-shot attribute and retrieval metrics on hand-made embeddings."""

import jax.numpy as jnp
import numpy as np

from t2i_jax.clip import zero_shot
from t2i_jax.data import shapes


def test_prompts_cover_every_single_object_caption_once():
  captions, indices = zero_shot.single_object_prompts()
  assert len(captions) == len(set(captions)) == 8 * 4 * 2 * 5
  for caption, row in zip(captions, indices, strict=True):
    (obj,) = shapes.parse_caption(caption)
    assert [zero_shot.VALUES[a][i] for a, i in zip(zero_shot.ATTRIBUTES, row, strict=True)] == [
      obj[a] for a in zero_shot.ATTRIBUTES
    ]


def test_attribute_targets_use_the_first_object():
  ds = shapes.CaptionedShapes(resolution=32, max_objects=2, split="test")
  batch = ds.get_batch(range(6))
  targets = zero_shot.attribute_targets(np.asarray(batch["attributes"], dtype=object))
  for objects, row in zip(batch["attributes"], targets, strict=True):
    assert shapes.COLORS[row[0]] == objects[0]["color"]
    assert shapes.POSITIONS[row[3]] == objects[0]["position"]


def test_zero_shot_hits_with_perfect_and_wrong_embeddings():
  captions, attributes = zero_shot.single_object_prompts()
  prompts = jnp.eye(len(captions))  # each prompt its own direction
  chosen = np.array([0, 17, 101, 319])
  images = prompts[chosen]
  targets = jnp.asarray(attributes[chosen])
  hits = zero_shot.zero_shot_hits(images, prompts, jnp.asarray(attributes), targets, 100.0)
  assert {k: float(v) for k, v in hits.items()} == {a: 4.0 for a in zero_shot.ATTRIBUTES}
  # Images that look like a prompt of another colour get the colour wrong and the rest right.
  other = chosen.copy()
  other_rows = attributes[chosen].copy()
  other_rows[:, 0] = (other_rows[:, 0] + 1) % 8
  for i, row in enumerate(other_rows):
    other[i] = int(np.flatnonzero((attributes == row).all(axis=1))[0])
  hits = zero_shot.zero_shot_hits(prompts[other], prompts, jnp.asarray(attributes), targets, 100.0)
  assert float(hits["color"]) == 0.0 and float(hits["shape"]) == 4.0


def test_retrieval_counts_equal_captions_as_correct():
  embeds = jnp.eye(4)
  tokens = jnp.asarray([[5, 2], [6, 2], [5, 2], [7, 2]])  # rows 0 and 2: the same caption
  hits = zero_shot.retrieval_hits(embeds, embeds, tokens, ks=(1,))
  assert float(hits["i2t_r1"]) == 4.0 and float(hits["t2i_r1"]) == 4.0
  # Swap the texts of pairs 1 and 3: those two images now retrieve a different caption.
  texts = embeds[jnp.asarray([0, 3, 2, 1])]
  hits = zero_shot.retrieval_hits(embeds, texts, tokens, ks=(1, 5))
  assert float(hits["i2t_r1"]) == 2.0 and float(hits["i2t_r5"]) == 4.0
