"""pvchat.api: learn one person (tiny preset), concept packs, Chat, forget, and the CLI over them.

One session fixture learns a person of the offline world once (analyze → synthesize "tiny" →
a few training steps per stage → pack), cancelling once in stage 1 and resuming.
"""

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest
import torch

from pvchat import cli
from pvchat.api import Chat, find_people, forget, learn, list_people
from pvchat.data import read_manifest
from pvchat.errors import InputError, PVChatError
from pvchat.io import load_tensors, read_json, write_json
from pvchat.pack import CARD, TENSORS, pack_size_estimate, trained_parameters, write_pack
from pvchat.train.stages import with_subjects
from pvchat.video import to_model_input

RECIPE = """\
# tiny learn for tests: the tiny synthesis recipe and a few steps per stage
synthesize: tiny
stage1: {epochs: 1, max_steps: 4, lr_subject: 1.0e-2, lr_qformer: 1.0e-2, lr_lora: 1.0e-2, checkpoint_every: 100}
stage2: {epochs: 1, max_steps: 6, num_frames: 4, lr_subject: 1.0e-2, lr_qformer: 1.0e-2, lr_lora: 1.0e-2,
         checkpoint_every: 100}
"""


@pytest.fixture(scope="session")
def learned(tmp_path_factory):
    from pvchat.offline.world.api import make_world
    from pvchat.video import write_video

    root = tmp_path_factory.mktemp("api")
    world = make_world(people=4, seed=0)
    subject = world.people[0]
    reference = root / "reference.mp4"
    write_video(reference, world.render_reference(subject.id).frames, fps=world.fps)
    query = root / "query.mp4"
    write_video(query, world.render_clip(world.clip_spec(0, must_include=subject.id)).frames, fps=world.fps)
    recipe = root / "recipe.yaml"
    recipe.write_text(RECIPE)
    home = root / "home"

    events, cancel = [], threading.Event()

    def progress(stage, fraction, info):
        events.append((stage, fraction, dict(info)))
        if stage == "stage1" and info.get("step") == 2:
            cancel.set()

    t0 = time.perf_counter()
    with pytest.raises(PVChatError, match="cancelled"):
        learn(reference, subject.name, home=home, preset="tiny", recipe=recipe, progress=progress, cancel=cancel)
    resumed = []
    card = learn(reference, subject.name, home=home, preset="tiny", recipe=recipe,
                 progress=lambda *a: resumed.append(a))
    seconds = time.perf_counter() - t0
    return SimpleNamespace(root=root, home=home, reference=reference, query=query, recipe=recipe, name=subject.name,
                           card=card, events=events, resumed=resumed, seconds=seconds)


@pytest.fixture(scope="session")
def chat(learned):
    return Chat([learned.name], home=learned.home)


def trained_model(learned):
    """The model at the end of training, rebuilt independently of packs: base + subject + stage-2 checkpoint."""
    m = with_subjects(learned.home / "base" / "tiny", [learned.name])
    params, buffers = dict(m.named_parameters()), dict(m.named_buffers())
    with torch.no_grad():
        for key, value in load_tensors(learned.home / "people" / learned.name / "run" / "stage2" / "checkpoint"
                                       / "state.safetensors").items():
            kind, _, name = key.partition("/")
            if kind in ("param", "buffer"):
                (params if kind == "param" else buffers)[name].copy_(value)
    return m.eval()


def logits(chat, video, question, history=None):
    """(1, L, V) logits of the prompt Chat builds (with the pack its people belong to swapped in)."""
    _, _, features, history = chat._prompt(video, question, history)
    ids = torch.tensor([chat.model.prepare(question, history=history).input_ids])
    with torch.no_grad():
        return chat.model(ids, vision_features=features).logits


