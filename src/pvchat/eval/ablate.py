"""``pvchat ablate``: the paper's ablations, one command per study.

A study is a list of variants; a variant changes the model config and/or which synthesized clips
train the model. For every variant and each of the first N benchmark subjects, a model is trained
from the subject's reference video (analyze and synthesize run once per subject, shared by every
variant and study, under ``OUT/subjects/<name>``) and asked that subject's benchmark questions.
Every step is the learn pipeline's (:mod:`pvchat.learn`): analyze, synthesize, start_model and
train; a variant hands its config change to start_model as config overrides (``configure``) and
builds no model itself.

Studies (paper tables):

- ``attention`` (Table 2): Q-former routing mha / moh / remoh.
- ``losses`` (Table 3): SPR + HAE as in the paper / no SPR / no HAE / neither / the official HAE.
- ``data`` (Table 4): positives only / + hard negatives / all (hard and random negatives).
- ``queries`` (supp. Table 1): subject queries per person N in 0, 4, 8, 12, 16, 20.

Every variant is trained with ``seeds`` seeds (default 3); the table gives each metric's mean over
seeds ± its 95% interval (Student t), the ground-truth scores (look-alikes, clothing, action,
location) beside the paper's, and says which variants differ from the best one by more than the
Welch 95% interval of the difference. Each study writes ``OUT/STUDY/results.md`` (variant ×
metrics, with the training-free face baseline as a reference row), ``results.json`` and
``results.png`` (error bars), atomically; every run's evaluation (answers, report) lies under
``OUT/STUDY/<variant>/<subject>/seed<k>/eval``, and a finished one is reused when the command
runs again.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from matplotlib.figure import Figure
from scipy import stats
from tqdm import tqdm

from pvchat import learn as pipeline
from pvchat.data import read_manifest, write_manifest
from pvchat.errors import InputError
from pvchat.eval.benchmark import load_benchmark
from pvchat.eval.face_baseline import FaceBaseline
from pvchat.eval.runner import evaluate
from pvchat.io import atomic_path, read_json, write_json, write_text
from pvchat.train.stages import recipe_path

ConfigFn = Callable[[Any], None]  # mutates a PVChatConfig
KeepFn = Callable[[Any], bool]  # ClipRecord -> keep it for training?
METRICS = ("Acc", "Acc+", "Acc-", "look-alikes", "clothing", "action", "location", "BLEU", "BS")
Z95 = 1.959963984540054


def _same(cfg) -> None:
    """Leave the config as the preset has it."""


def _every(record) -> bool:
    return True


@dataclass(frozen=True)
class Variant:
    """One row of an ablation table: a name, a config change and a training-clip filter."""

    name: str
    configure: ConfigFn = _same
    keep: KeepFn = _every


def _set(section: str, **values: Any) -> ConfigFn:
    def configure(cfg) -> None:
        part = getattr(cfg, section)
        for k, v in values.items():
            setattr(part, k, v)
        part.__post_init__()  # the config's own validation
    return configure


def _is_random(record) -> bool:
    """A random (not hard) negative: kind ``random``, or a clip the pipeline named ``neg_random_*``."""
    return record.kind == "random" or Path(record.clip).name.startswith("neg_random_")


STUDIES: dict[str, list[Variant]] = {
    "attention": [Variant(m, _set("qformer", routing=m)) for m in ("mha", "moh", "remoh")],
    "losses": [
        Variant("SPR+HAE (paper)", _set("loss", spr="paper", hae="paper")),
        Variant("no SPR", _set("loss", spr="off", hae="paper")),
        Variant("no HAE", _set("loss", spr="paper", hae="off")),
        Variant("neither", _set("loss", spr="off", hae="off")),
        Variant("official HAE", _set("loss", spr="paper", hae="official")),
    ],
    "data": [
        Variant("positives only", keep=lambda r: r.kind == "positive"),
        Variant("+ hard negatives", keep=lambda r: not _is_random(r)),
        Variant("all (+ random negatives)"),
    ],
    "queries": [Variant(f"N={n}", _set("qformer", num_subject_queries=n)) for n in (0, 4, 8, 12, 16, 20)],
}


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_=" else "_" for c in name).strip("_")


# ------------------------------------------------------------------------------- the pieces
def prepare_subject(reference: Path, name: str, out: Path, recipe: str | Path, progress: bool = False) -> Path:
    """The learn pipeline's first stages, once per subject: :func:`pvchat.learn.analyze` of the
    reference into ``out/analysis`` and :func:`pvchat.learn.synthesize` of the training set into
    ``out/data`` (each skipped when done). Returns the manifest path."""
    analysis, data = out / "analysis", out / "data"
    pipeline.analyze([reference], [analysis])
    pipeline.synthesize(analysis, name, data, pipeline.synth_recipe(recipe), verbose=progress,
                        pairs=pipeline.pair_clips(recipe))
    return data / "manifest.jsonl"


def train_variant(variant: Variant, manifest: Path, name: str, run: Path, preset: str, recipe: str | Path,
                  seed: int = 0, analysis: Path | None = None):
    """A model of ``preset`` changed by the variant, trained on the clips it keeps; returns the model.

    The learn pipeline does it: :func:`pvchat.learn.start_model` with the variant's change as config
    overrides (``configure``) and ``seed``, which builds the base in memory, never under a base
    directory: the preset's saved base stays the preset's, and every seed starts from its own
    draw; then :func:`pvchat.learn.train` afresh under ``run``. ``analysis`` (the subject's
    :func:`prepare_subject` analysis) starts the identity key where the preset has one.
    """
    records = [r for r in read_manifest(manifest) if variant.keep(r)]
    if not any(r.people for r in records):
        raise InputError(f"variant {variant.name!r} keeps no clip of {name} out of {manifest}")
    kept = manifest.parent / f"manifest.{_slug(variant.name)}.jsonl"  # beside the clips it names
    write_manifest(kept, records)
    model = pipeline.start_model(None, preset, [name], None if analysis is None else [analysis], seed=seed,
                                 configure=variant.configure)
    if run.exists():
        shutil.rmtree(run)
    pipeline.train(model, kept, run, recipe, [name], resume=False)
    return model


def model_answerer(model, name: str):
    """``answer_fn(video, question, subject)`` over a trained model (greedy, video features cached)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device).eval()
    cache: dict[str, Any] = {}

    def answer(video: str, question: str, subject: str) -> str:
        if video not in cache:
            pixels = model.read_video(video)[1].unsqueeze(0).to(device)
            with torch.no_grad():
                cache.clear()
                cache[video] = model.encode_video(pixels)
        return model.generate([question], vision_features=cache[video], max_new_tokens=48)[0]

    answer.name = name  # type: ignore[attr-defined]
    return answer


