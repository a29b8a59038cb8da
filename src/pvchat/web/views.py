"""What the page shows, as plain functions of plain data (no Gradio, no model).

Cards come from :func:`pvchat.api.list_people`, jobs from :mod:`pvchat.web.jobs`, head
activations from :meth:`pvchat.api.Chat.head_activation`.
"""

from __future__ import annotations

import datetime as dt
import html
import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from pvchat.web.jobs import STAGES, EnrollJob

STAGE_LABELS = {"analyze": "analyze", "synthesize": "synthesize", "stage1": "stage 1 (image)",
                "stage2": "stage 2 (video)", "pack": "pack"}
LOSS_KEYS = ("loss", "lm")
ROUTER_KEYS = ("sparsity", "spr", "hae")
PEOPLE_COLUMNS = ["name", "learned", "from", "metrics", "size"]


# --- people ---------------------------------------------------------------------------------------


def card_names(card: dict) -> list[str]:
    """The people a pack card is about (``name`` or ``names``)."""
    names = card.get("names") or ([card["name"]] if card.get("name") else [])
    return [str(n) for n in names]


def card_name(card: dict) -> str:
    """The name a pack is listed, chosen and forgotten by."""
    names = card_names(card)
    return str(card.get("name") or (names[0] if names else "?"))


def format_size(num_bytes: int | float | None) -> str:
    """``1536`` → ``"1.5 kB"``."""
    if num_bytes is None:
        return "?"
    size = float(num_bytes)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return "?"  # pragma: no cover


def format_time(value) -> str:
    """A card's ``created`` (epoch seconds or ISO text) as ``YYYY-MM-DD HH:MM``."""
    if value in (None, ""):
        return "?"
    if isinstance(value, (int, float)):
        return dt.datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M")
    text = str(value)
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return text
    return (when.astimezone() if when.tzinfo else when).strftime("%Y-%m-%d %H:%M")


def format_metrics(metrics) -> str:
    """A card's metrics in one line: ``{"stage2": {"loss": 0.51, "step": 40}}`` → ``"stage2 loss 0.51 (40 steps)"``."""
    if not isinstance(metrics, dict):
        return "" if metrics is None else str(metrics)
    parts = []
    for key, value in metrics.items():
        if isinstance(value, dict) and "loss" in value:
            steps = f" ({value['step']} steps)" if "step" in value else ""
            parts.append(f"{key} loss {_number(value['loss'])}{steps}")
        elif isinstance(value, dict):
            parts += [f"{key}.{k} {_number(v)}" for k, v in value.items() if not isinstance(v, (dict, list))]
        elif not isinstance(value, list):
            parts.append(f"{key} {_number(value)}")
    return ", ".join(parts)


def _number(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _reference_name(card: dict) -> str:
    ref = card.get("reference")
    if isinstance(ref, dict):
        ref = ref.get("path") or ref.get("name") or ref.get("video")
    return Path(str(ref)).name if ref else "?"


def people_rows(cards: list[dict]) -> list[list[str]]:
    """One row per pack for the people table (:data:`PEOPLE_COLUMNS`)."""
    return [[card_name(c), format_time(c.get("created")), _reference_name(c), format_metrics(c.get("metrics")),
             format_size(c.get("size_bytes"))] for c in cards]


def card_markdown(card: dict | None) -> str:
    """A pack card as a short markdown description."""
    if not card:
        return "Select a person to see their card."
    lines = [f"### {html.escape(card_name(card))}",
             f"- learned: {format_time(card.get('created'))}",
             f"- from: `{_reference_name(card)}`",
             f"- pack size: {format_size(card.get('size_bytes'))}"]
    if len(card_names(card)) > 1:
        lines.append(f"- people in this pack: {', '.join(card_names(card))}")
    base = card.get("base")
    if isinstance(base, dict):
        lines.append(f"- base: `{base.get('preset', '?')}` (sha256 {str(base.get('sha256', '?'))[:12]}…)")
    if card.get("recipe"):
        lines.append(f"- recipe: `{card['recipe']}`")
    if card.get("learn_seconds") is not None:
        lines.append(f"- learning took: {card['learn_seconds']:.0f} s")
    metrics = format_metrics(card.get("metrics"))
    if metrics:
        lines.append(f"- metrics: {metrics}")
    return "\n".join(lines)


# --- enrolment ------------------------------------------------------------------------------------


def _bar(fraction: float, width: int = 20) -> str:
    filled = int(round(max(0.0, min(1.0, fraction)) * width))
    return "█" * filled + "░" * (width - filled)


def progress_markdown(job: EnrollJob | None, position: int = 0) -> str:
    """Where one enrolment stands: its state, then a bar per stage."""
    if job is None:
        return "No enrolment started in this tab."
    head = {"queued": f"**{job.name}**: queued (number {position} in the queue)",
            "running": f"**{job.name}**: learning, {STAGE_LABELS.get(job.stage or '', job.stage or 'starting')}",
            "done": f"**{job.name}**: learned ✓",
            "failed": f"**{job.name}**: failed ✗",
            "cancelled": f"**{job.name}**: cancelled"}[job.state]
    lines = [head]
    if job.message:
        lines.append(f"> {html.escape(job.message)}")
    lines.append("")
    lines.append("```")
    for stage in STAGES:
        frac = job.stage_fraction.get(stage, 0.0)
        lines.append(f"{STAGE_LABELS[stage]:<17} {_bar(frac)} {frac * 100:5.1f}%")
    lines.append("```")
    if job.started and job.state in ("running", "done", "failed", "cancelled"):
        end = job.finished or dt.datetime.now().timestamp()
        lines.append(f"elapsed: {end - job.started:.0f} s")
    return "\n".join(lines)


def queue_markdown(jobs: list[EnrollJob]) -> str:
    """Every enrolment of this server (all tabs), newest first."""
    if not jobs:
        return "The enrolment queue is empty."
    rows = ["| # | name | state |", "|---|---|---|"]
    for job in reversed(jobs[-20:]):
        rows.append(f"| {job.id} | {html.escape(job.name)} | {job.state} |")
    return "\n".join(rows)


def curves_image(records: list[dict], width: float = 9.0) -> np.ndarray:
    """The training curves so far: loss (left) and routing sparsity, SPR, HAE (right).

    x is the training step counted across both stages (a dashed line where stage 2 starts).
    Returns an (H, W, 3) uint8 RGB image; with no record yet, empty axes.
    """
    fig = Figure(figsize=(width, 3.0))
    axes = fig.subplots(1, 2)
    for ax, keys, title in ((axes[0], LOSS_KEYS, "training loss"), (axes[1], ROUTER_KEYS, "routing (ReMoH)")):
        for key in keys:
            points = [(r["index"], r[key]) for r in records if key in r]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, label=key, lw=1.3, marker="." if len(points) < 30 else None)
        starts = [r["index"] for r in records if r["stage"] == "stage2"]
        if starts and any(r["stage"] == "stage1" for r in records):
            ax.axvline(min(starts) - 0.5, ls="--", c="grey", lw=0.8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step (stage 1, then stage 2)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "waiting for training steps", ha="center", va="center", transform=ax.transAxes,
                    color="grey")
    return _to_array(fig)