# ------------------------------------------------------------------------------ learn
def test_learn_reports_progress_cancels_and_resumes(learned):
    stages = list(dict.fromkeys(s for s, _, _ in learned.events))
    assert stages == ["analyze", "synthesize", "stage1"]
    assert all(0.0 <= f <= 1.0 for _, f, _ in learned.events + [(a[0], a[1], a[2]) for a in learned.resumed])
    steps = [info["step"] for s, _, info in learned.resumed if s == "stage1" and "step" in info]
    assert steps[0] == 3 and steps[-1] == 4  # resumed after the checkpoint cancel left at step 2
    last = [info for s, _, info in learned.resumed if s == "stage2" and "loss" in info][-1]
    assert {"loss", "lm", "spr", "hae", "sparsity"} <= set(last) and last["step"] == 6
    assert [s for s, _, _ in learned.resumed][-1] == "pack"

    person = learned.home / "people" / learned.name
    assert {p.name for p in person.iterdir()} >= {"learn.json", "analysis", "data", "run", "pack"}
    card = learned.card
    assert card["names"] == [learned.name] and card["name"] == learned.name
    assert card["base"]["sha256"] and card["base"]["preset"] == "tiny"
    assert card["config"]["subjects"] == [] and card["data"]["clips"] >= 4
    assert card["metrics"]["stage2"]["step"] == 6 and card["reference"] == str(learned.reference.resolve())
    print(f"\nlearn (tiny, with one cancel + resume): {learned.seconds:.1f} s")


def test_learn_again_returns_the_card_other_settings_fail(learned):
    t = time.perf_counter()
    assert learn(learned.reference, learned.name, home=learned.home, preset="tiny", recipe=learned.recipe) == learned.card
    assert time.perf_counter() - t < 30  # no retraining (that takes minutes under load)
    with pytest.raises(InputError, match="other settings .*preset.*forget"):
        learn(learned.reference, learned.name, home=learned.home, preset="demo", recipe=learned.recipe)
    with pytest.raises(InputError, match="invalid subject name"):
        learn(learned.reference, "no spaces", home=learned.home)
    with pytest.raises(InputError, match="no such file"):
        learn(learned.root / "missing.mp4", "Other", home=learned.home)
    assert not (learned.home / "people" / "Other").exists()
    zed = learned.root / "zed_home" / "people" / "Zed"  # a first try that left only its settings
    write_json(zed / "learn.json", {"reference": "elsewhere.mp4"})
    stop = threading.Event()
    stop.set()
    with pytest.raises(PVChatError, match="cancelled before analyze"):
        learn(learned.reference, "Zed", home=zed.parent.parent, preset="tiny", recipe=learned.recipe, cancel=stop)
    # the stale settings did not block it, and a learn that derived nothing leaves nothing (issue 15)
    assert not zed.exists()


def test_list_people(learned):
    (cards,) = list_people(learned.home)
    assert cards["name"] == learned.name and cards["size_bytes"] > 0 and "metrics" in cards and cards["reference"]
    assert list_people(learned.root / "empty") == []
    broken = learned.root / "broken_home" / "people" / "Broken" / "pack"
    broken.mkdir(parents=True)
    (broken / CARD).write_text("{")
    (broken / TENSORS).write_bytes(b"")
    (listed,) = list_people(learned.root / "broken_home")
    assert listed["name"] == "Broken" and "not valid JSON" in listed["error"]


# ------------------------------------------------------------------------------ packs
def test_pack_round_trip_equals_the_trained_model(learned, chat):
    trained = trained_model(learned)
    question = f"Is <{learned.name}> in this video?"
    enc = trained.prepare(question)
    ids = torch.tensor([enc.input_ids])
    _, features = chat._video(learned.query)
    with torch.no_grad():
        a = trained(ids, vision_features=features).logits
        b = chat.model(ids, vision_features=features).logits
    assert torch.equal(a, b)
    answer = chat.ask(learned.query, question)
    pixels = to_model_input(answer.frames, size=32)
    expected = trained.generate([question], pixel_values=pixels.unsqueeze(0), max_new_tokens=64)[0]
    assert answer.text == expected  # one decoder (PVChat.stream) behind both
    assert answer.frames.dtype.name == "uint8" and answer.frames.shape[0] == 4 and answer.people == [learned.name]
    parts = list(chat.stream(learned.query, question))
    assert parts[-1] == answer.text and len(parts) > 1


def test_pack_is_small(learned):
    card = learned.card
    pack, base = card["size_bytes"], card["base"]["size_bytes"]
    assert pack == (learned.home / "people" / learned.name / "pack" / TENSORS).stat().st_size
    assert pack < 0.5 * base
    est = pack_size_estimate("tiny")
    assert abs(est["pack_bytes_fp32"] - pack) < 20_000  # safetensors header aside
    print(f"\npack {pack / 1e3:.0f} kB vs base {base / 1e3:.0f} kB ({100 * pack / base:.0f}%)")


