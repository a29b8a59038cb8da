"""The attribute readout: what a person's query block says about them, in the LLM's own words.

The ``small`` preset's person tokens carry what a person wears (the body reader) and does (pose,
mouth, motion), and a linear probe reads kind and colour from them at ~0.9 (README "Status"); yet
the aligned Q-former and a 135M LLM, trained for a few hundred CPU steps, did not learn to say
them (clothing 0.11, action 0.15 about the person). As tagging-guided captioners do (Tag2Text,
RAM), each subject block is therefore followed by a few tokens that name the person's attributes
with a classifier over a small label set, written as mixtures of the label words' own input
embeddings, so the LLM copies words it already knows instead of decoding a new code::

    per subject s in play, with the identity anchor's match m_{s,t,j} (model/identity.py, A1):
        c_s      = [μ_s ; σ_s],  μ_s = Σ_t Σ_j m_{s,t,j} x_{t,j} / Σ_t Σ_j m_{s,t,j}, σ_s its spread  (R1)
        u_s      = [ū ; σ(u) ; slope(u) ; |Δu| ; k̄],  u_t = Σ_j m_{s,t,j} z_{t,j} / Σ_j m_{s,t,j}     (R1b)
        p_{s,a}  = softmax(W_a · MLP(LN(c_s)))          over attribute a's labels (colour, kind, …)   (R2)
        p_{s,act}= softmax(W_act · MLP'(ū_s)),  ū_s = clip_5((u_s − μ_u) / σ_u)   the action, from how the
                   person moves; μ_u, σ_u: per-number mean and spread over the alignment samples      (R2b)
        r_{s,a,l}= Σ_i p_{s,a,i} ē_l(w_{a,i}),  l = 1..L_a   ē_l(w): the label's l-th token's input embedding,
                                                 0 past its end; L_a: the longest label of a          (R3)
        h_s      = mean_t (1 − m_{s,t,∅});  r_{s,here} = h_s ē(Yes) + (1 − h_s) ē(No)                  (R4)
        δ_s      = x̄(others) − x̄(s);  l_s = σ(κ δ_s);
        r_{s,where,l} = l_s ē_l(to the left) + (1 − l_s) ē_l(to the right)                            (R5)
        block_s  = [q_{s,1..N} ; e(<s>) ; r_{s,here} ; r_{s,where} ; r_{s,a} …]                          (R6)

The same K tokens also follow the general queries, read with a match that takes every present
person alike (:meth:`AttributeReadout.anyone`): what a base says about "the person" of a
one-person clip, before anyone is learned (the captioner of personalisation, qa/self_caption.py).
x is the tower's token as it came (frozen), σ_s the match-weighted standard deviation over the
clip, x̄ the face-box centre across the frame (weighted by the match). z are the token's
per-frame motion channels (face box, head pose, mouth opening, frame-to-frame motion) and k its
clip-level track channels (model/person_tower.py); u_s summarises them over the matched frames:
mean, spread, least-squares slope over time (walking, sitting down) and mean absolute change
between consecutive frames (nodding, talking, jumping); z includes the snippet channels, what
changed between each step and the frame after it around the person (model/person_tower.py). The
action reads u_s alone (146 numbers, not the 2 × 1486 of c_s): on the alignment clips' one-person
samples, held out by person, a linear probe named the action in 0.69 from u_s (58 numbers then,
before the snippet channels) and 0.42 from c_s. Its numbers are of unlike kinds
and scales (a centre that travels a third of the frame, a mouth that opens a few pixels), so they
are standardised with statistics fixed in alignment (:meth:`AttributeReadout.fit_motion_scale`),
not by a LayerNorm: a LayerNorm rescales each sample by its own spread across those numbers, so a
walk's large drift shrinks a nod's small one. Retrained on the same alignment samples, the
readout named the action of 150 one-person clips of held-out people in 0.72 with the LayerNorm
and 0.80 standardised; ``bench/readout.py`` scores the shipped one.
"Others" are the other people the question names (their blocks' matches: "Where is <A> relative
to <B>?" compares A with B, whoever else is in the clip), or, when it names one person, the
clip's other present faces; l_s = ½ when there are none. A question that names several people
is about the first it names ("Where is <A> relative to <B>?"): only that person's block says
where; the others named say ½ (R5'). With both saying it, A "left" and B "right", the LLM had two
opposite words to copy and said "left" whatever the layout (two people learned together: 0.50).
The where label is the answer's own phrase, "to the left" / "to the right", not the bare word, so
the LLM writing "<A> is to the" meets "to the" in the block and copies what follows it (what
induction heads of a pretrained LM do): zero-shot on the base aligned before R5', "relative to
the other person" went from 13/16 to 14/16 with it. The base realigned with R5' and these labels
(what ships) said left/right of two held-out people 16/16 zero-shot and learned together. Learned
from one person's clips alone it told some clips of two strangers "<Name> is in this video."; one
person's training set now holds clips of two people too (``pair_clips`` of the recipe,
``bench/existence_parts.py``). The K tokens r_s (here, where, then L_a per attribute) follow the
block's N Q-former tokens, after the person's own token e(<s>) (R6), and the blocks come in the
order the question names the people (as the prompt's list of them), so "Where is <A> relative to
<B>?" reads A's "left"/"right" in the first block whoever A is. Before, blocks came in the model's
order of people and carried no name: left/right of two people learned together was at chance
(0.50, every answer "<A> is to the left of <B>"). The template asks for N + 1 + K placeholders
per person. W_a and the MLP are trained once, in alignment, on the world's ground
truth (``pvchat.train.pretrain.warm_readout``); they are frozen afterwards, so a new person is
read by the same classifier through their own identity key.
"""

