"""Hugging Face ``CLIPModel`` folder (config.json + safetensors) -> ``t2i_jax.models.clip.CLIP``.

Every tensor is placed by an explicit name table (``hf_name_table``); any missing, unexpected or
mis-shaped tensor raises ``CheckpointConversionError`` naming all of them, and the result is
checked against the model's own ``jax.eval_shape(init)``. Reads with ``safetensors.numpy``: no
torch or transformers needed.

Layouts: a ``nn.Linear`` weight [out, in] becomes a ``nn.Dense`` kernel [in, out]; the patch
``nn.Conv2d`` weight [out, in, kh, kw] becomes an NHWC ``nn.Conv`` kernel [kh, kw, in, out];
q/k/v/out projections map one-to-one onto ``SelfAttention``'s separate 2-D query/key/value/out
kernels; everything else is copied.
"""

from __future__ import annotations

import json
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from safetensors import SafetensorError
from safetensors.numpy import load_file

from t2i_jax.models.clip import CLIP

# Non-persistent buffers (torch.arange position ids) that older transformers versions saved;
# recomputed rather than stored by us, so they may be present and are dropped.
IGNORED_HF_KEYS = frozenset(
  {"text_model.embeddings.position_ids", "vision_model.embeddings.position_ids"}
)

# Defaults of transformers 5's CLIPTextConfig / CLIPVisionConfig / CLIPConfig, for keys a
# config.json leaves out.
_TEXT_DEFAULTS = dict(
  vocab_size=49408,
  hidden_size=512,
  intermediate_size=2048,
  num_hidden_layers=12,
  num_attention_heads=8,
  max_position_embeddings=77,
  hidden_act="quick_gelu",
  layer_norm_eps=1e-5,
  eos_token_id=49407,
)
_VISION_DEFAULTS = dict(
  hidden_size=768,
  intermediate_size=3072,
  num_hidden_layers=12,
  num_attention_heads=12,
  num_channels=3,
  image_size=224,
  patch_size=32,
  hidden_act="quick_gelu",
  layer_norm_eps=1e-5,
)
_CLIP_DEFAULTS = dict(projection_dim=512, logit_scale_init_value=2.6592)

# HF hidden_act -> our activation name (t2i_jax.layers.transformer.ACTIVATIONS).
_HF_ACTIVATIONS = {
  "quick_gelu": "quick_gelu",
  "gelu": "gelu",
  "gelu_new": "gelu_tanh",
  "gelu_pytorch_tanh": "gelu_tanh",
}

# HF eos_token_id for which transformers pools at argmax(input_ids) (configs from before
# huggingface/transformers#24773); any other id pools at its first occurrence.
_LEGACY_EOS_ID = 2


class CheckpointConversionError(ValueError):
  """A checkpoint does not fit the model: names every offending key or config field."""


def _square(value: Any, name: str) -> int:
  if isinstance(value, list | tuple):
    if len(set(value)) != 1:
      raise CheckpointConversionError(f"vision_config.{name}={value} is not square.")
    value = value[0]
  return int(value)


def clip_kwargs_from_hf_config(config: dict[str, Any]) -> dict[str, Any]:
  """Maps a ``CLIPConfig`` dict (config.json) to ``CLIP`` kwargs (JSON-serialisable).

  Raises:
    CheckpointConversionError: not a CLIP config, or one ``CLIP`` cannot express (different
      activations or LayerNorm epsilons per tower, an MLP ratio other than 4, non-RGB input).
  """
  if config.get("model_type") != "clip":
    raise CheckpointConversionError(
      f"config.json has model_type={config.get('model_type')!r}; expected 'clip' (a CLIPModel)."
    )
  # Old configs carry text_config_dict / vision_config_dict, which win over text_config (as in HF).
  text = _TEXT_DEFAULTS | (config.get("text_config") or {}) | (config.get("text_config_dict") or {})
  vision = (
    _VISION_DEFAULTS
    | (config.get("vision_config") or {})
    | (config.get("vision_config_dict") or {})
  )
  top = _CLIP_DEFAULTS | config

  problems = []
  acts = {text["hidden_act"], vision["hidden_act"]}
  if len(acts) != 1 or text["hidden_act"] not in _HF_ACTIVATIONS:
    problems.append(
      f"hidden_act text={text['hidden_act']!r} vision={vision['hidden_act']!r}: both must be one "
      f"of {sorted(_HF_ACTIVATIONS)}"
    )
  if text["layer_norm_eps"] != vision["layer_norm_eps"]:
    problems.append(
      f"layer_norm_eps text={text['layer_norm_eps']} vision={vision['layer_norm_eps']} differ"
    )
  for tower, cfg in (("text_config", text), ("vision_config", vision)):
    if cfg["intermediate_size"] != 4 * cfg["hidden_size"]:
      problems.append(
        f"{tower}.intermediate_size={cfg['intermediate_size']} is not 4 * hidden_size="
        f"{cfg['hidden_size']} (CLIP's MLP ratio is fixed at 4)"
      )
  if vision["num_channels"] != 3:
    problems.append(f"vision_config.num_channels={vision['num_channels']}; expected 3 (RGB)")
  eos = text["eos_token_id"]
  if not isinstance(eos, int):
    problems.append(f"text_config.eos_token_id={eos!r}; expected one integer id")
  if problems:
    raise CheckpointConversionError("Unsupported CLIP config: " + "; ".join(problems) + ".")

  return dict(
    vocab_size=int(text["vocab_size"]),
    context_length=int(text["max_position_embeddings"]),
    text_width=int(text["hidden_size"]),
    text_layers=int(text["num_hidden_layers"]),
    text_heads=int(text["num_attention_heads"]),
    image_size=_square(vision["image_size"], "image_size"),
    patch_size=_square(vision["patch_size"], "patch_size"),
    vision_width=int(vision["hidden_size"]),
    vision_layers=int(vision["num_hidden_layers"]),
    vision_heads=int(vision["num_attention_heads"]),
    projection_dim=int(top["projection_dim"]),
    activation=_HF_ACTIVATIONS[text["hidden_act"]],
    eos_id=None if eos == _LEGACY_EOS_ID else int(eos),
    layer_norm_eps=float(text["layer_norm_eps"]),
    logit_scale_init=float(top["logit_scale_init_value"]),
  )


