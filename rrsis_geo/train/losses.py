"""FIANet training loss: 0.9 · weighted cross-entropy + 0.1 · Dice (docs/fianet.md §Training
recipe).

CE uses class weights [0.9, 1.1] (background, referent) and the usual weighted mean. The Dice term
is upstream's: for every sample b and both classes c, 1 − (2Σp·y + ε)/(Σp + Σy + ε) on softmax
probabilities vs one-hot targets, **summed** over batch and classes (not averaged), so its weight
grows with the batch size exactly as in the published recipe.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CE_WEIGHTS: tuple[float, float] = (0.9, 1.1)
CE_FACTOR = 0.9
DICE_FACTOR = 0.1
DICE_EPS = 1e-6


def dice_loss_sum(logits: torch.Tensor, target: torch.Tensor, eps: float = DICE_EPS) -> torch.Tensor:
    """Σ_{b,c} (1 − (2Σ p·y + eps) / (Σ p + Σ y + eps)).

    Args:
        logits: [B, 2, H, W].
        target: int64 [B, H, W] with values {0, 1}.

    Returns:
        scalar tensor.
    """
    probs = logits.float().softmax(dim=1)
    onehot = F.one_hot(target.long(), num_classes=logits.shape[1]).permute(0, 3, 1, 2).to(probs)
    inter = (probs * onehot).sum(dim=(2, 3))
    denom = probs.sum(dim=(2, 3)) + onehot.sum(dim=(2, 3))
    return (1.0 - (2.0 * inter + eps) / (denom + eps)).sum()


def fianet_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """0.9 · CE(weights [0.9, 1.1]) + 0.1 · summed Dice.

    Args:
        logits: [B, 2, H, W] at the target's resolution.
        target: int64 [B, H, W] with values {0, 1}.

    Returns:
        scalar tensor.
    """
    if logits.shape[-2:] != target.shape[-2:]:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in size")
    weight = torch.tensor(CE_WEIGHTS, dtype=torch.float32, device=logits.device)
    ce = F.cross_entropy(logits.float(), target.long(), weight=weight)
    return CE_FACTOR * ce + DICE_FACTOR * dice_loss_sum(logits, target)
