"""Knowledge caching: distil the full model into a small student that owns the
popular (and private) classes and answers "other" for the rest, plus a
generic student of the same size over all classes to compare against."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from knowcache.build import training
from knowcache.models import ModelRecord, build_net
from knowcache.models.nets import EmbeddingHeadConfig
from knowcache.models.resnet import ResNetConfig
from knowcache.tasks import OTHER


def student_labels(task_labels: Sequence[str], owned: Sequence[int]) -> list[str]:
    return [task_labels[c] for c in owned] + [OTHER]


def label_table(owned: Sequence[int], total: int) -> np.ndarray:
    """Task class index -> a student's: owned classes in order, the rest to "other"
    (index len(owned)). Index the table with task labels or predictions."""
    table = np.full(total, len(owned), dtype=np.int64)
    table[list(owned)] = np.arange(len(owned))
    return table


def map_labels(y: torch.Tensor, owned: Sequence[int], total: int) -> torch.Tensor:
    return torch.from_numpy(label_table(owned, total))[y.long()]


def distil(full: ModelRecord, role: str, name: str, owned: Sequence[int] | None,
           config: ResNetConfig | EmbeddingHeadConfig, x: torch.Tensor, y: torch.Tensor,
           fit: training.FitConfig, device: torch.device, log: training.Log,
           sample_weight: torch.Tensor | None = None,
           memo: training.TeacherMemo | None = None) -> ModelRecord:
    """A student of ``config`` distilled from ``full``; owns ``owned`` (+ other) or all classes.
    ``x`` is what ``training.trainable`` takes (kws: speech embeddings)."""
    total = len(full.labels)
    if owned is None:
        labels, targets, has_other, owned_list = list(full.labels), y.long(), False, list(range(total))
    else:
        owned_list = sorted(owned)
        labels, targets, has_other = student_labels(full.labels, owned_list), \
            map_labels(y, owned_list, total), True
    torch.manual_seed(fit.seed)           # the same initial weights run after run
    student = build_net(full.task, config, len(labels), full.norm)
    collapse = training.collapse_matrix(owned_list, total, has_other)
    training.fit(training.trainable(full.task, student), full.task, x, targets, fit, device,
                 teacher=training.trainable(full.task, full.build()), collapse=collapse,
                 sample_weight=sample_weight, memo=memo, log=log, name=name)
    return ModelRecord(task=full.task, role=role, name=name, labels=labels, config=config,
                       norm=full.norm, state_dict=student.state_dict(),
                       other_label=OTHER if has_other else None,
                       metrics={"owned": [full.labels[c] for c in owned_list]})


def owned_indices(task_labels: Sequence[str], classes: Sequence[str]) -> list[int]:
    return sorted(list(task_labels).index(c) for c in classes)


def accuracy_on(pred: np.ndarray, y: np.ndarray, mask: np.ndarray) -> float:
    return float((pred[mask] == y[mask]).mean()) if mask.any() else float("nan")


def fit_other_bias(logits: np.ndarray, y: np.ndarray, other: int, min_recall: float = 0.95,
                   grid: np.ndarray = np.arange(0.0, 8.01, 0.25),
                   groups: np.ndarray | None = None) -> float:
    """How much to lower the "other" logit (post-hoc logit adjustment on held-out data).

    A student trained on many classes folded into "other" keeps a prior
    towards it, and on unfamiliar renditions of its own classes (new voices)
    it defers. Returns the largest shift in ``grid`` that keeps at least
    ``min_recall`` of the non-owned held-out inputs answered "other",
    choosing among those the one with the best accuracy on owned inputs.
    ``y`` is in the student's label space.

    ``groups`` (one id per row, e.g. real vs synthesized speech) makes the floor
    hold in every group and scores owned accuracy as the mean over groups, so a
    small group (a few real speakers) is neither drowned by a big one nor the
    only evidence.
    """
    groups = np.zeros(len(y), int) if groups is None else np.asarray(groups)
    parts = [groups == g for g in np.unique(groups)]
    own = y != other
    best, best_acc = 0.0, -1.0
    for shift in grid:
        adj = logits.copy()
        adj[:, other] -= shift
        hit = adj.argmax(1) == y
        recalls = [hit[m & ~own].mean() for m in parts if (m & ~own).any()]
        if recalls and min(recalls) < min_recall:
            break
        accs = [hit[m & own].mean() for m in parts if (m & own).any()]
        acc = float(np.mean(accs)) if accs else 0.0
        if acc > best_acc:
            best, best_acc = float(shift), acc
    return best