def hf_name_table(text_layers: int, vision_layers: int) -> dict[str, tuple[str, str]]:
  """Every HF ``CLIPModel`` tensor name -> (our '/'-joined param path, layout).

  Layouts: "copy" (same shape), "linear" ([out, in] -> [in, out]), "conv" ([out, in, kh, kw] ->
  [kh, kw, in, out]).
  """
  table = {
    "logit_scale": ("logit_scale", "copy"),
    "text_projection.weight": ("text_projection/kernel", "linear"),
    "visual_projection.weight": ("vision_projection/kernel", "linear"),
    "text_model.embeddings.token_embedding.weight": ("text/token_embed/embedding", "copy"),
    "text_model.embeddings.position_embedding.weight": ("text/position_embed", "copy"),
    "vision_model.embeddings.class_embedding": ("vision/class_embed", "copy"),
    "vision_model.embeddings.patch_embedding.weight": ("vision/patch_embed/kernel", "conv"),
    "vision_model.embeddings.position_embedding.weight": ("vision/position_embed", "copy"),
  }
  norms = [
    ("text_model.final_layer_norm", "text/ln_final"),
    ("vision_model.pre_layrnorm", "vision/ln_pre"),  # sic: HF's spelling
    ("vision_model.post_layernorm", "vision/ln_post"),
  ]
  linears = []
  for hf_tower, tower, layers in (
    ("text_model", "text", text_layers),
    ("vision_model", "vision", vision_layers),
  ):
    for i in range(layers):
      hf, ours = f"{hf_tower}.encoder.layers.{i}", f"{tower}/block_{i}"
      norms += [(f"{hf}.layer_norm1", f"{ours}/ln_attn"), (f"{hf}.layer_norm2", f"{ours}/ln_mlp")]
      linears += [
        (f"{hf}.self_attn.q_proj", f"{ours}/attn/query"),
        (f"{hf}.self_attn.k_proj", f"{ours}/attn/key"),
        (f"{hf}.self_attn.v_proj", f"{ours}/attn/value"),
        (f"{hf}.self_attn.out_proj", f"{ours}/attn/out"),
        (f"{hf}.mlp.fc1", f"{ours}/mlp/fc1"),
        (f"{hf}.mlp.fc2", f"{ours}/mlp/fc2"),
      ]
  for hf, ours in norms:
    table[f"{hf}.weight"] = (f"{ours}/scale", "copy")
    table[f"{hf}.bias"] = (f"{ours}/bias", "copy")
  for hf, ours in linears:
    table[f"{hf}.weight"] = (f"{ours}/kernel", "linear")
    table[f"{hf}.bias"] = (f"{ours}/bias", "copy")
  return table


def _to_ours(array: np.ndarray, layout: str) -> np.ndarray:
  if layout == "linear":
    return array.T
  if layout == "conv":
    return array.transpose(2, 3, 1, 0)
  return array


