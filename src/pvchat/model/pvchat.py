"""PVChat: frames → vision tower → ReMoH Q-former → projector → LLM (paper §3.3, Fig. 4).

::

    pixel_values (B, T, 3, H, W)
        │ 1. vision tower (per frame)                      (B, T, N_v, C_v)
        │ 2. + frame position, LayerNorm, flatten time     (B, T·N_v, C_v)
        ▼
    Q-former: general + in-play subject queries            (B, Q, D_q)   + routing stats
        │ 3. projector: linear, or word mixtures (projector.py)  (B, Q, D_llm)
        │ 3b. with a readout: K label-word tokens after each person's block, behind <s> (readout.py)
        ▼
    LLM input embeddings with the visual tokens spliced in at the <video> placeholders
        │ 4. causal LM (LoRA) → logits; CE on answer tokens only
        ▼
    loss = L_LM + L_SPR + L_HAE  (Eq. 11)   [+ MoH load balance for routing="moh"]
                                             [+ λ_w L_words (W4) with the word projector]

A sample's subjects "in play" are the subject tokens its prompt contains; they select the
Q-former's subject query blocks (supp. S4) and the number of <video> placeholders.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import _remove_duplicate_names, load_model, save_file
from torch import nn
from transformers import DynamicCache

from pvchat import weights as weights_lib
from pvchat.errors import ConfigError, InputError
from pvchat.io import atomic_dir, read_json
from pvchat.model import llm as llm_lib, subject_tokens
from pvchat.model.config import PVChatConfig
from pvchat.model.face_tokens import FaceTokens
from pvchat.model.internvideo2_vit import InternVideo2Tower
from pvchat.model.losses import SparsityController, routed_modules
from pvchat.model.person_tower import BOX, CLIP_MOTION, EMB, FRAME_MOTION, PRESENT, PersonTower
from pvchat.model.projector import AnswerWords, WordProjector, answer_words, answer_words_loss, build_projector
from pvchat.model.prompt import IGNORE_INDEX, ChatTemplate, EncodedPrompt, pad_batch, validate_name
from pvchat.model.qformer import QFormer
from pvchat.model.readout import AttributeReadout
from pvchat.model.tokenizer import build_tiny_tokenizer, ensure_chat_tokens
from pvchat.model.vision import VisionTower
from pvchat.video import IMAGENET_MEAN, IMAGENET_STD, read_frames_uniform, to_model_input

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "pvchat_config.json"


@dataclass
class PVChatOutput:
    loss: torch.Tensor | None
    lm_loss: torch.Tensor | None
    spr: torch.Tensor
    hae: torch.Tensor
    moh_balance: torch.Tensor
    logits: torch.Tensor
    routing: list  # RoutingStats per routed module
    words: torch.Tensor | None = None  # the answer-words term (W4), with the word projector


@dataclass
class VisualTokens:
    tokens: torch.Tensor  # (B, Q, D_llm)
    keep: torch.Tensor  # (B, Q) bool: the sample's own tokens
    stats: list  # RoutingStats per routed module
    words: torch.Tensor | None = None  # (B, Q, V) word mixtures π of the word projector (W2)
    word_keep: torch.Tensor | None = None  # (B, Q) the Q-former tokens of ``keep`` (those π is over)


class PVChat(nn.Module):
    """The composed model. Build with :meth:`from_config`; parts are injected, not inherited.

    Args:
        config: the model config (sizes, routing, losses, subjects).
        vision: the vision tower.
        llm: the causal LM, already wrapped with LoRA.
        tokenizer: its tokenizer, with the chat tokens.
    """

    def __init__(self, config: PVChatConfig, vision: VisionTower, llm: nn.Module, tokenizer):
        super().__init__()
        self.config = config
        self.vision = vision
        Cv = vision.hidden_size
        self.frame_position = nn.Parameter(torch.zeros(config.max_frames, Cv))  # temporal order of frames
        self.vision_norm = nn.LayerNorm(Cv, eps=1e-12)  # as InternVideo2-Chat's vision_layernorm
        anchor = (EMB, PRESENT) if isinstance(vision, PersonTower) else None
        self.qformer = QFormer(config.qformer, Cv, anchor_layout=anchor)
        vocab = getattr(tokenizer, "vocab_size", None) or len(tokenizer)
        self.projector = build_projector(config.projector, config.qformer.hidden_size,
                                         llm.get_input_embeddings().embedding_dim, vocab)
        self.answer_words = AnswerWords(tokenizer, vocab)
        self.readout = None
        if config.readout:
            if self.qformer.anchor is None:
                raise ConfigError("config.readout needs the identity anchor (qformer.identity_anchor, a person tower)")
            self.readout = AttributeReadout(Cv, config.readout, tokenizer, BOX, PRESENT, FRAME_MOTION, CLIP_MOTION)
        K = self.readout.num_tokens if self.readout is not None else 0
        self.llm = llm
        self.tokenizer = tokenizer
        self.template = ChatTemplate(tokenizer, config.qformer.num_general_queries + K,
                                     config.qformer.num_subject_queries + K + (K > 0))  # (R6): the name tag
        mods = routed_modules(self.qformer)
        self.sparsity = SparsityController(len(mods), [m.target_sparsity for m in mods], config.loss)
        self.subject_ids: dict[str, int] = {}
        subjects, config.subjects = list(config.subjects), []
        for name in subjects:
            self.add_subject(name)

    # ------------------------------------------------------------ building
    @classmethod
    def from_config(cls, config: PVChatConfig) -> "PVChat":
        """Build every part from ``config``: random init, or local weights where a ``path`` is set."""
        v = config.vision
        if v.model_type == "person":  # pretrained CNN grid + tracked person tokens (the small preset)
            vision = PersonTower(weights_lib.resolve_cnn(v.weights), **v.config)
        elif v.model_type == "internvideo2":  # the paper's ViT (internvideo2_vit.py; weights: internvideo2.py's converter)
            vision = InternVideo2Tower(**v.config)
        elif v.path:
            vision = VisionTower.from_pretrained(v.path, feature_layer=v.feature_layer)
        else:
            vision = VisionTower.from_config(v.model_type, feature_layer=v.feature_layer, **v.config)
        vision.set_trainable(v.train_last_k)
        if v.face_tokens:
            vision.face_tokens = FaceTokens(v.face_tokens, vision.hidden_size, IMAGENET_MEAN, IMAGENET_STD)
        if not v.patch_tokens:
            if not v.face_tokens:
                raise ConfigError("vision.patch_tokens false needs vision.face_tokens > 0 (a frame would have no tokens)")
            vision.patch_tokens = False
        lc = config.llm
        if lc.path or lc.weights:
            llm, tokenizer = llm_lib.load_llm(lc.path or weights_lib.resolve_llm(lc.weights))
            if lc.tokenizer == "tiny":
                raise ConfigError("llm.tokenizer 'tiny' cannot be used with a pretrained llm.path; use 'pretrained'")
        else:
            if lc.tokenizer != "tiny":
                raise ConfigError(f"llm.tokenizer {lc.tokenizer!r} needs llm.path (a local model directory)")
            tokenizer = build_tiny_tokenizer()
            kwargs = dict(lc.config)
            kwargs.setdefault("vocab_size", len(tokenizer))
            if kwargs["vocab_size"] < len(tokenizer):
                raise ConfigError(f"llm vocab_size {kwargs['vocab_size']} < tokenizer size {len(tokenizer)}")
            llm = llm_lib.build_llm(lc.model_type, **kwargs)
        ensure_chat_tokens(tokenizer, llm)
        subject_tokens.add_subject_tokens(llm, tokenizer, [])  # [PERSON]/[/PERSON]
        if lc.lora_r > 0:
            llm = llm_lib.apply_lora(llm, r=lc.lora_r, alpha=lc.lora_alpha, dropout=lc.lora_dropout,
                                     target_modules=tuple(lc.lora_targets))
        return cls(config, vision, llm, tokenizer)

    def add_subject(self, name: str) -> int:
        """Add a person: one ``<name>`` token row and one N-query block; nothing else changes."""
        validate_name(name)
        if name in self.subject_ids:
            raise InputError(f"subject {name!r} already exists")
        ids = subject_tokens.add_subject_tokens(self.llm, self.tokenizer, [name])
        self.qformer.add_subject()
        self.subject_ids[name] = ids[name]
        self.config.subjects.append(name)
        return ids[name]

    @torch.no_grad()
    def set_identity(self, name: str, embedding) -> None:
        """Start ``name``'s identity key (model/identity.py) at a face embedding: the reference video's
        mean dlib embedding. A model without the anchor has no key and ignores it."""
        if self.qformer.anchor is None:
            return
        key = self.qformer.anchor.keys[self.subjects.index(name)]
        key.copy_(torch.as_tensor(embedding, dtype=key.dtype, device=key.device).reshape(key.shape))

    @property
    def subjects(self) -> list[str]:
        return list(self.config.subjects)

    # ------------------------------------------------------------- encoding
    @property
    def frames_per_step(self) -> int:
        """k, the consecutive frames the vision tower reads per time step (1 but for a snippet tower)."""
        return getattr(self.vision, "frames_per_step", 1)

    def read_video(self, path: str | Path):
        """The frames this model samples from a video file (``config.num_frames`` uniformly, each with
        the next k - 1 frames for the tower): ``(frames (T, H, W, 3) uint8, one per step,
        pixel_values (T·k, 3, S, S))``; InputError if unreadable."""
        k = self.frames_per_step
        frames = read_frames_uniform(path, self.config.num_frames, k)
        return frames[::k], to_model_input(frames, size=self.vision.image_size)

    def encode_video(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) → per-frame vision features (B, T, N_v, C_v). Cacheable while the tower is frozen."""
        return self.vision(pixel_values)

    def visual_tokens(self, vision_features: torch.Tensor, subject_mask: torch.Tensor,
                      candidates: torch.Tensor | None = None, order: torch.Tensor | None = None) -> VisualTokens:
        """Steps 2–3: vision features → Q-former → projector (``candidates``: the word projector's
        sampled softmax, for the LLM-free warm-up only; ``order`` (B, S): where the prompt first names
        each person, :meth:`mention_order`; with a readout the blocks follow it, as the prompt's list
        of people does)."""
        B, T, Nv, Cv = vision_features.shape
        if T > self.config.max_frames:
            raise ConfigError(f"{T} frames > max_frames {self.config.max_frames}")
        # 2. add the frame's position, normalise                                      (B, T, N_v, C_v)
        x = self.vision_norm(vision_features + self.frame_position[:T, None, :].to(vision_features.dtype))
        # Q-former over the general queries and the subject blocks in play (time flattened into
        # the token axis; the identity anchor reads the frames as they are)             (B, Q, D_q)
        q, keep, stats = self.qformer(x.reshape(B, T * Nv, Cv), subject_mask, frames=(vision_features, x))
        # 3. project into the LLM's embedding space                                      (B, Q, D_llm)
        words = None
        if isinstance(self.projector, WordProjector):
            tokens, words = self.projector(q, subject_tokens.word_embedding_matrix(self.llm), candidates)
        else:
            tokens = self.projector(q)
        if self.readout is None:
            return VisualTokens(tokens, keep, stats, words, keep)
        # 3b. K readout tokens about whoever is present after the general queries, and about the
        #     person after each block in play, behind the person's own token (readout.py, R6)
        #                                                                 (B, G + K + S'(N + 1 + K), D_llm)
        blocks, _ = self.qformer.query_layout(subject_mask)
        G, N, S = self.config.qformer.num_general_queries, self.config.qformer.num_subject_queries, len(blocks)
        block_keep = keep[:, G:].reshape(B, S, N)  # (B, S', N): whether the block is the sample's
        match = self.readout.anyone(vision_features)  # (B, 1, T, N_v + 1)
        named = block_keep.new_zeros(B, 1 + S)  # (R5) "others": the people the question names
        lead = None  # (R5') the person it names first: the one it asks about
        if blocks:
            match = torch.cat([match, self.qformer.anchor.match(vision_features, blocks)], 1)  # (A1)
            named[:, 1:] = block_keep[..., 0]
            if order is not None:
                first = order[:, blocks]  # (B, S')
                lead = named.clone()
                lead[:, 1:] &= first == first.amin(1, keepdim=True)
        read, _ = self.readout(vision_features, match, subject_tokens.word_embedding_matrix(self.llm), named, lead)
        read = read.to(tokens.dtype)  # (B, 1 + S', K, D_llm)
        K = read.shape[2]
        ids = torch.tensor([self.subject_ids[self.config.subjects[s]] for s in blocks], dtype=torch.long,
                           device=tokens.device)
        tag = self.llm.get_input_embeddings()(ids).to(tokens.dtype)  # (S', D_llm): e(<s>)
        per_block = torch.cat([tokens[:, G:].reshape(B, S, N, tokens.shape[-1]),
                               tag[None, :, None].expand(B, S, 1, -1), read[:, 1:]], 2)  # (B, S', N + 1 + K, D_llm)
        per_keep = torch.cat([block_keep, block_keep[..., :1].expand(B, S, 1 + K)], 2)  # (B, S', N + 1 + K)
        if order is not None and S > 1:  # each sample's blocks in the order its prompt names the people
            perm = order[:, blocks].argsort(dim=1, stable=True)  # (B, S')
            per_block = per_block.gather(1, perm[:, :, None, None].expand_as(per_block))
            per_keep = per_keep.gather(1, perm[:, :, None].expand_as(per_keep))
        tokens = torch.cat([tokens[:, :G], read[:, 0], per_block.flatten(1, 2)], 1)
        full_keep = torch.cat([keep[:, :G], keep.new_ones(B, K), per_keep.flatten(1)], 1)
        return VisualTokens(tokens, full_keep, stats, words, keep)

    def mention_order(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, S) long: where the first text turn first names each subject, L where it does not (the
        order of the prompt's ``[PERSON] <A> [/PERSON] …`` list). ``attention_mask`` marks padding,
        which may be the turn's closing token (SmolLM2 pads with ``<|im_end|>``): left padding of
        that kind must not count as closed turns."""
        ids = torch.tensor([self.subject_ids[n] for n in self.config.subjects], device=input_ids.device, dtype=torch.long)
        B, L = input_ids.shape
        closes = input_ids == self.template.close_id
        if attention_mask is not None:
            closes = closes & attention_mask.bool()
        head = closes.cumsum(1) < 2  # the video turn and the first text turn
        hit = (input_ids[:, :, None] == ids[None, None, :]) & head[:, :, None]  # (B, L, S)
        pos = torch.arange(L, device=input_ids.device)[None, :, None].expand_as(hit)
        return torch.where(hit, pos, L).amin(1) if len(ids) else input_ids.new_zeros(B, 0)

    def subject_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, S) bool: subject s is in play in sample b iff its token occurs in the first text turn,
        whose prefix lists every person the questions name; a person named only in an answer
        ("... to the left of <B>") is not in play and gets no query block."""
        return self.mention_order(input_ids) < input_ids.shape[1]

    def embed_inputs(self, input_ids, vision_features, attention_mask=None) -> tuple[torch.Tensor, VisualTokens]:
        """Token embeddings with the visual tokens written into the ``<video>`` placeholders."""
        embeds = self.llm.get_input_embeddings()(input_ids)  # (B, L, D_llm)
        order = self.mention_order(input_ids, attention_mask)  # (B, S); subject_mask is order < L
        v = self.visual_tokens(vision_features, order < input_ids.shape[1], order=order)
        visual, keep = v.tokens, v.keep
        slots = input_ids == self.template.video_id  # (B, L)
        if not torch.equal(slots.sum(1), keep.sum(1)):
            raise ConfigError(
                f"prompt has {slots.sum(1).tolist()} <video> placeholders but the Q-former gives "
                f"{keep.sum(1).tolist()} visual tokens; build prompts with model.template"
            )
        embeds = embeds.masked_scatter(slots.unsqueeze(-1), visual[keep].to(embeds.dtype))
        return embeds, v

    # -------------------------------------------------------------- forward
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        vision_features: torch.Tensor | None = None,
    ) -> PVChatOutput:
        """Fig. 4 end to end. Give ``pixel_values`` (B, T, 3, H, W) or cached ``vision_features``."""
        # 1. frames → per-frame features (skipped when cached)                            (B, T, N_v, C_v)
        if vision_features is None:
            if pixel_values is None:
                raise ConfigError("forward needs pixel_values or vision_features")
            vision_features = self.encode_video(pixel_values)
        # 2–3. Q-former + projector, spliced into the LLM's input embeddings             (B, L, D_llm)
        embeds, visual = self.embed_inputs(input_ids, vision_features, attention_mask)
        stats = visual.stats
        # 4. the LLM; CE on the answer tokens (labels are −100 elsewhere). With labels, the head
        #    runs only at the positions that predict an answer token (any row of the batch): the
        #    vocabulary projection of every prompt position is skipped.                  (B, K, V)
        reg = self.sparsity(stats)  # SPR (Eq. 7), HAE (Eq. 10), MoH balance
        if labels is None:
            out = self.llm(inputs_embeds=embeds, attention_mask=attention_mask)
            return PVChatOutput(None, None, reg["spr"], reg["hae"], reg["moh_balance"], out.logits, stats)
        keep = (labels[:, 1:] != IGNORE_INDEX).any(0).nonzero().squeeze(1)  # positions p predicting p + 1
        out = self.llm(inputs_embeds=embeds, attention_mask=attention_mask, logits_to_keep=keep)
        lm = nn.functional.cross_entropy(out.logits.float().flatten(0, 1), labels[:, keep + 1].flatten(),
                                         ignore_index=IGNORE_INDEX)
        loss = lm + reg["spr"] + reg["hae"] + reg["moh_balance"]  # Eq. 11
        words = None
        if visual.words is not None and self.config.word_loss > 0:  # (W4), projector.py
            words = answer_words_loss(visual.words, visual.word_keep, answer_words(labels, self.answer_words))
            loss = loss + self.config.word_loss * words
        return PVChatOutput(loss, lm, reg["spr"], reg["hae"], reg["moh_balance"], out.logits, stats, words)

    def prepare(self, question: str, answer: str | None = None, history=None) -> EncodedPrompt:
        """Encode one turn with the chat template (validates names and reserved tokens)."""
        return self.template.encode(question, self.subjects, answer=answer, history=history)

    @torch.no_grad()
    def stream(self, question: str, vision_features: torch.Tensor, history: list[tuple[str, str]] | None = None,
               max_new_tokens: int = 64) -> Iterator[str]:
        """The one decoder (:func:`greedy_batch`) as chat, ask and the web app use it: greedy with the
        KV cache over one video's features (1, T, N, C); yields the answer as it grows, one token at a time.
        Control tokens the model may emit are dropped from the text (people's ``<name>`` tokens stay),
        so an answer can go back into the history."""
        enc = self.prepare(question, history=history)
        ids = torch.tensor([enc.input_ids], device=vision_features.device)
        embeds, _ = self.embed_inputs(ids, vision_features)
        tokens: list[int] = []
        for token in greedy_tokens(self.llm, embeds, torch.ones_like(ids), self.tokenizer.eos_token_id,
                                   max_new_tokens):
            tokens.append(token)
            yield self.tokenizer.decode(tokens, skip_special_tokens=True).strip()

    @torch.no_grad()
    def generate(
        self,
        questions: list[str],
        pixel_values: torch.Tensor | None = None,
        vision_features: torch.Tensor | None = None,
        histories: list[list[tuple[str, str]]] | None = None,
        max_new_tokens: int = 64,
        batch_size: int = 16,
    ) -> list[str]:
        """Answer one question per video (row of ``pixel_values`` / ``vision_features``; one row
        serves every question), ``batch_size`` at a time: the decoder of :meth:`stream` over each
        batch, the prompts left-padded. The answers are :meth:`stream`'s last ones; a batch costs
        about one question's time, since a small LLM's decoding step is bound by reading its weights."""
        if vision_features is None:
            vision_features = self.encode_video(pixel_values)
        if len(vision_features) == 1:
            vision_features = vision_features.expand(len(questions), *vision_features.shape[1:])
        histories = histories or [None] * len(questions)
        eos = self.tokenizer.eos_token_id
        answers = []
        for start in range(0, len(questions), batch_size):
            rows = slice(start, start + batch_size)
            batch = pad_batch([self.prepare(q, history=h) for q, h in zip(questions[rows], histories[rows])],
                              self.tokenizer.pad_token_id or 0, left=True)
            ids, mask = (batch[k].to(vision_features.device) for k in ("input_ids", "attention_mask"))
            embeds, _ = self.embed_inputs(ids, vision_features[rows], mask)
            tokens: list[list[int]] = [[] for _ in range(len(ids))]
            for step in greedy_batch(self.llm, embeds, mask, eos, max_new_tokens):
                for row, token in zip(tokens, step.tolist()):
                    if token != eos:
                        row.append(token)
            answers += [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in tokens]
        return answers

    @torch.no_grad()
    def sparsity_step(self) -> None:
        """Eq. 9's β update; call once per optimizer step."""
        self.sparsity.step()

    # ----------------------------------------------------------- save/load
    def save_pretrained(self, directory: str | Path, overwrite: bool = True) -> None:
        """config JSON + tokenizer (JSON) + all weights (safetensors), written atomically."""
        with atomic_dir(directory, overwrite=overwrite) as tmp:
            cfg = self.config.to_dict()
            (tmp / CONFIG_NAME).write_text(json.dumps({"config": cfg, "subject_ids": self.subject_ids}, indent=2))
            self.tokenizer.save_pretrained(str(tmp / "tokenizer"))
            save_deterministic(self, tmp / WEIGHTS_NAME)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "PVChat":
        """Rebuild from :meth:`save_pretrained` output (only JSON and safetensors are read)."""
        directory = Path(directory)
        if not (directory / CONFIG_NAME).is_file() or not (directory / WEIGHTS_NAME).is_file():
            raise InputError(f"{directory}: not a saved PVChat model (needs {CONFIG_NAME} and {WEIGHTS_NAME})")
        meta = read_json(directory / CONFIG_NAME)
        config = PVChatConfig.from_dict(meta["config"])
        subjects, config.subjects = list(config.subjects), []
        model = cls.from_config(config)
        for name in subjects:
            model.add_subject(name)
        if model.subject_ids != meta["subject_ids"]:
            raise InputError(f"{directory}: subject token ids differ from the saved ones")
        try:
            with safe_open(str(directory / WEIGHTS_NAME), "pt") as f:
                saved = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        except Exception as e:  # safetensors raises several types for truncated files
            raise InputError(f"{directory / WEIGHTS_NAME}: unreadable weights ({e.__class__.__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''})") from None
        wanted = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        differ = [k for k in saved if k in wanted and saved[k] != wanted[k]]
        if differ:  # e.g. saved by an earlier pvchat whose tower made narrower tokens
            k = differ[0]
            raise InputError(f"{directory}: saved by another version of pvchat ({len(differ)} tensors of other shapes, "
                             f"e.g. {k} {saved[k]} where this version builds {wanted[k]}); move it aside and build "
                             f"it again (a base in HOME/base is rebuilt by the next learn; people learned on it "
                             f"are learned again)")
        try:
            missing, unexpected = load_model(model, str(directory / WEIGHTS_NAME), strict=False)
        except Exception as e:  # safetensors raises several types for truncated files
            raise InputError(f"{directory / WEIGHTS_NAME}: unreadable weights ({e.__class__.__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''})") from None
        if missing or unexpected:
            raise InputError(f"{directory}: weights do not match the config (missing {missing[:3]}, unexpected {unexpected[:3]})")
        return model


