"""The synthetic sentiment data set shipped with ``obert``: a seeded grammar of movie reviews.

``obert quickstart`` needs labelled data that work offline, so the package generates and ships
its own: short English movie-review sentences with a binary sentiment label, written in the
GLUE SST-2 TSV format (``sentence<TAB>label``, lower case, punctuation split off as in SST-2).
The sentences are drawn from templates with slots (:data:`TEMPLATES`) whose label follows from
the template's rule, so every label is correct by construction. The rules are compositional on
purpose, so the task is not a bag-of-words lookup:

* **negation** flips the polarity (``the plot is not gripping .`` -> 0), also at a distance
  (``i expected the film to be dull , but it was not .`` -> 1) and twice
  (``i did not dislike the film .`` -> 1);
* **contrast** decides by the clause after ``but`` / the main clause after ``although`` /
  the clause before ``despite`` (``the acting is superb , but the script is tedious .`` -> 0);
* **comparisons** and fixed verdicts (``not as bad as the critics said`` -> 1,
  ``a waste of time`` -> 0, ``not a waste of time`` -> 1);
* ``neither ... nor`` over two adjectives of one polarity flips it.

Each label is chosen first (a fair coin per sentence), then a template and its slot values, so
the classes are balanced. Sentences are unique, and no dev sentence occurs in the training
set. Everything comes from one ``random.Random(seed)``: the same seed and sizes give the same
bytes on every machine and Python version (``tests/test_datagen.py`` regenerates the shipped
files and compares them). Regenerate with::

    python -m obert.datagen packages/obert/src/obert/data/synthetic-sentiment
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from obert.errors import PipelineInputError
from obert_core.shared import atomic_write_bytes

__all__ = [
    "DEFAULT_DEV_SIZE",
    "DEFAULT_SEED",
    "DEFAULT_TRAIN_SIZE",
    "DEV_HELD_OUT",
    "NEGATIVE",
    "NEGATIVE_HELD_OUT",
    "POSITIVE",
    "POSITIVE_HELD_OUT",
    "TEMPLATES",
    "Example",
    "Lexicon",
    "generate",
    "main",
    "to_tsv",
    "write_dataset",
]

DEFAULT_SEED = 20220314
"""Seed of the shipped files (the oBERT paper's arXiv date, 2022-03-14)."""
DEFAULT_TRAIN_SIZE = 1200
DEFAULT_DEV_SIZE = 400
DEV_HELD_OUT = 0.5
"""Share of the dev set's adjective slots filled with held-out words."""

SUBJECTS: tuple[str, ...] = (
    "the film", "this movie", "the story", "the plot", "the acting", "the script",
    "the ending", "the soundtrack", "the dialogue", "the cast", "the direction",
    "the photography", "the pacing", "the humor", "the lead performance", "the sequel",
    "the premise", "the screenplay", "the final act", "the opening scene", "the score",
    "the documentary", "the comedy", "the thriller", "the animation", "the remake",
)  # fmt: skip
"""Singular noun phrases a review talks about."""

POSITIVE: tuple[str, ...] = (
    "brilliant", "moving", "delightful", "gripping", "charming", "funny", "beautiful",
    "clever", "heartfelt", "superb", "engaging", "memorable", "wonderful", "stunning",
    "witty", "thoughtful", "inventive", "touching", "thrilling", "smart", "elegant",
    "captivating",
)  # fmt: skip
"""Adjectives of positive polarity."""

NEGATIVE: tuple[str, ...] = (
    "dull", "boring", "clumsy", "tedious", "forgettable", "awful", "lifeless",
    "predictable", "bland", "shallow", "messy", "painful", "hollow", "tiresome", "flat",
    "pointless", "sloppy", "dreary", "lazy", "confusing", "irritating", "wooden",
)  # fmt: skip
"""Adjectives of negative polarity."""

POSITIVE_HELD_OUT: tuple[str, ...] = (
    "dazzling", "poignant", "exhilarating", "riveting", "luminous", "masterful",
)  # fmt: skip
"""Positive adjectives that occur only in the dev set (does the model generalise?)."""

NEGATIVE_HELD_OUT: tuple[str, ...] = (
    "insipid", "plodding", "grating", "vapid", "leaden", "incoherent",
)  # fmt: skip
"""Negative adjectives that occur only in the dev set."""

CRITICS: tuple[str, ...] = (
    "the critics", "my friend", "the newspaper", "my brother", "everyone online",
    "the festival jury",
)  # fmt: skip

INTENSIFIERS: tuple[str, ...] = (
    "", "", "", "very ", "truly ", "remarkably ", "rather ", "quite ", "utterly ",
    "surprisingly ", "consistently ",
)  # fmt: skip
"""Adverbs before an adjective (empty strings make the bare adjective more frequent)."""

NEGATORS: tuple[str, ...] = ("is not", "is n't", "is never", "is hardly", "is far from")
"""Copulas that flip the polarity of the adjective after them (SST-2 splits ``n't``)."""

LIKE_VERBS: tuple[str, ...] = ("loved", "enjoyed", "adored", "admired", "liked", "was moved by")
HATE_VERBS: tuple[str, ...] = (
    "hated", "disliked", "could not stand", "was bored by", "regretted watching", "resented",
)  # fmt: skip
LIKE_BASE: tuple[str, ...] = ("love", "enjoy", "like", "admire")
HATE_BASE: tuple[str, ...] = ("hate", "dislike", "mind", "regret watching")
AUDIENCES: tuple[str, ...] = (
    "anyone", "my friends", "families", "fans of the genre", "a first date", "my parents",
    "students", "everyone i know",
)  # fmt: skip
REFERENCES: tuple[str, ...] = (
    "i expected", "the trailer suggested", "the original", "the critics said",
    "its reputation", "the book", "last year 's winner",
)  # fmt: skip
GOOD_VERDICTS: tuple[str, ...] = (
    "worth every minute", "a real pleasure", "a small masterpiece", "worth the ticket",
    "a joy to watch", "time well spent",
)  # fmt: skip
BAD_VERDICTS: tuple[str, ...] = (
    "a waste of time", "a chore to sit through", "a missed opportunity", "a total mess",
    "a letdown", "two hours i will never get back",
)  # fmt: skip
OPENERS: tuple[str, ...] = ("", "", "", "honestly , ", "in the end , ", "frankly , ", "overall , ")


@dataclass(frozen=True)
class Example:
    """One generated sentence.

    Attributes:
        sentence: Lower-case text, punctuation split off (SST-2 style), ending in `` .``.
        label: 1 positive, 0 negative.
        template: Name of the template that produced it (for the data card's counts).
    """

    sentence: str
    label: int
    template: str


@dataclass(frozen=True)
class Lexicon:
    """The adjectives a split may draw: training sees :data:`POSITIVE` / :data:`NEGATIVE` only.

    Attributes:
        held_out: Probability that an adjective slot takes a held-out word (dev: 0.5).
    """

    held_out: float = 0.0

    def adj(self, rng: random.Random, positive: bool) -> str:
        """An adjective of the given polarity (held out with probability :attr:`held_out`)."""
        if self.held_out and rng.random() < self.held_out:
            return rng.choice(POSITIVE_HELD_OUT if positive else NEGATIVE_HELD_OUT)
        return rng.choice(POSITIVE if positive else NEGATIVE)

    def pair(self, rng: random.Random, positive: bool) -> tuple[str, str]:
        """Two different adjectives of one polarity."""
        first = self.adj(rng, positive)
        second = first
        while second == first:
            second = self.adj(rng, positive)
        return first, second

    def intensified(self, rng: random.Random, positive: bool) -> str:
        """An adjective with an optional adverb before it."""
        return rng.choice(INTENSIFIERS) + self.adj(rng, positive)


Template = Callable[[random.Random, int, Lexicon], str]


def _subject(rng: random.Random) -> str:
    return rng.choice(SUBJECTS)


def _two_subjects(rng: random.Random) -> tuple[str, str]:
    first, second = rng.sample(SUBJECTS, 2)
    return first, second


def _plain(rng: random.Random, label: int, lex: Lexicon) -> str:
    return f"{_subject(rng)} is {lex.intensified(rng, label == 1)}"


def _negated(rng: random.Random, label: int, lex: Lexicon) -> str:
    # "is not <adj>" means the opposite of <adj>: a positive label needs a negative adjective.
    return f"{_subject(rng)} {rng.choice(NEGATORS)} {lex.adj(rng, label == 0)}"


def _but(rng: random.Random, label: int, lex: Lexicon) -> str:
    first, second = _two_subjects(rng)
    disagree = rng.random() < 0.75  # the first clause usually disagrees: read past "but"
    lead = lex.adj(rng, (label == 1) != disagree)
    return f"{first} is {lead} , but {second} is {lex.intensified(rng, label == 1)}"


def _although(rng: random.Random, label: int, lex: Lexicon) -> str:
    first, second = _two_subjects(rng)
    return (
        f"although {first} is {lex.adj(rng, label == 0)} , {second} is {lex.adj(rng, label == 1)}"
    )


def _despite(rng: random.Random, label: int, lex: Lexicon) -> str:
    first, second = _two_subjects(rng)
    return (
        f"{first} is {lex.intensified(rng, label == 1)} despite {second} being "
        f"{lex.adj(rng, label == 0)}"
    )


def _verb(rng: random.Random, label: int, lex: Lexicon) -> str:
    verbs = LIKE_VERBS if label == 1 else HATE_VERBS
    return f"i {rng.choice(verbs)} {_subject(rng)}"


def _negated_verb(rng: random.Random, label: int, lex: Lexicon) -> str:
    # "did not like" is negative, "did not dislike" (a double negation) positive.
    verbs = HATE_BASE if label == 1 else LIKE_BASE
    negation = rng.choice(("did not", "did n't"))
    return f"i {negation} {rng.choice(verbs)} {_subject(rng)}"


def _recommend(rng: random.Random, label: int, lex: Lexicon) -> str:
    modal = rng.choice(("would", "will", "can")) + ("" if label == 1 else " not")
    return f"i {modal} recommend {_subject(rng)} to {rng.choice(AUDIENCES)}"


def _verdict(rng: random.Random, label: int, lex: Lexicon) -> str:
    negate = rng.random() < 0.4
    good = (label == 1) != negate
    verdict = rng.choice(GOOD_VERDICTS if good else BAD_VERDICTS)
    copula = "is not" if negate else "is"
    return f"{_subject(rng)} {copula} {verdict}"


def _compare(rng: random.Random, label: int, lex: Lexicon) -> str:
    subject, reference = _subject(rng), rng.choice(REFERENCES)
    if rng.random() < 0.5:
        word = "better" if label == 1 else "worse"
        return f"{subject} is {rng.choice(('', 'much ', 'far '))}{word} than {reference}"
    word = "bad" if label == 1 else "good"
    return f"{subject} is not as {word} as {reference}"


def _conjunction(rng: random.Random, label: int, lex: Lexicon) -> str:
    first, second = lex.pair(rng, label == 1)
    return f"{_subject(rng)} is {first} and {second}"


def _neither(rng: random.Random, label: int, lex: Lexicon) -> str:
    # "neither dull nor boring" is positive: the adjectives have the opposite polarity.
    first, second = lex.pair(rng, label == 0)
    return f"{_subject(rng)} is neither {first} nor {second}"


def _expectation(rng: random.Random, label: int, lex: Lexicon) -> str:
    confirmed = rng.random() < 0.5
    adjective = lex.adj(rng, (label == 1) == confirmed)
    tail = ", and it was" if confirmed else ", but it was not"
    return f"i expected {_subject(rng)} to be {adjective} {tail}"


def _hard_to_call(rng: random.Random, label: int, lex: Lexicon) -> str:
    opener = rng.choice(("it is hard to call", "nobody would call", "i would never call"))
    return f"{opener} {_subject(rng)} {lex.adj(rng, label == 0)}"


def _reported(rng: random.Random, label: int, lex: Lexicon) -> str:
    # Someone else's opinion does not count; the speaker's does.
    critic = rng.choice(CRITICS)
    if rng.random() < 0.5:
        other = lex.adj(rng, rng.random() < 0.5)
        return (
            f"{critic} called {_subject(rng)} {other} , but i found it {lex.adj(rng, label == 1)}"
        )
    agree = rng.random() < 0.5
    adjective = lex.adj(rng, (label == 1) == agree)
    verdict = "and i agree" if agree else "but i disagree"
    return f"{critic} said {_subject(rng)} would be {adjective} , {verdict}"


def _not_only(rng: random.Random, label: int, lex: Lexicon) -> str:
    # A "not" that negates nothing: both adjectives carry the label.
    first, second = lex.pair(rng, label == 1)
    return f"not only is {_subject(rng)} {first} , it is also {second}"


def _could_not_be_more(rng: random.Random, label: int, lex: Lexicon) -> str:
    return f"{_subject(rng)} could not be more {lex.adj(rng, label == 1)}"


def _nothing_about(rng: random.Random, label: int, lex: Lexicon) -> str:
    if rng.random() < 0.5:
        return f"there is nothing {lex.adj(rng, label == 0)} about {_subject(rng)}"
    return f"there is not a single {lex.adj(rng, label == 0)} moment in {_subject(rng)}"


def _counterfactual(rng: random.Random, label: int, lex: Lexicon) -> str:
    modal = rng.choice(("could have been", "should have been", "might have been"))
    if label == 0:  # an unrealised promise is a complaint
        return f"{_subject(rng)} {modal} {lex.adj(rng, True)}"
    return f"{_subject(rng)} {modal} {lex.adj(rng, False)} , but it is not"


def _wanted(rng: random.Random, label: int, lex: Lexicon) -> str:
    verb = rng.choice(LIKE_BASE)
    tail = "and i did" if label == 1 else rng.choice(("but i could not", "but i did not"))
    return f"i wanted to {verb} {_subject(rng)} , {tail}"


TEMPLATES: tuple[tuple[str, Template, int], ...] = (
    ("plain", _plain, 2),
    ("negated", _negated, 3),
    ("but", _but, 3),
    ("although", _although, 2),
    ("despite", _despite, 2),
    ("verb", _verb, 1),
    ("negated-verb", _negated_verb, 2),
    ("recommend", _recommend, 1),
    ("verdict", _verdict, 2),
    ("compare", _compare, 2),
    ("conjunction", _conjunction, 1),
    ("neither", _neither, 1),
    ("expectation", _expectation, 2),
    ("hard-to-call", _hard_to_call, 1),
    ("reported", _reported, 3),
    ("not-only", _not_only, 1),
    ("could-not-be-more", _could_not_be_more, 1),
    ("nothing-about", _nothing_about, 2),
    ("counterfactual", _counterfactual, 2),
    ("wanted", _wanted, 1),
)
"""``(name, generator, weight)``: each generator writes a sentence of the label it is given."""


def _sentence(rng: random.Random, lex: Lexicon) -> Example:
    label = rng.randrange(2)
    weights = [weight for _, _, weight in TEMPLATES]
    name, template, _ = TEMPLATES[rng.choices(range(len(TEMPLATES)), weights=weights)[0]]
    text = f"{rng.choice(OPENERS)}{template(rng, label, lex)} ."
    return Example(sentence=" ".join(text.split()), label=label, template=name)


def generate(
    train_size: int = DEFAULT_TRAIN_SIZE,
    dev_size: int = DEFAULT_DEV_SIZE,
    seed: int = DEFAULT_SEED,
) -> tuple[list[Example], list[Example]]:
    """Draw ``train_size + dev_size`` unique sentences; the dev ones never occur in training.

    Args:
        train_size: Training sentences.
        dev_size: Dev sentences.
        seed: Seed of the one ``random.Random`` that draws everything.

    Returns:
        ``(train, dev)``.

    Raises:
        PipelineInputError: If a size is below 1, or the grammar cannot produce that many
            distinct sentences.
    """
    if train_size < 1 or dev_size < 1:
        raise PipelineInputError(
            f"sizes must be >= 1, got train {train_size} and dev {dev_size}: ask for at least "
            "one training and one dev sentence (--train, --dev)"
        )
    rng = random.Random(seed)
    seen: set[str] = set()
    splits: list[list[Example]] = []
    for size, lexicon in ((train_size, Lexicon()), (dev_size, Lexicon(held_out=DEV_HELD_OUT))):
        drawn: list[Example] = []
        attempts = 0
        while len(drawn) < size:
            attempts += 1
            if attempts > 50 * size:
                raise PipelineInputError(
                    f"only {len(drawn)} distinct sentences after {attempts} draws for a split "
                    f"of {size}; ask for fewer (--train {train_size}, --dev {dev_size})"
                )
            example = _sentence(rng, lexicon)
            if example.sentence not in seen:
                seen.add(example.sentence)
                drawn.append(example)
        splits.append(drawn)
    return splits[0], splits[1]


def to_tsv(examples: Sequence[Example]) -> str:
    """GLUE SST-2 TSV text: a ``sentence<TAB>label`` header, one example per line, LF line ends."""
    lines = ["sentence\tlabel", *(f"{e.sentence}\t{e.label}" for e in examples)]
    return "\n".join(lines) + "\n"


def write_dataset(
    folder: str | Path,
    train_size: int = DEFAULT_TRAIN_SIZE,
    dev_size: int = DEFAULT_DEV_SIZE,
    seed: int = DEFAULT_SEED,
) -> tuple[Path, Path]:
    """Write ``train.tsv`` and ``dev.tsv`` into ``folder`` (created if missing), atomically.

    Each file is written beside its final name and moved into place: an interrupted run leaves
    the earlier files whole.

    Returns:
        The two paths.

    Raises:
        PipelineInputError: As :func:`generate`.
    """
    train, dev = generate(train_size, dev_size, seed)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = (out / "train.tsv", out / "dev.tsv")
    for path, examples in zip(paths, (train, dev), strict=True):
        atomic_write_bytes(path, to_tsv(examples).encode("utf-8"))
    return paths


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m obert.datagen FOLDER [--train N --dev N --seed S]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("folder", type=Path, help="Where train.tsv and dev.tsv go.")
    parser.add_argument("--train", type=int, default=DEFAULT_TRAIN_SIZE, help="Train sentences.")
    parser.add_argument("--dev", type=int, default=DEFAULT_DEV_SIZE, help="Dev sentences.")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="Seed of the grammar.")
    args = parser.parse_args(argv)
    try:
        paths = write_dataset(args.folder, args.train, args.dev, args.seed)
    except PipelineInputError as exc:
        parser.error(str(exc))  # one usage line and the message, exit code 2
    for path in paths:
        print(f"wrote {path}")  # noqa: T201


if __name__ == "__main__":
    main()
