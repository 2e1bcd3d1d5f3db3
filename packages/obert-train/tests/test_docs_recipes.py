"""The recipe guide (docs/recipes.md) cannot drift from the recipe and settings models.

Each field table of the guide is preceded by ``<!-- fields: NAME -->``. Its first column names
the fields and its "default" column their defaults; both must equal the pydantic models that
validate recipes. Every recipe tag must be in the guide, every method's recipe fields must be
covered by its tables, and the table of shipped recipes must list each shipped recipe once, with
its run length and distillation temperature.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from obert_train.pruning.method import MethodSettings
from obert_train.pruning.registry import METHODS
from obert_train.recipe import list_shipped_recipes, load_recipe
from obert_train.recipe.modifiers import CORE_MODIFIERS
from obert_train.recipe.pruning_modifier import (
    CONSTANT_FIELDS,
    SCHEDULE_FIELDS,
    _ConstantRange,
    _Schedule,
    pruning_fields,
)

GUIDE = Path(__file__).resolve().parents[3] / "docs" / "recipes.md"
REQUIRED = object()
pytestmark = pytest.mark.skipif(not GUIDE.is_file(), reason="no docs/recipes.md (installed alone)")


def _tables() -> dict[str, list[dict[str, str]]]:
    """``NAME`` -> rows (header -> cell) of each table after a ``<!-- fields: NAME -->`` line."""
    lines = GUIDE.read_text(encoding="utf-8").splitlines()
    tables: dict[str, list[dict[str, str]]] = {}
    for i, line in enumerate(lines):
        m = re.fullmatch(r"<!-- fields: (\w+) -->", line.strip())
        if not m:
            continue
        header = _cells(lines[i + 1])
        rows = []
        for row in lines[i + 3 :]:
            if not row.startswith("|"):
                break
            rows.append(dict(zip(header, _cells(row), strict=True)))
        assert m[1] not in tables, f"two tables marked {m[1]}"
        tables[m[1]] = rows
    return tables


def _cells(row: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", row.strip())[1:-1]]


def _field(row: dict[str, str]) -> str:
    m = re.fullmatch(r"`(\w+)`", row["field"])
    assert m, f"first cell {row['field']!r} is not one `field`"
    return m[1]


def _doc_default(cell: str) -> Any:
    """The value a "default" cell starts with: a `code` span or the first word."""
    m = re.match(r"`([^`]*)`", cell)
    token = m[1] if m else cell.split()[0].rstrip(":,;")
    lowered = token.lower()
    if lowered == "required":
        return REQUIRED
    if lowered in ("none", "absent"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return int(token)
    except ValueError:
        pass
    try:
        return float(token)
    except ValueError:
        pass
    if token.startswith("{") and token.endswith("}"):
        key, _, value = token[1:-1].partition(":")
        return {key.strip(): _doc_default(value.strip())}
    if token.startswith("[") and token.endswith("]"):
        return [part.strip() for part in token[1:-1].split(",")]
    return token


def _model_defaults(model: type[BaseModel], names: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in names:
        info = model.model_fields[name]
        default = REQUIRED if info.is_required() else info.default
        if isinstance(default, tuple):
            default = list(default)
        if name == "grad_batch_size":
            name, default = "grad_sampler_kwargs", {"batch_size": default}
        out[name] = default
    return out


def _expected() -> dict[str, dict[str, Any]]:
    base = [n for n in MethodSettings.model_fields if n != "targets"]
    expected = {
        tag: _model_defaults(cls, cls.recipe_fields()) for tag, cls in CORE_MODIFIERS.items()
    }
    expected["schedule"] = {"params": REQUIRED, **_model_defaults(_Schedule, list(SCHEDULE_FIELDS))}
    expected["constant"] = {
        "params": REQUIRED,
        **_model_defaults(_ConstantRange, [f for f in CONSTANT_FIELDS if f != "params"]),
    }
    expected["MethodSettings"] = _model_defaults(MethodSettings, base)
    for cls in METHODS.values():
        own = [n for n in cls.Settings.model_fields if _own(cls.Settings, n)]
        if own:
            expected[cls.Settings.__name__] = _model_defaults(cls.Settings, own)
    return expected


def _own(model: type[BaseModel], name: str) -> bool:
    """A field the model adds, or redefines (other type or default) over ``MethodSettings``."""
    base = MethodSettings.model_fields.get(name)
    if base is None:
        return True
    info = model.model_fields[name]
    return (info.annotation, info.default) != (base.annotation, base.default)


TABLES = _tables() if GUIDE.is_file() else {}
EXPECTED = _expected()


def test_every_model_has_a_table() -> None:
    assert sorted(TABLES) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_table_fields_and_defaults_equal_the_model(name: str) -> None:
    rows = TABLES[name]
    documented = {_field(row): _doc_default(row[_default_column(row)]) for row in rows}
    assert len(documented) == len(rows), f"{name}: a field is listed twice"
    assert set(documented) == set(EXPECTED[name]), (
        f"{name}: the guide lists {sorted(documented)}, the model has {sorted(EXPECTED[name])}"
    )
    wrong = {
        field: (documented[field], EXPECTED[name][field])
        for field in documented
        if documented[field] != EXPECTED[name][field]
    }
    assert not wrong, f"{name}: defaults in the guide differ from the model (guide, model): {wrong}"


def _default_column(row: dict[str, str]) -> str:
    return next(h for h in row if h.startswith("default"))


def test_every_method_is_covered_by_its_tables() -> None:
    for name, cls in METHODS.items():
        if not cls.schedules_pruning:
            covered = {_field(r) for r in TABLES["constant"]}
        else:
            covered = {_field(r) for r in TABLES["schedule"] + TABLES["MethodSettings"]}
            covered |= {_field(r) for r in TABLES.get(cls.Settings.__name__, [])}
        assert covered == set(pruning_fields(cls)), name


def test_every_recipe_tag_is_in_the_guide() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    tags = list(CORE_MODIFIERS) + [t for cls in METHODS.values() for t in cls.recipe_tags]
    missing = [t for t in tags if f"`!{t}`" not in text]
    assert not missing, missing


def _shipped_rows() -> list[tuple[list[str], dict[str, str]]]:
    """(recipe names, row) of the shipped-recipes table; ``a80`` / ``90`` expands to a90."""
    lines = GUIDE.read_text(encoding="utf-8").splitlines()
    start = lines.index("## 7. Shipped recipes")
    head = next(i for i in range(start, len(lines)) if lines[i].startswith("| recipe |"))
    header = _cells(lines[head])
    out = []
    for line in lines[head + 2 :]:
        if not line.startswith("|"):
            break
        row = dict(zip(header, _cells(line), strict=True))
        tokens = re.findall(r"`([^`]+)`", row["recipe"])
        names = [tokens[0]]
        for suffix in tokens[1:]:
            names.append(re.sub(r"\d+$", suffix, tokens[0]))
        out.append((names, row))
    return out


def test_shipped_recipes_table_lists_each_recipe_once() -> None:
    listed = [name for names, _ in _shipped_rows() for name in names]
    assert sorted(listed) == sorted(list_shipped_recipes())


def test_shipped_recipes_table_epochs_and_distillation() -> None:
    previous: dict[str, str] = {}
    by_name: dict[str, dict[str, str]] = {}
    for names, row in _shipped_rows():
        resolved = dict(row)
        for column, cell in row.items():
            if cell == "as above":
                resolved[column] = previous[column]
            elif cell.startswith("as ") and column != "pruning":
                source = cell[3:].lower()
                resolved[column] = next(r[column] for n, r in by_name.items() if source in n)
        for name in names:
            by_name[name] = resolved
            recipe = load_recipe(name)
            assert float(resolved["epochs"]) == recipe.num_epochs, name
            kd = resolved["KD"]
            if recipe.distillation is None:
                assert kd == "none", name
            else:
                m = re.search(r"T ([\d.]+)", kd)
                assert m and float(m[1]) == recipe.distillation.temperature, (name, kd)
        previous = resolved
