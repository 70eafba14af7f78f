"""The plots of the CCA explanations (`cdtm_hf.evaluation.explain`): centre scores, mixing overlays, cluster usage.

They draw on `matplotlib.figure.Figure` with the Agg canvas: no display, no pyplot state, the caller's backend left as
it was.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

__all__ = ["effective_number", "plot_centre_scores", "plot_cluster_usage", "plot_mixing_overlay"]


def effective_number(probs: torch.Tensor) -> torch.Tensor:
    """exp(Shannon entropy) along the last axis (the Hill number of order 1); 0 log 0 = 0."""
    return torch.special.entr(probs).sum(dim=-1).exp()


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100, bbox_inches="tight")
    return path


def _as_numpy(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().float().cpu().numpy()
    return np.asarray(values, dtype=np.float64)


def plot_centre_scores(scores, path: str | Path, top_k: int = 5, title: str | None = None) -> Path:
    """Bar plot of one image's S_r (n,), the ``top_k`` centres highlighted and labelled; the dashed line is 1/n."""
    scores = _as_numpy(scores).reshape(-1)
    n = scores.size
    top = np.argsort(-scores, kind="stable")[: min(top_k, n)]
    colours = np.full(n, "tab:gray", dtype=object)
    colours[top] = "tab:red"
    fig = Figure(figsize=(max(6.0, min(16.0, n * 0.08)), 3.2))
    ax = fig.add_subplot()
    ax.bar(np.arange(n), scores, color=list(colours), width=0.9)
    ax.axhline(1.0 / n, color="black", linestyle="--", linewidth=0.8, label="uniform 1/n")
    for rank, i in enumerate(top):
        ax.annotate(f"{i}", (i, scores[i]), textcoords="offset points", xytext=(0, 2), ha="center", fontsize=7,
                    color="tab:red", fontweight="bold" if rank == 0 else "normal")
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_xlabel("cluster centre i")
    ax.set_ylabel("S_r (Eq. 6)")
    top_line = f"top {len(top)} centres: {', '.join(map(str, top))}"
    ax.set_title(f"{title}\n{top_line}" if title else f"centre scores S_r, {top_line}", fontsize=9)
    ax.legend(loc="upper right", fontsize=7)
    return _save(fig, path)


def _image_hwc(image) -> np.ndarray:
    """An image as (H, W, 3) floats in [0, 1]; takes (3, H, W) or (H, W, 3), floats in [0, 1] or uint8."""
    array = _as_numpy(image)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(1, 2, 0)
    if array.ndim == 2:
        array = array[..., None]
    if array.max(initial=0.0) > 1.0 + 1e-6:
        array = array / 255.0
    array = np.clip(array, 0.0, 1.0)
    return np.repeat(array, 3, axis=-1) if array.shape[-1] == 1 else array


def plot_mixing_overlay(
    image, grid_map, path: str | Path, alpha: float = 0.5, title: str | None = None, cmap: str = "inferno"
) -> Path:
    """The image, and an (h, w) m_cd-derived map bilinearly upsampled to the image size and overlaid on it.

    ``image``: (3, H, W) or (H, W, 3), floats in [0, 1] (see `denormalize_pixels`) or uint8.
    """
    rgb = _image_hwc(image)
    height, width = rgb.shape[:2]
    grid_map = torch.as_tensor(_as_numpy(grid_map), dtype=torch.float32)
    if grid_map.ndim != 2:
        raise ValueError(f"grid_map must be (h, w), got shape {tuple(grid_map.shape)}")
    upsampled = F.interpolate(grid_map[None, None], size=(height, width), mode="bilinear", align_corners=False)[0, 0]
    fig = Figure(figsize=(8.0, 3.8))
    ax_img, ax_map = fig.subplots(1, 2)
    ax_img.imshow(rgb)
    ax_img.set_title("input", fontsize=9)
    ax_map.imshow(rgb)
    overlay = ax_map.imshow(upsampled.numpy(), cmap=cmap, alpha=alpha)
    ax_map.set_title(f"m_cd map ({grid_map.shape[0]}x{grid_map.shape[1]} grid)", fontsize=9)
    for ax in (ax_img, ax_map):
        ax.set_axis_off()
    fig.colorbar(overlay, ax=ax_map, fraction=0.046, pad=0.04)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def plot_cluster_usage(usage_counts, path: str | Path, mean_scores=None, title: str | None = None) -> Path:
    """Dataset-level centre usage: how often each centre is an image's argmax (and, if given, the mean S_r).

    The title gives the effective number of centres, exp(entropy), against n: far below n means the images
    collapse onto a few centres.
    """
    counts = _as_numpy(usage_counts).reshape(-1)
    n, total = counts.size, counts.sum()
    if total <= 0:
        raise ValueError("usage_counts are all zero: no images were counted")
    effective = float(effective_number(torch.as_tensor(counts / total)))
    panels = 1 if mean_scores is None else 2
    fig = Figure(figsize=(max(6.0, min(16.0, n * 0.08)), 2.8 * panels))
    axes = np.atleast_1d(fig.subplots(panels, 1, sharex=True))
    axes[0].bar(np.arange(n), counts, color="tab:blue", width=0.9)
    axes[0].axhline(total / n, color="black", linestyle="--", linewidth=0.8, label="uniform N/n")
    axes[0].set_ylabel("images (argmax)")
    axes[0].legend(loc="upper right", fontsize=7)
    heading = f"effective centres (argmax) {effective:.1f} of {n}"
    if mean_scores is not None:
        mean = _as_numpy(mean_scores).reshape(-1)
        axes[1].bar(np.arange(n), mean, color="tab:orange", width=0.9)
        axes[1].axhline(1.0 / n, color="black", linestyle="--", linewidth=0.8, label="uniform 1/n")
        axes[1].set_ylabel("mean S_r")
        axes[1].legend(loc="upper right", fontsize=7)
        heading += f"; of the mean S_r {float(effective_number(torch.as_tensor(mean / mean.sum()))):.1f}"
    axes[-1].set_xlabel("cluster centre i")
    axes[-1].set_xlim(-0.5, n - 0.5)
    fig.suptitle(f"{title}\n{heading}" if title else f"cluster usage over {int(total)} images: {heading}", fontsize=9)
    return _save(fig, path)

