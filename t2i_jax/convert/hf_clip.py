"""Hugging Face CLIP folders (config.json + safetensors) -> ``t2i_jax.models.clip`` params.

``load_hf_clip``: a ``CLIPModel`` (both towers) -> ``CLIP``. ``load_hf_clip_text``: a
``CLIPTextModel`` (e.g. Stable Diffusion's text_encoder/: ``text_model.*`` only, no projection;
transformers 5 drops the prefix) -> ``TextTransformer``, CLIP's "text" subtree. Every tensor is placed by an explicit name table
(``hf_text_name_table``, which ``hf_name_table`` nests under "text/"); any missing, unexpected or
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

from t2i_jax.convert import key_check
from t2i_jax.models.clip import CLIP, TextTransformer

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


def _tower_problems(cfg: dict[str, Any], tower: str) -> list[str]:
  """What our towers cannot express in a (defaults-merged) text or vision config."""
  problems = []
  if cfg["intermediate_size"] != 4 * cfg["hidden_size"]:
    problems.append(
      f"{tower}intermediate_size={cfg['intermediate_size']} is not 4 * hidden_size="
      f"{cfg['hidden_size']} (CLIP's MLP ratio is fixed at 4)"
    )
  if not isinstance(cfg.get("eos_token_id", 0), int):
    problems.append(f"{tower}eos_token_id={cfg['eos_token_id']!r}; expected one integer id")
  return problems


def _eos_id(text: dict[str, Any]) -> int | None:
  return None if text["eos_token_id"] == _LEGACY_EOS_ID else int(text["eos_token_id"])


def text_kwargs_from_hf_config(config: dict[str, Any]) -> dict[str, Any]:
  """Maps a ``CLIPTextConfig`` dict (a ``CLIPTextModel``'s config.json) to ``TextTransformer``
  kwargs: the same dict ``t2i_jax.ldm.task.clip_text_kwargs`` makes (JSON-serialisable).

  Raises:
    CheckpointConversionError: not a CLIP text config, or one ``TextTransformer`` cannot express.
  """
  if config.get("model_type") != "clip_text_model":
    raise CheckpointConversionError(
      f"config.json has model_type={config.get('model_type')!r}; expected 'clip_text_model' (a "
      "CLIPTextModel; convert a two-tower CLIPModel with load_hf_clip)."
    )
  text = _TEXT_DEFAULTS | config
  problems = _tower_problems(text, "")
  if text["hidden_act"] not in _HF_ACTIVATIONS:
    problems.append(f"hidden_act={text['hidden_act']!r} (implemented: {sorted(_HF_ACTIVATIONS)})")
  if problems:
    raise CheckpointConversionError(
      "Unsupported CLIPTextModel config: " + "; ".join(problems) + "."
    )
  return dict(
    vocab_size=int(text["vocab_size"]),
    context_length=int(text["max_position_embeddings"]),
    width=int(text["hidden_size"]),
    layers=int(text["num_hidden_layers"]),
    heads=int(text["num_attention_heads"]),
    activation=_HF_ACTIVATIONS[text["hidden_act"]],
    eos_id=_eos_id(text),
    layer_norm_eps=float(text["layer_norm_eps"]),
  )


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
  problems += _tower_problems(text, "text_config.") + _tower_problems(vision, "vision_config.")
  if vision["num_channels"] != 3:
    problems.append(f"vision_config.num_channels={vision['num_channels']}; expected 3 (RGB)")
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
    eos_id=_eos_id(text),
    layer_norm_eps=float(text["layer_norm_eps"]),
    logit_scale_init=float(top["logit_scale_init_value"]),
  )


# One transformer block: (HF name under ...encoder.layers.{i}, our path under block_{i}, kind).
_BLOCK = (
  ("layer_norm1", "ln_attn", "norm"),
  ("layer_norm2", "ln_mlp", "norm"),
  ("self_attn.q_proj", "attn/query", "linear"),
  ("self_attn.k_proj", "attn/key", "linear"),
  ("self_attn.v_proj", "attn/value", "linear"),
  ("self_attn.out_proj", "attn/out", "linear"),
  ("mlp.fc1", "mlp/fc1", "linear"),
  ("mlp.fc2", "mlp/fc2", "linear"),
)


def _add(table: dict, hf: str, path: str, kind: str) -> None:
  """A LayerNorm ("norm": weight -> scale) or a Linear ("linear": weight -> kernel) with bias."""
  param, layout = ("scale", "copy") if kind == "norm" else ("kernel", "linear")
  table[f"{hf}.weight"] = (f"{path}/{param}", layout)
  table[f"{hf}.bias"] = (f"{path}/bias", "copy")


def _add_blocks(table: dict, hf_tower: str, ours: str, layers: int) -> None:
  for i in range(layers):
    for hf, path, kind in _BLOCK:
      _add(table, f"{hf_tower}.encoder.layers.{i}.{hf}", f"{ours}block_{i}/{path}", kind)


def hf_text_name_table(layers: int) -> dict[str, tuple[str, str]]:
  """Every HF ``CLIPTextModel`` tensor name -> (our ``TextTransformer`` param path, layout).

  Layouts: "copy" (same shape), "linear" ([out, in] -> [in, out]), "conv" ([out, in, kh, kw] ->
  [kh, kw, in, out]).
  """
  table = {
    "text_model.embeddings.token_embedding.weight": ("token_embed/embedding", "copy"),
    "text_model.embeddings.position_embedding.weight": ("position_embed", "copy"),
  }
  _add(table, "text_model.final_layer_norm", "ln_final", "norm")
  _add_blocks(table, "text_model", "", layers)
  return table


def hf_name_table(text_layers: int, vision_layers: int) -> dict[str, tuple[str, str]]:
  """Every HF ``CLIPModel`` tensor name -> (our '/'-joined ``CLIP`` param path, layout).

  The text tower's entries are ``hf_text_name_table``'s under "text/". Layouts as there.
  """
  table = {
    "logit_scale": ("logit_scale", "copy"),
    "text_projection.weight": ("text_projection/kernel", "linear"),
    "visual_projection.weight": ("vision_projection/kernel", "linear"),
    "vision_model.embeddings.class_embedding": ("vision/class_embed", "copy"),
    "vision_model.embeddings.patch_embedding.weight": ("vision/patch_embed/kernel", "conv"),
    "vision_model.embeddings.position_embedding.weight": ("vision/position_embed", "copy"),
  }
  for name, (path, layout) in hf_text_name_table(text_layers).items():
    table[name] = (f"text/{path}", layout)
  _add(table, "vision_model.pre_layrnorm", "vision/ln_pre", "norm")  # sic: HF's spelling
  _add(table, "vision_model.post_layernorm", "vision/ln_post", "norm")
  _add_blocks(table, "vision_model", "vision/", vision_layers)
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


def _flat_shapes(module: nn.Module, *inputs: jax.Array) -> dict[str, jax.ShapeDtypeStruct]:
  variables = jax.eval_shape(module.init, jax.random.key(0), *inputs)
  return traverse_util.flatten_dict(nn.unbox(variables["params"]), sep="/")


def abstract_params(clip_kwargs: dict[str, Any]) -> dict[str, jax.ShapeDtypeStruct]:
  """Flat {'/'-joined path: ShapeDtypeStruct} of ``CLIP(**clip_kwargs)`` params, via eval_shape."""
  size = clip_kwargs["image_size"]
  tokens = jnp.zeros((1, clip_kwargs["context_length"]), jnp.int32)
  return _flat_shapes(CLIP(**clip_kwargs), tokens, jnp.zeros((1, size, size, 3), jnp.float32))


def abstract_text_params(text_kwargs: dict[str, Any]) -> dict[str, jax.ShapeDtypeStruct]:
  """Flat {'/'-joined path: ShapeDtypeStruct} of ``TextTransformer(**text_kwargs)`` params."""
  tokens = jnp.zeros((1, text_kwargs["context_length"]), jnp.int32)
  return _flat_shapes(TextTransformer(**text_kwargs), tokens)


def convert_state(
  state: dict[str, np.ndarray],
  table: dict[str, tuple[str, str]],
  expected: dict[str, jax.ShapeDtypeStruct],
  what: str,
  source: str = "checkpoint",
) -> dict[str, Any]:
  """Places HF tensors ({name: array}) by ``table`` ({HF name: (our path, layout)}) into a
  params tree of float32 numpy arrays shaped as ``expected`` (the model's flat abstract params).

  Raises:
    CheckpointConversionError: listing every missing, unexpected and mis-shaped HF key (with
      expected and found shapes), or any mismatch of the result with the model's params.
  """

  def allowed(path: str, layout: str):
    return [_hf_shape(tuple(expected[path].shape), layout)] if path in expected else []

  found = {name: tuple(value.shape) for name, value in state.items()}
  problems = key_check.mismatches(found, table, allowed, ignored=IGNORED_HF_KEYS)
  if problems:
    raise CheckpointConversionError(key_check.report(source, what, problems))

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
      f"Converted params do not match the params tree of {what}: "
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


def _read_config(folder: str) -> dict[str, Any]:
  config_path = os.path.join(folder, "config.json")
  if not os.path.isfile(config_path):
    raise CheckpointConversionError(f"{folder} is not a Hugging Face model folder: no config.json.")
  with open(config_path) as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as error:
      raise CheckpointConversionError(f"{config_path} is not valid JSON: {error}") from error


def _expected(abstract, kwargs: dict[str, Any], what: str) -> dict[str, jax.ShapeDtypeStruct]:
  try:
    return abstract(kwargs)
  except ValueError as error:  # e.g. heads that do not divide the width
    raise CheckpointConversionError(f"Cannot build {what}: {error}") from error


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
  clip_kwargs = clip_kwargs_from_hf_config(_read_config(folder))
  what = f"a CLIP with {clip_kwargs}"
  expected = _expected(abstract_params, clip_kwargs, what)
  table = hf_name_table(clip_kwargs["text_layers"], clip_kwargs["vision_layers"])
  params = convert_state(_load_safetensors(folder), table, expected, what, source=folder)
  return clip_kwargs, params


def load_hf_clip_text(folder: str) -> tuple[dict[str, Any], dict[str, Any]]:
  """Reads a folder written by transformers' ``CLIPTextModel.save_pretrained`` (e.g. the
  text_encoder/ of a Stable Diffusion 1.x / 2.x pipeline).

  Returns:
    (text_kwargs, params): ``TextTransformer(**text_kwargs)`` kwargs (JSON-serialisable, as
    ``t2i_jax.ldm.task.clip_text_kwargs``) and its params tree (float32 numpy arrays, the layout
    of ``CLIP``'s "text" subtree): ``apply`` returns ``CLIPTextModel``'s last_hidden_state (after
    the final LayerNorm) and pooler_output.

  Raises:
    CheckpointConversionError: a missing file, an unsupported config, or any key problem.
  """
  text_kwargs = text_kwargs_from_hf_config(_read_config(folder))
  what = f"a CLIPTextModel with {text_kwargs}"
  expected = _expected(abstract_text_params, text_kwargs, what)
  state = _load_safetensors(folder)
  # transformers 5 saves a CLIPTextModel without the "text_model." prefix that earlier versions
  # (and so Stable Diffusion's text_encoder/ folders) use; both name the same tensors.
  if not any(name.startswith("text_model.") for name in state):
    state = {f"text_model.{name}": array for name, array in state.items()}
  table = hf_text_name_table(text_kwargs["layers"])
  params = convert_state(state, table, expected, what, source=folder)
  return text_kwargs, params
