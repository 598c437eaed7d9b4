"""The distillation trainer: one readable loop on ``accelerate`` driven by a curriculum plan.

Modules: :mod:`~spectrumkd.train.config` (the run config), :mod:`~spectrumkd.train.loop` (the
training function), :mod:`~spectrumkd.train.micro_loss` (one micro-batch's loss, shared with
validation), :mod:`~spectrumkd.train.sampler` and :mod:`~spectrumkd.train.hf_callback`
(the plan in other people's trainers), :mod:`~spectrumkd.train.teacher_cache` (top-k teacher
log-probs on disk), :mod:`~spectrumkd.train.checkpoint`, :mod:`~spectrumkd.train.validation`,
:mod:`~spectrumkd.train.metrics` and :mod:`~spectrumkd.train.pipeline` (what ``spectrumkd
distill`` runs: data → scores → plan → cache → loop). Import the submodules directly; this
package imports nothing heavy itself.
"""
