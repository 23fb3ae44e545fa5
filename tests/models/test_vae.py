"""Tests for t2i_jax.models.vae and t2i_jax.models.vae_losses.

Parity with diffusers' AutoencoderKL is tested in tests/convert/test_diffusers_vae.py.
"""

import functools
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t2i_jax.models.vae import SD_VAE, TINY_VAE, AutoencoderKL, sample_latent
from t2i_jax.models.vae_losses import (
  PatchDiscriminator,
  discriminator_hinge_loss,
  generator_adversarial_loss,
  kl_loss,
  reconstruction_loss,
)

IMAGES = jax.random.uniform(jax.random.key(1), (2, 16, 16, 3), minval=-1, maxval=1)


@functools.partial(jax.jit, static_argnums=0)
def _run_all(model, params, images, rng):
  """Every method in one compiled function (each distinct jit costs seconds on CPU)."""
  variables = {"params": params}
  mean, logvar = model.apply(variables, images, method=AutoencoderKL.encode)
  return {
    "mean": mean,
    "logvar": logvar,
    "decoded": model.apply(variables, mean, method=AutoencoderKL.decode),
    "call": model.apply(variables, images),
    "call_sampled": model.apply(variables, images, rng),
    "latents": model.apply(variables, images, method=AutoencoderKL.encode_latents),
    "from_latents": model.apply(
      variables, mean * model.scaling_factor, method=AutoencoderKL.decode_latents
    ),
  }


@pytest.fixture(scope="module")
def tiny():
  """(model, boxed variables, params, outputs, seconds to init incl. compilation)."""
  model = AutoencoderKL(**TINY_VAE)
  start = time.perf_counter()
  variables = jax.block_until_ready(jax.jit(model.init)(jax.random.key(0), IMAGES))
  seconds = time.perf_counter() - start
  params = nn.unbox(variables["params"])
  return model, variables, params, _run_all(model, params, IMAGES, jax.random.key(2)), seconds


def test_tiny_shapes_factor_4_and_logical_axes(tiny):
  model, variables, _, out, seconds = tiny
  print(f"tiny VAE init (jit compile + run): {seconds:.2f} s")
  assert model.downsampling_factor == 4
  assert out["mean"].shape == out["logvar"].shape == (2, 4, 4, 4)
  assert out["decoded"].shape == out["call"]["recon"].shape == (2, 16, 16, 3)
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(out))
  assert bool(jnp.all(jnp.isfinite(out["decoded"])))
  specs = nn.get_partition_spec(variables)["params"]
  assert specs["encoder"]["down_0_resnet_0"]["conv1"]["kernel"] == jax.sharding.PartitionSpec(
    "conv_h", "conv_w", "conv_in", "conv_out"
  )
  assert specs["decoder"]["mid_attn"]["attn"]["query"]["kernel"] == jax.sharding.PartitionSpec(
    "embed", "mlp"
  )
  params = variables["params"]
  assert {"down_0_downsample", "down_1_downsample", "mid_attn"} <= set(params["encoder"])
  assert "down_2_downsample" not in params["encoder"]
  assert {"up_2_upsample", "up_1_upsample", "up_0_resnet_1"} <= set(params["decoder"])
  assert "up_0_upsample" not in params["decoder"]


def test_methods_agree(tiny):
  model, _, _, out, _ = tiny
  np.testing.assert_allclose(out["call"]["recon"], out["decoded"], atol=1e-6)
  np.testing.assert_allclose(out["call"]["mean"], out["mean"], atol=1e-6)
  np.testing.assert_allclose(out["latents"], out["mean"] * model.scaling_factor, atol=1e-6)
  np.testing.assert_allclose(out["from_latents"], out["decoded"], atol=1e-5)
  assert float(jnp.abs(out["call_sampled"]["recon"] - out["decoded"]).max()) > 1e-4


