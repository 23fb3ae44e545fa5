"""Converts a Hugging Face / diffusers checkpoint into a t2i_jax export folder.

  python -m experiments.convert --hf_clip=<CLIPModel folder> --out=<dir>
  python -m experiments.convert --diffusers_sd=<Stable Diffusion folder> --out=<dir>
  python -m experiments.convert --diffusers_vae=<AutoencoderKL folder> --out=<dir>

Exactly one source per call; `--out` must be new. It then holds what these load:
  --hf_clip        `t2i_jax.clip.export.load_clip` (a frozen text encoder for configs/ldm_*, the
                   GANs, CLIP score). The folder is what transformers' `CLIPModel.save_pretrained`
                   writes, optionally with vocab.json / merges.txt (else the packaged OpenAI BPE).
  --diffusers_sd   `TextToImage.from_export` / `python -m experiments.sample --workdir=<dir>`: a
                   Stable Diffusion 1.x / 2.x pipeline folder (model_index.json, unet/, vae/,
                   text_encoder/, tokenizer/, scheduler/).
  --diffusers_vae  `t2i_jax.vae.export.load_vae` (`config.model.vae_checkpoint` of configs/ldm_*).
A UNet alone has no folder format of its own: convert the whole pipeline with --diffusers_sd.
"""

from absl import app, flags

from t2i_jax import cli
from t2i_jax.convert import exports
from t2i_jax.convert.hf_clip import CheckpointConversionError
from t2i_jax.convert.stable_diffusion import convert_stable_diffusion

_SOURCES = {
  "hf_clip": (exports.export_hf_clip, "Hugging Face CLIPModel folder."),
  "diffusers_sd": (convert_stable_diffusion, "diffusers Stable Diffusion pipeline folder."),
  "diffusers_vae": (exports.export_diffusers_vae, "diffusers AutoencoderKL folder."),
}
_FLAGS = {name: flags.DEFINE_string(name, None, text) for name, (_, text) in _SOURCES.items()}
_OUT = flags.DEFINE_string("out", None, "Folder to write the export to (must be new).")
flags.mark_flags_as_required(["out"])
flags.mark_flags_as_mutual_exclusive(list(_SOURCES), required=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  name = next(name for name, flag in _FLAGS.items() if flag.value is not None)
  convert = _SOURCES[name][0]
  cli.run(lambda: convert(_FLAGS[name].value, _OUT.value), (CheckpointConversionError, OSError))


if __name__ == "__main__":
  app.run(main)
