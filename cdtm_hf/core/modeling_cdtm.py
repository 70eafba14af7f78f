"""CDTM for image classification: backbone tokens -> Cross-Domain Transfer Module -> head.

Equation numbers refer to Li et al., "Embracing Large Natural Data: Enhancing Medical Image Analysis via
Cross-domain Fine-tuning" (CDTM). The default structure follows the authors' code (github.com/qklee-lz/CDTM),
which produced the paper's numbers; ``CDTMConfig(cdtm_variant="paper")`` gives the text's Eq. 5 and Eq. 8.

Like a transformers per-model file it is one subject, the CDTM model: its equations, its heads, and the
pretrained-model class with the checkpoint-key check, its staged fine-tuning and memory hooks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import ImageClassifierOutput

from .backbones import BackboneAdapter, pool_token_grid
from .configuration_cdtm import CDTMConfig, CheckpointKeysError, check_cdtm_size, load_strictly
from .presets import BACKBONE_PRESETS


class ClusterCenterAttention(nn.Module):
    """Cluster Center Attention (CCA), Eq. 1-7, followed by the token mixing x' = m_cd x.

    Args:
        dim (`int`): d, the token width.
        num_tokens (`int`): p, the number of tokens; the base matrices are p x p.
        num_centers (`int`): n, the number of cluster centres and base matrices.
        scale (`bool`, *optional*, defaults to `False`): multiply the cosine scores by 1/sqrt(d) (Eq. 5). The
            official code does not.
        proj (`bool`, *optional*, defaults to `True`): apply an output projection Linear(d, d) after the mixing, as
            the official code does.
    """

    def __init__(self, dim: int, num_tokens: int, num_centers: int, scale: bool = False, proj: bool = True):
        super().__init__()
        self.num_tokens = num_tokens
        self.centers = nn.Parameter(torch.empty(num_centers, dim))  # C = {c_i}, c_i in R^{1 x d}   (Eq. 1)
        self.bases = nn.Parameter(torch.empty(num_centers, num_tokens, num_tokens))  # M = {m_i}, p x p (Eq. 2)
        self.score_scale = 1.0 / math.sqrt(dim) if scale else 1.0
        self.proj = nn.Linear(dim, dim) if proj else nn.Identity()

    def attention_scores(self, x: torch.Tensor) -> torch.Tensor:
        """S_r (B, n): the softmax over the cosine between the global feature and each centre (Eq. 3-6)."""
        x_g = x.mean(dim=1)  # Eq. 3; the mean has the same direction, hence the same cosine, as the sum
        s_a = F.normalize(x_g, dim=-1) @ F.normalize(self.centers, dim=-1).t()  # Eq. 4: cosine to every c_i
        s_a = s_a * self.score_scale  # Eq. 5 (1/sqrt(d) only in the paper variant)
        return s_a.softmax(dim=-1)  # Eq. 6

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, p, d) -> (mixed tokens (B, p, d), S_r (B, n), m_cd (B, p, p))."""
        if x.shape[1] != self.num_tokens:
            raise ValueError(
                f"CCA got {x.shape[1]} tokens but its base matrices are {self.num_tokens}x{self.num_tokens}; "
                "the input image size must give the token count the model was built with"
            )
        s_r = self.attention_scores(x)
        m_cd = torch.einsum("bn,npq->bpq", s_r, self.bases)  # Eq. 7: m_cd = sum_i s_ri m_i
        out = torch.bmm(m_cd, x)  # Eq. 8: the p x p transformation mixes the p tokens
        return self.proj(out), s_r, m_cd


class CDTMBlock(nn.Module):
    """``x = CCA(LN(x)); x = x + MLP(LN(x))`` (code) or ``x = MLP(LN(CCA(LN(x))))`` (Eq. 8)."""

    def __init__(self, config: CDTMConfig):
        from timm.layers import Mlp  # imported where used: `import cdtm_hf` stays free of timm

        super().__init__()
        d, p = config.hidden_size, config.num_tokens
        self.norm1 = nn.LayerNorm(d)
        self.attn = ClusterCenterAttention(d, p, config.num_centers, scale=config.cca_scale, proj=config.cca_proj)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = Mlp(d, hidden_features=int(d * config.mlp_ratio), act_layer=nn.GELU)
        self.mlp_residual = config.mlp_residual

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, s_r, m_cd = self.attn(self.norm1(x))
        mlp_out = self.mlp(self.norm2(x))
        return (x + mlp_out if self.mlp_residual else mlp_out), s_r, m_cd


