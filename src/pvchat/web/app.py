"""The Gradio page: four tabs (Enroll, People, Chat, Inspect), one builder function each.

Every event handler is a module-level function whose first argument is the
:class:`~pvchat.web.service.WebService`; :func:`build_app` binds it. Handlers never raise: a
:class:`~pvchat.errors.PVChatError` becomes the tab's status line, anything else is logged and
shown as an internal error, so one bad upload or question leaves the session (and everyone
else's) working. A timer polls the enrolment queue and refreshes progress, curves and the
people lists of every tab.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd

from pvchat.errors import PVChatError
from pvchat.web.jobs import STAGES
from pvchat.web.service import MAX_PEOPLE_PER_CHAT, WebService
from pvchat.web.views import (
    PEOPLE_COLUMNS,
    card_markdown,
    card_name,
    chat_messages,
    curves_image,
    frame_gallery,
    head_activation_image,
    insert_name,
    people_rows,
    progress_markdown,
    queue_markdown,
)

log = logging.getLogger(__name__)

# Questions (and head activations) answered at once, across all tabs; a Chat answers one at a time
# itself, so this lets two tabs asking about different people proceed together. Enrolment runs in
# its own worker and never takes one of these slots.
CHAT_CONCURRENCY = 2

HEADER = """# pvchat
Learn a person from **one reference video**, then ask about them in other videos:
*Is &lt;Name&gt; in this video? What is &lt;Name&gt; doing? Where is &lt;A&gt; relative to &lt;B&gt;?*"""


def error_text(e: BaseException) -> str:
    """The status line for a failed action."""
    if isinstance(e, PVChatError):
        return f"⚠ {html.escape(str(e))}"
    log.exception("internal error in the web app", exc_info=e)
    return f"⚠ internal error ({type(e).__name__}): {html.escape(str(e))}; see the server log"


def ok_text(text: str) -> str:
    return f"✓ {text}"


def _file(path) -> str | None:
    """An image shown by its file (not re-encoded), so that Gradio's copy has the file's bytes and
    forgetting the person finds and removes it (:meth:`WebService.forget`)."""
    return str(path) if path and Path(path).is_file() else None


def removed_summary(removed: list, home: Path) -> str:
    """What a forget removed, in words: ``"pack and training data, uploaded video, 3 page copies"``."""
    parts = {"people": "learned data (analysis, synthesized data, runs, pack)", "uploads": "uploaded reference video",
             "found": "faces found in the upload", "gradio": "copies the page showed"}
    counts: dict[str, int] = {}
    for path in removed:
        try:
            rel = Path(path).resolve().relative_to(Path(home).resolve()).parts
        except ValueError:
            rel = ()
        kind = ("gradio" if rel[1:2] == ("gradio",) else "uploads" if rel[1:2] == ("uploads",) else "found") \
            if rel[:1] == (".web",) else "people"
        counts[kind] = counts.get(kind, 0) + 1
    return ", ".join(f"{parts[k]}" + (f" ({n})" if k == "gradio" else "") for k, n in counts.items())


# --- Enroll ---------------------------------------------------------------------------------------


def on_reference(service: WebService, upload):
    """A reference video was uploaded: check it, find the people, offer a choice.

    A bad upload is cleared from the player (so another can be dropped in) and explained.
    """
    if not upload:
        return None, 0, None, [], gr.update(choices=[], value=None, visible=False), "", gr.skip()
    try:
        found = service.find_people(upload)
    except Exception as e:
        return None, 0, None, [], gr.update(choices=[], value=None, visible=False), error_text(e), None
    people = found["people"]
    choices = [(f"person {p['index'] + 1} ({p.get('num_faces', '?')} faces)", p["index"]) for p in people]
    faces = [(_file(p.get("best_face")), f"person {p['index'] + 1}") for p in people if _file(p.get("best_face"))]
    msg = (f"One person found in {Path(upload).name}: give them a name and press Learn." if len(people) == 1 else
           f"{len(people)} people found in {Path(upload).name}: pick one, give them a name and press Learn.")
    radio = gr.update(choices=choices, value=people[0]["index"] if len(people) == 1 else None, visible=True)
    return (str(found["reference"]), len(people), _file(found.get("contact_sheet")), faces, radio, ok_text(msg),
            str(found["reference"]))  # the player shows pvchat's kept copy: Gradio's upload is deleted


def on_learn(service: WebService, reference, name, person, num_found, job_id):
    """Queue an enrolment; the page then follows it through the timer."""
    try:
        job = service.enroll(reference, name, person, int(num_found or 0))
    except Exception as e:
        return job_id, error_text(e)
    position = service.queue.position(job.id)
    where = "starting now" if position <= 1 else f"number {position} in the queue"
    return job.id, ok_text(f"learning {job.name} ({where}); you can keep using the other tabs.")


def on_cancel(service: WebService, job_id):
    """Cancel this tab's enrolment."""
    job = service.queue.cancel(job_id) if job_id else None
    if job is None:
        return "Nothing to cancel."
    return ok_text(f"{job.name}: {job.message or job.state}")


