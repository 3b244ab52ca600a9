"""A linear diffusion model of concept resurgence: closed form and simulation.

The model (derived in ``docs/theory.md``):

* conditioning ``c`` in R^m comes from a mixture of concept subspaces: concept j contributes
  ``c = U_j z`` with ``U_j`` orthonormal (m x r) and ``z ~ N(0, diag(s_j))``;
* data ``x0 = M c + sigma xi`` in R^d; noised ``x_t = a_t x0 + b_t eps``;
* the denoiser predicts x0 as ``A_t x_t + W c``: ``A_t`` is frozen (the "self" path) and ``W`` is
  the conditioning path (what cross-attention K/V are in Stable Diffusion);
* the original model ``W0`` is the population optimum, ``W0 = E_t[1 - alpha_t a_t] M`` for
  ``A_t = alpha_t I``;
* unlearning edits ``W`` on the erased subspace: ``Wu = W0 + Delta`` with
  ``Delta = -gamma W0 P_f`` (``gamma`` = strength, 1 maps the concept's conditioning to nothing);
* benign fine-tuning is gradient descent on the same loss over data whose conditioning never
  comes from the erased concept: second moment ``S = sum_j p_j U_j diag(s_j) U_j^T``.

Closed form: ``W_k - W0 = Delta (I - eta S)^k``, so the restored fraction of the erased
concept's output is

    R_k = sum_i w_i (1 - (1 - eta lambda_i)^k),   w_i = v_i^T U_f G U_f^T v_i / tr(G),

with ``(lambda_i, v_i)`` the eigenpairs of S (the curvature of the fine-tuning loss along v_i)
and ``G = U_f^T W0^T W0 U_f`` (which output directions the concept drives). The simulation draws
samples, noise levels and noise, and runs minibatch SGD on the denoising loss; nothing in it
uses the closed form.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class LinearWorld:
    m: int = 16  # conditioning dimension
    d: int = 8  # data dimension
    r: int = 2  # dimension of each concept's subspace
    n_benign: int = 3  # concepts in the fine-tuning data
    overlap: float = 0.5  # cos of the angle between the erased subspace and the benign data's
    curvature: tuple[float, ...] = (1.0, 0.5, 0.25)  # second-moment scale of each benign concept
    sigma: float = 0.1
    gamma: float = 1.0  # unlearning strength
    seed: int = 0
    alphas: tuple[float, ...] = (0.1, 0.3, 0.5)  # frozen self-path gains A_t = alpha_t I
    levels: tuple[tuple[float, float], ...] = ((0.9, 0.44), (0.7, 0.71), (0.4, 0.92))  # (a_t, b_t)
    U_f: np.ndarray = field(init=False, repr=False)
    U_b: list[np.ndarray] = field(init=False, repr=False)
    M: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.overlap <= 1.0:
            raise ValueError("overlap is a cosine in [0, 1]")
        if len(self.curvature) != self.n_benign:
            raise ValueError("one curvature per benign concept")
        rng = np.random.default_rng(self.seed)
        need = self.r * (1 + 2 * self.n_benign)
        if need > self.m:
            raise ValueError(f"m={self.m} too small for {need} orthogonal directions")
        q, _ = np.linalg.qr(rng.standard_normal((self.m, self.m)))
        self.U_f = q[:, : self.r]
        self.U_b = []
        for j in range(self.n_benign):
            own = q[:, self.r * (1 + 2 * j) : self.r * (2 + 2 * j)]  # directions only concept j uses
            # the first benign concept leans towards the erased subspace by `overlap`; the others
            # share a smaller part of it, so that S has several eigen-directions touching U_f
            cos = self.overlap / (1 + j)
            mix = cos * self.U_f + np.sqrt(1 - cos**2) * own
            self.U_b.append(np.linalg.qr(mix)[0])
        self.M = rng.standard_normal((self.d, self.m)) / np.sqrt(self.m)

    # population quantities ----------------------------------------------------------------

    @property
    def shrink(self) -> float:
        return float(np.mean([1 - al * a for al, (a, _) in zip(self.alphas, self.levels, strict=True)]))

    @property
    def W0(self) -> np.ndarray:
        return self.shrink * self.M

    @property
    def P_f(self) -> np.ndarray:
        return self.U_f @ self.U_f.T

    @property
    def Delta(self) -> np.ndarray:
        return -self.gamma * self.W0 @ self.P_f

    @property
    def S(self) -> np.ndarray:
        """Second moment of the benign conditioning (the fine-tuning loss's Hessian in W)."""
        p = 1.0 / self.n_benign
        return sum(p * s * (U @ U.T) for s, U in zip(self.curvature, self.U_b, strict=True))

    def restored(self, W: np.ndarray) -> float:
        """Fraction of the erased concept's output that ``W`` has restored (0 erased, 1 back),
        averaged over the concept's conditioning c = U_f z, z isotropic."""
        D = self.Delta
        num = np.trace((W - self.W0 - D).T @ (-D) @ self.P_f)  # E<(W - Wu) c, -Delta c> up to a constant
        den = np.trace(D.T @ D @ self.P_f)
        return float(num / den)


def closed_form(world: LinearWorld, eta: float, steps: np.ndarray | list[int]) -> np.ndarray:
    """R_k = sum_i w_i (1 - (1 - eta lambda_i)^k) for each k in ``steps``."""
    lam, V = np.linalg.eigh(world.S)
    G = world.U_f.T @ world.W0.T @ world.W0 @ world.U_f
    w = np.einsum("mi,mr,rs,ns,ni->i", V, world.U_f, G, world.U_f, V) / np.trace(G)
    ks = np.asarray(steps, dtype=float)
    return np.array([float(np.sum(w * (1 - (1 - eta * lam) ** k))) for k in ks])


def overlap_weights(world: LinearWorld) -> tuple[np.ndarray, np.ndarray]:
    """(lambda_i, w_i): the curvature of each eigen-direction of the fine-tuning loss and the
    share of the erased concept's output that lies along it."""
    lam, V = np.linalg.eigh(world.S)
    G = world.U_f.T @ world.W0.T @ world.W0 @ world.U_f
    w = np.einsum("mi,mr,rs,ns,ni->i", V, world.U_f, G, world.U_f, V) / np.trace(G)
    return lam, w


def simulate(world: LinearWorld, eta: float, steps: list[int], *, batch: int = 4096, seed: int = 1) -> np.ndarray:
    """Minibatch SGD on the denoising loss with sampled conditioning, noise levels and noise,
    starting from the unlearned weights; returns the restored fraction at each step in ``steps``."""
    rng = np.random.default_rng(seed)
    W = world.W0 + world.Delta
    want = sorted(set(int(k) for k in steps))
    out: dict[int, float] = {0: world.restored(W)}
    k = 0
    levels = np.array(world.levels)
    alphas = np.array(world.alphas)
    for target in want:
        while k < target:
            j = rng.integers(world.n_benign, size=batch)
            z = rng.standard_normal((batch, world.r)) * np.sqrt(np.array(world.curvature))[j][:, None]
            U = np.stack(world.U_b)[j]  # batch x m x r
            c = np.einsum("bmr,br->bm", U, z)
            x0 = c @ world.M.T + world.sigma * rng.standard_normal((batch, world.d))
            t = rng.integers(len(world.levels), size=batch)
            a, b = levels[t, 0][:, None], levels[t, 1][:, None]
            xt = a * x0 + b * rng.standard_normal((batch, world.d))
            pred = alphas[t][:, None] * xt + c @ W.T
            grad = (pred - x0).T @ c / batch  # d/dW of 1/2 mean ||pred - x0||^2
            W = W - eta * grad
            k += 1
        out[target] = world.restored(W)
    return np.array([out[int(s)] for s in steps])


# --- the sweep and the figures -------------------------------------------------------------------


def sweep(
    overlaps=(0.1, 0.3, 0.5, 0.7, 0.9),
    scales=(0.25, 1.0),
    etas=(0.2, 0.5),
    steps=(5, 20, 80, 200),
    seed: int = 0,
) -> list[dict[str, float]]:
    """Closed form against simulation over overlaps, curvature scales, learning rates and steps."""
    rows = []
    for ov in overlaps:
        for sc in scales:
            for eta in etas:
                w = LinearWorld(overlap=ov, curvature=tuple(sc * c for c in (1.0, 0.5, 0.25)), seed=seed)
                pred = closed_form(w, eta, list(steps))
                sim = simulate(w, eta, list(steps), seed=seed + 1)
                for k, p, s in zip(steps, pred, sim, strict=True):
                    rows.append({"overlap": ov, "curvature": sc, "eta": eta, "steps": k, "predicted": float(p),
                                 "simulated": float(s)})  # fmt: skip
    return rows


def _finish(fig, ax, path):
    import matplotlib.pyplot as plt

    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_all(out_dir, seed: int = 0) -> list:
    import matplotlib

    matplotlib.use("Agg")
    from pathlib import Path

    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    eta, k = 0.5, 50
    # 1. against overlap
    ovs = np.linspace(0.0, 1.0, 21)
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for sc, style in ((1.0, "-"), (0.1, "--")):
        curv = tuple(sc * c for c in (1.0, 0.5, 0.25))
        pred = [closed_form(LinearWorld(overlap=o, curvature=curv, seed=seed), eta, [k])[0] for o in ovs]
        sims = [
            simulate(LinearWorld(overlap=o, curvature=curv, seed=seed), eta, [k], seed=seed + 1)[0] for o in ovs[::4]
        ]
        ax.plot(ovs, pred, "k" + style, label=f"closed form, curvature x{sc:g}")
        ax.plot(ovs[::4], sims, "o", color="tab:red" if sc == 1.0 else "tab:blue", label=f"simulation, x{sc:g}")
    ax.set_xlabel("overlap (cos angle, erased subspace vs fine-tuning data)")
    ax.set_ylabel(f"restored fraction R after {k} steps")
    paths.append(_finish(fig, ax, out / "theory_overlap.png"))
    # 2. against curvature
    scs = np.geomspace(0.01, 3.0, 15)
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for kk, color in ((10, "tab:blue"), (50, "tab:orange"), (200, "tab:red")):
        pred = [
            closed_form(
                LinearWorld(overlap=0.6, curvature=tuple(s * c for c in (1.0, 0.5, 0.25)), seed=seed), eta, [kk]
            )[0]
            for s in scs
        ]
        sims = [
            simulate(
                LinearWorld(overlap=0.6, curvature=tuple(s * c for c in (1.0, 0.5, 0.25)), seed=seed),
                eta,
                [kk],
                seed=seed + 1,
            )[0]
            for s in scs[::3]
        ]
        ax.semilogx(scs, pred, "-", color=color, label=f"closed form, {kk} steps")
        ax.semilogx(scs[::3], sims, "o", color=color)
    ax.set_xlabel("curvature scale of the fine-tuning loss (eigenvalues of S)")
    ax.set_ylabel("restored fraction R")
    ax.set_title("overlap 0.6; dots: simulation", fontsize=9)
    paths.append(_finish(fig, ax, out / "theory_curvature.png"))
    # 3. against steps
    ks = np.unique(np.geomspace(1, 400, 25).astype(int))
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for ov, sc, color in ((0.3, 1.0, "tab:blue"), (0.7, 1.0, "tab:red"), (0.7, 0.05, "tab:purple")):
        w = LinearWorld(overlap=ov, curvature=tuple(sc * c for c in (1.0, 0.5, 0.25)), seed=seed)
        ax.semilogx(ks, closed_form(w, eta, ks), "-", color=color, label=f"overlap {ov}, curvature x{sc:g}")
        sel = [int(x) for x in ks[::4]]
        ax.semilogx(sel, simulate(w, eta, sel, seed=seed + 1), "o", color=color)
    ax.set_xlabel("fine-tuning steps")
    ax.set_ylabel("restored fraction R")
    ax.set_title("lines: closed form; dots: simulation", fontsize=9)
    paths.append(_finish(fig, ax, out / "theory_steps.png"))
    return paths