def _hf_shape(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
  """Inverse of ``_to_ours`` on shapes: the HF shape our param of ``shape`` comes from."""
  if layout == "linear":
    return shape[::-1]
  if layout == "conv":
    kh, kw, cin, cout = shape
    return (cout, cin, kh, kw)
  return shape


def abstract_params(clip_kwargs: dict[str, Any]) -> dict[str, jax.ShapeDtypeStruct]:
  """Flat {'/'-joined path: ShapeDtypeStruct} of ``CLIP(**clip_kwargs)`` params, via eval_shape."""
  model = CLIP(**clip_kwargs)
  size = clip_kwargs["image_size"]
  variables = jax.eval_shape(
    model.init,
    jax.random.key(0),
    jnp.zeros((1, clip_kwargs["context_length"]), jnp.int32),
    jnp.zeros((1, size, size, 3), jnp.float32),
  )
  return traverse_util.flatten_dict(nn.unbox(variables["params"]), sep="/")


def convert_hf_clip_state(
  state: dict[str, np.ndarray], clip_kwargs: dict[str, Any], source: str = "checkpoint"
) -> dict[str, Any]:
  """Maps HF tensors ({name: array}) to a ``CLIP`` params tree of float32 numpy arrays.

  Raises:
    CheckpointConversionError: listing every missing, unexpected and mis-shaped HF key (with
      expected and found shapes), or any mismatch of the result with the model's params.
  """
  try:
    expected = abstract_params(clip_kwargs)
  except ValueError as error:  # e.g. heads that do not divide the width
    raise CheckpointConversionError(f"Cannot build CLIP({clip_kwargs}): {error}") from error
  table = hf_name_table(clip_kwargs["text_layers"], clip_kwargs["vision_layers"])
  missing = sorted(set(table) - set(state))
  unexpected = sorted(set(state) - set(table) - IGNORED_HF_KEYS)
  misshaped = []
  for name in sorted(set(table) & set(state)):
    path, layout = table[name]
    want = _hf_shape(tuple(expected[path].shape), layout) if path in expected else None
    if tuple(state[name].shape) != want:
      misshaped.append(f"{name}: expected {want}, found {tuple(state[name].shape)}")
  problems = []
  if missing:
    problems.append(f"missing keys ({len(missing)}): " + ", ".join(missing))
  if unexpected:
    problems.append(f"unexpected keys ({len(unexpected)}): " + ", ".join(unexpected))
  if misshaped:
    problems.append(f"mis-shaped keys ({len(misshaped)}): " + "; ".join(misshaped))
  if problems:
    raise CheckpointConversionError(
      f"{source} does not match a CLIP with {clip_kwargs}:\n  " + "\n  ".join(problems)
    )

  flat = {
    path: np.array(_to_ours(np.asarray(state[name], np.float32), layout), order="C")
    for name, (path, layout) in table.items()
  }
  # Guards the table itself: the result must be exactly the model's params tree.
  absent = sorted(set(expected) - set(flat))
  extra = sorted(set(flat) - set(expected))
  wrong = [
    f"{p}: model {tuple(expected[p].shape)}, converted {flat[p].shape}"
    for p in sorted(set(flat) & set(expected))
    if tuple(expected[p].shape) != flat[p].shape or expected[p].dtype != flat[p].dtype
  ]
  if absent or extra or wrong:
    raise CheckpointConversionError(
      "Converted params do not match CLIP's params tree: "
      f"not produced {absent}; not in the model {extra}; shape/dtype {wrong}."
    )
  return traverse_util.unflatten_dict(flat, sep="/")


def _read(path: str) -> dict[str, np.ndarray]:
  try:
    return load_file(path)
  except SafetensorError as error:  # truncated / not a safetensors file
    raise CheckpointConversionError(f"Cannot read {path}: {error}") from error


def _load_safetensors(folder: str) -> dict[str, np.ndarray]:
  single = os.path.join(folder, "model.safetensors")
  index = os.path.join(folder, "model.safetensors.index.json")
  if os.path.exists(single):
    return _read(single)
  if os.path.exists(index):  # sharded checkpoint: weight_map lists each tensor's shard
    with open(index) as f:
      shards = sorted(set(json.load(f)["weight_map"].values()))
    state = {}
    for shard in shards:
      state.update(_read(os.path.join(folder, shard)))
    return state
  raise CheckpointConversionError(
    f"{folder} has no model.safetensors (or model.safetensors.index.json); save the HF model "
    "with `save_pretrained(..., safe_serialization=True)`."
  )


def load_hf_clip(folder: str) -> tuple[dict[str, Any], dict[str, Any]]:
  """Reads a folder written by transformers' ``CLIPModel.save_pretrained``.

  Args:
    folder: Holds config.json and model.safetensors (or a sharded safetensors index).

  Returns:
    (clip_kwargs, params): ``CLIP(**clip_kwargs)`` kwargs (JSON-serialisable) and its params tree
    (float32 numpy arrays) such that ``CLIP(**clip_kwargs).apply({"params": params}, ...)``
    reproduces ``CLIPModel``.

  Raises:
    CheckpointConversionError: a missing file, an unsupported config, or any key problem.
  """
  config_path = os.path.join(folder, "config.json")
  if not os.path.isfile(config_path):
    raise CheckpointConversionError(f"{folder} is not a Hugging Face model folder: no config.json.")
  with open(config_path) as f:
    try:
      config = json.load(f)
    except json.JSONDecodeError as error:
      raise CheckpointConversionError(f"{config_path} is not valid JSON: {error}") from error
  clip_kwargs = clip_kwargs_from_hf_config(config)
  params = convert_hf_clip_state(_load_safetensors(folder), clip_kwargs, source=folder)
  return clip_kwargs, params
