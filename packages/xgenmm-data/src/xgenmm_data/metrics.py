"""Answer normalisation and scores for local evaluation (used by xgenmm-eval and xgenmm-train).

`normalize_answer` follows the steps of the official VQAv2 evaluation script: newlines/tabs to spaces,
punctuation handling (a period is only removed when it is not a decimal point; commas between digits are
dropped), lower-casing, number words -> digits, articles removed, common contractions restored
("dont" -> "don't").

`vqa_accuracy(pred, answers)`: the official metric averages, over the 10 leave-one-annotator-out subsets of
the ground-truth answers, min(#matches in the subset / 3, 1). With fewer or more than 10 answers the same
leave-one-out average is taken over the given answers; with a single answer it is exact match.
"""

from __future__ import annotations

import re

_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hes": "he's", "howd": "how'd", "howll": "how'll", "hows": "how's",
    "Im": "I'm", "im": "i'm", "ive": "i've", "isnt": "isn't", "itd": "it'd", "itll": "it'll", "its": "it's",
    "lets": "let's", "mightnt": "mightn't", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "shant": "shan't", "shed": "she'd", "shes": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "thats": "that's", "thered": "there'd", "theres": "there's", "theyd": "they'd",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "wasnt": "wasn't", "wed": "we'd",
    "weve": "we've", "werent": "weren't", "whats": "what's", "whered": "where'd", "wheres": "where's",
    "whos": "who's", "whove": "who've", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "yall": "y'all", "youd": "you'd", "youll": "you'll", "youre": "you're", "youve": "you've",
}  # fmt: skip
_NUMBERS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
_ARTICLES = {"a", "an", "the"}
_PUNCT = [
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
]
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")


def _process_punctuation(text: str) -> str:
    out = text
    for p in _PUNCT:
        if (p + " " in text or " " + p in text) or re.search(_COMMA_STRIP, text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out)


def _process_digits_articles(text: str) -> str:
    words = []
    for w in text.lower().split():
        w = _NUMBERS.get(w, w)
        if w not in _ARTICLES:
            words.append(_CONTRACTIONS.get(w, w))
    return " ".join(words)


def normalize_answer(text: str) -> str:
    """VQAv2-style normalisation: "Two dogs." -> "2 dogs", "The Red one" -> "red 1", "dont" -> "don't"."""
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return _process_digits_articles(_process_punctuation(text))


def exact_match(pred: str, answers) -> float:
    """1.0 if the normalised prediction equals any normalised answer (a string or a list of strings)."""
    answers = [answers] if isinstance(answers, str) else list(answers)
    p = normalize_answer(pred)
    return float(any(p == normalize_answer(a) for a in answers))


def vqa_accuracy(pred: str, answers) -> float:
    """VQAv2 accuracy: mean over leave-one-out subsets of min(#matching answers / 3, 1)."""
    answers = [answers] if isinstance(answers, str) else list(answers)
    if not answers:
        raise ValueError("vqa_accuracy needs at least one ground-truth answer")
    p = normalize_answer(pred)
    gts = [normalize_answer(a) for a in answers]
    if len(gts) == 1:
        return float(p == gts[0])
    scores = []
    for k in range(len(gts)):
        matches = sum(g == p for j, g in enumerate(gts) if j != k)
        scores.append(min(matches / 3.0, 1.0))
    return sum(scores) / len(scores)


_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def extract_choice(pred: str, options) -> str | None:
    """The option letter a free-form answer picks, or None.

    `options`: a list of option texts (letters A, B, ... in order) or a dict letter -> text. Tries, in order:
    a lone letter ("B", "(B)", "B.", "Answer: B", "B) cat"), then an option text contained in the answer
    (longest first, only if exactly one matches).
    """
    opts = dict(options) if isinstance(options, dict) else {_LETTERS[i]: o for i, o in enumerate(options)}
    letters = "".join(opts)
    text = pred.strip()
    patterns = [
        rf"^\(?([{letters}])\)?(?:[.:)\s]|$)",
        rf"(?:answer|option|choice)\s*(?:is|:)?\s*\(?([{letters}])\)?(?:[.:)\s]|$)",
        rf"\(([{letters}])\)",
    ]
    for pat in patterns:
        m = re.search(pat, text, flags=re.IGNORECASE if pat is not patterns[0] else 0)
        if m:
            return m.group(1).upper()
    norm = normalize_answer(text)
    hits = [k for k, v in opts.items() if normalize_answer(str(v)) and normalize_answer(str(v)) in norm]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:  # prefer a unique longest match ("red car" over "car")
        longest = max(len(normalize_answer(str(opts[k]))) for k in hits)
        best = [k for k in hits if len(normalize_answer(str(opts[k]))) == longest]
        return best[0] if len(best) == 1 else None
    return None


__all__ = ["normalize_answer", "exact_match", "vqa_accuracy", "extract_choice"]
