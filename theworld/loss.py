"""The language-model loss on answer tokens, without host syncs and without a full logits tensor.

Two pieces:

- ``labelled_rows`` turns ``labels`` into the flat positions whose hidden states predict a label,
  padded to a per-batch width. The collate runs it on the CPU in the loader workers, so the model
  never asks the GPU how many labels there are (boolean indexing would: a host sync every step).
- ``linear_cross_entropy`` computes ``cross_entropy(hidden @ weight.T, targets)`` chunk by chunk
  and works out the gradients in the same pass, so at most one chunk of ``(rows, vocab)`` logits
  exists at a time instead of every labelled row's logits plus their float32 copy and gradient.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100
# Float32 logits per chunk: 256 MiB is 256 rows of Gemma 3's 262k vocabulary.
CHUNK_BYTES = 256 * 2**20


def labelled_rows(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, L)`` labels -> ``(positions, targets)``, each ``(B * K,)`` with K the most labels in a row.

    ``positions`` index ``hidden.flatten(0, 1)``: the hidden state at ``b * L + p`` predicts
    ``labels[b, p + 1]``. Rows with fewer labels are padded with position 0 and target ``IGNORE_INDEX``.
    """
    batch, length = labels.shape
    selected = labels[:, 1:] != IGNORE_INDEX
    counts = selected.sum(1)
    width = int(counts.max()) if batch else 0
    positions = torch.zeros((batch, width), dtype=torch.long, device=labels.device)
    targets = torch.full((batch, width), IGNORE_INDEX, dtype=torch.long, device=labels.device)
    rows, cols = selected.nonzero(as_tuple=True)
    # Rank of each labelled position within its row: its slot in the padded (B, K) layout.
    slots = torch.arange(len(rows), device=labels.device) - (counts.cumsum(0) - counts)[rows]
    positions[rows, slots] = rows * length + cols
    targets[rows, slots] = labels[rows, cols + 1]
    return positions.flatten(), targets.flatten()


class _LinearCrossEntropy(torch.autograd.Function):
    """Sum of token cross-entropies of ``hidden @ weight.T``; gradients computed during the forward."""

    @staticmethod
    def forward(
        ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_rows: int, grad_enabled: bool
    ):
        device_type = hidden.device.type
        # Under autocast the head's matmul runs in the autocast dtype, as F.linear would.
        autocast = torch.is_autocast_enabled(device_type)
        compute_dtype = torch.get_autocast_dtype(device_type) if autocast else weight.dtype
        w = weight.to(compute_dtype)
        valid = targets != IGNORE_INDEX
        safe_targets = targets.clamp(min=0)
        loss = hidden.new_zeros((), dtype=torch.float32)
        # needs_input_grad follows requires_grad even under no_grad: with gradients off (validation of an
        # unfrozen head) no (vocab, hidden) float32 buffer is allocated.
        grad_hidden = torch.empty_like(hidden) if grad_enabled and ctx.needs_input_grad[0] else None
        grad_weight = (
            torch.zeros_like(weight, dtype=torch.float32) if grad_enabled and ctx.needs_input_grad[1] else None
        )
        for start in range(0, hidden.shape[0], chunk_rows):
            rows = slice(start, start + chunk_rows)
            h = hidden[rows].to(compute_dtype)
            logits = (h @ w.T).float()
            lse = torch.logsumexp(logits, dim=-1)
            target_logit = logits.gather(1, safe_targets[rows, None]).squeeze(1)
            mask = valid[rows]
            loss = loss + ((lse - target_logit) * mask).sum()
            if grad_hidden is None and grad_weight is None:
                continue
            # d(loss)/d(logits) = softmax - one_hot, zero on padding rows; reuses the logits buffer.
            grad_logits = logits.sub_(lse[:, None]).exp_()
            grad_logits.scatter_add_(1, safe_targets[rows, None], -torch.ones_like(lse)[:, None])
            grad_logits.mul_(mask[:, None])
            grad_logits = grad_logits.to(compute_dtype)
            if grad_hidden is not None:
                grad_hidden[rows] = (grad_logits @ w).to(hidden.dtype)
            if grad_weight is not None:
                grad_weight.addmm_(grad_logits.T.float(), h.float())
        ctx.weight_dtype = weight.dtype
        ctx.save_for_backward(grad_hidden, grad_weight)
        return loss

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        if grad_hidden is not None:
            grad_hidden = grad_hidden * grad_loss.to(grad_hidden.dtype)
        if grad_weight is not None:
            grad_weight = (grad_weight * grad_loss).to(ctx.weight_dtype)
        return grad_hidden, grad_weight, None, None, None


def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_bytes: int = CHUNK_BYTES
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy of ``hidden @ weight.T`` over targets that are not ``IGNORE_INDEX``.

    Returns ``(loss, num_tokens)``, both device tensors (no host sync). Equal to
    ``F.cross_entropy(linear(hidden, weight).float(), targets)`` in value and gradients.

    Example:
        >>> positions, targets = labelled_rows(labels)          # in the collate, on the CPU
        >>> rows = hidden.flatten(0, 1)[positions]
        >>> loss, n = linear_cross_entropy(rows, model.lm_head.weight, targets)
    """
    chunk_rows = max(1, chunk_bytes // (4 * weight.shape[0]))
    total = _LinearCrossEntropy.apply(hidden, weight, targets, chunk_rows, torch.is_grad_enabled())
    num_tokens = (targets != IGNORE_INDEX).sum()
    return total / num_tokens.clamp(min=1), num_tokens