def _row(report) -> dict[str, Any]:
    ex, s, t = report.existence, report.summary, report.truth or {}

    def acc(*keys: str) -> float | None:
        d: Any = t
        for k in keys:
            d = (d or {}).get(k)
        return (d or {}).get("accuracy")

    return {"Acc": s.get("Acc"), "Acc+": ex.get("positive_accuracy"), "Acc-": ex.get("negative_accuracy"),
            "look-alikes": acc("existence", "absent_lookalikes"), "clothing": acc("appearance"),
            "action": acc("action"), "location": acc("location"),
            "BLEU": s.get("BLEU"), "BS": s.get("BS"), "n_questions": len(report.rows)}


def interval(values: list[float]) -> tuple[float | None, float | None]:
    """(mean, half-width of its 95% interval: Student t over the values; None with fewer than 2)."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, None
    sd = (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5
    return mean, float(stats.t.ppf(0.975, len(vals) - 1)) * sd / len(vals) ** 0.5


def seed_summary(variant: str, per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """One table row from a variant's per-seed rows (each averaged over subjects): mean and 95% interval."""
    row: dict[str, Any] = {"variant": variant, "seeds": len(per_seed), "per_seed": per_seed}
    for k in METRICS:
        row[k], row[f"{k}_ci"] = interval([r.get(k) for r in per_seed])
    row["n_questions"] = sum(r["n_questions"] for r in per_seed)
    return row