def test_damaged_packs_are_one_clear_error(learned, tmp_path):
    src = learned.home / "people" / learned.name / "pack"

    def copy(name):
        shutil.copytree(src, tmp_path / name)
        return tmp_path / name

    truncated = copy("truncated")
    data = (truncated / TENSORS).read_bytes()
    (truncated / TENSORS).write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="corrupt or incomplete"):
        Chat([str(truncated)], home=learned.home)
    flipped = copy("flipped")
    (flipped / TENSORS).write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(InputError, match="corrupt"):
        Chat([str(flipped)], home=learned.home)
    no_card = copy("no_card")
    (no_card / CARD).unlink()
    with pytest.raises(InputError, match="not a concept pack"):
        Chat([str(no_card)], home=learned.home)
    bad_json = copy("bad_json")
    (bad_json / CARD).write_text("{half")
    with pytest.raises(InputError, match="not valid JSON"):
        Chat([str(bad_json)], home=learned.home)
    for name, edit, message in (("other_base", lambda c: c["base"].update(sha256="0" * 64), "another base model"),
                                ("other_config", lambda c: c["config"]["qformer"].update(num_subject_queries=8),
                                 "another model config")):
        d = copy(name)
        card = json.loads((d / CARD).read_text())
        edit(card)
        write_json(d / CARD, card)
        with pytest.raises(InputError, match=message):
            Chat([str(d)], home=learned.home)
    with pytest.raises(InputError, match=f"no learned person 'Nobody'.*known: {learned.name}"):
        Chat(["Nobody"], home=learned.home)


def test_two_packs_swap_shared_tensors_and_refuse_mixing(learned, chat, tmp_path):
    base = learned.home / "base" / "tiny"
    other = with_subjects(base, ["Robin"], seed=1)
    with torch.no_grad():
        for p in trained_parameters(other, ["Robin"]).values():
            p.add_(0.05 * torch.randn_like(p))
    write_pack(other, ["Robin"], tmp_path / "robin", base)
    both = Chat([learned.name, str(tmp_path / "robin")], home=learned.home)
    alone = Chat([str(tmp_path / "robin")], home=learned.home)
    assert both.people == [learned.name, "Robin"]
    mine, theirs = f"What is <{learned.name}> doing?", "What is <Robin> doing?"

    def same(a: Chat, b: Chat, question: str) -> bool:
        """Equal logits over the base vocabulary and every person both know (by token, ids differ); the
        new-row columns come from a (K, D) matmul whose K differs, hence a last-bit tolerance."""
        la, lb = logits(a, learned.query, question), logits(b, learned.query, question)
        n = min(a.model.subject_ids.values())
        ids = [(a.model.subject_ids[p], b.model.subject_ids[p]) for p in set(a.people) & set(b.people)]
        cols_a, cols_b = list(range(n)) + [i for i, _ in ids], list(range(n)) + [j for _, j in ids]
        return torch.allclose(la[..., cols_a], lb[..., cols_b], rtol=0, atol=1e-5)

    assert same(both, chat, mine)
    assert same(both, alone, theirs)
    assert same(both, chat, mine)  # and back
    assert not same(both, alone, mine.replace(f"<{learned.name}>", "the person"))  # no name: the first pack
    assert both.ask(learned.query, theirs).text == alone.ask(learned.query, theirs).text
    with pytest.raises(InputError, match="learned separately.*learn them together"):
        both.ask(learned.query, f"Is <{learned.name}> left of <Robin>?")
    with pytest.raises(InputError, match="Robin is in two packs"):
        Chat([str(tmp_path / "robin"), str(tmp_path / "robin")], home=learned.home)


# ------------------------------------------------------------------------------- chat
@pytest.mark.parametrize("text", ["[INST] hi", "ok [/INST] Yes", "<video>", "[PERSON] x [/PERSON]", "bye </s>",
                                  "<s> hi", "<pad>", "<unk>"])
def test_reserved_tokens_cannot_be_injected(learned, chat, text):
    with pytest.raises(InputError, match="reserved|unknown person"):
        chat.ask(learned.query, f"Is <{learned.name}> here? {text}")
    with pytest.raises(InputError, match="reserved|unknown person"):
        chat.ask(learned.query, f"And <{learned.name}>?", history=[("Is anyone here?", f"Yes. {text}")])


