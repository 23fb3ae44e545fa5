"""The captioned-shapes grammar: vocabulary, captions <-> object attributes, labels.

  a {size} {color} {shape} in the {position}[ and a {size} {color} {shape} in the {position}]

Rendering and the dataset itself live in `t2i_jax.data.shapes`, which re-exports these names.
"""

from collections.abc import Sequence
from typing import Any

COLORS = ("red", "green", "blue", "yellow", "magenta", "cyan", "white", "orange")
SHAPES = ("circle", "square", "triangle", "star")
SIZES = ("small", "large")
POSITIONS = ("top left", "top right", "bottom left", "bottom right", "center")
NUM_CLASSES = len(COLORS) * len(SHAPES)  # 32: label = color_index * 4 + shape_index.


_OBJECT_GRAMMAR = "a {size} {colour} {shape} in the {position}"
_ATTRIBUTE_KINDS = {  # Attribute key -> (word in messages, plural, valid values).
  "color": ("colour", "colours", COLORS),
  "shape": ("shape", "shapes", SHAPES),
  "size": ("size", "sizes", SIZES),
  "position": ("position", "positions", POSITIONS),
}


class CaptionError(ValueError):
  """A caption is outside the captioned-shapes grammar."""


def unknown_value_message(key: str, value: Any) -> str:
  word, plural, valid = _ATTRIBUTE_KINDS[key]
  return f"unknown {word} {value!r}; valid {plural}: {', '.join(valid)}"


def validated(obj: dict[str, Any]) -> dict[str, Any]:
  """Returns `obj` after checking its colour, shape, size and position; raises ValueError."""
  for key in _ATTRIBUTE_KINDS:
    if key not in obj:
      raise ValueError(f"object attributes {obj!r} lack {key!r}")
    if obj[key] not in _ATTRIBUTE_KINDS[key][2]:
      raise ValueError(unknown_value_message(key, obj[key]))
  return obj


def caption_of(attributes: Sequence[dict[str, Any]]) -> str:
  """Returns the caption of an image's objects (jitter keys are ignored)."""
  if not attributes:
    raise ValueError("an image needs at least one object")
  return " and ".join(
    "a {size} {color} {shape} in the {position}".format(**validated(obj)) for obj in attributes
  )


def label_of(attributes: Sequence[dict[str, Any]]) -> int:
  """Returns the class in [0, NUM_CLASSES) of the FIRST object: color_index * 4 + shape_index.

  For two-object images the label deliberately describes only the first object (in the heldout
  split that is the object with the held-out pair).
  """
  if not attributes:
    raise ValueError("an image needs at least one object")
  first = validated(attributes[0])
  return COLORS.index(first["color"]) * len(SHAPES) + SHAPES.index(first["shape"])


def vocabulary() -> list[str]:
  """Returns every word that can appear in a caption, sorted and unique."""
  words = {"a", "in", "the", "and", *SIZES, *COLORS, *SHAPES}
  for position in POSITIONS:
    words.update(position.split())
  return sorted(words)


class _WordCursor:
  """Walks the words of a caption, raising CaptionError that quotes the whole caption."""

  def __init__(self, words: list[str], caption: str):
    self.words = words
    self.caption = caption
    self.position = 0

  def done(self) -> bool:
    return self.position == len(self.words)

  def error(self, message: str, hint: str = "") -> CaptionError:
    return CaptionError(f"{message} in {self.caption!r}" + (f"; {hint}" if hint else ""))

  def take(self, expected: str) -> str:
    if self.done():
      raise self.error(f"caption ends early: expected {expected} after {self.words[-1]!r}")
    self.position += 1
    return self.words[self.position - 1]

  def expect(self, literal: str) -> None:
    word = self.take(repr(literal))
    if word != literal:
      raise self.error(f"expected {literal!r} but found {word!r} (word {self.position})")

  def take_value(self, key: str) -> str:
    word_name, plural, valid = _ATTRIBUTE_KINDS[key]
    value = self.take(f"a {word_name}")
    if key == "position" and value not in valid:
      # Positions may be two words ("top left"): take the second if the first word starts one.
      if any(candidate.startswith(value + " ") for candidate in valid):
        value = f"{value} {self.take('left or right')}"
    if value not in valid:
      hint = f"valid {plural}: {', '.join(valid)}"
      if any(value in other_valid for _, _, other_valid in _ATTRIBUTE_KINDS.values()):
        hint += f"; words must come in the order {_OBJECT_GRAMMAR!r}"
      raise self.error(f"unknown {word_name} {value!r}", hint)
    return value


def parse_caption(caption: str) -> list[dict[str, str]]:
  """Parses a caption back into canonical object attributes; the inverse of `caption_of`.

  Surrounding whitespace, letter case and one trailing period are tolerated.

  Args:
    caption: e.g. "a small red circle in the top left and a large blue star in the center".

  Returns:
    One dict(color, shape, size, position) per object, in caption order.

  Raises:
    CaptionError: (a ValueError) naming the offending word and listing the valid values.
  """
  if not isinstance(caption, str):
    raise CaptionError(f"caption must be a str, got {type(caption).__name__}")
  text = caption.strip().lower()
  if text.endswith("."):
    text = text[:-1]
  cursor = _WordCursor(text.split(), caption)
  if cursor.done():
    raise cursor.error("empty caption", f"expected {_OBJECT_GRAMMAR!r}, objects joined by 'and'")
  objects = []
  while True:
    cursor.expect("a")
    obj = {key: cursor.take_value(key) for key in ("size", "color", "shape")}
    cursor.expect("in")
    cursor.expect("the")
    obj["position"] = cursor.take_value("position")
    if any(other["position"] == obj["position"] for other in objects):
      raise cursor.error(f"two objects at the same position {obj['position']!r}")
    objects.append({key: obj[key] for key in ("color", "shape", "size", "position")})
    if cursor.done():
      return objects
    word = cursor.take("'and'")
    if word != "and":
      raise cursor.error(f"expected 'and' or the end of the caption but found {word!r}")
