"""Explanations of the Cluster Center Attention (CCA): which centres an image uses, and how m_cd mixes its tokens.

This goes beyond the CDTM paper, which shows no such analysis. Equation numbers refer to Li et al. (CDTM):

* S_r (B, n), Eq. 6: the softmax over the cosine between the image's global feature and each of the n centres.
  Each row sums to 1. It is the only image-dependent part of the mixing.
* m_cd (B, p, p), Eq. 7: m_cd = sum_i s_ri m_i, the token-mixing matrix; the block computes x' = m_cd x.
* received mass (B, h, w): R_t = sum_j |m_cd[t, j]|, the L1 norm of row t: how strongly mixed token t is rebuilt
  from the input tokens (|x'_t| <= R_t max_j |x_j|). Shown on the patch grid.
* sent mass (B, h, w): S_t = sum_i |m_cd[i, t]|, the L1 norm of column t: how strongly input token t is spread
  into the mixed tokens.

Both maps use the patch-to-patch block of m_cd only: with ``keep_prefix_tokens`` the CLS/register rows and
columns are dropped before the sums. Tokens are in the backbone's row-major order, so a map of p = h * w values is
reshaped to the backbone's actual grid: the patch grid for ViTs, the last feature map's (h, w) for CNNs.

The plots use matplotlib's object API (``matplotlib.figure.Figure``, Agg canvas): no display, no pyplot state.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .explain_plots import effective_number, plot_centre_scores, plot_cluster_usage, plot_mixing_overlay


@dataclass
class CCAExplanation:
    """The CCA's view of a batch of B images; the tuples hold one entry per CDTM block.

    Attributes:
        centre_scores: S_r (B, n) per block (Eq. 6); each row sums to 1.
        mixing: m_cd (B, p, p) per block (Eq. 7), prefix tokens included when ``keep_prefix_tokens``.
        received_mass: (B, h, w) per block; row L1 sums of the patch-to-patch block of m_cd (module docstring).
        sent_mass: (B, h, w) per block; column L1 sums of the patch-to-patch block of m_cd.
        grid: (h, w), the backbone's token grid.
        num_prefix_tokens: the prefix tokens at the front of each m_cd (0 unless ``keep_prefix_tokens``).
        logits: (B, num_labels), the model's output for the same images.
    """

    centre_scores: tuple[torch.Tensor, ...]
    mixing: tuple[torch.Tensor, ...]
    received_mass: tuple[torch.Tensor, ...]
    sent_mass: tuple[torch.Tensor, ...]
    grid: tuple[int, int]
    num_prefix_tokens: int
    logits: torch.Tensor

    def top_centres(self, k: int = 5, block: int = -1) -> torch.Tensor:
        """(B, k) indices of each image's k highest-scoring centres in ``block``, best first."""
        scores = self.centre_scores[block]
        return scores.topk(min(k, scores.shape[-1]), dim=-1).indices


@dataclass
class ClusterUsage:
    """How a set of images uses the n cluster centres of one CDTM block.

    Attributes:
        num_images: N.
        argmax_counts: (n,) how many images have each centre as their highest-scoring one; sums to N.
        mean_scores: (n,) the mean S_r per centre over the images; sums to 1.
        effective_centres: exp(entropy) of ``argmax_counts / N``: n when every centre wins equally often,
            1 when all images pick the same centre (collapse).
        effective_centres_mean_score: exp(entropy) of ``mean_scores``.
        mean_image_effective_centres: the mean over images of exp(entropy(S_r)): how peaked one image's scores are.
        top_centres: the centres by decreasing argmax count (ties: by mean score).
    """

    num_images: int
    argmax_counts: list[int]
    mean_scores: list[float]
    effective_centres: float
    effective_centres_mean_score: float
    mean_image_effective_centres: float
    top_centres: list[int]

    @property
    def num_centres(self) -> int:
        return len(self.argmax_counts)


def _require_cca(model) -> None:
    if getattr(model, "transfer", None) is None:
        raise ValueError(
            "this model has no CDTM (config.use_cdtm=False): the explanations read the cluster-centre scores S_r "
            "and the mixing matrices m_cd of the Cluster Center Attention, so they need a model built with "
            "use_cdtm=True"
        )


