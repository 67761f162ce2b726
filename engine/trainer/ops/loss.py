"""Linear + cross-entropy over the 201k vocabulary without materialising the full logits.

The stock path computes `hidden @ lm_head.T` for every token at once: at 8192 tokens that is a
[8192, 201088] tensor, 3.3 GB in bf16 and 6.6 GB once upcast to fp32 for the loss, plus the same
again for its gradient. Here the tokens are processed in chunks, and each chunk's gradient with
respect to the hidden states (and the weight, when it trains) is computed right after its loss,
while its logits are still live. Backward then only scales the stored gradients by the incoming
scalar, so the logits are computed once (no recompute) and at most one chunk of them ever exists.

Numerics follow the stock path: bf16 matmul, fp32 log-sum-exp, the logits gradient cast back to the
input dtype before the two gradient matmuls.
"""

from __future__ import annotations

import torch

from osstune.engine.data.harmony import IGNORE_INDEX  # the label of every masked token

__all__ = ["IGNORE_INDEX", "default_chunk_size", "linear_cross_entropy"]
# fp32 bytes of one chunk of logits (plus its bf16 copy) to aim for; 1 GiB keeps the matmuls large.
_CHUNK_LOGITS_BYTES = 1 << 30


def default_chunk_size(vocab_size: int) -> int:
    """Tokens per chunk so one chunk of fp32 logits is about 1 GiB (1024 for a 201k vocabulary)."""
    tokens = max(1, _CHUNK_LOGITS_BYTES // (4 * vocab_size))
    return max(128, 1 << (tokens.bit_length() - 1))  # a power of two keeps matmul shapes regular


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                chunk_size: int) -> torch.Tensor:
        want_hidden, want_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_hidden = torch.zeros_like(hidden) if want_hidden else None
        # fp32 accumulator: summing bf16 partial products over many chunks would lose bits.
        grad_weight = (torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
                       if want_weight else None)
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk_size):
            h = hidden[start:start + chunk_size]
            y = targets[start:start + chunk_size].unsqueeze(1)
            logits = (h @ weight.t()).float()  # [c, V]; the only large buffer
            target_logits = logits.gather(1, y)
            # log-sum-exp in place: exp(logits - max) is computed once and reused as softmax
            # (torch.logsumexp would allocate a second [c, V] buffer and exponentiate it again).
            row_max = logits.amax(dim=1, keepdim=True)
            exps = logits.sub_(row_max).exp_()
            row_sum = exps.sum(dim=1, keepdim=True)
            loss += (row_max + row_sum.log() - target_logits).sum()
            if not (want_hidden or want_weight):
                continue
            # d(sum_i lse_i - logit_i,y_i)/d logits = softmax - onehot, built in place.
            grad_logits = exps.mul_(row_sum.reciprocal())
            grad_logits.scatter_add_(1, y, torch.full_like(y, -1, dtype=grad_logits.dtype))
            grad_logits = grad_logits.to(hidden.dtype)
            if grad_hidden is not None:
                torch.mm(grad_logits, weight, out=grad_hidden[start:start + chunk_size])
            if grad_weight is None:
                continue
            if grad_logits.dtype == grad_weight.dtype:  # fp32: no [V, H] temporary
                grad_weight.addmm_(grad_logits.t(), h)
            else:  # the bf16 product, accumulated in fp32
                grad_weight.add_(grad_logits.t() @ h)
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return loss

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):  # type: ignore[override]
        grad_hidden, grad_weight = ctx.saved_tensors
        if grad_hidden is not None:
            grad_hidden = grad_hidden * grad_loss.to(grad_hidden.dtype)
        if grad_weight is not None:
            grad_weight = (grad_weight * grad_loss).to(ctx.weight_dtype)
        return grad_hidden, grad_weight, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                         ignore_index: int = IGNORE_INDEX, chunk_size: int | None = None,
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy of `hidden @ weight.T` against `labels` (already shifted).

    hidden [N, H], weight [V, H], labels [N] with `ignore_index` for untrained positions.
    Returns (loss summed over trained tokens as a 0-dim fp32 tensor, trained-token count as a 0-dim
    int64 tensor). Gradients flow to `hidden` and to `weight` when they require them.
    """
    if hidden.dim() != 2 or weight.dim() != 2 or labels.dim() != 1:
        raise ValueError(f"linear_cross_entropy: expected hidden [N,H], weight [V,H], labels [N]; "
                         f"got {tuple(hidden.shape)}, {tuple(weight.shape)}, {tuple(labels.shape)}")
    if hidden.shape[0] != labels.shape[0] or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"linear_cross_entropy: shapes do not line up: hidden "
                         f"{tuple(hidden.shape)}, weight {tuple(weight.shape)}, "
                         f"labels {tuple(labels.shape)}")
    if weight.dtype != hidden.dtype:
        hidden = hidden.to(weight.dtype)
    chunk = chunk_size or default_chunk_size(weight.shape[0])
    keep = labels != ignore_index
    n_trained = keep.sum()
    # Only trained positions pay for the vocabulary matmul (prompt tokens are often most of a row).
    index = keep.nonzero().squeeze(1)  # a host sync: the number of trained tokens sizes the work
    loss = _LinearCrossEntropy.apply(hidden.index_select(0, index), weight,
                                     labels.index_select(0, index), chunk)
    return loss, n_trained
