"""Markdown recipes (SparseZoo's ``recipe.md``): the YAML front matter between ``---`` lines.

SparseZoo ships recipes as Markdown "recipe cards": the recipe YAML between a first line
``---`` (after blank lines and HTML comments, such as a license header) and the next line
``---``, then prose (docs/recipes.md, "Compatibility"). The YAML is
handed to the recipe reader with blank lines in place of the lines before it, so the line
numbers of its messages are those of the ``.md`` file.
"""

from __future__ import annotations

from obert_train.errors import RecipeError

__all__ = ["front_matter", "has_front_matter"]

_DELIMITER = "---"


def _is_delimiter(line: str) -> bool:
    return line.rstrip() == _DELIMITER


def _first_content(lines: list[str], start: int) -> int | None:
    for number in range(start, len(lines)):
        if lines[number].strip():
            return number
    return None


def _opening(lines: list[str]) -> int | None:
    """The first line that is not blank or inside a leading HTML comment (a license header)."""
    number = _first_content(lines, 0)
    while number is not None and lines[number].lstrip().startswith("<!--"):
        end = next((n for n in range(number, len(lines)) if "-->" in lines[n]), None)
        if end is None:
            return number
        number = _first_content(lines, end + 1)
    return number


def has_front_matter(text: str) -> bool:
    """Whether ``text`` starts (after blank lines) with a ``---`` block that is closed."""
    lines = text.splitlines()
    first = _opening(lines)
    if first is None or not _is_delimiter(lines[first]):
        return False
    return any(_is_delimiter(line) for line in lines[first + 1 :])


def front_matter(text: str, where: str) -> str:
    """The YAML front matter of a Markdown recipe, padded so its lines keep their numbers.

    Args:
        text: The Markdown file.
        where: The file, for messages.

    Returns:
        The recipe YAML: blank lines up to the first ``---``, then the front matter.

    Raises:
        RecipeError: If the file does not start with a ``---`` line (no front matter), the
            front matter is not closed, or a second front-matter block follows the first.
    """
    lines = text.splitlines()
    first = _opening(lines)
    if first is None or not _is_delimiter(lines[first]):
        shown = "" if first is None else f" (line {first + 1} is {lines[first].strip()[:40]!r})"
        raise RecipeError(
            f"{where}: a Markdown recipe must start with YAML front matter (after blank lines "
            "and HTML comments): a line '---', the "
            f"recipe, a line '---', then any text{shown}; add the front matter or give the "
            "recipe as a .yaml file"
        )
    close = next(
        (n for n in range(first + 1, len(lines)) if _is_delimiter(lines[n])),
        None,
    )
    if close is None:
        raise RecipeError(
            f"{where}: the front matter opened at line {first + 1} is never closed; add a line "
            "'---' after the recipe"
        )
    after = _first_content(lines, close + 1)
    if after is not None and _is_delimiter(lines[after]):
        raise RecipeError(
            f"{where}: two front-matter blocks (lines {first + 1}-{close + 1} and from line "
            f"{after + 1}); a Markdown recipe has one: merge them into the first"
        )
    return "\n" * (first + 1) + "\n".join(lines[first + 1 : close]) + "\n"