def differences(rows: list[dict[str, Any]], metric: str = "Acc") -> list[dict[str, Any]]:
    """Each trained variant against the best one on ``metric``: the difference of means and its 95%
    interval (Welch, over seeds); ``exceeds`` when the interval leaves out 0."""
    trained = [r for r in rows if r.get("per_seed") and r.get(metric) is not None]
    if len(trained) < 2:
        return []
    best = max(trained, key=lambda r: r[metric])
    out = []
    for r in trained:
        if r is best:
            continue
        a = [x[metric] for x in best["per_seed"] if x.get(metric) is not None]
        b = [x[metric] for x in r["per_seed"] if x.get(metric) is not None]
        diff = sum(a) / len(a) - sum(b) / len(b)
        if len(a) < 2 or len(b) < 2:
            out.append({"best": best["variant"], "variant": r["variant"], "difference": diff, "ci": None,
                        "exceeds": None})
            continue
        va = sum((x - sum(a) / len(a)) ** 2 for x in a) / (len(a) - 1) / len(a)
        vb = sum((x - sum(b) / len(b)) ** 2 for x in b) / (len(b) - 1) / len(b)
        se = (va + vb) ** 0.5
        dof = (va + vb) ** 2 / ((va ** 2 / (len(a) - 1)) + (vb ** 2 / (len(b) - 1))) if se > 0 else 1.0
        half = float(stats.t.ppf(0.975, dof)) * se if se > 0 else 0.0
        out.append({"best": best["variant"], "variant": r["variant"], "difference": diff, "ci": half,
                    "exceeds": abs(diff) > half})
    return out


def _mean_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in METRICS:
        vals = [r[k] for r in rows if r.get(k) is not None]
        out[k] = sum(vals) / len(vals) if vals else None
    out["n_questions"] = sum(r["n_questions"] for r in rows)
    return out


# ------------------------------------------------------------------------------- the outputs
def results_markdown(study: str, rows: list[dict[str, Any]], settings: dict[str, Any]) -> str:
    """The study's table: one row per variant (metrics averaged over subjects), baseline first."""
    def f(v: Any) -> str:
        return "—" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)

    def m(r: dict, k: str) -> str:
        ci = r.get(f"{k}_ci")
        return f(r.get(k)) + (f" ± {ci:.3f}" if isinstance(ci, float) else "")

    head = ["Variant", "Acc ↑", "Acc+ ↑", "Acc− ↑", "look-alikes ↑", "clothing ↑", "action ↑", "location ↑", "BLEU ↑",
            "BS ↑", "questions", "train s"]
    lines = [f"# Ablation: {study}", "",
             f"Preset `{settings['preset']}`, recipe `{settings['recipe']}`, subjects {', '.join(settings['subjects'])}, "
             f"benchmark `{settings['bench']}`.", "",
             "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        lines.append("| " + " | ".join([r["variant"], *(m(r, k) for k in METRICS), f(r["n_questions"]),
                                          f(r.get("train_seconds"))]) + " |")
    diffs = differences(rows)
    if diffs:
        lines += ["", f"Seeds per variant: {rows[-1].get('seeds')}; ± is the 95% interval of the mean over seeds. "
                  "Against the best variant on Acc (Welch 95% interval of the difference):", ""]
        for d in diffs:
            verdict = ("larger than the interval" if d["exceeds"] else "within the interval"
                       if d["exceeds"] is not None else "needs ≥ 2 seeds")
            ci = f" ± {d['ci']:.3f}" if d["ci"] is not None else ""
            lines.append(f"- {d['best']} − {d['variant']}: {d['difference']:+.3f}{ci} ({verdict})")
    lines += ["", "look-alikes, clothing, action, location: scored against the ground truth (ours). "
              "Acc: existence accuracy (Acc+ on clips with the subject, Acc− without); BLEU and BS (BERTScore F1, "
              "packaged MiniLM) over appearance/action/location answers. ES/DC need an LLM judge: not measured. "
              "An answerer that always says no scores Acc = the share of clips without the subject (2/3 on the default "
              "benchmark: Acc+ 0, Acc− 1); Acc+ and Acc− together tell guessing from recognising.", ""]
    return "\n".join(lines)


