"""Diffusion math: schedules and the forward process, training losses, samplers with guidance.

Entry points: schedules.make_schedule, losses.diffusion_loss, samplers.sample (samplers.SAMPLERS).
"""
