"""Closed-form (ridge regression) edits of linear projections, shared by UCE and MACE.

For a projection W (out x d) and pairs of inputs k_i with desired outputs v_i, plus inputs p_j
whose outputs must stay W p_j:

    W' = argmin  lam |W' - W|^2 + sum_i s_e |W' k_i - v_i|^2 + sum_j s_p |W' p_j - W p_j|^2
       = (lam W + s_e V K^T + s_p W P P^T) (lam I + s_e K K^T + s_p P P^T)^-1

solved in float64 (the Gram matrices of text embeddings are badly conditioned).
"""

from __future__ import annotations

import torch


def ridge_edit(
    W: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    preserve: torch.Tensor | None,
    *,
    lam: float,
    erase_scale: float,
    preserve_scale: float,
) -> torch.Tensor:
    """keys (n, d), values (n, out), preserve (m, d). Returns the edited W (out, d)."""
    W64 = W.double()
    d = W.shape[1]
    K = keys.double().T  # (d, n)
    V = values.double().T  # (out, n)
    lhs = lam * W64 + erase_scale * V @ K.T
    rhs = lam * torch.eye(d, dtype=torch.float64) + erase_scale * K @ K.T
    if preserve is not None and len(preserve):
        P = preserve.double().T
        lhs = lhs + preserve_scale * W64 @ P @ P.T
        rhs = rhs + preserve_scale * P @ P.T
    return torch.linalg.solve(rhs.T, lhs.T).T.to(W.dtype)


def aligned_tail(emb_a: torch.Tensor, n_a: int, emb_b: torch.Tensor, n_b: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token embeddings of two prompts from each one's last word onward, cut to equal length.

    ``emb_*`` is (L, d) for a prompt with ``n_*`` word tokens (start mark at 0, words at
    1..n). Position ``n`` holds the last word; the end mark and padding follow and carry the
    prompt's meaning too in CLIP text encoders, so UCE edits them as well."""
    L = emb_a.shape[0]
    far = max(n_a, n_b)
    return emb_a[n_a : L - (far - n_a)], emb_b[n_b : L - (far - n_b)]