def enrolment_view(service: WebService, job_id, seen):
    """What the timer shows of this tab's enrolment: progress, queue and (when new) the curves."""
    job = service.queue.snapshot(job_id)
    position = service.queue.position(job_id) if job_id else 0
    signature = (job.id, job.state, len(job.records)) if job else None
    plot = gr.skip() if signature == seen else curves_image(job.records if job else [])
    return progress_markdown(job, position), queue_markdown(service.queue.jobs()), plot, signature


@dataclass
class EnrollTab:
    job_id: gr.State
    curves_seen: gr.State
    progress: gr.Markdown
    queue: gr.Markdown
    curves: gr.Image


def enroll_tab(service: WebService) -> EnrollTab:
    """Upload a reference video, pick the person, name them, learn; follow the stages and curves."""
    reference, num_found = gr.State(None), gr.State(0)
    job_id, curves_seen = gr.State(None), gr.State(None)
    with gr.Row():
        with gr.Column(scale=1):
            video = gr.Video(label="Reference video (one person, face visible)", sources=["upload"],
                             elem_id="enroll-video")
            status = gr.Markdown(elem_id="enroll-status")
            person = gr.Radio(label="Who to learn", choices=[], visible=False, elem_id="enroll-person")
            name = gr.Textbox(label="Name", placeholder="a letter, then letters, digits, _ or - (e.g. Alex)",
                              max_lines=1, elem_id="enroll-name")
            with gr.Row():
                learn = gr.Button("Learn", variant="primary", elem_id="enroll-learn")
                cancel = gr.Button("Cancel", variant="stop", elem_id="enroll-cancel")
        with gr.Column(scale=1):
            sheet = gr.Image(label="People found", interactive=False, elem_id="enroll-sheet")
            faces = gr.Gallery(label="Best face per person", columns=4, height=160, object_fit="contain",
                               elem_id="enroll-faces")
    with gr.Row():
        with gr.Column(scale=1):
            progress = gr.Markdown(progress_markdown(None), elem_id="enroll-progress")
            queue = gr.Markdown(elem_id="enroll-queue")
        with gr.Column(scale=2):
            plot = gr.Image(curves_image([]), label="Training curves", interactive=False, elem_id="enroll-curves")
    video.upload(lambda v: on_reference(service, v), video,
                 [reference, num_found, sheet, faces, person, status, video],
                 concurrency_limit=1, concurrency_id="find-people")
    video.clear(lambda: (None, 0, None, [], gr.update(choices=[], value=None, visible=False), ""), None,
                [reference, num_found, sheet, faces, person, status], queue=False)
    learn.click(lambda r, n, p, k, j: on_learn(service, r, n, p, k, j), [reference, name, person, num_found, job_id],
                [job_id, status], concurrency_limit=None)
    cancel.click(lambda j: on_cancel(service, j), job_id, status, concurrency_limit=None)
    return EnrollTab(job_id, curves_seen, progress, queue, plot)


