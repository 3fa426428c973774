"""A generated emotion data set, so the demo and the tests run with no network.

Sentences mix an emotion cue (from a small lexicon per emotion) with neutral context,
sometimes a cue of a second emotion, and some label noise: a real model has to learn
which cue dominates, and reaches well above chance but not 100 %.
"""

from __future__ import annotations

import random

LEXICON: dict[str, list[str]] = {
    "sadness": ["miserable", "heartbroken", "lonely", "gloomy", "hopeless", "devastated", "down", "crushed", "empty", "tearful"],
    "joy": ["thrilled", "delighted", "cheerful", "happy", "glad", "overjoyed", "ecstatic", "content", "pleased", "elated"],
    "love": ["adored", "cherished", "affectionate", "devoted", "tender", "passionate", "fond", "romantic", "loving", "caring"],
    "anger": ["furious", "irritated", "enraged", "annoyed", "outraged", "livid", "bitter", "resentful", "hostile", "fuming"],
    "fear": ["terrified", "anxious", "scared", "nervous", "frightened", "panicked", "uneasy", "worried", "alarmed", "afraid"],
    "surprise": ["amazed", "astonished", "shocked", "stunned", "startled", "speechless", "dazed", "bewildered", "astounded", "awestruck"],
}
# Roughly the class balance of the real tweet-emotion data (joy and sadness dominate).
WEIGHTS = {"sadness": 0.29, "joy": 0.33, "love": 0.08, "anger": 0.14, "fear": 0.12, "surprise": 0.04}

OPENERS = ["i feel", "i am feeling", "today i felt", "honestly i feel", "i have been feeling", "right now i feel", "i just feel", "lately i feel so"]
CONTEXTS = [
    "about my new job", "after talking to my sister", "when i think about the weekend", "since the exam results came out",
    "because of the weather", "about how the meeting went", "after reading the news", "about moving to a new city",
    "when my phone rang", "about the trip tomorrow", "after the long drive home", "about the game last night",
    "", "", "",
]
HEDGES = ["a little", "kind of", "really", "so", "very", "quite", "", "", ""]


def emotion_rows(rows: int, seed: int = 0, label_noise: float = 0.08, mix: float = 0.25) -> list[dict[str, str]]:
    """``rows`` examples of ``{"text", "label"}`` with label names from LEXICON."""
    rng = random.Random(seed)
    names = list(LEXICON)
    weights = [WEIGHTS[n] for n in names]
    out = []
    for _ in range(rows):
        label = rng.choices(names, weights)[0]
        words = [rng.choice(OPENERS), rng.choice(HEDGES), rng.choice(LEXICON[label])]
        if rng.random() < mix:  # a weaker second cue: "... but also a bit X"
            other = rng.choice([n for n in names if n != label])
            words += ["but also a bit", rng.choice(LEXICON[other])]
        words.append(rng.choice(CONTEXTS))
        if rng.random() < label_noise:
            label = rng.choice(names)
        out.append({"text": " ".join(w for w in words if w), "label": label})
    return out
