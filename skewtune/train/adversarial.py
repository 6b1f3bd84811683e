"""Adversarial training on the word embeddings (Miyato et al. 2017 FGM; Madry et al. 2018 PGD), as text
classification competitions use it: after the clean backward pass, the word-embedding matrix is moved along its
gradient, the loss of the same batch is back-propagated again at the moved embeddings, and the matrix is put
back exactly; the optimizer then steps on the clean plus the adversarial gradient.

`SkewtuneTrainer.training_step` calls `attack(embeddings, backward)` after its clean step, with `backward` one
more forward/backward pass of the batch (the Trainer's own step, so loss scaling and accumulation stay right).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def _ascent(weight: torch.Tensor, size: float) -> torch.Tensor | None:
    """A step of L2 norm `size` along the weight's gradient; None where the gradient is missing, zero or not finite
    (fp16 overflow): then there is no direction to attack."""
    if weight.grad is None:
        return None
    norm = torch.linalg.vector_norm(weight.grad)
    if not torch.isfinite(norm) or norm == 0:
        return None
    return size * weight.grad / norm


class FGM:
    """One step of L2 norm `epsilon`: r = epsilon * g / ||g||."""

    def __init__(self, epsilon: float) -> None:
        self.epsilon = epsilon

    def __call__(self, embeddings: nn.Embedding, backward: Callable[[], object]) -> None:
        weight = embeddings.weight
        r = _ascent(weight, self.epsilon)
        if r is None:
            return
        original = weight.detach().clone()
        with torch.no_grad():
            weight.add_(r)
        try:
            backward()
        finally:
            with torch.no_grad():
                weight.copy_(original)


class PGD:
    """`steps` ascent steps of norm `alpha`, each projected back onto the L2 ball of radius `epsilon` around the
    clean embeddings. The gradients of the intermediate steps only steer the attack: before the last adversarial
    pass the clean gradients are put back, so the optimizer sees clean + last adversarial gradient."""

    def __init__(self, epsilon: float, alpha: float, steps: int, parameters: list[nn.Parameter]) -> None:
        self.epsilon, self.alpha, self.steps = epsilon, alpha, steps
        self.parameters = parameters  # the trained ones, whose gradients the optimizer will use

    def _set_grads(self, grads: list[torch.Tensor | None]) -> None:
        for p, grad in zip(self.parameters, grads):
            p.grad = None if grad is None else grad.clone()

    def __call__(self, embeddings: nn.Embedding, backward: Callable[[], object]) -> None:
        weight = embeddings.weight
        original = weight.detach().clone()
        clean = [None if p.grad is None else p.grad.detach().clone() for p in self.parameters]
        try:
            for step in range(self.steps):
                r = _ascent(weight, self.alpha)
                if r is None:
                    self._set_grads(clean)  # no direction left to attack: the clean gradients alone
                    break
                with torch.no_grad():
                    delta = weight + r - original
                    norm = torch.linalg.vector_norm(delta)
                    if norm > self.epsilon:
                        delta *= self.epsilon / norm
                    weight.copy_(original + delta)
                self._set_grads(clean if step == self.steps - 1 else [None] * len(clean))
                backward()
        finally:
            with torch.no_grad():
                weight.copy_(original)