def test_factor_8_with_four_levels():
  model = AutoencoderKL(**dict(TINY_VAE, block_out_channels=(8, 8, 16, 16)))
  shapes = jax.eval_shape(model.init, jax.random.key(0), IMAGES)
  assert model.downsampling_factor == 8
  mean, _ = jax.eval_shape(
    lambda v, x: model.apply(v, x, method=AutoencoderKL.encode), shapes, IMAGES
  )
  assert mean.shape == (2, 2, 2, 4)
  with pytest.raises(ValueError, match="divisible by 8"):
    jax.eval_shape(model.init, jax.random.key(0), IMAGES[:, :12])


def test_logvar_is_clipped(tiny):
  model, _, params, _, _ = tiny
  # A huge quant_conv bias on the log-variance half pushes it past diffusers' clamp.
  bias = params["quant_conv"]["bias"].at[4:].set(1e3)
  huge = params | {"quant_conv": params["quant_conv"] | {"bias": bias}}
  out = _run_all(model, huge, IMAGES, jax.random.key(2))
  np.testing.assert_array_equal(out["logvar"], 20.0)
  bias = params["quant_conv"]["bias"].at[4:].set(-1e3)
  tiny_var = params | {"quant_conv": params["quant_conv"] | {"bias": bias}}
  np.testing.assert_array_equal(
    _run_all(model, tiny_var, IMAGES, jax.random.key(2))["logvar"], -30.0
  )


def test_bfloat16_runs(tiny):
  model, _, params, out, _ = tiny
  bf16 = AutoencoderKL(**TINY_VAE, dtype=jnp.bfloat16)
  recon = jax.jit(lambda p, x: bf16.apply({"params": p}, x)["recon"])(params, IMAGES)
  assert recon.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(recon)))
  ref = out["decoded"]
  assert float(jnp.abs(recon - ref).max()) < 0.1 * float(jnp.abs(ref).max()) + 1e-2


def test_sample_latent_statistics():
  mean = jnp.full((4000, 2, 2, 4), 1.5)
  logvar = jnp.full((4000, 2, 2, 4), np.log(0.25))
  z = sample_latent(mean, logvar, jax.random.key(0))
  assert abs(float(z.mean()) - 1.5) < 0.01 and abs(float(z.std()) - 0.5) < 0.01


def test_sd_vae_parameter_count():
  shapes = jax.eval_shape(AutoencoderKL(**SD_VAE).init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.unbox(shapes))) == 83_653_863


def test_reconstruction_and_kl_losses():
  x = jnp.zeros((2, 4, 4, 3))
  recon = x.at[0].set(2.0)
  assert float(reconstruction_loss(x, recon, "l1")) == pytest.approx(1.0)
  assert float(reconstruction_loss(x, recon, "l2")) == pytest.approx(2.0)
  with pytest.raises(ValueError, match="l1"):
    reconstruction_loss(x, recon, "huber")
  zeros = jnp.zeros((2, 2, 2, 4))
  assert float(kl_loss(zeros, zeros)) == 0.0
  # Per example 0.5 * sum(mean^2) over 16 latent values; batch mean of (8, 0) = 4.
  assert float(kl_loss(zeros.at[0].set(1.0), zeros)) == pytest.approx(4.0)
  # logvar = log 2 everywhere: 0.5 * 16 * (2 - 1 - log 2) per example.
  assert float(kl_loss(zeros, zeros + np.log(2.0))) == pytest.approx(8 * (1 - np.log(2.0)))


def test_patch_discriminator_and_hinge_losses():
  disc = PatchDiscriminator(base_channels=8, num_layers=3, norm_num_groups=4)
  images = jnp.zeros((2, 32, 32, 3))
  shapes = jax.eval_shape(disc.init, jax.random.key(0), images)
  logits = jax.eval_shape(disc.apply, shapes, images)
  # 32 -> 16 -> 8 -> 4 (stride 2), then two 4x4 stride-1 convs with padding 1: 3, 2.
  assert logits.shape == (2, 2, 2, 1) and logits.dtype == jnp.float32
  real, fake = jnp.full((2, 2, 2, 1), 2.0), jnp.full((2, 2, 2, 1), 0.5)
  # 0.5 * (mean relu(1 - 2) + mean relu(1 + 0.5)) = 0.75
  assert float(discriminator_hinge_loss(real, fake)) == pytest.approx(0.75)
  assert float(generator_adversarial_loss(fake)) == pytest.approx(-0.5)
