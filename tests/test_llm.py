"""Tiny tokenizer, chat tokens, the causal LM with LoRA and trainable subject-token rows."""

import hashlib
import subprocess
import sys

import pytest
import torch
from peft import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, load_model, save_file, save_model
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from pvchat.errors import ConfigError, InputError
from pvchat.model import llm as L, subject_tokens as S
from pvchat.model.tokenizer import SPECIAL_TOKENS, build_tiny_tokenizer, ensure_chat_tokens

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


@pytest.fixture(scope="module")
def tiny_tok():
    return build_tiny_tokenizer()


def _tok_hash(tok) -> str:
    return hashlib.sha256(tok.backend_tokenizer.to_str().encode()).hexdigest()


def _model(tok, model_type="mistral", tied=False, seed=0, lora=True, names=("sks",), **kw):
    """Build → chat tokens → delimiters → LoRA → subjects: the order PVChat.from_config uses."""
    torch.manual_seed(seed)
    m = L.build_llm(model_type, vocab_size=kw.pop("vocab_size", len(tok)), tie_word_embeddings=tied, **TINY, **kw)
    ensure_chat_tokens(tok, m)
    S.add_subject_tokens(m, tok, [])
    if lora:
        m = L.apply_lora(m, r=16, alpha=32, dropout=0.0)
    ids = S.add_subject_tokens(m, tok, list(names))
    return m, ids


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _adamw_step(model, tok, text="Is <sks> in the video? Yes, <sks> is walking on the left."):
    groups = L.trainable_parameter_groups(model)
    opt = torch.optim.AdamW([{"params": groups["subject_tokens"], "lr": 1e-2},
                             {"params": groups["lora"], "lr": 1e-2}], weight_decay=0.01)
    ids = torch.tensor([tok(text)["input_ids"]])
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    opt.zero_grad()
    return ids


# -------------------------------------------------------------------- tokenizer
def test_tiny_tokenizer_is_deterministic_across_processes(tiny_tok):
    code = ("import hashlib; from pvchat.model.tokenizer import build_tiny_tokenizer as b; "
            "print(hashlib.sha256(b().backend_tokenizer.to_str().encode()).hexdigest())")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()[-1]
    assert other == _tok_hash(tiny_tok) == _tok_hash(build_tiny_tokenizer())
    assert len(tiny_tok) == 512 and len(build_tiny_tokenizer(300)) == 300


def test_special_tokens_are_single_ids_never_split(tiny_tok):
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tiny_tok(t, add_special_tokens=False)["input_ids"] == [i]
    ids = tiny_tok("[INST] Is he here?[/INST]<video><video> yes</s>", add_special_tokens=False)["input_ids"]
    assert [i for i in ids if i < len(SPECIAL_TOKENS)] == [4, 5, 6, 6, 1]
    assert tiny_tok("hi")["input_ids"][0] == tiny_tok.bos_token_id == 0  # Mistral-style BOS
    assert (tiny_tok.pad_token, tiny_tok.eos_token, tiny_tok.unk_token) == ("<pad>", "</s>", "<unk>")


@pytest.mark.parametrize("text", [
    "The woman in a red shirt is walking on the left.",
    "  leading and trailing spaces  ", "tabs\tand\nnew lines\r\n", "Ünïcödé, 東京, 🙂 and ÿ",
    "a , b . c ! don't \"quote\" (x) [y] {z}", "[INST] <video>[/INST] [INST] [<sks>] Q?[/INST] A</s>", "",
])
def test_any_text_round_trips(tiny_tok, text):
    assert tiny_tok.decode(tiny_tok(text, add_special_tokens=False)["input_ids"]) == text


def test_tiny_tokenizer_rejects_a_vocab_without_room_for_bytes():
    with pytest.raises(ConfigError, match="263"):
        build_tiny_tokenizer(100)


