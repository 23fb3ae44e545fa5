"""Conditioning Augmentation (CA) and its KL regulariser, from StackGAN (Zhang et al., ICCV 2017).

CA maps a fixed text embedding (here any pooled [B, E] embedding, e.g. CLIP's, in place of the
paper's char-CNN-RNN) to a Gaussian N(mu, diag(sigma^2)) and samples the generator's condition
from it with the reparameterisation trick. Sampling turns each caption into a small neighbourhood
of conditions, which smooths the conditioning manifold when captions are few; the KL term keeps
that Gaussian close to N(0, I) so the neighbourhood does not collapse to a point.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from t2i_jax.layers import initializers

ACTIVATIONS = ("relu", "glu")
NOISE_RNG = "noise"  # Flax rng stream that the CA epsilon is drawn from.


class ConditioningAugmentation(nn.Module):
  """Text embedding -> (c_hat, mu, logvar), c_hat = mu + exp(logvar / 2) * eps, eps ~ N(0, I).

  activation="relu" is the StackGAN-v1 reference (``CA_NET``): Linear(E, 2 * cond_dim) + ReLU,
  split into (mu, logvar). Note the ReLU makes mu >= 0 and logvar >= 0 (sigma >= 1), a quirk of
  the reference kept for fidelity. activation="glu" is the StackGAN-v2 / AttnGAN variant:
  Linear(E, 4 * cond_dim) + GLU, which lets logvar be negative.

  Everything runs in float32 whatever the caller's dtype: exp(logvar) and the KL term are
  sensitive to rounding, and the layer is tiny.

  Attributes:
    cond_dim: Size of c_hat, mu and logvar (the paper's N_g = 128).
    activation: "relu" (StackGAN-v1) or "glu" (StackGAN-v2).
  """

  cond_dim: int = 128
  activation: str = "relu"

  def __post_init__(self) -> None:
    if self.cond_dim <= 0:
      raise ValueError(f"cond_dim must be positive, got {self.cond_dim}.")
    if self.activation not in ACTIVATIONS:
      raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}.")
    super().__post_init__()

  @nn.compact
  def __call__(
    self, text_embedding: jax.Array, *, sample: bool
  ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Computes the augmented condition.

    Args:
      text_embedding: float[B, E] pooled text embedding.
      sample: Draw eps from the "noise" rng stream (training). If False, c_hat = mu
        (deterministic evaluation) and no rng is needed.

    Returns:
      (c_hat, mu, logvar), each float32[B, cond_dim].
    """
    if text_embedding.ndim != 2:
      raise ValueError(f"text_embedding must have shape [B, E], got {text_embedding.shape}.")
    factor = 2 if self.activation == "relu" else 4  # GLU halves its input
    h = nn.Dense(
      factor * self.cond_dim,
      kernel_init=nn.with_logical_partitioning(initializers.normal(0.02), ("embed", "mlp")),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("mlp",)),
      name="fc",
    )(text_embedding.astype(jnp.float32))
    h = nn.relu(h) if self.activation == "relu" else nn.glu(h, axis=-1)
    mu, logvar = h[:, : self.cond_dim], h[:, self.cond_dim :]
    if not sample:
      return mu, mu, logvar
    eps = jax.random.normal(self.make_rng(NOISE_RNG), mu.shape, jnp.float32)
    return mu + jnp.exp(0.5 * logvar) * eps, mu, logvar


def kl_divergence(mu: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(mu, exp(logvar)) || N(0, I)), averaged over all elements as in the StackGAN reference.

  Matches ``KL_loss`` of StackGAN-v1: ``mean(-0.5 * (1 + logvar - mu^2 - exp(logvar)))``, i.e. the
  per-dimension KL averaged over batch *and* dimensions (not summed over dimensions). The true
  per-example KL is this value times cond_dim; the reference's loss weight (lambda = 1 for
  StackGAN-v1 birds) is tuned for the mean.

  Args:
    mu: float[B, D] means.
    logvar: float[B, D] log variances.

  Returns:
    float32 scalar, >= 0; 0 exactly when mu = 0 and logvar = 0.
  """
  mu = mu.astype(jnp.float32)
  logvar = logvar.astype(jnp.float32)
  return jnp.mean(-0.5 * (1.0 + logvar - jnp.square(mu) - jnp.exp(logvar)))