# --- People ---------------------------------------------------------------------------------------


def people_view(service: WebService, selected=None):
    """The people table, the chooser of the People tab and the Chat tab's people choices."""
    cards = service.people()
    names = [card_name(c) for c in cards]
    keep = selected if selected in names else None
    table = pd.DataFrame(people_rows(cards), columns=PEOPLE_COLUMNS)
    return (table, gr.update(choices=names, value=keep), card_markdown(service.card(keep) if keep else None),
            gr.update(choices=names))


def on_forget_ask(service: WebService, name):
    """First step of forgetting: show the confirmation row."""
    if not name:
        return gr.update(visible=False), "", "⚠ select a person to forget"
    return gr.update(visible=True), f"**Forget {html.escape(name)}?** Their concept pack is deleted from disk.", ""


def on_forget(service: WebService, name):
    """Second step: delete the pack, hide the confirmation."""
    try:
        removed = service.forget(name)
    except Exception as e:
        return gr.update(visible=False), error_text(e)
    what = removed_summary(removed, service.home)
    return gr.update(visible=False), ok_text(f"forgot {html.escape(name)} ({len(removed)} paths removed: "
                                             f"{html.escape(what)})")


@dataclass
class PeopleTab:
    table: gr.Dataframe
    select: gr.Dropdown
    card: gr.Markdown
    refresh: gr.Button
    status: gr.Markdown


def people_tab(service: WebService) -> PeopleTab:
    """Enrolled people with their cards; forget one after a confirmation."""
    table = gr.Dataframe(headers=PEOPLE_COLUMNS, interactive=False, label="Enrolled people", elem_id="people-table")
    with gr.Row():
        select = gr.Dropdown(label="Person", choices=[], value=None, elem_id="people-select")
        refresh = gr.Button("Refresh", elem_id="people-refresh")
        forget = gr.Button("Forget…", variant="stop", elem_id="people-forget")
    with gr.Row(visible=False) as confirm:
        question = gr.Markdown(elem_id="people-confirm")
        yes = gr.Button("Yes, forget", variant="stop", elem_id="people-forget-yes")
        no = gr.Button("Keep", elem_id="people-forget-no")
    status = gr.Markdown(elem_id="people-status")
    card = gr.Markdown(card_markdown(None), elem_id="people-card")
    select.change(lambda n: card_markdown(service.card(n)), select, card, concurrency_limit=None)
    forget.click(lambda n: on_forget_ask(service, n), select, [confirm, question, status], queue=False)
    no.click(lambda: (gr.update(visible=False), ""), None, [confirm, status], queue=False)
    yes.click(lambda n: on_forget(service, n), select, [confirm, status], concurrency_limit=None)
    return PeopleTab(table, select, card, refresh, status)


# --- Chat -----------------------------------------------------------------------------------------


def on_query_upload(service: WebService, upload):
    """A query video was uploaded: check and keep it; a new video starts a new conversation.

    A bad upload is cleared from the player and explained.
    """
    try:
        kept = service.query_video(upload)
    except Exception as e:
        return None, gr.skip(), [], [], [], error_text(e), None
    return (str(kept), gr.update(choices=recent_choices(service), value=str(kept)), [], [], [],
            ok_text(f"{Path(upload).name}: ready; ask away."), str(kept))  # Gradio's upload copy is deleted


def on_pick(service: WebService, choice):
    """A recent video was picked: show it; a new video starts a new conversation."""
    if not choice:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), ""
    return choice, choice, [], [], [], ok_text(f"{Path(choice).name}: ready; ask away.")


