"""t2i_jax: text-to-image and text-to-video models in JAX/Flax."""

import setuptools

setuptools.setup(
  name="t2i_jax",
  version="0.1.0",
  description="Pure-JAX/Flax research code for text-to-image and text-to-video generation.",
  python_requires=">=3.10",
  packages=setuptools.find_packages(include=["t2i_jax", "t2i_jax.*", "configs", "experiments"]),
  include_package_data=True,
  package_data={"t2i_jax": ["text/assets/*"]},
  install_requires=[
    "jax>=0.10.2,<0.11",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    "ml-collections>=1.1.0,<2",
    "tensorflow-datasets>=4.9.10,<5",
    "grain>=0.2.18,<0.3",
    "numpy>=2.0,<3",
    "pillow>=10,<14",
    "imageio>=2.38,<3",
    "tqdm>=4.66,<5",
    "tensorboardX>=2.6,<3",
    "absl-py>=2.1,<3",
    "tokenizers>=0.23.1,<0.24",
    "safetensors>=0.6,<1",
  ],
  extras_require={
    "test": ["pytest>=8,<10", "transformers>=5.23,<6"],
    "tf": ["tensorflow>=2.16"],
  },
)