def _plain_tokenizer():
    """A "real" tokenizer without chat tokens or a pad token."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(["the man walks", "the woman runs"] * 5,
                            trainers.BpeTrainer(vocab_size=60, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def test_ensure_chat_tokens_adds_what_is_missing_and_resizes_the_model(tiny_tok):
    assert ensure_chat_tokens(tiny_tok) == {"[INST]": 4, "[/INST]": 5, "<video>": 6}  # nothing to add
    tok = _plain_tokenizer()
    n = len(tok)
    m = L.build_llm("llama", vocab_size=n, **TINY)
    ids = ensure_chat_tokens(tok, m)
    assert sorted(ids.values()) == [n, n + 1, n + 2] and len(tok) == n + 3
    assert m.get_input_embeddings().weight.shape[0] == n + 3 == m.config.vocab_size
    assert tok("a [INST] b <video>", add_special_tokens=False)["input_ids"][1] == ids["[INST]"]
    assert tok.pad_token == "<unk>"  # Mistral pads with id 0 = <unk> (§2.6)
    assert ensure_chat_tokens(tok, m) == ids  # idempotent
    # after subject tokens exist, the vocabulary can no longer grow underneath them
    S.add_subject_tokens(m, tok, ["sks"])
    tok.add_tokens(["<late>"], special_tokens=True)
    with pytest.raises(ConfigError, match="before subject tokens"):
        ensure_chat_tokens(tok, m)
    with pytest.raises(ConfigError, match="call ensure_chat_tokens"):
        S.add_subject_tokens(m, tok, ["Anna"])
    assert "<Anna>" not in tok.get_vocab()  # nothing half-done
    with pytest.raises(InputError, match="invalid subject names"):
        S.add_subject_tokens(m, tok, ["two words"])


# ----------------------------------------------------------------- build / load
def test_build_llm_registry_and_config_errors():
    assert L.list_llms() == ["llama", "mistral", "qwen2"]
    with pytest.raises(ConfigError, match="llama, mistral, qwen2"):
        L.build_llm("gpt5")
    with pytest.raises(ConfigError, match="hiden_size"):
        L.build_llm("mistral", hiden_size=64)


def test_load_llm_from_a_local_directory(tmp_path, tiny_tok):
    torch.manual_seed(0)
    m = L.build_llm("mistral", vocab_size=len(tiny_tok), **TINY)
    m.save_pretrained(tmp_path)
    tiny_tok.save_pretrained(tmp_path)
    loaded, tok = L.load_llm(tmp_path)
    ids = torch.tensor([tiny_tok("the man is walking")["input_ids"]])
    assert torch.equal(m(input_ids=ids).logits, loaded(input_ids=ids).logits)
    assert tok("[INST] <video>")["input_ids"] == tiny_tok("[INST] <video>")["input_ids"]
    assert L.load_llm(tmp_path, torch_dtype=torch.bfloat16)[0].dtype == torch.bfloat16
    with pytest.raises(InputError, match="config.json"):
        L.load_llm(tmp_path / "nope")


def test_lora_state_of_a_local_model_leaves_the_tables_out(tmp_path):
    tok = build_tiny_tokenizer()
    torch.manual_seed(0)
    L.build_llm("mistral", vocab_size=len(tok), **TINY).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    base, tok = L.load_llm(tmp_path)
    S.add_subject_tokens(base, tok, ["sks"])
    m = L.apply_lora(base, dropout=0.0)
    with pytest.warns(UserWarning, match="resized"):  # PEFT's default: the whole table
        assert any("embed_tokens" in k for k in get_peft_model_state_dict(m))
    state = L.lora_state(m)
    assert len(state) == 28 and all("lora_" in k for k in state)
    _adamw_step(m, tok)
    trained = L.lora_state(m)
    assert any(not torch.equal(trained[k], state[k]) for k in state)
    L.load_lora_state(m, state)
    assert all(torch.equal(v, L.lora_state(m)[k]) for k, v in state.items())
    L.load_lora_state(m, trained)
    with pytest.raises(InputError, match="missing"):
        L.load_lora_state(m, dict(list(trained.items())[:3]))


def test_bf16_model_keeps_float32_rows_with_gradients():
    tok = build_tiny_tokenizer()
    torch.manual_seed(0)
    m = L.build_llm("mistral", vocab_size=len(tok), **TINY).to(torch.bfloat16)
    ids = S.add_subject_tokens(m, tok, ["sks"])
    x = torch.tensor([tok("Is <sks> here? Yes, <sks> is.")["input_ids"]])
    out = m(input_ids=x, labels=x)
    assert out.logits.dtype == torch.bfloat16 and out.logits.shape[-1] == len(tok)
    out.loss.backward()
    rows = S._row_params(m, ids).values()
    assert all(p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32 for p in rows)


def test_apply_lora_uses_the_paper_defaults():
    torch.manual_seed(0)
    m = L.apply_lora(L.build_llm("mistral", vocab_size=100, **TINY))
    lora = {n: p for n, p in m.named_parameters() if "lora_" in n}
    targets = {n.split(".")[-4] for n in lora}
    assert targets == set(L.LORA_TARGETS) and len(lora) == 2 * 2 * 7  # A, B × layers × targets
    assert all(p.shape[0] == 16 for n, p in lora.items() if "lora_A" in n)
    q = m.base_model.model.model.layers[0].self_attn.q_proj
    assert q.scaling["default"] == 2.0 and q.lora_dropout["default"].p == 0.1
    assert [n for n, p in m.named_parameters() if p.requires_grad] == list(lora)
    with pytest.raises(ConfigError, match="linear layers: .*q_proj"):
        L.apply_lora(L.build_llm("mistral", vocab_size=100, **TINY), target_modules=("qkv",))


# --------------------------------------------------------------- subject tokens
@pytest.mark.parametrize("model_type, tied", [("mistral", False), ("qwen2", True), ("llama", True)])
def test_one_adamw_step_trains_new_rows_and_lora_only(model_type, tied):
    tok = build_tiny_tokenizer()
    m, ids = _model(tok, model_type, tied)
    emb, head = S.subject_modules(m)
    assert head.tied == tied and (head.base.weight is emb.base.weight) == tied
    assert m.config.vocab_size == len(tok) == 515  # 512 + [PERSON], [/PERSON], <sks>
    before = _snapshot(m)
    x = _adamw_step(m, tok)
    assert ids["sks"] in x.tolist()[0]
    after = _snapshot(m)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    # every frozen parameter, the full original embedding and lm_head tables included, is bit-identical
    assert changed <= trainable
    rows = {n for n in before if ".new.params." in n or ".own.params." in n}
    assert len(rows) == (3 if tied else 6)  # [PERSON], [/PERSON], <sks> (× input/output when untied)
    sks_slot = emb.new.slot(ids["sks"])
    sks_rows = {n for n in rows if n.endswith(f"params.{sks_slot}")}
    assert changed & rows == sks_rows and len(sks_rows) == (1 if tied else 2)  # delimiters stay frozen
    assert any("lora_B" in n for n in changed)
    assert not any("lora" not in n and ".params." not in n for n in changed)


def test_second_subject_later_leaves_the_first_untouched():
    tok = build_tiny_tokenizer()
    m, ids = _model(tok)
    _adamw_step(m, tok)
    sks_rows = dict(zip(("in", "out"), S._row_params(m, ids).values()))
    first = {k: p.detach().clone() for k, p in sks_rows.items()}
    base = _snapshot(m)
    ids2 = S.add_subject_tokens(m, tok, ["Anna"])
    assert ids2 == {"Anna": ids["sks"] + 1} and S.add_subject_tokens(m, tok, ["sks", "Anna"]) == {**ids, **ids2}
    assert len(S.new_token_parameters(m)) == 8  # idempotent: 4 tokens × (input, output)
    assert all(torch.equal(base[n], p) for n, p in m.named_parameters() if n in base)  # nothing existing moved
    assert all(a is b for a, b in zip(S._row_params(m, ids).values(), sks_rows.values()))  # same Parameter objects
    # train Anna with <sks> frozen: only Anna's rows (and LoRA) move
    anna_before = S.subject_token_state(m, ids2)
    assert set(anna_before) == {"input.Anna", "output.Anna"}
    S.set_subject_trainable(m, ids, False)
    _adamw_step(m, tok, "Is <Anna> here? No, but <sks> is.")
    assert all(torch.equal(first[k], p) for k, p in sks_rows.items())
    anna_after = S.subject_token_state(m, ids2)
    assert all(not torch.equal(anna_before[k], anna_after[k]) for k in anna_before)


def test_generate_with_inputs_embeds_emits_and_reads_new_tokens():
    tok = build_tiny_tokenizer()
    m, ids = _model(tok)
    m.eval()
    sks = ids["sks"]
    prompt = torch.tensor([tok("[INST] Who is <sks>?[/INST]")["input_ids"]])
    embeds = m.get_input_embeddings()(prompt)
    bias = {(sks,): 50.0}  # force the new token out of the extended head, then feed it back in
    out = m.generate(inputs_embeds=embeds, max_new_tokens=4, do_sample=False, sequence_bias=bias, pad_token_id=tok.pad_token_id)
    assert out.shape == (1, 4) and out[0, 0] == sks
    # the same greedy loop by hand over input ids
    seq = prompt
    for _ in range(4):
        logits = m(input_ids=seq).logits[:, -1]
        logits[:, sks] += 50.0
        seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, seq[:, prompt.shape[1]:])


def test_subject_state_saves_loads_and_survives_another_token_order(tmp_path, tiny_tok):
    tok = build_tiny_tokenizer()
    m, ids = _model(tok)
    _adamw_step(m, tok)
    save_file(S.subject_token_state(m, ids), str(tmp_path / "pack.safetensors"))
    lora = get_peft_model_state_dict(m)
    state = load_file(str(tmp_path / "pack.safetensors"))
    assert set(state) == {"input.sks", "output.sks"} and state["input.sks"].dtype == torch.float32

    tok2 = build_tiny_tokenizer()
    fresh, ids2 = _model(tok2)  # same seed → same base weights; the <sks> rows differ until loaded
    set_peft_model_state_dict(fresh, lora)
    x = torch.tensor([tok("Is <sks> in the video?")["input_ids"]])
    m.eval(), fresh.eval()
    assert not torch.equal(m(input_ids=x).logits, fresh(input_ids=x).logits)
    S.load_subject_token_state(fresh, ids2, state)
    assert torch.equal(m(input_ids=x).logits, fresh(input_ids=x).logits)

    tok3 = build_tiny_tokenizer()  # "<Anna>" first, so "<sks>" gets another id
    other, _ = _model(tok3, names=("Anna", "sks"))
    set_peft_model_state_dict(other, lora)
    ids3 = {"sks": tok3.convert_tokens_to_ids("<sks>")}
    assert ids3 != ids
    S.load_subject_token_state(other, ids3, state)
    x3 = torch.tensor([tok3("Is <sks> in the video?")["input_ids"]])
    other.eval()
    a, b = m(input_ids=x).logits, other(input_ids=x3).logits
    torch.testing.assert_close(a[..., : len(tiny_tok)], b[..., : len(tiny_tok)], rtol=0, atol=0)
    torch.testing.assert_close(a[..., ids["sks"]], b[..., ids3["sks"]], rtol=1e-6, atol=1e-7)  # K differs: last-ulp matmul noise

    with pytest.raises(InputError, match="missing"):
        S.load_subject_token_state(fresh, ids2, {"input.sks": state["input.sks"]})
    with pytest.raises(InputError, match="shape"):
        S.load_subject_token_state(fresh, ids2, {k: v[:3] for k, v in state.items()})
    with pytest.raises(InputError, match="no trainable row"):
        S.subject_token_state(fresh, {"ghost": 7})


@pytest.mark.parametrize("model_type, tied", [("mistral", False), ("qwen2", True)])
def test_whole_model_safetensors_round_trip(tmp_path, model_type, tied):
    """What PVChat.save_pretrained does: save_model on the wrapped model, rebuild, load_model strictly."""
    tok = build_tiny_tokenizer()
    m, ids = _model(tok, model_type, tied)
    x = _adamw_step(m, tok)
    save_model(m, str(tmp_path / "m.safetensors"))
    fresh, _ = _model(build_tiny_tokenizer(), model_type, tied, seed=1)
    missing, unexpected = load_model(fresh, str(tmp_path / "m.safetensors"))
    assert not missing and not unexpected
    m.eval(), fresh.eval()
    assert torch.equal(m(input_ids=x).logits, fresh(input_ids=x).logits)


def test_padded_vocabulary_gets_override_rows():
    """A model vocabulary larger than the tokenizer (paper preset, Qwen2): new ids fall inside the
    original table; they get their own trainable rows and the base rows stay untouched."""
    tok = build_tiny_tokenizer()
    m, ids = _model(tok, vocab_size=600)
    emb, head = S.subject_modules(m)
    assert ids["sks"] == 514 < 600 == m.config.vocab_size == emb.num_embeddings
    before = _snapshot(m)
    x = _adamw_step(m, tok)
    assert all(torch.equal(before[n], p) for n, p in m.named_parameters() if ".base." in n)
    m.eval()
    hidden = m(input_ids=x, output_hidden_states=True).hidden_states[-1]
    logits = m(input_ids=x).logits
    assert logits.shape[-1] == 600
    row = head.new.params[head.new.slot(ids["sks"])]
    torch.testing.assert_close(logits[..., ids["sks"]], hidden @ row)
    torch.testing.assert_close(emb(torch.tensor([ids["sks"]]))[0], emb.new.params[emb.new.slot(ids["sks"])])


def test_trainable_groups_and_rows_survive_lora_wrapping():
    tok = build_tiny_tokenizer()
    m, ids = _model(tok)
    groups = L.trainable_parameter_groups(m)
    assert len(groups["subject_tokens"]) == 2 and len(groups["lora"]) == 28 and groups["other"] == []
    assert len(S.new_token_parameters(m)) == 6  # + the frozen [PERSON], [/PERSON] rows
    S.set_subject_trainable(m, S.person_delimiter_ids(tok), True)  # a multi-person stage
    assert len(L.trainable_parameter_groups(m)["subject_tokens"]) == 6
    assert all(p.requires_grad and p.dtype == torch.float32 for p in groups["subject_tokens"])
    # LoRA on the (frozen) lm_head inside the wrapper, as the official config lists it (§2.5)
    torch.manual_seed(0)
    raw = L.build_llm("mistral", vocab_size=len(tok), **TINY)
    S.add_subject_tokens(raw, tok, ["sks"])
    wrapped = L.apply_lora(raw, target_modules=("q_proj", "lm_head"))
    names = [n for n, _ in wrapped.named_parameters() if "lora_A" in n]
    assert any("lm_head.base.lora_A" in n for n in names) and len(L.trainable_parameter_groups(wrapped)["subject_tokens"]) == 2
    with pytest.raises(ConfigError, match="already has LoRA"):
        L.apply_lora(wrapped)
