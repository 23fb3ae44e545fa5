"""Sample metrics of a text-to-image model, one code path for `experiments.evaluate` and training.

A `MetricSuite` is built once per run (weights loaded, real reference cached) and called with a
train state: it generates images for N fixed eval captions with the model's own sampler
(`CaptionSampler`, i.e. `Task.prompt_inputs` + `Task.generate`) and streams them batch by batch
through every configured metric; only features, logits and counts are kept, never all images.

Metric names and the keys they report:
  fid                FID vs the N real eval images (Inception pool3; pytorch-fid's formula)
  kid                kid_mean, kid_std, kid_subset_size (torch-fidelity; subsets capped at N)
  precision_recall   precision, recall (k=3 manifolds; StyleGAN2-ADA / torch-fidelity)
  inception_score    shapes_is_mean/std over the shapes classifier's 32 colour x shape classes;
                     is_mean/std over the Inception's 1008-way head when the weights have one
  clip_score         clip_score, clip_r_precision (an exported CLIP)
  shapes_attributes  shapes_{color,shape,size,position,all}_accuracy of the first object, on eval
                     captions, and shapes_heldout_*_accuracy on N captions of the held-out split
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterable, Sequence

import jax
import ml_collections
import numpy as np
import tqdm
from jax.sharding import NamedSharding, PartitionSpec

from t2i_jax import sharding
from t2i_jax.data.sources import make_source
from t2i_jax.eval import (
  clip_score,
  fid,
  inception,
  inception_score,
  kid,
  precision_recall,
  reference,
  shapes_attributes,
)
from t2i_jax.train import summaries
from t2i_jax.train.task import Task, UnsupportedPromptsError

METRICS = ("fid", "kid", "precision_recall", "inception_score", "clip_score", "shapes_attributes")
_FEATURE_METRICS = ("fid", "kid", "precision_recall")  # need Inception pool3 features
MIN_SAMPLES = 10
_HELDOUT_STREAM = 1  # seeds of the held-out captions' generations differ from the eval ones'


class EvaluationError(ValueError):
  """A metric cannot run as configured; the message says what to supply."""


def parse_metrics(metrics: str | Sequence[str] | None) -> tuple[str, ...]:
  """Names from "fid,kid", ("fid", "kid") or ("fid,kid",), validated (empty: none given)."""
  if isinstance(metrics, str):
    metrics = [metrics]
  names = tuple(name.strip() for m in metrics or () for name in m.split(",") if name.strip())
  unknown = [m for m in names if m not in METRICS]
  if unknown:
    raise EvaluationError(f"Unknown metrics {unknown}; valid: {', '.join(METRICS)}.")
  return names


def default_cache_dir(config: ml_collections.ConfigDict, workdir: str) -> str:
  """config.eval.cache_dir, else <workdir>/eval/cache (reference statistics of real images)."""
  return config.eval.get("cache_dir") or os.path.join(os.path.abspath(workdir), "eval", "cache")


class CaptionSampler:
  """(state, captions, seed) -> uint8 images [N, H, W, 3] with a task's own sampler.

  Captions go through `task.prompt_inputs` in fixed batches of `batch_size` (the last padded), so
  `task.generate` compiles once; it runs replicated over the state's mesh.
  """

  def __init__(self, task: Task, batch_size: int):
    if task.prompt_inputs is None or task.generate is None:
      raise UnsupportedPromptsError(
        "This model family does not generate images for captions (its Task has no "
        "prompt_inputs/generate), so it has no sample metrics."
      )
    self.task, self.batch_size = task, batch_size
    self._fn = None

  def _compile(self, state):
    shardings = jax.tree.map(lambda leaf: leaf.sharding, state)
    meshes = [s.mesh for s in jax.tree.leaves(shardings) if isinstance(s, NamedSharding)]
    if not meshes:
      return jax.jit(self.task.generate)
    repl = NamedSharding(meshes[0], PartitionSpec())
    return jax.jit(self.task.generate, in_shardings=(shardings, repl, repl), out_shardings=repl)

  def __call__(self, state, captions: Sequence[str], seed: int) -> np.ndarray:
    n = len(captions)
    if not 0 < n <= self.batch_size:
      raise ValueError(f"Expected 1 to {self.batch_size} captions, got {n}.")
    padded = list(captions) + [captions[-1]] * (self.batch_size - n)
    inputs = self.task.prompt_inputs(padded, seed)
    if self._fn is None:
      self._fn = self._compile(state)
    images = self._fn(state, inputs, jax.random.key(seed))
    return summaries.to_uint8(jax.device_get(images))[:n]


def _batch_seed(seed: int, stream: int, index: int) -> int:
  return int(np.random.SeedSequence([seed, stream, index]).generate_state(1)[0])


class MetricSuite:
  """Loads what the chosen metrics need once; `suite(state, sampler)` -> {key: value}.

  Args:
    config: the run's config (data, eval fields).
    metrics: names from METRICS, or empty for every metric whose weights are configured (the
      Inception ones always; they need `inception_weights` or `inception_params`).
    num_samples: N generated (and real) images.
    inception_weights, clip_checkpoint, classifier_checkpoint: weight paths; None falls back to
      config.eval.<same name>.
    inception_params: an Inception params tree to use instead of a weights file (tests, or
      weights already in memory).
    cache_dir: where the real reference statistics are cached (see `default_cache_dir`).
  """

  def __init__(
    self,
    config: ml_collections.ConfigDict,
    metrics: str | Sequence[str] | None,
    num_samples: int,
    *,
    cache_dir: str,
    inception_weights: str | None = None,
    clip_checkpoint: str | None = None,
    classifier_checkpoint: str | None = None,
    inception_params=None,
  ):
    if num_samples < MIN_SAMPLES:
      raise EvaluationError(f"num_samples must be at least {MIN_SAMPLES}, got {num_samples}.")
    e = config.eval
    paths = {
      "inception_weights": inception_weights or e.get("inception_weights"),
      "clip_checkpoint": clip_checkpoint or e.get("clip_checkpoint"),
      "classifier_checkpoint": classifier_checkpoint or e.get("classifier_checkpoint"),
    }
    self.config, self.num_samples, self.cache_dir = config, num_samples, cache_dir
    self.batch_size, self.seed = int(e.batch_size), int(e.get("seed", 0))
    self.is_shapes = config.data.name == "shapes"
    _check_split_size(config, num_samples)
    explicit = parse_metrics(metrics)
    use_classifier = self.is_shapes and bool(paths["classifier_checkpoint"])
    names = list(explicit) or [
      *_FEATURE_METRICS,
      "inception_score",  # dropped below when neither a classifier nor an Inception head is there
      *(["clip_score"] if paths["clip_checkpoint"] else []),
      *(["shapes_attributes"] if use_classifier else []),
    ]
    if "shapes_attributes" in names and not self.is_shapes:
      raise EvaluationError(
        f"shapes_attributes judges captioned shapes; this run's data is {config.data.name!r}."
      )
    self.classifier = None
    if "shapes_attributes" in names or ("inception_score" in names and use_classifier):
      self.classifier = self._load_classifier(paths["classifier_checkpoint"])
    self.inception_params = inception_params
    wants_features = bool(set(names) & set(_FEATURE_METRICS))
    if inception_params is None and (
      wants_features or ("inception_score" in names and self.classifier is None)
    ):
      self.inception_params = self._load_inception(paths["inception_weights"])
    self._data_sharding = None
    if self.inception_params is not None and jax.process_count() == 1:
      # Inception is the heavy part: replicate it over the local devices, split each chunk.
      mesh = sharding.make_mesh(("data",), (-1,))
      self._data_sharding = sharding.batch_sharding(mesh, sharding.DATA_PARALLEL_RULES)
      self.inception_params = jax.device_put(self.inception_params, sharding.replicated(mesh))
    has_head = self.inception_params is not None and "fc" in self.inception_params
    if "inception_score" in names and self.classifier is None and not has_head:
      if explicit:
        raise EvaluationError(
          "inception_score needs class logits: the shapes attribute classifier "
          "(--classifier_checkpoint, shapes data) or pytorch-fid's Inception weights with their "
          "1008-way head (pt_inception-2015-12-05-6726825d.pth as --inception_weights)."
        )
      names.remove("inception_score")
    self.metrics = tuple(names)
    self.clip = None
    if "clip_score" in names:
      self.clip = self._load_clip(paths["clip_checkpoint"])
    self._reference = None

  def _load_inception(self, path: str | None):
    from t2i_jax.convert import fid_inception  # noqa: PLC0415 (reads weight files; only if needed)

    if not path:
      raise EvaluationError(
        "fid, kid, precision_recall (and inception_score without a shapes classifier) need the "
        "FID Inception weights: set config.eval.inception_weights or --inception_weights.\n"
        + fid_inception.HOW_TO_GET
      )
    return fid_inception.load_inception_params(path)

  def _load_classifier(self, path: str | None):
    from t2i_jax.classifier import export  # noqa: PLC0415

    if not path:
      raise EvaluationError(
        "shapes_attributes needs the shapes attribute classifier: set "
        "config.eval.classifier_checkpoint or --classifier_checkpoint to its export folder. "
        + export.HOW_TO_GET
      )
    model, params = export.load_classifier(path)
    return model, jax.device_put(params)

  def _load_clip(self, path: str | None):
    from t2i_jax.clip import export  # noqa: PLC0415

    if not path:
      raise EvaluationError(
        "clip_score needs an exported CLIP: set config.eval.clip_checkpoint or --clip_checkpoint "
        "to its folder (the export/ of a configs/clip_shapes.py run, or `python -m "
        "experiments.convert --hf_clip=<HF CLIP folder> --out=<dir>`)."
      )
    model, params, tokenizer = export.load_clip(path)
    return model, jax.device_put(params), tokenizer

  def reference(self) -> reference.Reference:
    """The N real eval captions (and Inception features/stats when needed), computed once."""
    if self._reference is None:
      split = self.config.data.eval_split
      source = make_source(self.config.data, split)
      indices = reference.record_indices(len(source), self.num_samples, self.seed)
      if not set(self.metrics) & set(_FEATURE_METRICS):
        captions = reference.read_captions(source, indices, self.batch_size)
        self._reference = reference.Reference(captions)
      else:
        fingerprint = reference.params_fingerprint(self.inception_params)
        path = reference.cache_path(
          self.cache_dir, self.config.data, split, self.num_samples, self.seed, fingerprint
        )
        self._reference = reference.inception_reference(
          source,
          indices,
          self.batch_size,
          functools.partial(self._inception, with_head=False),
          path,
        )
    return self._reference

  def _inception(self, images: np.ndarray, with_head: bool):
    """Inception outputs (pool3 [b, 2048], or (pool3, logits [b, 1008])) per chunk of uint8
    images [n, H, W, 3], each chunk of batch_size split over the local devices."""
    fn = inception.features_and_logits if with_head else inception.features
    fn = functools.partial(_split_over_devices, fn, self._data_sharding)
    return inception.iter_batched(fn, self.inception_params, [images], self.batch_size)

  def real_batches(self):
    """(uint8 images [b, H, W, 3], b captions) of the N real eval records, in reference order."""
    source = make_source(self.config.data, self.config.data.eval_split)
    indices = reference.record_indices(len(source), self.num_samples, self.seed)
    return reference.read_batches(source, indices, self.batch_size)

  def _heldout_captions(self) -> list[str]:
    """N captions of the held-out split (shapes_attributes on shapes with held-out pairs)."""
    if "shapes_attributes" not in self.metrics or not self.config.data.get("heldout_pairs"):
      return []
    source = make_source(self.config.data, "heldout")
    indices = reference.record_indices(len(source), self.num_samples, self.seed)
    return reference.read_captions(source, indices, self.batch_size)

  def __call__(self, state, sampler: CaptionSampler) -> dict[str, float]:
    """Every metric of `state`'s generations for the eval (and held-out) captions."""

    heldout = self._heldout_captions()
    captions = self.reference().captions
    logging.info("Generating and scoring %d (+%d held-out) images.", len(captions), len(heldout))
    progress = tqdm.tqdm(
      total=len(captions) + len(heldout),
      desc="sample metrics",
      unit="image",
      leave=False,
      mininterval=5.0,
      disable=jax.process_index() != 0,
    )

    def generated(captions: list[str], stream: int):
      for i, chunk in enumerate(reference.chunks(captions, self.batch_size)):
        yield sampler(state, chunk, _batch_seed(self.seed, stream, i)), chunk
        progress.update(len(chunk))

    with progress:
      return self.evaluate_images(generated(captions, 0), generated(heldout, _HELDOUT_STREAM))

  def evaluate_images(
    self,
    batches: Iterable[tuple[np.ndarray, Sequence[str]]],
    heldout_batches: Iterable[tuple[np.ndarray, Sequence[str]]] = (),
  ) -> dict[str, float]:
    """The metrics of any (uint8 images [b, H, W, 3], b captions) stream against the reference.

    `batches` should hold one image per reference caption (`self.reference().captions`, in
    order); `heldout_batches` feed only the held-out attribute accuracies.
    """
    wanted, ref = set(self.metrics), self.reference()
    keep_features = bool(wanted & {"kid", "precision_recall"})
    running, features, inception_logits = fid.RunningStats(), [], []
    accuracy = shapes_attributes.AttributeAccuracy(self.config.data.get("heldout_pairs") or ())
    classifier_logits, image_embeds, text_embeds = [], [], []
    with_head = "inception_score" in wanted and "fc" in (self.inception_params or {})
    for images, captions in batches:
      if self.inception_params is not None:
        for out in self._inception(images, with_head):
          pool3 = out[0] if with_head else out
          running.update(pool3)
          features += [pool3] if keep_features else []
          inception_logits += [out[1]] if with_head else []
      if self.classifier is not None:
        logits = shapes_attributes.classifier_logits(*self.classifier, images, self.batch_size)
        accuracy.update(logits, captions)
        classifier_logits.append(shapes_attributes.joint_logits(logits))
      if self.clip is not None:
        image, text = clip_score.embed_pairs(*self.clip, images, captions, self.batch_size)
        image_embeds.append(image)
        text_embeds.append(text)
    if self.classifier is not None:
      for images, captions in heldout_batches:
        accuracy.update(
          shapes_attributes.classifier_logits(*self.classifier, images, self.batch_size), captions
        )
    results = {}
    if "fid" in wanted:
      results |= fid.run(ref.stats, running.result())
    if keep_features:
      fake = np.concatenate(features)
      if "kid" in wanted:
        results |= kid.run(ref.features, fake)
      if "precision_recall" in wanted:
        results |= precision_recall.run(ref.features, fake)
    if "inception_score" in wanted:
      if with_head:
        results |= _inception_score(np.concatenate(inception_logits))
      if self.classifier is not None:
        scores = _inception_score(np.concatenate(classifier_logits))
        results |= {f"shapes_{k}": v for k, v in scores.items()}
    if "clip_score" in wanted:
      image, text = np.concatenate(image_embeds), np.concatenate(text_embeds)
      results["clip_score"] = clip_score.clip_score_from_embeddings(image, text)
      results["clip_r_precision"] = clip_score.r_precision_from_embeddings(image, text)
    if "shapes_attributes" in wanted:
      results |= accuracy.result()
    return results