class CrossDomainTransferModule(nn.Module):
    """LN -> CDTM block(s) -> LN, on the backbone's (B, p, d) tokens."""

    def __init__(self, config: CDTMConfig):
        super().__init__()
        self.norm_pre = nn.LayerNorm(config.hidden_size)
        self.blocks = nn.ModuleList([CDTMBlock(config) for _ in range(config.num_cdtm_blocks)])
        self.norm_post = nn.LayerNorm(config.hidden_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        x = self.norm_pre(x)
        scores, mixes = [], []
        for block in self.blocks:
            x, s_r, m_cd = block(x)
            scores.append(s_r)
            mixes.append(m_cd)
        return self.norm_post(x), tuple(scores), tuple(mixes)


class LinearHead(nn.Module):
    """A pooled feature (B, d) -> logits."""

    def __init__(self, dim: int, num_labels: int):
        super().__init__()
        self.fc = nn.Linear(dim, num_labels)

    def forward(self, tokens: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc(pooled)


class AttentionPoolHead(nn.Module):
    """Multi-head-attention classifier: a learned query attends over the tokens, then LN and Linear."""

    def __init__(self, dim: int, num_labels: int, num_heads: int):
        super().__init__()
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, num_labels)

    def forward(self, tokens: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        query = self.query.expand(tokens.shape[0], -1, -1)
        attended, _ = self.attn(query, tokens, tokens, need_weights=False)
        return self.fc(self.norm(attended[:, 0]))


class CDTMPreTrainedModel(PreTrainedModel):
    config_class = CDTMConfig
    config: CDTMConfig
    base_model_prefix = "cdtm_model"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["CDTMBlock"]  # an instance adds its backbone's block class (issue 20)
    supports_gradient_checkpointing = True  # delegated to the backbone's library (issue 20)
    # The loss is a mean over the batch (`loss_function` takes no `num_items_in_batch`), so the Trainer must divide it
    # by the gradient-accumulation steps and not multiply it by the process count; `forward(**kwargs)` alone would make
    # it assume the opposite (issue 18). transformers' `TimmWrapperPreTrainedModel` sets the same.
    accepts_loss_kwargs = False

    @classmethod
    def from_pretrained(cls, *args, allow_missing_keys: bool = False, **kwargs):
        r"""`PreTrainedModel.from_pretrained`, strict: a missing or unexpected tensor is a `CheckpointKeysError`
        naming the keys, never a silently random head. `allow_missing_keys=True` is for a backbone-only checkpoint.
        """
        return load_strictly(super().from_pretrained, args, kwargs, allow_missing_keys)

    def _set_gradient_checkpointing(self, enable: bool = True, gradient_checkpointing_func=None, every_n_layers=1):
        """transformers' switch (`activation_checkpointing_enable` / `--gradient_checkpointing True`), delegated to
        the backbone library's own: timm and open_clip `set_grad_checkpointing`, transformers' models their own.
        CDTM itself is one block on the tokens and is not recomputed."""
        self.backbone.set_gradient_checkpointing(enable)

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise the modules CDTM adds (the transfer module and the head).

        The backbone keeps its library's own initialisation (or its pretrained weights): of its modules, only timm's
        non-persistent buffers are rebuilt, as transformers' `TimmWrapper` does (they are not in a checkpoint).
        `transformers.initialization` skips every tensor that `from_pretrained` has loaded.
        """
        if id(module) in getattr(self, "_backbone_module_ids", ()):
            if hasattr(module, "init_non_persistent_buffers"):
                module.init_non_persistent_buffers()
            return
        self._init_added_module(module)

    def _init_added_module(self, module: nn.Module) -> None:
        if isinstance(module, ClusterCenterAttention):
            init.normal_(module.centers, mean=0.0, std=1.0)  # N(0, 1), as in the official code
            init.normal_(module.bases, mean=0.0, std=1.0)
        elif isinstance(module, AttentionPoolHead):
            init.normal_(module.query, mean=0.0, std=self.config.initializer_range)
        elif isinstance(module, nn.MultiheadAttention):
            init.xavier_uniform_(module.in_proj_weight)
            init.zeros_(module.in_proj_bias)
            init.zeros_(module.out_proj.bias)
        elif isinstance(module, nn.Linear):
            # torch's default Linear init, which the official code uses
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                bound = 1.0 / math.sqrt(module.weight.shape[1])
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)


class CDTMForImageClassification(CDTMPreTrainedModel):
    """A timm/open_clip backbone, an optional CDTM, and a linear or MHA head; returns `ImageClassifierOutput`."""

    def __init__(self, config: CDTMConfig):
        super().__init__(config)
        # Random backbone weights, like every PreTrainedModel.__init__: `from_pretrained` restores a checkpoint's
        # weights, and `from_backbone` / `load_backbone_weights` load the backbone's pretrained ones.
        self.backbone = BackboneAdapter(
            config.backbone_library, config.backbone, config.image_size, model_kwargs=config.backbone_kwargs
        )
        self._backbone_module_ids = frozenset(id(m) for m in self.backbone.modules())  # left to their library
        # FSDP's auto-wrap policy and device_map read this: the backbone's blocks and CDTM's (issue 20)
        self._no_split_modules = [*self.backbone.block_class_names(), "CDTMBlock"]
        self._record_token_shape(config)
        self.transfer = CrossDomainTransferModule(config) if config.use_cdtm else None
        if config.head_type == "mha":
            self.head = AttentionPoolHead(config.hidden_size, config.num_labels, config.mha_num_heads)
        else:
            self.head = LinearHead(config.hidden_size, config.num_labels)
        self.backbone_frozen = False
        # keep BatchNorm statistics fixed while the backbone trains; CDTMTrainer sets it per stage
        # (training_args.backbone_norm_eval "auto": in SFT stage 2 of a backbone with BatchNorm)
        self.backbone_norm_eval = False
        self.post_init()

    @classmethod
    def from_backbone(
        cls, config: CDTMConfig | str, pretrained: bool = True, **config_kwargs
    ) -> CDTMForImageClassification:
        r"""
        A new model whose backbone starts from its pretrained weights (CDTM and the head are new).

        Args:
            config (`CDTMConfig` or `str`): a config, or a backbone preset / model name that `CDTMConfig` takes.
            pretrained (`bool`, *optional*, defaults to `True`): load the backbone's pretrained weights, from
                `config.backbone_pretrained_file` when set, else from the backbone library (`backbone_pretrained_tag`
                for open_clip). `False` keeps the backbone random. The config then records what happened
                (`backbone_pretrained`).
            config_kwargs (`dict`, *optional*): further `CDTMConfig` fields when `config` is a name (`num_labels`,
                `id2label`, ...).

        Example:

        ```python
        >>> model = CDTMForImageClassification.from_backbone("vitb16.laion2b", num_labels=4)
        >>> random = CDTMForImageClassification.from_backbone(CDTMConfig("test_vit"), pretrained=False)
        ```
        """
        if isinstance(config, str):
            config = CDTMConfig(backbone=config, **config_kwargs)
        elif config_kwargs:
            raise TypeError("pass CDTMConfig fields either in the config or as keywords with a backbone name")
        if not pretrained and config.backbone_pretrained:
            raise ValueError(
                "from_backbone(config, pretrained=False) got a config that records pretrained backbone weights "
                "(backbone_pretrained=True); a random backbone would make that record false. Pass pretrained=True, "
                "or a config with backbone_pretrained=False"
            )
        model = cls(config)
        if pretrained:
            model.load_backbone_weights()
        return model

    def load_backbone_weights(self, pretrained_tag: str | None = None, pretrained_file: str | None = None) -> None:
        """Load the backbone's pretrained weights in place: the one path by which they enter a model.

        Args:
            pretrained_tag (`str`, *optional*): open_clip pretrained tag; default `config.backbone_pretrained_tag`.
            pretrained_file (`str`, *optional*): a local weights file (safetensors, or a torch file read with
                `weights_only=True`); default `config.backbone_pretrained_file`.

        The config records where the weights came from (`backbone_pretrained`, `_tag`, `_file`).
        """
        tag = pretrained_tag or self.config.backbone_pretrained_tag
        file = pretrained_file or self.config.backbone_pretrained_file
        preset = BACKBONE_PRESETS.get(self.config.backbone_preset or "")
        if preset is not None and preset.weights_repo and preset.model_name == self.config.backbone:
            # a foundation model: its weights are one Hub repo (issue 20)
            self.backbone.load_pretrained(tag=tag, file=file, repo=preset.weights_repo,
                                          weights_format=preset.weights_format)
        else:
            self.backbone.load_pretrained(tag=tag, file=file)
        self.config.backbone_pretrained = True
        self.config.backbone_pretrained_tag, self.config.backbone_pretrained_file = tag, file

    def _record_token_shape(self, config: CDTMConfig) -> None:
        p, d = self.backbone.token_shape()
        k = self.backbone.num_prefix_tokens
        p = self._pooled_token_count(config, p)
        p_cdtm = p + k if config.keep_prefix_tokens else p
        if config.num_tokens is not None and config.use_cdtm and config.num_tokens != p_cdtm:
            raise ValueError(
                f"image_size={config.image_size} gives {p_cdtm} tokens for backbone {config.backbone!r}, but this "
                f"config was saved with num_tokens p={config.num_tokens}; the CCA base matrices are p x p, so the "
                "image size must give the same token count as when the model was built"
            )
        if config.hidden_size is not None and config.hidden_size != d:
            raise ValueError(f"backbone {config.backbone!r} gives tokens of width {d}, config says {config.hidden_size}")
        config.num_tokens, config.hidden_size, config.num_prefix_tokens = p_cdtm, d, k
        if config.backbone_library == "transformers":  # the whole backbone config when read from a folder/Hub id
            config.backbone_kwargs = dict(self.backbone.model_kwargs)
        check_cdtm_size(config)
        if config.data_config is None:
            config.data_config = self.backbone.data_config()
        config.validate_cdtm()

    def _pooled_token_count(self, config: CDTMConfig, p: int) -> int:
        """p after `cdtm_token_grid` pooling (g * g), checked against the backbone's token grid."""
        g = getattr(config, "cdtm_token_grid", None)
        if g is None or not config.use_cdtm:
            return p
        grid = self.backbone.grid_size
        if grid is None:
            raise ValueError(f"cdtm_token_grid={g} needs a token grid, but backbone {config.backbone!r} reports none")
        if g > min(grid):
            raise ValueError(f"cdtm_token_grid={g} is larger than the backbone's {grid[0]}x{grid[1]} token grid; "
                             f"use at most {min(grid)}, or leave it out")
        return g * g

    def _pool_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, h*w, d) -> (B, g*g, d): adaptive average pooling of the token grid (`cdtm_token_grid`)."""
        g = getattr(self.config, "cdtm_token_grid", None)
        return tokens if g is None else pool_token_grid(tokens, self.backbone.grid_size, g)

    def cdtm_tokens(self, backbone_features: torch.Tensor) -> torch.Tensor:
        """The tokens CDTM reads from `backbone_features` (B, k + p, d): the patch tokens, pooled to the
        `cdtm_token_grid` where one is set, after the k prefix tokens where `keep_prefix_tokens`."""
        k = self.config.num_prefix_tokens
        tokens = self._pool_tokens(backbone_features[:, k:])
        return torch.cat([backbone_features[:, :k], tokens], dim=1) if self.config.keep_prefix_tokens else tokens

    # ----------------------------------------------------------------------------------------------------------
    # Staged fine-tuning support
    def freeze_backbone(self, frozen: bool = True) -> None:
        """Freeze (stage 1 / LP) or unfreeze (stage 2 / FFT) the backbone.

        A frozen backbone has ``requires_grad=False``, stays in eval mode (no BN or dropout drift) and runs under
        ``torch.no_grad()``, so no activations are kept for it.
        """
        self.backbone_frozen = frozen
        self.backbone.requires_grad_(not frozen)
        self.backbone.train(self.training and not frozen)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()
        elif self.backbone_norm_eval:
            for module in self.backbone.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def added_parameters(self) -> int:
        """The number of parameters CDTM adds (the CDTM module; Table VII's difference)."""
        return sum(p.numel() for p in self.transfer.parameters()) if self.transfer is not None else 0

    def backbone_parameters(self) -> int:
        """The number of parameters of the backbone (frozen in LP and SFT stage 1)."""
        return sum(p.numel() for p in self.backbone.parameters())

    def backbone_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The backbone's full token sequence (B, k + p, d): prefix tokens first. Cacheable while it is frozen."""
        expected = (self.config.image_size, self.config.image_size)
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[-2:]) != expected:
            raise ValueError(
                f"pixel_values of shape {tuple(pixel_values.shape)} do not match image_size={self.config.image_size}:"
                f" expected (B, 3, {expected[0]}, {expected[1]})"
            )
        pixel_values = pixel_values.to(dtype=next(self.backbone.parameters()).dtype)
        if self.backbone_frozen:
            with torch.no_grad():
                out = self.backbone(pixel_values)
        else:
            out = self.backbone(pixel_values)
        return torch.cat([out.prefix_tokens, out.tokens], dim=1)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        backbone_features: torch.Tensor | None = None,
        **kwargs,
    ) -> ImageClassifierOutput | tuple:
        r"""
        backbone_features (`torch.Tensor` of shape `(B, k + p, d)`, *optional*):
            Precomputed `backbone_features(pixel_values)` (e.g. a frozen-stage feature cache); skips the backbone.

        `hidden_states` holds the backbone tokens and the CDTM output; `attentions` holds each CDTM block's
        cluster-centre scores S_r of shape (B, n).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        if backbone_features is None:
            if pixel_values is None:
                raise ValueError("pass pixel_values or backbone_features")
            backbone_features = self.backbone_features(pixel_values)
        k = self.config.num_prefix_tokens
        prefix, tokens = backbone_features[:, :k], backbone_features[:, k:]

        scores: tuple[torch.Tensor, ...] = ()
        if self.transfer is not None:
            x = self.cdtm_tokens(backbone_features)
            if x.shape[1] != self.config.num_tokens:
                raise ValueError(
                    f"the backbone gave {x.shape[1]} tokens but the CCA base matrices are "
                    f"{self.config.num_tokens}x{self.config.num_tokens}: feed images of "
                    f"{self.config.image_size}x{self.config.image_size} pixels"
                )
            head_tokens, scores, _ = self.transfer(x)
            pooled = head_tokens.mean(dim=1)  # official code: mean over tokens, then the linear head
        else:
            # Ablation baseline: ViT -> its CLS token, CNN (or no CLS) -> the mean-pooled map.
            head_tokens = backbone_features
            pooled = prefix[:, 0] if self.backbone.has_class_token and k > 0 else tokens.mean(dim=1)
        logits = self.head(head_tokens, pooled)

        loss = None
        if labels is not None:
            if self.config.problem_type == "multi_label_classification":
                labels = labels.to(logits.dtype)
            loss = self.loss_function(labels, logits, self.config)

        hidden_states = (backbone_features, head_tokens) if output_hidden_states else None
        attentions = scores if output_attentions else None
        if not return_dict:
            return tuple(v for v in (loss, logits, hidden_states, attentions) if v is not None)
        return ImageClassifierOutput(loss=loss, logits=logits, hidden_states=hidden_states, attentions=attentions)


__all__ = [
    "AttentionPoolHead",
    "CDTMBlock",
    "CDTMForImageClassification",
    "CDTMPreTrainedModel",
    "CheckpointKeysError",
    "ClusterCenterAttention",
    "CrossDomainTransferModule",
    "LinearHead",
]
