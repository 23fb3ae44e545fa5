"""Model name -> module builder dicts (plain dicts, no registration side effects)."""

from t2i_jax.models.dcgan import Discriminator, Generator
from t2i_jax.models.text_encoder import WordTextEncoder


def build_word_text_encoder(config, vocab_size: int, max_length: int, pad_id: int):
  """A learned word-embedding text encoder, trained with the model that owns it."""
  return WordTextEncoder(
    vocab_size=vocab_size,
    embed_dim=config.embed_dim,
    num_layers=config.num_layers,
    num_heads=config.num_heads,
    max_length=max_length,
    pad_id=pad_id,
  )


# name -> (config.model.text_encoder, vocab_size, max_length, pad_id) -> module with the
# `token_ids [B, L] -> (hidden [B, L, D], pooled [B, D])` API.
TEXT_ENCODERS = {"word": build_word_text_encoder}

# name -> (generator class, discriminator class)
GANS = {"dcgan": (Generator, Discriminator)}

__all__ = ["GANS", "TEXT_ENCODERS", "Discriminator", "Generator", "WordTextEncoder"]
