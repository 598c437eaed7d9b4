"""LoRA for the student via ``peft``: adapters on all attention and MLP linear layers.

The paper's OpenLLaMA and Qwen settings put LoRA on every linear layer of self-attention and the
MLP (``lora.target_modules``; llama/qwen2 names by default — gpt2 uses ``c_attn``, ``c_proj``,
``c_fc``). Only the adapter weights train; checkpoints save the adapter, and the merged model
too when ``lora.merge_on_save`` (:mod:`spectrumkd.train.checkpoint`). Not here: QLoRA.
"""

from __future__ import annotations

from spectrumkd import SpectrumKDError
from spectrumkd.train.config import LoraConfig

__all__ = ["apply_lora"]


def apply_lora(model, cfg: LoraConfig):
    """Wrap ``model`` in a ``peft`` LoRA model; errors name target modules the model lacks."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in cfg.target_modules if t not in names]
    if missing:
        raise SpectrumKDError(
            f"lora.target_modules {missing} are not modules of {type(model).__name__}; "
            f"its leaf names include {sorted(names)[:20]}"
        )
    peft_cfg = PeftLoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules), task_type="CAUSAL_LM",
    )  # fmt: skip
    return get_peft_model(model, peft_cfg)