def _to_array(fig) -> np.ndarray:
    """Render a matplotlib figure to (H, W, 3) uint8 RGB."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


# --- chat -----------------------------------------------------------------------------------------


def insert_name(question: str, name: str) -> str:
    """Append ``<Name>`` to the question being typed (with a space when needed)."""
    token = name if name.startswith("<") else f"<{name}>"
    question = question or ""
    sep = "" if not question or question.endswith(" ") else " "
    return f"{question}{sep}{token} "


def shown(text: str) -> str:
    """Chat text for the page: ``<Name>`` shows as typed instead of being read as an HTML tag."""
    return html.escape(text or "", quote=False)


def chat_messages(history: list[tuple[str, str]], pending: tuple[str, str] | None = None) -> list[dict]:
    """The chatbot's messages for the finished turns plus one being answered."""
    out = []
    for question, answer in history:
        out.append({"role": "user", "content": shown(question)})
        out.append({"role": "assistant", "content": shown(answer) if answer else "(no answer)"})
    if pending:
        out.append({"role": "user", "content": shown(pending[0])})
        out.append({"role": "assistant", "content": shown(pending[1]) if pending[1] else "…"})
    return out


def frame_gallery(frames) -> list[tuple[np.ndarray, str]]:
    """(T, H, W, 3) frames as gallery items captioned with their number."""
    if frames is None:
        return []
    return [(np.asarray(f), f"frame {i + 1}") for i, f in enumerate(frames)]


# --- inspect --------------------------------------------------------------------------------------


def head_activation_image(activation: dict, title: str = "") -> np.ndarray:
    """Fig. 7 of the paper: activation rate per layer and head with and without the person.

    ``activation`` is :meth:`pvchat.api.Chat.head_activation`'s dict: ``layers`` (labels) and
    ``with`` / ``without`` (one list of per-head rates per layer). Returns an (H, W, 3) uint8
    RGB image: three heatmaps (with, without, difference) sharing their axes.
    """
    with_p = _matrix(activation.get("with"))
    without = _matrix(activation.get("without"))
    if with_p.size == 0 or with_p.shape != without.shape:
        raise ValueError(f"head activation needs two equal non-empty matrices, got {with_p.shape} and {without.shape}")
    layers = [str(x) for x in activation.get("layers", range(with_p.shape[0]))]
    diff = with_p - without
    vmax = max(float(np.nanmax(with_p)), float(np.nanmax(without)), 1e-6)
    dmax = max(float(np.nanmax(np.abs(diff))), 1e-6)
    fig = Figure(figsize=(11, 1.2 + 0.45 * len(layers) + 0.8))
    axes = fig.subplots(1, 3, sharey=True)
    panels = ((with_p, "with the person", "viridis", 0.0, vmax), (without, "without the person", "viridis", 0.0, vmax),
              (diff, "with − without", "RdBu_r", -dmax, dmax))
    for ax, (mat, label, cmap, lo, hi) in zip(axes, panels):
        im = ax.imshow(mat, aspect="auto", cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("head")
        ax.set_xticks(range(mat.shape[1]))
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    axes[0].set_yticks(range(len(layers)))
    axes[0].set_yticklabels(layers)
    axes[0].set_ylabel("layer")
    if title:
        fig.suptitle(title, fontsize=10)
    return _to_array(fig)


def _matrix(rows) -> np.ndarray:
    """Ragged per-layer lists → a (layers, max heads) float array padded with NaN."""
    rows = [np.asarray(r, dtype=float).ravel() for r in (rows or [])]
    if not rows:
        return np.zeros((0, 0))
    width = max(len(r) for r in rows)
    out = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out