from __future__ import annotations

import torch
from torch import nn

from pvchat.errors import ConfigError

HERE_WORDS = ("Yes", "No")
WHERE_WORDS = ("to the left", "to the right")  # as answers say it: "… is to the" finds "to the" here and copies on
SHARPNESS = 30.0  # κ of (R5): a tenth of the frame between centres gives l = 0.95
HIDDEN = 512
MOTION_HIDDEN = 128
MOTION_ATTRIBUTES = ("action",)  # read from the motion summary u_s (R2b); the others from c_s (R2)
VAR_EPS = 1e-6  # under the square root of (R1)'s spread: its gradient stays finite where a channel is constant
MOTION_CLIP = 5.0  # (R2b): a standardised motion number past ±5 spreads is clipped (footage unlike the world's)


def phrase_ids(tokenizer, phrases) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids of each phrase as it reads inside a sentence (after a space): (n, L) padded, (n, L) mask."""
    ids = [tokenizer(" " + p, add_special_tokens=False)["input_ids"] for p in phrases]
    if any(not i for i in ids):
        raise ConfigError(f"the readout labels {list(phrases)} include one the tokenizer makes no tokens of")
    L = max(len(i) for i in ids)
    out = torch.zeros(len(ids), L, dtype=torch.long)
    mask = torch.zeros(len(ids), L)
    for k, i in enumerate(ids):
        out[k, : len(i)] = torch.tensor(i)
        mask[k, : len(i)] = 1
    return out, mask


class AttributeReadout(nn.Module):
    """(R1–R6) over the vision tokens' layout.

    Args:
        vision_width: C, the tower's token width.
        attributes: attribute → its label phrases, e.g. ``{"top": ["t-shirt", "sweater", …]}``.
        tokenizer: the LLM's tokenizer (the labels' word ids).
        box_index: where a token's face box (x0, y0, x1, y1, fractions of the frame) starts.
        present_index: the channel that is 1 on a person token with a face this frame.
        frame_channels: z of (R1b), the per-frame motion channels.
        clip_channels: k of (R1b), channels that hold one value per clip (the track's motion).
    """

    def __init__(self, vision_width: int, attributes: dict[str, list[str]], tokenizer, box_index: int,
                 present_index: int, frame_channels: list[int], clip_channels: list[int]):
        super().__init__()
        if not attributes:
            raise ConfigError("the readout needs at least one attribute with labels")
        self.attributes = {a: list(labels) for a, labels in attributes.items()}
        self.box_index, self.present_index, self.width = box_index, present_index, vision_width
        self.register_buffer("frame_channels", torch.tensor(frame_channels, dtype=torch.long), persistent=False)
        self.register_buffer("clip_channels", torch.tensor(clip_channels, dtype=torch.long), persistent=False)
        M = self.motion_width
        self.trunk = nn.Sequential(nn.LayerNorm(2 * vision_width), nn.Linear(2 * vision_width, HIDDEN), nn.GELU())
        # μ_u, σ_u of (R2b): set by fit_motion_scale in alignment, saved with the readout
        self.register_buffer("motion_mean", torch.zeros(M))
        self.register_buffer("motion_scale", torch.ones(M))
        self.motion = nn.Sequential(nn.Linear(M, MOTION_HIDDEN), nn.GELU())
        self.heads = nn.ModuleDict({a: nn.Linear(MOTION_HIDDEN if a in MOTION_ATTRIBUTES else HIDDEN, len(labels))
                                    for a, labels in self.attributes.items()})
        words = {"here": HERE_WORDS, "where": WHERE_WORDS, **self.attributes}
        for name, labels in words.items():  # not state: the tokenizer gives them again
            ids, mask = phrase_ids(tokenizer, labels)
            self.register_buffer(f"ids_{name}", ids, persistent=False)
            self.register_buffer(f"mask_{name}", mask, persistent=False)
        # where in the where phrase the side is said (the first token in which the two labels differ)
        self.where_side = int((self.ids_where[0] != self.ids_where[1]).nonzero()[0])

    @property
    def motion_width(self) -> int:
        """M, the width of (R1b)'s summary: four statistics per frame channel, the mean per clip channel."""
        return 4 * len(self.frame_channels) + len(self.clip_channels)

    def present(self, raw: torch.Tensor) -> torch.Tensor:
        """(B, T, N, C) → (B, T, N): 1 on the person tokens with a face this frame, else 0."""
        return (raw[..., self.present_index] > 0.5).to(raw.dtype)

    def anyone(self, raw: torch.Tensor) -> torch.Tensor:
        """A match that takes every present person, equally, frame by frame (∅ where nobody is): the
        readout of "the person" of a one-person clip, before anyone is learned. (B, T, N, C) → (B, 1, T, N + 1)."""
        present = self.present(raw)  # (B, T, N)
        count = present.sum(-1, keepdim=True)  # (B, T, 1)
        m = torch.cat([present / count.clamp_min(1), (count == 0).to(raw.dtype)], -1)
        return m[:, None]

    @property
    def num_tokens(self) -> int:
        """K: tokens per person (here, where, then L_a per attribute: its labels as soft phrases)."""
        return sum(getattr(self, f"ids_{n}").shape[1] for n in ("here", "where", *self.attributes))

    def label_embeddings(self, name: str, embeddings: torch.Tensor) -> torch.Tensor:
        """ē of (R3) for the labels of ``name``: (n, L, D), each label's token embeddings in order, zeros
        past its end (so "walking to the left" and "walking to the right" differ in a whole token)."""
        ids, mask = getattr(self, f"ids_{name}"), getattr(self, f"mask_{name}")
        return embeddings.detach()[ids] * mask[..., None].to(embeddings.dtype)  # (n, L, D)

    def pool(self, raw: torch.Tensor, match: torch.Tensor) -> torch.Tensor:
        """(R1, R1b): raw tokens (B, T, N, C), the anchor's match (B, S', T, N + 1) → (B, S', 2C + M): the
        matched person's mean token over the clip and its spread, then the summary of how they move."""
        w = match[..., :-1].to(raw.dtype)  # (B, S', T, N) without the null slot
        total = w.sum((2, 3))[..., None].clamp_min(1e-6)  # (B, S', 1)
        mean = torch.einsum("bstj,btjc->bsc", w, raw) / total
        second = torch.einsum("bstj,btjc->bsc", w, raw.square()) / total
        spread = ((second - mean.square()).clamp_min(0) + VAR_EPS).sqrt()  # a finite gradient at 0
        return torch.cat([mean, spread, self.moves(raw, w)], -1)

    def moves(self, raw: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """(R1b): raw (B, T, N, C), the match without its null slot (B, S', T, N) → u (B, S', M)."""
        wt = w.sum(3)  # (B, S', T): how much of the person each frame holds
        z = torch.einsum("bstj,btjc->bstc", w, raw[..., self.frame_channels]) / wt[..., None].clamp_min(1e-6)
        total = wt.sum(2, keepdim=True).clamp_min(1e-6)  # (B, S', 1)
        mean = (wt[..., None] * z).sum(2) / total  # (B, S', F)
        spread = ((wt[..., None] * (z - mean[:, :, None]).square()).sum(2) / total + VAR_EPS).sqrt()
        t = torch.linspace(0, 1, raw.shape[1], dtype=raw.dtype, device=raw.device)  # (T,)
        dt = t - (wt * t).sum(2, keepdim=True) / total  # (B, S', T)
        slope = (wt[..., None] * dt[..., None] * (z - mean[:, :, None])).sum(2) \
            / ((wt * dt.square()).sum(2)[..., None] + VAR_EPS)
        pair = wt[..., 1:] * wt[..., :-1]  # (B, S', T - 1): both frames hold the person
        change = (pair[..., None] * (z[:, :, 1:] - z[:, :, :-1]).abs()).sum(2) / pair.sum(2)[..., None].clamp_min(1e-6)
        clip = torch.einsum("bstj,btjc->bsc", w, raw[..., self.clip_channels]) / total
        return torch.cat([mean, spread, slope, change, clip], -1)

    @torch.no_grad()
    def fit_motion_scale(self, c: torch.Tensor) -> None:
        """μ_u, σ_u of (R2b) from pooled samples (n, 2C + M): each motion number's mean and spread."""
        u = c[:, 2 * self.width:].float()
        self.motion_mean.copy_(u.mean(0))
        self.motion_scale.copy_(u.std(0, correction=0) + 1e-3)  # a number constant over the samples stays 0

    def classify(self, c: torch.Tensor) -> dict[str, torch.Tensor]:
        """(R2, R2b): pooled (..., 2C + M) → logits per attribute (..., n_a)."""
        h = self.trunk(c[..., : 2 * self.width])  # (..., HIDDEN)
        u = ((c[..., 2 * self.width:] - self.motion_mean) / self.motion_scale).clamp(-MOTION_CLIP, MOTION_CLIP)
        g = self.motion(u)  # (..., MOTION_HIDDEN)
        return {a: head(g if a in MOTION_ATTRIBUTES else h) for a, head in self.heads.items()}

    def forward(self, raw: torch.Tensor, match: torch.Tensor, embeddings: torch.Tensor,
                named: torch.Tensor | None = None, lead: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """raw (B, T, N, C), match (B, S', T, N + 1), the LLM's input embeddings (V, D), ``named``
        (B, S') bool: the slots the question names together (R5's "others"; default none), ``lead``
        (B, S') bool: the slot of the person it names first (R5'; default: every named slot reads)
        → (tokens (B, S', K, D), logits per attribute (B, S', n_a))."""
        logits = self.classify(self.pool(raw, match))  # (R1–R2)
        w = match[..., :-1].to(raw.dtype)  # (B, S', T, N)
        # (R4) how much of the clip the person is matched in
        here = (1 - match[..., -1]).mean(2).to(raw.dtype)  # (B, S')
        # (R5) left of the others: the face-box centres, the person's against everyone else's
        cx = (raw[..., self.box_index] + raw[..., self.box_index + 2]) / 2  # (B, T, N)
        present = self.present(raw)  # (B, T, N)
        own = (w * cx[:, None]).sum((2, 3)) / w.sum((2, 3)).clamp_min(1e-6)  # (B, S')
        others_w = present[:, None] * (1 - w)  # (B, S', T, N): everyone else in the clip
        if named is not None:  # the other people the question names, where it names any who are here
            n = named.to(w.dtype)[..., None, None]  # (B, S', 1, 1)
            named_w = (n * w).sum(1, keepdim=True) - n * w  # (B, S', T, N): the named others' match
            use = (n * named_w.sum((2, 3), keepdim=True)) > 0.5
            others_w = torch.where(use, named_w, others_w)
        others = (others_w * cx[:, None]).sum((2, 3)) / others_w.sum((2, 3)).clamp_min(1e-6)
        left = torch.where(others_w.sum((2, 3)) > 0.5, torch.sigmoid(SHARPNESS * (others - own)),
                           torch.full_like(own, 0.5))
        if named is not None and lead is not None:  # (R5') only the person asked about says where
            left = torch.where(named & ~lead, torch.full_like(left, 0.5), left)
        probs = {"here": torch.stack([here, 1 - here], -1), "where": torch.stack([left, 1 - left], -1),
                 **{a: v.float().softmax(-1).to(raw.dtype) for a, v in logits.items()}}
        tokens = torch.cat([torch.einsum("bsn,nld->bsld", p.to(embeddings.dtype), self.label_embeddings(n, embeddings))
                            for n, p in probs.items()], 2)  # (R3)                          (B, S', K, D)
        return tokens, logits
