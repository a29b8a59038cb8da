"""BERT-style Q-former with head-routed attention and per-subject learnable queries.

Paper §3.3 / Fig. 4 and supp. S1, S4; layout as the official InternVideo2-Chat bridge
(pvchat-official.md §2.3): post-norm BERT layers, cross-attention to the vision tokens every
``cross_attention_freq``-th layer, a query FFN, ReMoH in the ``routed_layers`` (self-attention and,
where present, cross-attention).

Queries (supp. S1, S4)::

    general (G, D) ─┐
    subject 0 (N, D)├─► concat ─► LayerNorm ─► L × [self-attn ─► (cross-attn) ─► FFN] ─► (B, Q, D)
    subject 1 (N, D)┘     a subject's block is masked (as keys) and its outputs dropped
                          unless that subject is in play for the sample

With ``identity_anchor`` (the ``small`` preset) each block is first primed with the person it
matches in the clip (model/identity.py); the layers are the same.
"""

from __future__ import annotations

import torch
from torch import nn

from pvchat.errors import ConfigError
from pvchat.model.attention import HeadRoutedAttention, RoutingStats
from pvchat.model.config import QFormerConfig
from pvchat.model.identity import IdentityAnchor

# parameter names that belong to one person (their query block, their identity key): trained in
# the subject group, stored in that person's concept pack, never in a shared alignment
SUBJECT_PARAMETERS = ("subject_queries.", "anchor.keys.")


class QFormerLayer(nn.Module):
    """self-attention → (cross-attention to vision) → FFN, each post-norm with a residual (BERT)."""

    def __init__(self, cfg: QFormerConfig, vision_width: int, has_cross: bool, routed: bool):
        super().__init__()

        def attention(kv_width: int | None) -> HeadRoutedAttention:
            return HeadRoutedAttention(
                cfg.hidden_size, cfg.num_heads,
                routing=cfg.routing if routed else "mha",
                num_shared_heads=cfg.num_shared_heads, top_k=cfg.top_k, kv_hidden_size=kv_width,
                attention_dropout=cfg.attention_dropout, alpha_scale=cfg.alpha_scale,
                router_bias_init=cfg.router_bias_init, reg_grad=cfg.reg_grad,
            )

        D, eps = cfg.hidden_size, cfg.layer_norm_eps
        self.self_attn = attention(None)
        self.self_norm = nn.LayerNorm(D, eps=eps)
        self.cross_attn = None
        if has_cross:
            self.cross_attn = attention(vision_width) if cfg.route_cross_attention else None
            if self.cross_attn is None:
                self.cross_attn = HeadRoutedAttention(D, cfg.num_heads, "mha", kv_hidden_size=vision_width,
                                                      attention_dropout=cfg.attention_dropout)
            self.cross_norm = nn.LayerNorm(D, eps=eps)
        self.ffn_in = nn.Linear(D, cfg.intermediate_size)
        self.ffn_out = nn.Linear(cfg.intermediate_size, D)
        self.ffn_norm = nn.LayerNorm(D, eps=eps)
        self.act = nn.GELU()
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, vision, query_mask, vision_mask, stats: list[RoutingStats]):
        a, s = self.self_attn(x, attention_mask=query_mask)
        x = self.self_norm(x + self.dropout(a))
        if s is not None:
            stats.append(s)
        if self.cross_attn is not None:
            a, s = self.cross_attn(x, encoder_hidden_states=vision, attention_mask=vision_mask)
            x = self.cross_norm(x + self.dropout(a))
            if s is not None:
                stats.append(s)
        return self.ffn_norm(x + self.dropout(self.ffn_out(self.act(self.ffn_in(x)))))


