"""Question–answer pairs for personalized video chat (PVChat §3.2, supp. Tables 2–6, Fig. 6).

- :mod:`templates`: the paper's existence and descriptive templates, as JSON data.
- :mod:`facts`: what is true about a clip (:class:`ClipFacts`), the input of everything here.
- :mod:`captioners`: generic answers (``facts``, ``rules``, ``vlm``, ``openai``).
- :mod:`rewrite`: generic person words → ``<Name>`` (``rules``, ``llm``).
- :mod:`generate`: :func:`make_qa` and the count recipes.
- :mod:`measure`: the ``rules`` scene describer (numbers → words).
- :mod:`worldfacts`: the offline world's ground truth (``clips.jsonl``) → :class:`ClipFacts`.
"""

from pvchat.qa.captioners import CAPTIONERS, CaptionRequest, make_captioner
from pvchat.qa.facts import ClipFacts, PersonFacts, PersonMeasurements, Relation, clip_from_dict, clip_to_dict
from pvchat.qa.generate import (
    RECIPES,
    QAPair,
    QARecipe,
    get_recipe,
    make_qa,
    qa_for_clips,
    qa_from_record,
    qa_to_records,
)
from pvchat.qa.rewrite import REWRITERS, make_rewriter
from pvchat.qa.worldfacts import facts_from_world_record

__all__ = [
    "CAPTIONERS", "CaptionRequest", "ClipFacts", "PersonFacts", "PersonMeasurements", "QAPair", "QARecipe",
    "RECIPES", "REWRITERS", "Relation", "clip_from_dict", "clip_to_dict", "facts_from_world_record", "get_recipe", "make_captioner",
    "make_qa", "make_rewriter", "qa_for_clips", "qa_from_record", "qa_to_records",
]
