"""Public inference APIs."""

from t2i_jax.pipelines.text_to_image import TextToImage

__all__ = ["TextToImage"]