def recent_choices(service: WebService) -> list[tuple[str, str]]:
    return [(f"{p.name} ({p.parent.name[:6]})", str(p)) for p in service.recent_videos()]


def on_people(people):
    """The chosen people changed: one name button each, and a new conversation."""
    people = list(people or [])
    buttons = [gr.update(value=f"<{people[i]}>", visible=True) if i < len(people) else gr.update(visible=False)
               for i in range(MAX_PEOPLE_PER_CHAT)]
    warn = (f"⚠ choose at most {MAX_PEOPLE_PER_CHAT} people" if len(people) > MAX_PEOPLE_PER_CHAT else "")
    return (*buttons, [], [], warn)


def on_ask(service: WebService, video, people, question, history):
    """Stream the answer into the chat; then show the frames the model saw."""
    history = [tuple(t) for t in (history or [])]
    question = (question or "").strip()
    if not video:
        yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), "⚠ upload or pick a video first"
        return
    partial = ""
    try:
        service.check_question(list(people or []), question)
        yield chat_messages(history, (question, "")), "", gr.skip(), gr.skip(), gr.skip(), "thinking…"
        for partial in service.stream(Path(video), list(people), question, history):
            yield chat_messages(history, (question, partial)), gr.skip(), gr.skip(), gr.skip(), gr.skip(), "…"
        frames = service.frames_seen(Path(video), list(people))
    except Exception as e:
        yield chat_messages(history), question, gr.skip(), gr.skip(), gr.skip(), error_text(e)
        return
    history = history + [(question, partial)]
    last = {"video": str(video), "people": list(people), "question": question, "answer": partial}
    yield chat_messages(history), gr.skip(), history, frame_gallery(frames), last, ""


@dataclass
class ChatTab:
    people: gr.CheckboxGroup
    recent: gr.Dropdown
    last: gr.State


def chat_tab(service: WebService) -> ChatTab:
    """Upload or pick a video, choose people, ask with <Name> buttons; answers stream in."""
    video_path, history, last = gr.State(None), gr.State([]), gr.State(None)
    with gr.Row():
        with gr.Column(scale=1):
            video = gr.Video(label="Query video", sources=["upload"], elem_id="chat-video")
            recent = gr.Dropdown(label="…or pick a recent video", choices=[], value=None, elem_id="chat-recent")
            frames = gr.Gallery(label="Frames the model saw", columns=4, height=200, object_fit="contain",
                                elem_id="chat-frames")
        with gr.Column(scale=1):
            people = gr.CheckboxGroup(label=f"People (1 to {MAX_PEOPLE_PER_CHAT})", choices=[],
                                      elem_id="chat-people")
            with gr.Row():
                names = [gr.Button(visible=False, size="sm", elem_id=f"chat-name-{i}")
                         for i in range(MAX_PEOPLE_PER_CHAT)]
            log_ = gr.Chatbot(label="Conversation", height=320, elem_id="chat-log")
            question = gr.Textbox(label="Question", placeholder="Is <Name> in this video?", max_lines=2,
                                  elem_id="chat-question")
            with gr.Row():
                ask = gr.Button("Ask", variant="primary", elem_id="chat-ask")
                clear = gr.Button("New conversation", elem_id="chat-clear")
            status = gr.Markdown(elem_id="chat-status")
    reset = [log_, history, frames]
    video.upload(lambda v: on_query_upload(service, v), video, [video_path, recent, *reset, status, video],
                 concurrency_limit=None)
    video.clear(lambda: (None, [], [], [], ""), None, [video_path, *reset, status], queue=False)
    recent.input(lambda c: on_pick(service, c), recent, [video_path, video, *reset, status], queue=False)
    people.change(on_people, people, [*names, log_, history, status], queue=False)
    for button in names:
        button.click(insert_name, [question, button], question, queue=False)
    clear.click(lambda: ([], [], [], ""), None, [*reset, status], queue=False)
    ask_inputs = [video_path, people, question, history]
    ask_outputs = [log_, question, history, frames, last, status]
    for trigger in (ask.click, question.submit):
        trigger(lambda v, p, q, h: (yield from on_ask(service, v, p, q, h)), ask_inputs, ask_outputs,
                concurrency_limit=CHAT_CONCURRENCY, concurrency_id="chat")
    return ChatTab(people, recent, last)


