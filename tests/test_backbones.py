"""--base DIR: tiny random bases of each family, built offline with save_pretrained (seconds each)."""

import json

import numpy as np
import pytest
import torch

from pvchat.errors import ConfigError, InputError
from pvchat.model.backbones import family_of, list_families, load_base
from pvchat.pack import load_pack
from pvchat.train.recipe import StageRecipe

FAMILIES = ["qwen2_5_vl", "qwen2_vl", "qwen3_vl", "llava_onevision", "smolvlm", "instructblipvideo"]
SETTINGS = dict(detail_tokens=2, subject_queries=2, lora_r=4, lora_alpha=8, lora_dropout=0.0, num_frames=4)


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    from pvchat.model.backbones import instructblip_video, llava_onevision, qwen_vl, smolvlm

    root = tmp_path_factory.mktemp("bases")
    return {
        "qwen2_5_vl": qwen_vl.write_tiny(root / "qwen2_5_vl", version="qwen2_5_vl"),
        "qwen2_vl": qwen_vl.write_tiny(root / "qwen2_vl", version="qwen2_vl"),
        "qwen3_vl": qwen_vl.write_tiny(root / "qwen3_vl", version="qwen3_vl"),
        "llava_onevision": llava_onevision.write_tiny(root / "llava_onevision"),
        "smolvlm": smolvlm.write_tiny(root / "smolvlm"),
        "instructblipvideo": instructblip_video.write_tiny(root / "instructblipvideo"),
    }


def frames(n=4, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 40, 48, 3), dtype=np.uint8)


def unpatched_logits(family, path, model, batch):
    """The base as transformers loads it, on the same inputs."""
    from transformers import AutoModelForImageTextToText, InstructBlipVideoForConditionalGeneration

    if family == "instructblipvideo":
        ref = InstructBlipVideoForConditionalGeneration.from_pretrained(path, local_files_only=True)
        keys = ("pixel_values", "qformer_input_ids", "qformer_attention_mask", "input_ids", "attention_mask")
        with torch.no_grad():
            return ref(**{k: batch[k] for k in keys}).logits
    ref = AutoModelForImageTextToText.from_pretrained(path, local_files_only=True)
    with torch.no_grad():
        return ref(**model._inputs(batch)).logits


def test_family_comes_from_config(bases, tmp_path):
    assert family_of(bases["qwen2_5_vl"]) == "qwen2_5_vl"
    assert family_of(bases["instructblipvideo"]) == "instructblipvideo"
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ConfigError, match="'bert' is not supported; supported: " + ", ".join(list_families())):
        load_base(tmp_path)
    with pytest.raises(InputError, match="no config.json"):
        load_base(tmp_path / "nowhere")


@pytest.mark.parametrize("family", FAMILIES)
def test_patching_changes_nothing_until_training(bases, family):
    model = load_base(bases[family], SETTINGS)
    batch = model.encode(frames(), "What is the person doing?", answer="Walking.")
    ref = unpatched_logits(family, bases[family], model, batch)
    with torch.no_grad():
        out = model(batch)
    assert model.gates and all(g.stats is not None for g in model.gates)  # the routers ran
    assert torch.equal(out.logits[..., : ref.shape[-1]], ref)
    # one step on the routers alone moves the output: the equality above is not vacuous
    groups = model.parameter_groups([], 0.0, 1e-1, 0.0)
    opt = torch.optim.SGD(groups[0]["params"], lr=1e-1)
    model(batch).loss.backward()
    opt.step()
    with torch.no_grad():
        assert not torch.equal(model(batch).logits[..., : ref.shape[-1]], ref)


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_in_the_language_model_only_and_vision_frozen(bases, family):
    model = load_base(bases[family], SETTINGS)
    model.add_person("Ann")
    lora = [n for n, _ in model.named_parameters() if "lora_" in n]
    scope = "hf." + model.lm_scope() + "."
    assert lora and all(n.startswith(scope) for n in lora)
    groups = model.parameter_groups(["Ann"], 1e-4, 1e-5, 1e-5)
    assert [g["name"] for g in groups] == ["subject", "routers", "lora"]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert not [n for n in trainable if any(v in n for v in (".visual.", ".vision_model.", ".vision_tower."))]
    # decoder-only: <Ann> + 2 detail tokens (input and output rows); Q-former: <Ann>'s rows + its query block
    assert len(groups[0]["params"]) == (2 * 3 if family != "instructblipvideo" else 2 + 1)


def test_qwen_video_layout_matches_the_image_layout_for_a_still(bases):
    """Two identical frames make one temporal patch whose rows equal the image processor's (which
    repeats a still over temporal_patch_size): the reproduced video layout is checked against it."""
    model = load_base(bases["qwen2_5_vl"], SETTINGS)
    still = frames(1)
    pixels, grid = model.video_patches(np.concatenate([still, still]))
    image = model.image_processor(images=[still[0]], return_tensors="pt")
    assert grid.tolist() == image["image_grid_thw"].tolist()
    assert torch.equal(pixels, image["pixel_values"])
    pixels3, grid3 = model.video_patches(frames(3))  # an odd count repeats the last frame
    assert grid3[0, 0] == 2 and pixels3.shape[0] == 2 * pixels.shape[0]


