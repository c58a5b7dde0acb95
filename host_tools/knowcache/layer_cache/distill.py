"""Self-distillation of cache heads: no labels, only the full model's answers.

The predictor learns the full model's softmax (KL divergence; a head whose
predictor is the full model's own, ``trainable_predictor`` False, keeps it); the selector
then learns whether the predictor's argmax equals the full model's, on a
slice the predictor did not train on (so it learns the predictor's real
error rate, not its training error).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from knowcache.build.training import backward_kernels
from knowcache.layer_cache.heads import ExitHead


SCHEDULES = ("constant", "one_cycle")


@dataclass(frozen=True)
class DistillConfig:
    epochs: int = 30
    batch: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    selector_fraction: float = 0.3   # of the samples, kept for the selector
    seed: int = 0
    # constant: Adam at ``lr`` throughout; one_cycle: warm up to ``lr`` over the
    # first fifth of the steps, then anneal to ~0 (heads end less overconfident
    # on inputs they did not train on: docs/layer-caching.md)
    schedule: str = "constant"

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown distillation schedule {self.schedule!r}; expected one "
                             f"of {SCHEDULES}")


def fit(head: ExitHead, features: np.ndarray, teacher_probs: np.ndarray,
        config: DistillConfig = DistillConfig(),
        selector_data: tuple[np.ndarray, np.ndarray] | None = None) -> ExitHead:
    """Trains ``head`` in place on compact features and the full model's
    probabilities; returns it in eval mode. ``selector_data`` (features,
    teacher probabilities) trains the selector on inputs the full model was
    not trained on either (offline builds pass part of the validation split);
    otherwise a ``selector_fraction`` of the samples is held out for it."""
    if len(features) != len(teacher_probs) or len(features) < 8:
        raise ValueError(f"need at least 8 recorded samples with teacher outputs, got "
                         f"{len(features)} features and {len(teacher_probs)} outputs")
    g = torch.Generator().manual_seed(config.seed)
    x = torch.as_tensor(features, dtype=torch.float32)
    t = torch.as_tensor(teacher_probs, dtype=torch.float32)
    if selector_data is not None:
        pred_idx = torch.arange(len(x))
        x = torch.cat([x, torch.as_tensor(selector_data[0], dtype=torch.float32)])
        t = torch.cat([t, torch.as_tensor(selector_data[1], dtype=torch.float32)])
        sel_idx = torch.arange(len(pred_idx), len(x))
        n_sel = len(sel_idx)
    else:
        order = torch.randperm(len(x), generator=g)
        n_sel = int(len(x) * config.selector_fraction) if len(x) >= 100 else 0
        sel_idx, pred_idx = order[:n_sel], order[n_sel:]
    head.set_standardization(x[pred_idx])
    head.train()
    if head.trainable_predictor:
        params = [*head.hidden.parameters(), *head.out.parameters()]
        _train(head, params, lambda b: F.kl_div(F.log_softmax(head.from_feature(x[b])[0], 1),
                                                t[b], reduction="batchmean"), pred_idx, config, g)
    sel_idx = sel_idx if n_sel else pred_idx
    with torch.no_grad():
        agree = (head.from_feature(x[sel_idx])[0].argmax(1) == t[sel_idx].argmax(1)).float()
    agree_of = dict(zip(sel_idx.tolist(), agree.tolist()))
    target = torch.zeros(len(x))
    target[sel_idx] = torch.tensor([agree_of[i] for i in sel_idx.tolist()])
    _train(head, list(head.selector.parameters()),
           lambda b: F.binary_cross_entropy_with_logits(head.from_feature(x[b])[1].squeeze(1),
                                                        target[b]), sel_idx, config, g)
    return head.eval()


def _train(head: nn.Module, params, loss_of, idx: torch.Tensor, config: DistillConfig,
           g: torch.Generator) -> None:
    opt = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, (len(idx) + config.batch - 1) // config.batch)
    # Small online buffers get more passes so every retrain takes similar steps.
    epochs = max(config.epochs, min(200, 2000 // steps_per_epoch))
    sched = None
    if config.schedule == "one_cycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, config.lr, total_steps=epochs * steps_per_epoch, pct_start=0.2)
    with backward_kernels(torch.device("cpu"), head):
        for _ in range(epochs):
            perm = idx[torch.randperm(len(idx), generator=g)]
            for i in range(0, len(perm), config.batch):
                loss = loss_of(perm[i:i + config.batch])
                opt.zero_grad()
                loss.backward()
                opt.step()
                if sched is not None:
                    sched.step()
