"""spectrumkd: a difficulty-spectrum curriculum for white-box knowledge distillation of LLMs.

The pure curriculum core lives in :mod:`spectrumkd.curriculum` (numpy/scipy only); losses, data,
models, scoring, training, evaluation and reports are separate subpackages that import torch and
transformers only when they are used. Nothing here does work at import time.
"""

__version__ = "0.1.0"


class SpectrumKDError(ValueError):
    """Bad input that the user can fix: the message names the file, line or example id."""