def test_prompts_use_the_family_template_and_name_the_people(bases):
    qwen = load_base(bases["qwen2_5_vl"], SETTINGS)
    for name in ("Ann", "Ben"):
        qwen.add_person(name)
    batch = qwen.encode(frames(), "Is <Ben> left of <Ann>?", answer="Yes.")
    text = qwen.tokenizer.decode(batch["input_ids"][0])
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")
    assert "<Ann> is <Ann#1><Ann#2>. <Ben> is <Ben#1><Ben#2>. Is <Ben> left of <Ann>?<|im_end|>" in text
    supervised = batch["input_ids"][batch["labels"] != -100]
    assert qwen.tokenizer.decode(supervised) == "Yes.<|im_end|>"
    with pytest.raises(InputError, match="unknown person Cy"):
        qwen.encode(frames(), "Is <Cy> here?")
    with pytest.raises(InputError, match="'<\\|video_pad\\|>' is reserved"):
        qwen.encode(frames(), "Is <Ann> <|video_pad|> here?")
    batch = qwen.encode(frames(), "And now?", answer="No.", history=[("Is <Ben> here?", "Yes.")])
    text = qwen.tokenizer.decode(batch["input_ids"][0])
    assert "<|vision_end|><Ben> is <Ben#1><Ben#2>. Is <Ben> here?<|im_end|>\n<|im_start|>assistant\nYes.<|im_end|>\n" \
           "<|im_start|>user\nAnd now?<|im_end|>\n<|im_start|>assistant\nNo.<|im_end|>" in text
    assert qwen.tokenizer.decode(batch["input_ids"][batch["labels"] != -100]) == "No.<|im_end|>"

    qwen3 = load_base(bases["qwen3_vl"], SETTINGS)
    text = qwen3.tokenizer.decode(qwen3.encode(frames(), "Who is here?")["input_ids"][0])
    _, gh, gw = qwen3.video_patches(frames())[1][0].tolist()
    patch = "<|vision_start|>" + "<|video_pad|>" * (gh * gw // 4) + "<|vision_end|>"  # patches merged 2×2
    assert text == f"<|im_start|>user\n<0.5 seconds>{patch}<2.5 seconds>{patch}Who is here?<|im_end|>\n" \
                   "<|im_start|>assistant\n"

    smol = load_base(bases["smolvlm"], SETTINGS)
    smol.add_person("Ann")
    batch = smol.encode(frames(), "Is <Ann> here?", answer="Yes.")
    text = smol.tokenizer.decode(batch["input_ids"][0])
    assert text.startswith("<|im_start|>User: You are provided the following series of four frames from a 0:00:04 "
                           "[H:MM:SS] video.\n\nFrame from 00:00:<fake_token_around_image><global-img><image>")
    assert text.count("<image>") == 4 * 4 and "<Ann> is <Ann#1><Ann#2>. Is <Ann> here?<end_of_utterance>\nAssistant:" in text
    assert smol.tokenizer.decode(batch["input_ids"][batch["labels"] != -100]) == " Yes.<end_of_utterance>"

    llava = load_base(bases["llava_onevision"], SETTINGS)
    batch = llava.encode(frames(), "Who is here?", answer="Nobody.")
    text = llava.tokenizer.decode(batch["input_ids"][0])
    assert text.startswith("<|im_start|>user " + "<video>" * (4 * 2 * 2 + 1) + "\nWho is here?<|im_end|>")
    assert text.endswith("<|im_start|>assistant\nNobody.<|im_end|>")  # the generation prompt, then the answer
    assert llava.tokenizer.decode(batch["input_ids"][batch["labels"] != -100]) == "Nobody.<|im_end|>"

    blip = load_base(bases["instructblipvideo"], SETTINGS)
    blip.add_person("Ann")
    q = blip.hf.config.num_query_tokens
    video = blip.hf.config.video_token_index
    alone = blip.encode(frames(), "Is the man here?")["input_ids"]
    named = blip.encode(frames(), "Is <Ann> here?")["input_ids"]
    assert int((alone == video).sum()) == 4 * q and int((named == video).sum()) == 4 * (q + 2)  # Ann's block in play
    with pytest.raises(InputError, match="one question at a time"):
        blip.encode(frames(), "And now?", history=[("Is <Ann> here?", "Yes.")])


@pytest.mark.parametrize("family", FAMILIES)
def test_learn_pack_ask(bases, family, red_blue_data, tmp_path):
    model = load_base(bases[family], SETTINGS)
    model.add_person("sks")
    from pvchat.model.backbones.learn import learn

    stages = (StageRecipe(stage=1, epochs=1, batch_size=2, lr_subject=1e-2, lr_qformer=1e-2, lr_lora=1e-2),
              StageRecipe(stage=2, epochs=3, batch_size=2, num_frames=4, lr_subject=1e-2, lr_qformer=1e-2,
                          lr_lora=1e-2, train_last_k=1, lr_vision=1e-2))
    metrics = learn(model, red_blue_data / "manifest.jsonl", ["sks"], stages)
    assert metrics["stage2"]["steps"] == 9 and metrics["stage2"]["loss"] < metrics["stage2"]["first_loss"]
    card = model.write_pack(["sks"], tmp_path / "pack", metrics=metrics)
    pack = load_pack(tmp_path / "pack")
    assert card["base"]["family"] == model.family and pack.names == ["sks"]
    # only what personalisation changed: the person's rows, the routers, LoRA, the last vision block, β
    last = {n for b in model._last_vision_blocks(1) for n, _ in b.named_parameters()}
    vision = [k for k in pack.shared if "lora_" not in k and ".head_router." not in k]
    assert vision and len(vision) == len(last) and card["train_last_k"] == 1
    assert all(k.endswith(tuple(last)) for k in vision)
    base_bytes = sum(f.stat().st_size for f in bases[family].glob("*.safetensors"))
    assert 0 < card["size_bytes"] < base_bytes / 2

    fresh = load_base(bases[family], SETTINGS)
    fresh.apply_pack(pack)
    question, clip = "Is <sks> in the video?", frames()
    with torch.no_grad():
        a = model(model.encode(clip, question)).logits
        b = fresh(fresh.encode(clip, question)).logits
    assert torch.allclose(a, b, atol=1e-5)
    assert fresh.answer(clip, question, max_new_tokens=4) == model.answer(clip, question, max_new_tokens=4)


def test_a_pack_for_another_base_is_refused(bases, tmp_path):
    model = load_base(bases["qwen2_5_vl"], SETTINGS)
    model.add_person("Ann")
    model.write_pack(["Ann"], tmp_path / "pack")
    pack = load_pack(tmp_path / "pack")
    other = load_base(bases["qwen2_vl"], SETTINGS)
    with pytest.raises(InputError, match="learned on another base") as e:
        other.apply_pack(pack)
    assert "\n" not in str(e.value)
    changed = load_base(bases["qwen2_5_vl"], {**SETTINGS, "detail_tokens": 3})
    with pytest.raises(InputError, match="detail_tokens differ"):
        changed.apply_pack(pack)


def test_gpu_bench_runs_its_code_path_on_tiny_models(tmp_path, capsys):
    """bench/gpu.py at tiny sizes on the CPU (the GPU run itself is not possible here): it trains a step per family."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("bench_gpu", Path(__file__).parent.parent / "bench" / "gpu.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "gpu.json"
    assert bench.main(["--size", "tiny", "--device", "cpu", "--steps", "1", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["family"] for r in rows] == ["qwen2_5_vl", "instructblipvideo"]
    assert all(r["trainable"] > 0 and r["step_s"] > 0 and np.isfinite(r["loss"]) for r in rows)
    if not torch.cuda.is_available():
        assert bench.main([]) == 0 and "skipped" in capsys.readouterr().out


def test_cli_train_on_a_base(bases, red_blue_data, tmp_path, capsys):
    from pvchat import cli

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("stage1: {epochs: 1, max_steps: 2, lr_subject: 1.0e-2}\n"
                      "stage2: {epochs: 1, max_steps: 2, num_frames: 4, lr_subject: 1.0e-2}\n")
    run = ["train", str(red_blue_data), str(tmp_path / "run"), "--recipe", str(recipe)]
    assert cli.main(run + ["--base", str(bases["smolvlm"])]) == 0
    assert "stage 2: 2 steps" in capsys.readouterr().out
    assert load_pack(tmp_path / "run" / "pack").names == ["sks"]
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert cli.main(run[:2] + [str(tmp_path / "run2"), "--recipe", str(recipe), "--base", str(tmp_path / "bert")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "base family 'bert' is not supported; supported: instructblipvideo" in err[0]


def test_serve_learns_new_people_on_the_base(tmp_path):
    """pvchat serve --base DIR: the web app's enrolments call learn(..., base=DIR)."""
    from types import SimpleNamespace

    from pvchat.web.service import WebService

    calls = []
    api = SimpleNamespace(learn=lambda **kw: calls.append(kw) or {"name": kw["name"]})
    job = SimpleNamespace(reference=tmp_path / "ref.mp4", name="Ann", person=None, cancel=None)
    WebService(tmp_path / "home", api=api, isolate=False, base=tmp_path / "qwen")._learn(job, lambda *a: None)
    WebService(tmp_path / "home", api=api, isolate=False)._learn(job, lambda *a: None)
    assert calls[0]["base"] == str(tmp_path / "qwen") and "base" not in calls[1]