def token_grid(model) -> tuple[int, int]:
    """(h, w) of the patch/spatial tokens CDTM reads, in the row-major order the tokens come in.

    The backbone adapter reads it once (`BackboneAdapter.grid_size`: a ViT's patch grid, or the (h, w) of a CNN's or
    a hierarchical transformer's last feature map); with `cdtm_token_grid` g, CDTM reads the g x g pooled grid.
    """
    g = getattr(model.config, "cdtm_token_grid", None)
    if g is not None and model.config.use_cdtm:
        return (g, g)
    grid = model.backbone.grid_size
    if grid is None:
        p = model.backbone.num_tokens
        raise ValueError(f"cannot place {p} tokens on a grid: the backbone reports no (h, w) and {p} is not a square")
    return grid


@torch.no_grad()
def cca_explanations(model, pixel_values: torch.Tensor, grid: tuple[int, int] | None = None) -> CCAExplanation:
    """Run ``model`` (in eval mode) on ``pixel_values`` (B, 3, H, W) and return its `CCAExplanation`.

    ``grid`` is the token grid; pass ``token_grid(model)`` when calling this for many batches.
    """
    _require_cca(model)
    config = model.config
    grid = grid or token_grid(model)
    was_training = model.training
    model.eval()
    try:
        pixel_values = pixel_values.to(next(model.parameters()).device)
        features = model.backbone_features(pixel_values)  # (B, k + p, d), prefix tokens first
        k = config.num_prefix_tokens or 0
        _, scores, mixes = model.transfer(model.cdtm_tokens(features))  # S_r (Eq. 6) and m_cd (Eq. 7) per block
        logits = model(backbone_features=features, return_dict=True).logits
    finally:
        model.train(was_training)
    k_mix = k if config.keep_prefix_tokens else 0
    received, sent = [], []
    for m_cd in mixes:
        patch = m_cd[:, k_mix:, k_mix:].abs().float()  # patch-to-patch block: prefix rows and columns dropped
        received.append(patch.sum(dim=2).reshape(-1, *grid))  # row t: sum_j |m_cd[t, j]|
        sent.append(patch.sum(dim=1).reshape(-1, *grid))  # column t: sum_i |m_cd[i, t]|
    return CCAExplanation(
        centre_scores=tuple(s.float() for s in scores),
        mixing=tuple(mixes),
        received_mass=tuple(received),
        sent_mass=tuple(sent),
        grid=tuple(grid),
        num_prefix_tokens=k_mix,
        logits=logits,
    )


def cluster_usage(centre_scores: torch.Tensor) -> ClusterUsage:
    """Summarise S_r (N, n) of N images (one CDTM block): argmax counts, mean scores, effective centres."""
    scores = centre_scores.detach().double().cpu()
    if scores.ndim != 2 or scores.shape[0] == 0:
        raise ValueError(f"centre_scores must be (N, n) with N >= 1, got shape {tuple(scores.shape)}")
    num_images, n = scores.shape
    counts = torch.bincount(scores.argmax(dim=1), minlength=n)
    mean = scores.mean(dim=0)
    order = np.lexsort((-mean.numpy(), -counts.numpy()))  # by count, then mean score, both decreasing
    return ClusterUsage(
        num_images=num_images,
        argmax_counts=counts.tolist(),
        mean_scores=mean.tolist(),
        effective_centres=float(effective_number(counts.double() / num_images)),
        effective_centres_mean_score=float(effective_number(mean)),
        mean_image_effective_centres=float(effective_number(scores).mean()),
        top_centres=[int(i) for i in order],
    )


# ----------------------------------------------------------------------------------------------------------------
# Plots