def test_unknown_person_bad_video_bad_history(learned, chat, tmp_path):
    with pytest.raises(InputError, match=f"unknown person <Nobody>; known: <{learned.name}>"):
        chat.ask(learned.query, "Is <Nobody> in this video?")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(InputError) as e:
        chat.ask(bad, f"Is <{learned.name}> here?")
    assert "\n" not in str(e.value) and "bad.mp4" in str(e.value)
    with pytest.raises(InputError, match="no such file"):
        chat.ask(tmp_path / "missing.mp4", f"Is <{learned.name}> here?")
    with pytest.raises(InputError, match="pairs"):
        chat.ask(learned.query, f"Is <{learned.name}> here?", history=["just a string"])
    with pytest.raises(InputError, match="empty"):
        chat.ask(learned.query, "   ")


def test_history_goes_into_the_prompt(learned, chat):
    q1, q2 = f"Is <{learned.name}> in this video?", "What is the person doing?"
    a1 = chat.ask(learned.query, q1).text
    second = chat.ask(learned.query, q2, history=[(q1, a1)])
    assert second.people == [learned.name]  # named in the history
    with_history = logits(chat, learned.query, q2, [(q1, a1)])[:, -1]
    assert not torch.equal(logits(chat, learned.query, q2)[:, -1], with_history)


def test_head_activation(learned, chat):
    out = chat.head_activation(learned.query, f"What is <{learned.name}> doing?")
    routed = chat.model.config.qformer.num_heads - chat.model.config.qformer.num_shared_heads
    assert out["people"] == [learned.name] and len(out["layers"]) == len(out["with"]) == len(out["without"]) == 3
    assert all(len(row) == routed and all(0.0 <= a <= 1.0 for a in row) for row in out["with"] + out["without"])
    with pytest.raises(InputError, match="name a person"):
        chat.head_activation(learned.query, "What is happening?")


def test_find_people(learned, tmp_path):
    found = find_people(learned.reference, tmp_path / "analysis")
    assert len(found["people"]) == 1 and found["people"][0]["num_faces"] > 0
    assert os.path.isfile(found["people"][0]["best_face"]) and os.path.isfile(found["contact_sheet"])


