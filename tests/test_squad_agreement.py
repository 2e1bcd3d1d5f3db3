"""obert-train's and obert-deploy's SQuAD evaluations give the same answers and F1 on the same
logits (issue 18: 7.24 F1 for PyTorch vs 6.43 for ONNX on outputs equal to 1e-7), and the same
``max eval samples`` selects the same dev examples in both."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("obert_train")
pytest.importorskip("obert_deploy")

from transformers import BertTokenizerFast

from obert_core.shared import eval_subset, squad_best_span, squad_scores
from obert_deploy.evaluation import read_squad
from obert_deploy.evaluation._evaluate import _squad_features, _squad_predictions
from obert_train import SquadTask, load_task, read_squad_json

CONTEXT = (
    "the tower was built in paris in 1889 by gustave eiffel for the world fair and it was the "
    "tallest structure in the world for many years until the chrysler building was finished in "
    "new york in 1930 and visitors still climb the tower every day of the year"
)
QUESTIONS = [
    ("who built the tower", "gustave eiffel"),
    ("when was the tower built", "1889"),
    ("where is the chrysler building", "new york"),
    ("what was finished in 1930", "the chrysler building"),
]


def _tokenizer(tmp_path: Path) -> BertTokenizerFast:
    words = sorted({w for text in [CONTEXT, *(q for q, _ in QUESTIONS)] for w in text.split()})
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    return BertTokenizerFast(vocab_file=str(vocab))


def _squad_file(tmp_path: Path) -> Path:
    qas = [
        {"id": f"q{i}", "question": q, "answers": [{"text": a, "answer_start": CONTEXT.index(a)}]}
        for i, (q, a) in enumerate(QUESTIONS)
    ]
    payload = {"data": [{"title": "T", "paragraphs": [{"context": CONTEXT, "qas": qas}]}]}
    path = tmp_path / "dev-v1.1.json"
    path.write_text(json.dumps(payload))
    return path


def test_same_logits_give_the_same_answers_and_f1(tmp_path: Path) -> None:
    tok, path = _tokenizer(tmp_path), _squad_file(tmp_path)
    seq, stride = 32, 8
    examples = read_squad_json(path)
    task = SquadTask(
        tok, examples, examples, max_seq_length=seq, doc_stride=stride, max_query_length=8
    )
    qa = read_squad(path)
    feeds, sample_map, offsets, seq_ids = _squad_features(
        tok, qa, seq, stride, ["input_ids"], max_query_length=8
    )
    assert len(task.dev_features) == len(sample_map) > len(examples)  # several windows each
    rng = np.random.default_rng(0)
    starts, ends = [], []
    padded_starts = np.full((len(sample_map), seq), 50.0)  # padding logits high: never answers
    padded_ends = np.full((len(sample_map), seq), 50.0)
    for f, feature in enumerate(task.dev_features):
        n = len(feature["input_ids"])
        assert list(feeds["input_ids"][f][:n]) == feature["input_ids"]  # the same windows
        s, e = rng.normal(size=n).astype(np.float32), rng.normal(size=n).astype(np.float32)
        s[1], e[1] = 40.0, 40.0  # a question token: never part of an answer either
        starts.append(s)
        ends.append(e)
        padded_starts[f, :n], padded_ends[f, :n] = s, e
    ours = task.postprocess(starts, ends)
    theirs = _squad_predictions([padded_starts, padded_ends], qa, sample_map, offsets, seq_ids)
    assert [ours[e.qid] for e in examples] == theirs
    assert all(theirs)  # every question has a context span
    f1_ours = np.mean([squad_scores(ours[e.qid], e.answers)[1] for e in examples])
    f1_theirs = np.mean([squad_scores(t, q.answers)[1] for t, q in zip(theirs, qa, strict=True)])
    assert f1_ours == f1_theirs


def test_the_best_span_is_context_only_bounded_and_ties_go_first() -> None:
    offsets = [None, (0, 3), (4, 7), (8, 11), None]
    start = [9.0, 1.0, 1.0, 0.0, 9.0]
    end = [9.0, 0.0, 2.0, 2.0, 9.0]
    assert squad_best_span(start, end, offsets) == (3.0, 0, 7)  # ties: the first found
    assert squad_best_span(start, end, offsets, max_answer_length=1) == (3.0, 4, 7)
    assert squad_best_span([0.0, 5.0], [5.0, 0.0], [(0, 1), (2, 3)], n_best=1) is None  # reversed
    assert squad_best_span(start, end, [None] * 5) is None  # no context token


def test_the_same_eval_limit_selects_the_same_examples(tmp_path: Path) -> None:
    tok, path = _tokenizer(tmp_path), _squad_file(tmp_path)
    task = load_task("squad", tok, dev_file=path, train_file=path, max_eval_samples=2,
                     max_seq_length=32, doc_stride=8, max_query_length=8)  # fmt: skip
    assert isinstance(task, SquadTask)
    assert [e.qid for e in task.dev_examples] == [q.id for q in read_squad(path, max_samples=2)]
    assert [e.qid for e in task.dev_examples] == [
        e.qid for e in eval_subset(read_squad_json(path), 2)
    ]


def test_the_same_windows_with_default_stride_and_long_questions(tmp_path: Path) -> None:
    """One windowing rule (obert_core.shared.squad_windows): the default overlap for short
    windows and questions cut to max_query_length give the same features in both packages."""
    tok = _tokenizer(tmp_path)
    long_question = " ".join(["who built the tower"] * 6)  # 24 words, cut to 8 tokens
    qas = [
        {"id": "long", "question": long_question,
         "answers": [{"text": "gustave eiffel", "answer_start": CONTEXT.index("gustave eiffel")}]},
    ]  # fmt: skip
    payload = {"data": [{"title": "T", "paragraphs": [{"context": CONTEXT, "qas": qas}]}]}
    path = tmp_path / "long.json"
    path.write_text(json.dumps(payload))
    seq, query = 40, 8
    examples = read_squad_json(path)
    task = SquadTask(tok, examples, examples, max_seq_length=seq, max_query_length=query)
    feeds, sample_map, _, _ = _squad_features(
        tok, read_squad(path), seq, None, ["input_ids"], query
    )
    assert len(task.dev_features) == len(sample_map) > 1
    for f, feature in enumerate(task.dev_features):
        n = len(feature["input_ids"])
        assert list(feeds["input_ids"][f][:n]) == feature["input_ids"]
        assert feature["input_ids"].index(3) <= query + 1  # [SEP] after at most 8 question tokens