@torch.no_grad()
def greedy_tokens(llm: nn.Module, embeds: torch.Tensor, mask: torch.Tensor, eos_id: int,
                  max_new_tokens: int) -> Iterator[int]:
    """:func:`greedy_batch` of one prompt (1, L, D): yields token ids until ``eos_id``."""
    for step in greedy_batch(llm, embeds, mask, eos_id, max_new_tokens):
        yield int(step[0])


def greedy_batch(llm: nn.Module, embeds: torch.Tensor, mask: torch.Tensor, eos_id: int,
                 max_new_tokens: int) -> Iterator[torch.Tensor]:
    """Greedy decoding of a causal LM from input embeddings (B, L, D), left-padded (``mask`` 0 on
    the padding), with a ``DynamicCache`` filled in place; yields each step's token ids (B,) until
    every row has given ``eos_id`` (a finished row gets ``eos_id`` after that). The prompt's pass
    computes the last position's logits only."""
    hf = llm.get_base_model() if hasattr(llm, "get_base_model") else llm  # under LoRA
    try:
        cache = DynamicCache(config=hf.config)  # sliding-window layers as the model has them
    except TypeError:  # transformers before 4.56
        cache = DynamicCache()
    # transformers 5.x renamed the argument ``past_key_values`` (now deprecated) to ``cache``
    kv = {"cache" if "cache" in inspect.signature(hf.forward).parameters else "past_key_values": cache}
    padded = not bool(mask.all())
    positions = (mask.long().cumsum(1) - 1).clamp(min=0)  # each row counts from its first real token
    where = {"position_ids": positions} if padded else {}  # without padding: the model's own positions
    out = llm(inputs_embeds=embeds, attention_mask=mask, use_cache=True, logits_to_keep=1, **where, **kv)
    done = torch.zeros(len(embeds), dtype=torch.bool, device=embeds.device)
    for _ in range(max_new_tokens):
        token = out.logits[:, -1].argmax(-1).masked_fill(done, eos_id)  # (B,)
        done = done | (token == eos_id)
        if bool(done.all()):
            return
        yield token
        mask = torch.cat([mask, mask.new_ones(len(mask), 1)], dim=1)
        positions = positions[:, -1:] + 1
        where = {"position_ids": positions} if padded else {}
        out = llm(input_ids=token[:, None], attention_mask=mask, use_cache=True, logits_to_keep=1, **where, **kv)


def save_deterministic(model: nn.Module, path: Path) -> None:
    """``safetensors.torch.save_model`` without its metadata: tied tensors are stored once under the
    name save_model keeps, in name order, and no alias table is written (safetensors serialises the
    metadata map in an arbitrary order, so the same weights gave different bytes; :func:`load_model`
    finds the aliases from the model itself)."""
    state = model.state_dict()
    for removed in _remove_duplicate_names(state).values():
        for name in removed:
            del state[name]
    save_file({k: state[k].contiguous() for k in sorted(state)}, str(path))


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Total / trainable parameter counts per top-level part (works on the meta device)."""
    out: dict[str, int] = {}
    for name, child in model.named_children():
        out[name] = sum(p.numel() for p in child.parameters())
        out[name + ".trainable"] = sum(p.numel() for p in child.parameters() if p.requires_grad)
    out["total"] = sum(p.numel() for p in model.parameters())
    out["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return out