def denormalize_pixels(pixel_values: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Undo ``(x - mean) / std`` on (..., 3, H, W) and clamp to [0, 1] for display."""
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=pixel_values.device).reshape(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=pixel_values.device).reshape(-1, 1, 1)
    return (pixel_values.float() * std_t + mean_t).clamp(0.0, 1.0)


def _display_fn(model, denormalize: bool | Callable[[torch.Tensor], torch.Tensor]):
    if callable(denormalize):
        return denormalize
    data_config = model.config.data_config or {}
    if denormalize and "mean" in data_config and "std" in data_config:
        return lambda x: denormalize_pixels(x, data_config["mean"], data_config["std"])

    def min_max(x: torch.Tensor) -> torch.Tensor:  # raw pixel_values: stretch to [0, 1] for display
        x = x.float()
        return (x - x.min()) / (x.max() - x.min()).clamp_min(1e-12)

    return min_max


def _batches(data: Iterable[Mapping[str, Any]], batch_size: int):
    """Yield (pixel_values (B, 3, H, W), labels list) from dicts holding one example or one batch each."""
    pending: list[torch.Tensor] = []
    pending_labels: list[Any] = []
    for item in data:
        if not isinstance(item, Mapping) or "pixel_values" not in item:
            raise TypeError("explain_dataset needs dicts (or a DataLoader of dicts) with a 'pixel_values' entry")
        pixels = torch.as_tensor(item["pixel_values"])
        labels = item.get("labels", item.get("label"))
        if pixels.ndim == 4:  # already a batch (e.g. from a DataLoader)
            if labels is None:
                labels = [None] * pixels.shape[0]
            yield pixels, list(labels)
            continue
        pending.append(pixels)
        pending_labels.append(labels)
        if len(pending) == batch_size:
            yield torch.stack(pending), pending_labels
            pending, pending_labels = [], []
    if pending:
        yield torch.stack(pending), pending_labels


def _label_name(config, label) -> Any:
    if label is None:
        return None
    label = torch.as_tensor(label)
    if label.numel() != 1:  # multi-label target vector
        return [config.id2label.get(int(i), str(int(i))) for i in label.nonzero().flatten()]
    return config.id2label.get(int(label), str(int(label)))


def _prediction(config, logits: torch.Tensor) -> Any:
    if config.problem_type == "multi_label_classification":
        return [config.id2label.get(int(i), str(int(i))) for i in (logits.sigmoid() > 0.5).nonzero().flatten()]
    return config.id2label.get(int(logits.argmax()), str(int(logits.argmax())))


def _image_record(config, explanation: CCAExplanation, maps, j: int, index: int, label, image: np.ndarray,
                  output_dir: Path, suffixes: Sequence[str], top_k: int, grid_map: str) -> dict[str, Any]:
    """The PNGs (centre scores, mixing overlay) of image `j` of a batch, for each CDTM block, and their record."""
    num_blocks = len(suffixes)
    label, prediction = _label_name(config, label), _prediction(config, explanation.logits[j])
    caption = f"image {index}: predicted {prediction}" + (f", label {label}" if label is not None else "")
    record: dict[str, Any] = {"index": index, "label": label, "prediction": prediction,
                              "top_centres": [], "centre_scores_png": [], "mixing_overlay_png": []}
    for b in range(num_blocks):
        record["top_centres"].append(explanation.top_centres(top_k, block=b)[j].tolist())
        record["centre_scores_png"].append(str(plot_centre_scores(
            explanation.centre_scores[b][j], output_dir / f"image{index:04d}_centres{suffixes[b]}.png",
            top_k=top_k, title=f"{caption}: centre scores S_r" + (f" (block {b})" if num_blocks > 1 else ""),
        )))
        record["mixing_overlay_png"].append(str(plot_mixing_overlay(
            image, maps[b][j], output_dir / f"image{index:04d}_mixing{suffixes[b]}.png",
            title=f"{caption}: {grid_map} mixing mass of m_cd",
        )))
    return record


def _block_record(b: int, scores: torch.Tensor, seen: int, num_blocks: int, png_path: Path, top_k: int) -> dict[str, Any]:
    """Cluster usage of CDTM block `b` over all images: its histogram PNG and summary numbers."""
    usage = cluster_usage(scores)
    heading = f"cluster usage over {seen} images" + (f" (block {b})" if num_blocks > 1 else "")
    png = plot_cluster_usage(usage.argmax_counts, png_path, mean_scores=usage.mean_scores, title=heading)
    return {
        "block": b,
        "cluster_usage_png": str(png),
        "num_centres": usage.num_centres,
        "effective_centres": usage.effective_centres,
        "effective_centres_mean_score": usage.effective_centres_mean_score,
        "mean_image_effective_centres": usage.mean_image_effective_centres,
        "top_centres": usage.top_centres[:top_k],
        "argmax_counts": usage.argmax_counts,
        "mean_scores": usage.mean_scores,
    }


def explain_dataset(
    model,
    data: Iterable[Mapping[str, Any]],
    output_dir: str | Path,
    max_images: int = 8,
    batch_size: int = 16,
    top_k: int = 5,
    denormalize: bool | Callable[[torch.Tensor], torch.Tensor] = True,
    grid_map: str = "received",
    max_usage_images: int | None = None,
) -> dict[str, Any]:
    """Write CCA explanations for a dataset to ``output_dir`` and return their paths and summary numbers.

    Args:
        model (`CDTMForImageClassification`): a `CDTMForImageClassification` with a CDTM (``use_cdtm=True``).
        data (`Iterable[Mapping[str, Any]]`): an iterable of dicts with ``"pixel_values"`` (one (3, H, W) example or a (B, 3, H, W) batch each)
            and optionally ``"labels"``/``"label"``: a `datasets.Dataset` with a transform, a list, or a DataLoader.
        output_dir (`str | Path`): where the PNGs and ``summary.json`` go (created).
        max_images (`int`, *optional*, defaults to `8`): per-image PNGs for the first ``max_images`` images.
        batch_size (`int`, *optional*, defaults to `16`): examples per forward pass when ``data`` yields single examples (a DataLoader keeps its own).
        top_k (`int`, *optional*, defaults to `5`): centres highlighted per image and listed in the summary.
        denormalize (`bool | Callable[[torch.Tensor], torch.Tensor]`, *optional*, defaults to `True`): True: undo ``config.data_config`` mean/std to show the original image; False: min-max
            stretch; or a callable mapping (3, H, W) pixel_values to a [0, 1] image.
        grid_map (`str`, *optional*, defaults to `'received'`): ``"received"`` (row L1 sums of m_cd) or ``"sent"`` (column L1 sums) for the overlay.
        max_usage_images (`int | None`, *optional*, defaults to `None`): count at most this many images for the usage histogram (None: all of ``data``).

    Per image i (< max_images) and CDTM block b: ``image{i:04d}_centres.png`` (S_r bar plot) and
    ``image{i:04d}_mixing.png`` (map overlay); over all images ``cluster_usage.png`` (with a ``_block{b}`` suffix
    on every name when the model has more than one CDTM block) and ``summary.json`` (the returned dict).
    """
    _require_cca(model)
    if grid_map not in ("received", "sent"):
        raise ValueError(f"grid_map {grid_map!r} is not one of: received, sent")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    config = model.config
    num_blocks = config.num_cdtm_blocks
    suffixes = [f"_block{b}" if num_blocks > 1 else "" for b in range(num_blocks)]
    display = _display_fn(model, denormalize)
    grid = token_grid(model)

    images: list[dict[str, Any]] = []
    all_scores: list[list[torch.Tensor]] = [[] for _ in range(num_blocks)]
    seen = 0
    for pixels, labels in _batches(data, batch_size):
        if max_usage_images is not None:
            pixels, labels = pixels[: max_usage_images - seen], labels[: max_usage_images - seen]
        if len(pixels) == 0:
            break
        explanation = cca_explanations(model, pixels, grid=grid)
        for b in range(num_blocks):
            all_scores[b].append(explanation.centre_scores[b].cpu())
        maps = explanation.received_mass if grid_map == "received" else explanation.sent_mass
        for j in range(max(0, min(len(pixels), max_images - seen))):
            images.append(_image_record(
                config, explanation, maps, j, seen + j, labels[j], display(pixels[j]), output_dir, suffixes,
                top_k=top_k, grid_map=grid_map,
            ))
        seen += len(pixels)
        if max_usage_images is not None and seen >= max_usage_images:
            break
    if seen == 0:
        raise ValueError("explain_dataset got no images")
    blocks = [_block_record(b, torch.cat(all_scores[b]), seen, num_blocks, output_dir / f"cluster_usage{suffixes[b]}.png",
                            top_k) for b in range(num_blocks)]
    summary = {
        "output_dir": str(output_dir),
        "num_images": seen,
        "grid": list(grid),
        "grid_map": grid_map,
        "images": images,
        "blocks": blocks,
        "summary_json": str(output_dir / "summary.json"),
    }
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


__all__ = [
    "CCAExplanation",
    "ClusterUsage",
    "cca_explanations",
    "cluster_usage",
    "denormalize_pixels",
    "explain_dataset",
    "token_grid",
]