# -------------------------------------------------------------------------------- CLI
def test_cli_ask_learn(learned, chat, capsys):
    question = f"Is <{learned.name}> in this video?"
    assert cli.main(["ask", str(learned.query), question, "--home", str(learned.home)]) == 0
    assert capsys.readouterr().out.strip() == chat.ask(learned.query, question).text
    assert cli.main(["ask", str(learned.query), question, "--pack", learned.name, "--home", str(learned.home)]) == 0
    capsys.readouterr()
    assert cli.main(["ask", str(learned.query), "Is <Nobody> here?", "--home", str(learned.home)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no learned person 'Nobody'" in err[0]
    assert cli.main(["learn", str(learned.reference), "--name", learned.name, "--preset", "tiny",
                     "--recipe", str(learned.recipe), "--home", str(learned.home)]) == 0  # already learned
    assert f"learned <{learned.name}>" in capsys.readouterr().out


def test_cli_chat_with_piped_stdin(learned, chat):
    q1, q2 = f"Is <{learned.name}> in this video?", f"What is <{learned.name}> wearing?"
    stdin = f"{q1}\n\nIs <Nobody> here?\n{q2}\n/quit\nnever asked\n"
    out = subprocess.run([sys.executable, "-m", "pvchat.cli", "chat", str(learned.query), "--pack", learned.name,
                          "--home", str(learned.home)], input=stdin, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    a1 = chat.ask(learned.query, q1).text
    a2 = chat.ask(learned.query, q2, history=[(q1, a1)]).text
    assert out.stdout == f"{a1}\n{a2}\n"
    assert "unknown person <Nobody>" in out.stderr and "Traceback" not in out.stderr


def test_forget(learned, tmp_path, capsys):
    home = tmp_path / "home"
    shutil.copytree(learned.home, home)
    assert cli.main(["forget", learned.name, "--home", str(home)]) == 0
    printed = capsys.readouterr().out
    assert "pack" in printed and f"forgot <{learned.name}>" in printed
    assert not (home / "people" / learned.name).exists() and (home / "base" / "tiny").is_dir()
    assert learned.reference.is_file()  # the user's own video stays
    assert cli.main(["forget", learned.name, "--home", str(home)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"no learned person '{learned.name}'" in err[0]
    with pytest.raises(InputError, match="invalid subject name"):
        forget("../etc", home=home)
    with pytest.raises(InputError, match="no learned person"):
        Chat([learned.name], home=home)


def test_two_people_learned_together_one_pack_one_question(learned, tmp_path):
    from pvchat.offline.pool import save_pool
    from pvchat.offline.world.api import make_world
    from pvchat.video import write_video

    world = make_world(people=4, seed=0)
    a, b = world.people[0], world.people[1]
    refs = []
    for p in (a, b):
        refs.append(tmp_path / f"{p.id}.mp4")
        write_video(refs[-1], world.render_reference(p.id).frames, fps=world.fps)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE + "compose_clips: 3\n")
    home = tmp_path / "home"
    with pytest.raises(InputError, match="one video each"):
        learn(refs[:1], ["Ann", "Ben"], home=home, preset="tiny", recipe=recipe)
    pool = save_pool(world, world.people[2:], tmp_path / "pool")  # they stand in for who is absent
    with pytest.raises(InputError, match="no such directory"):
        learn(refs, ["Ann", "Ben"], home=home, preset="tiny", recipe=recipe, pool=tmp_path / "nowhere")
    card = learn(refs, ["Ann", "Ben"], home=home, preset="tiny", recipe=recipe, pool=pool)
    assert card["names"] == ["Ann", "Ben"] and (home / "people" / "Ann+Ben" / "pack" / CARD).is_file()
    data = home / "people" / "Ann+Ben" / "data"
    composed = read_manifest(data / "manifest.jsonl")
    assert read_json(data / "settings.json")["pool"] == str(pool)
    assert all(len(r.provenance["layout"]) == 2 for r in composed)  # strangers fill the clips
    assert any(len(r.people) < 2 for r in composed)
    assert [p["names"] for p in list_people(home)] == [["Ann", "Ben"]]
    chat = Chat(["Ann", "Ben"], home=home)  # both names resolve to the one pack
    answer = chat.ask(learned.query, "Where is <Ann> relative to <Ben>?")
    assert answer.people == ["Ann", "Ben"] and isinstance(answer.text, str)
    deleted = forget("Ben", home=home)  # the group's model is Ben's too: it goes
    assert home / "people" / "Ann+Ben" in deleted and not (home / "people" / "Ann+Ben").exists()


def test_learn_and_ask_on_a_video_llm_base(learned, tmp_path, capsys):
    """learn --base DIR: the same analysis and data, trained on a tiny random Qwen2.5-VL; ask finds its base."""
    from pvchat.model.backbones import qwen_vl

    base = qwen_vl.write_tiny(tmp_path / "qwen")
    home = tmp_path / "home"
    for part in ("analysis", "data"):  # analysed and synthesized once, by the session's learn
        shutil.copytree(learned.home / "people" / learned.name / part, home / "people" / learned.name / part)
    stages = []
    card = learn(learned.reference, learned.name, home=home, recipe=learned.recipe, base=base,
                 progress=lambda stage, fraction, info: stages.append(stage))
    assert card["base"]["family"] == "qwen-vl" and card["names"] == [learned.name]
    assert {"stage1", "stage2", "pack"} <= set(stages) and card["metrics"]["stage2"]["steps"] == 6
    chat = Chat([learned.name], home=home)
    assert type(chat).__name__ == "BaseChat"
    question = f"Is <{learned.name}> in this video?"
    answer = chat.ask(learned.query, question)
    assert answer.people == [learned.name] and answer.frames.shape[0] == 8
    assert cli.main(["ask", str(learned.query), question, "--home", str(home)]) == 0
    assert capsys.readouterr().out.strip() == answer.text
    follow_up = chat.ask(learned.query, "And what is she doing?", history=[(question, answer.text)])
    assert follow_up.people == [learned.name]  # named in the history
    other = qwen_vl.write_tiny(tmp_path / "qwen2", version="qwen2_vl")
    capsys.readouterr()
    assert cli.main(["ask", str(learned.query), question, "--home", str(home), "--base", str(other)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "learned on another base" in err[0]