def _check_split_size(config: ml_collections.ConfigDict, num_samples: int) -> None:
  """N real images (and N captions) come from the eval split, so it must hold at least N."""
  split = config.data.eval_split
  available = len(make_source(config.data, split))  # a missing dataset fails here, named
  if num_samples > available:
    raise EvaluationError(
      f"num_samples={num_samples} exceeds the {available} images of the {split!r} split "
      f"(config.data.eval_split); use --num_samples (config.eval.metrics_num_samples during "
      f"training) of at most {available}."
    )


def _split_over_devices(fn, data_sharding, params, images):
  """fn(params, images) with the batch split over data_sharding's devices when it divides."""
  if data_sharding is not None and images.shape[0] % data_sharding.mesh.size == 0:
    images = jax.device_put(images, data_sharding)
  return fn(params, images)


def _inception_score(logits: np.ndarray) -> dict[str, float]:
  """IS with the reference's 10 splits, fewer for small N (at least 10 images per split)."""
  splits = max(1, min(inception_score.SPLITS, len(logits) // 10))
  return inception_score.run(logits, splits=splits)


def training_metrics(config: ml_collections.ConfigDict, task: Task, workdir: str):
  """`(state) -> metrics` for `config.eval.metrics` during training, or None when none are set.

  Weights load here, before training starts, so a missing file fails at once, not hours in.
  """
  names = parse_metrics(config.eval.get("metrics", ()))
  if not names:
    return None
  if config.eval.metrics_every < 1:
    raise EvaluationError(
      f"config.eval.metrics_every must be >= 1, got {config.eval.metrics_every}."
    )
  suite = MetricSuite(
    config, names, config.eval.metrics_num_samples, cache_dir=default_cache_dir(config, workdir)
  )
  sampler = CaptionSampler(task, config.eval.batch_size)
  return lambda state: suite(state, sampler)
