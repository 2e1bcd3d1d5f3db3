"""Task files as spreadsheets and mistakes write them, through the command line (issue 18)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from obert_train.cli import app

runner = CliRunner()


def _oneshot(model: Path, data: Path, out: Path) -> list[str]:
    return [
        *("oneshot", "--model", str(model), "--task", "sst2", "--data-dir", str(data)),
        *("--output-dir", str(out), "--method", "magnitude", "--sparsity", "0.5", "--no-progress"),
    ]


def test_a_tsv_with_a_byte_order_mark_just_works(
    tiny_model_dir: Path, sst2_dir: Path, tmp_path: Path
) -> None:
    for name in ("train.tsv", "dev.tsv"):
        path = sst2_dir / name
        path.write_text(path.read_text(encoding="utf-8"), encoding="utf-8-sig")
    result = runner.invoke(app, [*_oneshot(tiny_model_dir, sst2_dir, tmp_path / "out"), "--eval"])
    assert result.exit_code == 0, result.output
    assert "no known text column" not in result.output


def test_a_binary_train_tsv_is_one_error_naming_the_file(
    tiny_model_dir: Path, sst2_dir: Path, tmp_path: Path
) -> None:
    train = sst2_dir / "train.tsv"
    train.write_bytes(b"sentence\tlabel\n\x89PNG\r\n\x1a\n\x00\xff\xfe\x80\t1\n")
    out = tmp_path / "out"
    result = runner.invoke(app, _oneshot(tiny_model_dir, sst2_dir, out))
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output
    assert str(train) in errors[0] and "not UTF-8" in errors[0]
    assert not out.exists() or not any(out.iterdir())