class QFormer(nn.Module):
    """Queries → L layers over the vision tokens.

    Args:
        cfg: sizes, routing and query counts.
        vision_width: width of the vision features it cross-attends to.
        num_subjects: subject query blocks to create now (more can be added with :meth:`add_subject`).
        anchor_layout: ``(embedding offset, presence channel)`` of the vision tokens, needed when
            ``cfg.identity_anchor`` is set.
    """

    def __init__(self, cfg: QFormerConfig, vision_width: int, num_subjects: int = 0,
                 anchor_layout: tuple[int, int] | None = None):
        super().__init__()
        self.cfg = cfg
        D = cfg.hidden_size
        self.general_queries = nn.Parameter(torch.randn(cfg.num_general_queries, D) * 0.02)
        self.subject_queries = nn.ParameterList()
        self.embed_norm = nn.LayerNorm(D, eps=cfg.layer_norm_eps)
        self.embed_dropout = nn.Dropout(cfg.dropout)
        routed = set(cfg.routed_layers) if cfg.routing != "mha" else set()
        self.layers = nn.ModuleList(
            QFormerLayer(cfg, vision_width, has_cross=i % cfg.cross_attention_freq == 0, routed=i in routed)
            for i in range(cfg.num_layers)
        )
        self.anchor = None
        if cfg.identity_anchor:
            if anchor_layout is None:
                raise ConfigError("qformer.identity_anchor needs vision tokens with a face embedding "
                                  "(vision.model_type 'person')")
            self.anchor = IdentityAnchor(vision_width, D, *anchor_layout)
        for _ in range(num_subjects):
            self.add_subject()

    @property
    def num_subjects(self) -> int:
        return len(self.subject_queries)

    def subject_parameters(self, s: int) -> list[nn.Parameter]:
        """Subject ``s``'s own parameters: its query block and, with the anchor, its identity key."""
        return [self.subject_queries[s]] + ([self.anchor.keys[s]] if self.anchor is not None else [])

    def add_subject(self, init: torch.Tensor | None = None) -> int:
        """Append one subject's N-query block (N(0, 0.02) like the official init) and, with the
        anchor, a zero identity key (set it from the person's face: ``anchor.keys[s]``); returns
        its index. Existing blocks and every other weight are left untouched.
        """
        N, D = self.cfg.num_subject_queries, self.cfg.hidden_size
        ref = self.general_queries
        block = torch.randn(N, D, device=ref.device, dtype=ref.dtype) * 0.02 if init is None else init.clone()
        if block.shape != (N, D):
            raise ConfigError(f"subject query block must have shape {(N, D)}, got {tuple(block.shape)}")
        self.subject_queries.append(nn.Parameter(block))
        if self.anchor is not None:
            self.anchor.add_subject()
        return len(self.subject_queries) - 1

    def query_layout(self, subject_mask: torch.Tensor) -> tuple[list[int], torch.Tensor]:
        """Which subject blocks enter this batch, and the per-sample query keep-mask.

        Args:
            subject_mask: (B, S) bool, True where subject s is in play for sample b.

        Returns:
            ``(blocks, keep)``: the indices of the subject blocks used by at least one sample (in
            order), and keep (B, Q) bool over the G + N·len(blocks) queries.
        """
        B = subject_mask.shape[0]
        G, N = self.cfg.num_general_queries, self.cfg.num_subject_queries
        blocks = [s for s in range(subject_mask.shape[1]) if bool(subject_mask[:, s].any())] if N else []
        keep = torch.ones(B, G + N * len(blocks), dtype=torch.bool, device=subject_mask.device)
        for j, s in enumerate(blocks):
            keep[:, G + N * j : G + N * (j + 1)] = subject_mask[:, s, None]
        return blocks, keep

    def forward(
        self,
        vision_features: torch.Tensor,
        subject_mask: torch.Tensor | None = None,
        vision_mask: torch.Tensor | None = None,
        frames: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, list[RoutingStats]]:
        """Run the queries over the vision tokens.

        Args:
            vision_features: (B, S_v, C_v) vision tokens of all frames.
            subject_mask: (B, num_subjects) bool; None means no subject is in play.
            vision_mask: optional (B, S_v) keep-mask over the vision tokens.
            frames: for the identity anchor, ``(raw, tokens)``: the tokens per frame (B, T, N, C_v) as
                the tower gave them and as ``vision_features`` holds them (S_v = T·N).

        Returns:
            ``(queries, keep, stats)``: query outputs (B, Q, D) for the general queries and the blocks
            of the subjects in play in the batch; keep (B, Q) bool marks, per sample, the outputs that
            belong to it (a subject not in play for a sample is False there); stats from each routed
            attention module, in layer order.
        """
        B = vision_features.shape[0]
        if subject_mask is None:
            subject_mask = torch.zeros(B, self.num_subjects, dtype=torch.bool, device=vision_features.device)
        if subject_mask.shape != (B, self.num_subjects):
            raise ConfigError(f"subject_mask must be (B, {self.num_subjects}), got {tuple(subject_mask.shape)}")
        blocks, keep = self.query_layout(subject_mask)

        # 1. learnable queries: general + the subject blocks in play          (B, Q, D)
        queries = torch.cat([self.general_queries] + [self.subject_queries[s] for s in blocks], dim=0)
        queries = queries.unsqueeze(0).expand(B, -1, -1)
        if self.anchor is not None and blocks:
            # 1b. each block primed with the person it matches, frame by frame (model/identity.py)  (B, S', D)
            if frames is None:
                raise ConfigError("the identity anchor needs the per-frame tokens (frames=(raw, tokens))")
            G, N = self.cfg.num_general_queries, self.cfg.num_subject_queries
            prime = self.anchor(frames[0], frames[1], blocks)
            queries = queries + torch.cat([prime.new_zeros(B, G, prime.shape[-1]),
                                           prime.repeat_interleave(N, dim=1)], 1)
        x = self.embed_dropout(self.embed_norm(queries))

        # 2. L layers; a sample's queries never see another subject's masked block (supp. S4)
        stats: list[RoutingStats] = []
        for layer in self.layers:
            x = layer(x, vision_features, keep, vision_mask, stats)
        return x, keep, stats

    # ----------------------------------------------------------- HF BLIP-2
    @torch.no_grad()
    def load_blip2_qformer(self, state_dict: dict[str, torch.Tensor], query_tokens: torch.Tensor | None = None) -> None:
        """Load the weights of a Hugging Face ``Blip2QFormerModel`` (its ``state_dict()``).

        Routers keep their own init, so a ``remoh`` Q-former loaded this way starts as the plain one.
        ``query_tokens`` (1|G, G, D), e.g. ``Blip2Model.query_tokens``, become the general queries.
        """
        mapping = {"layernorm": "embed_norm"}
        for i, layer in enumerate(self.layers):
            hf = f"encoder.layer.{i}"
            ours = f"layers.{i}"
            for part, attn in (("attention", "self_attn"), ("crossattention", "cross_attn")):
                if part == "crossattention" and layer.cross_attn is None:
                    continue
                for p in ("query", "key", "value"):
                    mapping[f"{hf}.{part}.attention.{p}"] = f"{ours}.{attn}.{p}"
                mapping[f"{hf}.{part}.output.dense"] = f"{ours}.{attn}.output"
                mapping[f"{hf}.{part}.output.LayerNorm"] = f"{ours}.{'self' if part == 'attention' else 'cross'}_norm"
            mapping[f"{hf}.intermediate_query.dense"] = f"{ours}.ffn_in"
            mapping[f"{hf}.output_query.dense"] = f"{ours}.ffn_out"
            mapping[f"{hf}.output_query.LayerNorm"] = f"{ours}.ffn_norm"
        own = self.state_dict()
        loaded = set()
        for key, value in state_dict.items():
            prefix, _, leaf = key.rpartition(".")
            if prefix not in mapping:
                continue
            target = f"{mapping[prefix]}.{leaf}"
            if target not in own or own[target].shape != value.shape:
                raise ConfigError(f"BLIP-2 weight {key} {tuple(value.shape)} does not fit {target}")
            own[target].copy_(value)
            loaded.add(target)
        expected = {k for k in own if not any(t in k for t in ("router", "balance", "queries"))}
        missing = expected - loaded
        if missing:
            raise ConfigError(f"BLIP-2 Q-former state is missing {len(missing)} weights, e.g. {sorted(missing)[:3]}")
        if query_tokens is not None:
            q = query_tokens.reshape(-1, query_tokens.shape[-1])
            if q.shape != self.general_queries.shape:
                raise ConfigError(f"query_tokens {tuple(q.shape)} != general queries {tuple(self.general_queries.shape)}")
            self.general_queries.copy_(q)
