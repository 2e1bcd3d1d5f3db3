from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from obert_train import OneShotConfig, parse_memory, parse_nm


def test_defaults_follow_the_paper() -> None:
    cfg = OneShotConfig(sparsity=0.8)
    assert (cfg.method, cfg.block_size, cfg.damp, cfg.num_grads) == ("obert", 50, 1e-7, 1024)
    assert cfg.group_size == 1
    assert cfg.nm is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sparsity": 1.0}, "less than 1"),
        ({"sparsity": -0.1}, "greater than or equal to 0"),
        ({"sparsity": 0.5, "method": "random"}, "method 'random' unknown"),
        ({"sparsity": 0.5, "mask_type": "block8"}, "mask_type 'block8' unknown"),
        ({"sparsity": 0.5, "mask_type": "4:2"}, "1 <= N < M"),
        ({"sparsity": 0.5, "mask_type": "block4", "block_size": 50}, "divisible by 4"),
        ({"sparsity": 0.5, "damp": 0.0}, "greater than 0"),
        ({"sparsity": 0.5, "typo": 1}, "Extra inputs"),
    ],
)
def test_bad_settings_name_the_value(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        OneShotConfig(**kwargs)  # type: ignore[arg-type]


def test_yaml_round_trip_and_string_numbers(tmp_path: Path) -> None:
    cfg = OneShotConfig(sparsity=0.7, mask_type="block4", block_size=32, max_memory="2GB")
    assert cfg.max_memory == 2 * 2**30
    path = tmp_path / "recipe.yaml"
    path.write_text(cfg.to_yaml())
    assert OneShotConfig.from_yaml(path) == cfg
    path.write_text("sparsity: 0.5\ndamp: 1e-7\n")  # YAML 1.1 reads 1e-7 as a string
    assert OneShotConfig.from_yaml(path).damp == 1e-7


def test_parsers() -> None:
    assert parse_nm("2:4") == (2, 4)
    assert parse_nm("unstructured") is None
    assert parse_memory("512MiB") == 512 * 2**20
    assert parse_memory("1.5G") == int(1.5 * 2**30)
    with pytest.raises(ValueError, match="cannot parse memory size"):
        parse_memory("lots")
