"""``pvchat ablate``: the paper's ablation studies on the benchmark."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

from pvchat.choices import PRESETS, STUDIES, train_recipes
from pvchat.commands import OneOf
from pvchat.errors import InputError


def ablate(study: Annotated[str, OneOf(STUDIES)], *, out: Path, bench: Path = Path("workspace/bench"),
           subjects: int = 1, preset: Annotated[str, OneOf(PRESETS)] = "demo",
           recipe: Annotated[str, OneOf(train_recipes(), "a YAML path")] = "ablate",
           questions: int | None = None, seeds: int = 3) -> int:
    """Run one of the paper's ablation studies: train each variant, evaluate it, tabulate.

    Studies: attention (Q-former routing mha / moh / remoh, Table 2), losses (SPR/HAE on and off,
    official HAE, Table 3), data (positives only / + hard negatives / all, Table 4), queries
    (subject queries N = 0..20, supp. Table 1). Each variant is trained for each of the first
    SUBJECTS benchmark subjects from its reference video (analyze + synthesize once per subject,
    under OUT/subjects) and asked that subject's questions. Writes OUT/STUDY/results.md,
    results.json and results.png, with the training-free face baseline as a reference row.

    Args:
        study: the ablation study.
        out: Output directory (shared by studies: the synthesized data is reused).
        bench: Benchmark directory (built there from the default recipe when missing).
        subjects: How many benchmark subjects (the first ones).
        preset: Model preset (tiny or demo; demo trains the whole small LLM).
        recipe: Training recipe (default ablate: tiny data, few steps).
        questions: Ask only the first QUESTIONS questions per subject (smoke runs).
        seeds: Seeds per variant; the table gives mean ± the 95 per cent interval over them and says which
            differences from the best variant are larger than the interval.
    """
    # lazy, so that `pvchat --help` stays fast: torch, transformers, dlib (training and evaluation)
    from pvchat.eval.ablate import STUDIES as studies, results_markdown, run_study
    from pvchat.eval.benchmark import ensure_benchmark
    from pvchat.io import read_json
    from pvchat.model.presets import get_preset
    from pvchat.train.stages import recipe_path

    if study not in studies:
        raise InputError(f"unknown study {study!r}; choose one of: {', '.join(studies)}")
    get_preset(preset)
    recipe_path(recipe)
    bench = ensure_benchmark(Path(bench), progress=sys.stderr.isatty(), announce=lambda m: print(m, flush=True))
    rows = run_study(study, Path(out), bench, subjects=subjects, preset=preset, recipe=recipe, questions=questions,
                     progress=True, seeds=seeds)
    print(results_markdown(study, rows, read_json(Path(out) / study / "results.json")))
    print(f"-> {Path(out) / study / 'results.md'}")
    return 0
