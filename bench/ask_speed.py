"""How fast a learned person is asked about: seconds per question and tokens per second, after loading.

    python bench/ask_speed.py PACK VIDEO... [--repeats 3]

PACK is a concept pack (``pvchat demo --preset small`` writes one to ``workspace/demo/pack``), VIDEO
clips to ask about. Through :class:`pvchat.api.Chat`, as ``pvchat ask`` and the web app do, per clip:

* the first question (the clip read, its frames encoded, then the answer) and the next ones
  (features cached);
* generated tokens per second of those answers;
* the baseline, in the same process: the same LLM (SmolLM2 with the pack's LoRA) generating the
  same number of tokens from the text prompt alone, no video, so the ratio is what the visual tokens,
  the Q-former and the readout add per question;
* all the clips' questions answered together (``PVChat.generate``, one left-padded batch, what the
  demo and the self-captioning do) against the same questions one by one (``PVChat.stream``), both
  on cached features in this process: seconds, the speed-up, and how many answers are the same.

Writes bench/results/ask_speed.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
QUESTIONS = ("Is <{n}> in this video?", "What is <{n}> wearing?", "What is <{n}> doing?")


def main() -> None:
    import torch

    from pvchat.api import Chat
    from pvchat.model.pvchat import greedy_tokens

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pack", type=Path)
    ap.add_argument("videos", type=Path, nargs="+")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    t = time.perf_counter()
    chat = Chat([str(args.pack)])
    load_s = time.perf_counter() - t
    name = chat.people[0]
    model, tok = chat.model, chat.model.tokenizer
    first, later, rates, base_rates = [], [], [], []
    for video in args.videos:
        chat._features.clear()  # the first question reads and encodes the clip
        for i, q in enumerate(QUESTIONS):
            question = q.format(n=name)
            t = time.perf_counter()
            answer = chat.ask(video, question).text
            s = time.perf_counter() - t
            (first if i == 0 else later).append(s)
            n = len(tok(answer, add_special_tokens=False)["input_ids"]) + 1  # + the end token
            if i > 0:
                rates.append(n / s)
            # the baseline: the LLM alone, the question as text, the same number of tokens
            ids = tok.apply_chat_template([{"role": "user", "content": question.replace(f"<{name}>", name)}],
                                          add_generation_prompt=True, return_tensors="pt")
            ids = ids["input_ids"] if not torch.is_tensor(ids) else ids
            embeds = model.llm.get_input_embeddings()(ids)
            best = float("inf")
            for _ in range(args.repeats):
                t = time.perf_counter()
                got = sum(1 for _ in greedy_tokens(model.llm, embeds, torch.ones_like(ids), -1, n))
                best = min(best, time.perf_counter() - t)
            base_rates.append(got / best)
    out = {"load_s": round(load_s, 2), "threads": torch.get_num_threads(), "clips": len(args.videos),
           "first_question_s": round(statistics.median(first), 2),
           "later_question_s": round(statistics.median(later), 2),
           "tokens_per_s": round(statistics.median(rates), 1),
           "llm_alone_tokens_per_s": round(statistics.median(base_rates), 1)}
    out["ratio_vs_llm_alone"] = round(out["tokens_per_s"] / out["llm_alone_tokens_per_s"], 3)
    # every question about every clip: one by one, then all in one batch
    questions = [q.format(n=name) for _ in args.videos for q in QUESTIONS]
    feats = torch.cat([chat._video(v)[1] for v in args.videos for _ in QUESTIONS])
    t = time.perf_counter()
    alone = [([""] + list(model.stream(q, feats[i : i + 1], max_new_tokens=chat.max_new_tokens)))[-1]
             for i, q in enumerate(questions)]
    one_by_one = time.perf_counter() - t
    t = time.perf_counter()
    together = model.generate(questions, vision_features=feats, max_new_tokens=chat.max_new_tokens)
    batched = time.perf_counter() - t
    out.update({"questions": len(questions), "one_by_one_s": round(one_by_one, 2), "together_s": round(batched, 2),
                "together_speedup": round(one_by_one / batched, 2),
                "same_answers": sum(a == b for a, b in zip(alone, together)) / len(questions)})
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ask_speed.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
