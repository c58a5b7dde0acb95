"""What layer caching is held to, per task, against the whole model on the
device: the share of FLOPs and of latency it must save, and the most fidelity
it may lose (the share of answers it changes; ``knowcache eval`` reads it as
accuracy lost). Image tasks other than CIFAR-10 and kws: 50% / 40% / 0.5
point. CIFAR-10: automated layer caching's own CIFAR-10 figures, up to 58%
fewer FLOPs and 46% lower latency."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Goals:
    flops_saved: float
    latency_saved: float
    fidelity_loss: float


DEFAULT = Goals(flops_saved=0.50, latency_saved=0.40, fidelity_loss=0.005)
BY_TASK = {"cifar10": Goals(flops_saved=0.58, latency_saved=0.46, fidelity_loss=0.005)}


def for_task(task: str) -> Goals:
    return BY_TASK.get(task, DEFAULT)