# --- Inspect --------------------------------------------------------------------------------------


def on_inspect(service: WebService, last):
    """Head activation with and without the person for the last answer (paper Fig. 7)."""
    if not last:
        return None, "⚠ ask a question in the Chat tab first"
    try:
        activation = service.head_activation(Path(last["video"]), last["people"], last["question"])
        image = head_activation_image(activation, title=last["question"])
    except Exception as e:
        return None, error_text(e)
    answer = html.escape(last["answer"]) if last["answer"] else "(no answer)"
    return image, ok_text(f"for “{html.escape(last['question'])}” → “{answer}”")


def inspect_tab(service: WebService, last: gr.State) -> None:
    """The ReMoH heads' activation rates for the last answer, with vs without the person."""
    gr.Markdown("How often each attention head of the ReMoH layers fires for the last question, with the "
                "person's tokens in play and without them (paper Fig. 7). Heads that light up only "
                "with the person are the ones that learned them.")
    run = gr.Button("Show head activation for the last answer", elem_id="inspect-run")
    status = gr.Markdown(elem_id="inspect-status")
    image = gr.Image(label="Head activation", interactive=False, elem_id="inspect-image")
    run.click(lambda s: on_inspect(service, s), last, [image, status], concurrency_limit=CHAT_CONCURRENCY,
              concurrency_id="chat")


# --- the page -------------------------------------------------------------------------------------


def build_app(service: WebService, poll_seconds: float = 1.0) -> gr.Blocks:
    """The whole page over ``service``."""
    with gr.Blocks(title="pvchat", analytics_enabled=False) as app:
        gr.Markdown(HEADER)
        people_seen = gr.State(-1)
        with gr.Tabs():
            with gr.Tab("Enroll", id="enroll", elem_id="tab-enroll"):
                enroll = enroll_tab(service)
            with gr.Tab("People", id="people", elem_id="tab-people"):
                people = people_tab(service)
            with gr.Tab("Chat", id="chat", elem_id="tab-chat"):
                chat = chat_tab(service)
            with gr.Tab("Inspect", id="inspect", elem_id="tab-inspect"):
                inspect_tab(service, chat.last)
        gr.Markdown(f"Stages: {', '.join(STAGES)} · home `{html.escape(str(service.home))}` · "
                    f"preset `{service.preset}` · uploads ≤ {service.limits.max_mb:g} MB, "
                    f"≤ {service.limits.max_seconds:g} s")

        people_outputs = [people.table, people.select, people.card, chat.people]

        def refresh_people(selected):
            return (*people_view(service, selected), service.people_version)

        def poll(job_id, seen_curves, seen_people, selected):
            progress = enrolment_view(service, job_id, seen_curves)
            if seen_people == service.people_version:
                return (*progress, *[gr.skip()] * len(people_outputs), seen_people)
            return (*progress, *refresh_people(selected))

        enroll_outputs = [enroll.progress, enroll.queue, enroll.curves, enroll.curves_seen]
        timer = gr.Timer(poll_seconds)
        timer.tick(poll, [enroll.job_id, enroll.curves_seen, people_seen, people.select],
                   [*enroll_outputs, *people_outputs, people_seen], show_progress="hidden", concurrency_limit=None)
        people.refresh.click(refresh_people, people.select, [*people_outputs, people_seen], concurrency_limit=None)
        app.load(lambda s: (*refresh_people(s), gr.update(choices=recent_choices(service))), people.select,
                 [*people_outputs, people_seen, chat.recent])
    return app