def plot_results(study: str, rows: list[dict[str, Any]], path: Path) -> Path:
    """A grouped bar chart: Acc, BLEU and BS per variant."""
    metrics = ("Acc", "BLEU", "BS")
    fig = Figure(figsize=(max(5.0, 1.3 * len(rows) + 1.5), 3.6))
    ax = fig.subplots()
    width = 0.8 / len(metrics)
    for k, m in enumerate(metrics):
        xs = [i + (k - (len(metrics) - 1) / 2) * width for i in range(len(rows))]
        errs = [r.get(f"{m}_ci") or 0.0 for r in rows]
        ax.bar(xs, [r.get(m) or 0.0 for r in rows], width, label=m, yerr=errs, capsize=2)
    ax.set_xticks(range(len(rows)), [r["variant"] for r in rows], rotation=20, ha="right", fontsize=8)
    ax.axhline(0.5, ls=":", c="grey", lw=1)
    ax.set_ylim(0, 1.05)
    ax.set_title(f"ablation: {study}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


def write_results(out: Path, study: str, rows: list[dict[str, Any]], settings: dict[str, Any]) -> list[Path]:
    """results.json, results.md and results.png under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", {"study": study, **settings, "rows": rows})
    write_text(out / "results.md", results_markdown(study, rows, settings))
    return [out / "results.json", out / "results.md", plot_results(study, rows, out / "results.png")]


# ------------------------------------------------------------------------------- the study
def run_study(study: str, out: Path, bench: Path, subjects: int = 1, preset: str = "demo",
              recipe: str | Path = "ablate", variants: list[Variant] | None = None, questions: int | None = None,
              progress: bool = True, seeds: int = 3) -> list[dict[str, Any]]:
    """Train and evaluate every variant of ``study`` (or ``variants``) with ``seeds`` seeds each;
    returns the table's rows (mean and 95% interval over seeds)."""
    if study not in STUDIES and variants is None:
        raise InputError(f"unknown study {study!r}; choose one of: {', '.join(STUDIES)}")
    variants = variants if variants is not None else STUDIES[study]
    b = load_benchmark(bench)
    if not 1 <= subjects <= len(b.subjects):
        raise InputError(f"--subjects must be in 1..{len(b.subjects)} for {bench}")
    if seeds < 1:
        raise InputError(f"--seeds must be >= 1, got {seeds}")
    singles = [s for s in b.subjects if s.get("unit", "single") == "single"]
    if not 1 <= subjects <= len(singles):
        raise InputError(f"--subjects must be in 1..{len(singles)} (one-person subjects of {bench})")
    names = [s["name"] for s in singles[:subjects]]
    out = Path(out)
    settings = {"preset": preset, "recipe": str(recipe), "subjects": names, "bench": str(bench),
                "questions_per_subject": questions,  # a finished variant is reused only with the same settings
                "recipe_sha1": hashlib.sha1(recipe_path(recipe).read_bytes()).hexdigest()[:12]}

    manifests = {}
    for name in tqdm(names, desc="analyze + synthesize", unit="subject", disable=not progress):
        manifests[name] = prepare_subject(b.reference(name), name, out / "subjects" / name, recipe)

    base_dir = out / study / "face-baseline"
    face = FaceBaseline.from_benchmark(b, subjects=names)
    per = [_row(evaluate(face, b.root, out=base_dir / n, subjects=[n], limit=questions)) for n in names]
    rows = [{"variant": "face baseline (training-free)", **_mean_rows(per), "train_seconds": None}]

    steps = [(v, n, seed) for v in variants for seed in range(seeds) for n in names]
    bar = tqdm(steps, desc=f"ablate {study}", unit="run", disable=not progress)
    done: dict[tuple[str, int], list[dict[str, Any]]] = {}
    seconds: dict[str, float] = {}
    for variant, name, seed in bar:
        bar.set_postfix_str(f"{variant.name} / {name} / seed {seed}")
        where = out / study / _slug(variant.name) / name / f"seed{seed}"
        if (where / "row.json").is_file() and read_json(where / "row.json").get("settings") == settings:
            row = read_json(where / "row.json")
        else:
            start = time.perf_counter()
            model = train_variant(variant, manifests[name], name, where / "run", preset, recipe, seed=seed,
                                  analysis=out / "subjects" / name / "analysis")
            trained = round(time.perf_counter() - start, 1)
            report = evaluate(model_answerer(model, f"pvchat-{_slug(variant.name)}"), b.root, out=where / "eval",
                              subjects=[name], limit=questions)
            row = {**_row(report), "train_seconds": trained, "settings": settings}
            write_json(where / "row.json", row)
        done.setdefault((variant.name, seed), []).append(row)
        seconds[variant.name] = seconds.get(variant.name, 0.0) + row["train_seconds"]
    for variant in variants:
        per_seed = [_mean_rows(done[(variant.name, seed)]) for seed in range(seeds)]
        rows.append({**seed_summary(variant.name, per_seed), "train_seconds": round(seconds[variant.name], 1)})
    write_results(out / study, study, rows, settings)
    return rows
