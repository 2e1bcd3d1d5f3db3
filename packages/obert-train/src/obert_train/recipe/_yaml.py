"""Reading and writing SparseML-format recipe YAML (the authors' recipes, docs/recipes.md).

A recipe is a YAML mapping whose keys are modifier groups (``modifiers``,
``training_modifiers``, ``pruning_modifiers``, ``distillation_modifiers``: ``modifiers`` or any
key ending in ``_modifiers``); each group is a list of modifiers written as tagged mappings::

    training_modifiers:
      - !LearningRateFunctionModifier
        start_epoch: 0.0
        lr_func: linear

The group a modifier sits in has no meaning. Compared with ``yaml.safe_load`` the loader

* accepts every ``!Tag`` and keeps it (unknown tags are refused later, with the recipe's
  context);
* reads exponent numbers without a dot (``1e-7``, ``8e-5``), strings in YAML 1.1, as floats,
  and ``2:4`` (an ``N:M`` mask type) as a string, not as the YAML 1.1 base-60 int 124, like
  YAML 1.2 does;
* refuses a key given twice in one mapping (PyYAML would silently keep the last one);
* also takes the untagged form ``- OBSPruningModifier: {...}`` (one key, the tag name), so a
  recipe can be written as JSON;
* reads every ``eval(...)`` string as an :class:`~obert_train.recipe._eval.Expr` that knows its
  line, and YAML anchors, aliases and merge keys (``<<: *common``; keys written next to the
  merge win) as YAML does; a modifier field written as an alias of a top-level variable
  (``init_lr: *init_lr``, as SparseML recipe cards write them) is read as ``eval(init_lr)``, so
  an override of the variable reaches it.

Besides modifier groups a recipe may have SparseML's top-level ``version`` (recorded) and
top-level variables (``num_epochs: 30``), which :mod:`obert_train.recipe._variables` evaluates.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode

from obert_train.errors import RecipeError
from obert_train.recipe._eval import Expr, is_expr_text

__all__ = [
    "RawModifier",
    "RecipeDocument",
    "Variable",
    "dump_groups",
    "is_group",
    "parse_recipe_text",
    "parse_value",
]

# YAML 1.1 numbers without the base-60 forms (``2:4`` would be the int 124) and with exponents
# that need no dot (``1e-7`` would be a string), as in YAML 1.2.
_INT_RE = re.compile(
    r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"
)
_FLOAT_RE = re.compile(
    r"^(?:[-+]?[0-9][0-9_]*(?:\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[eE][-+]?[0-9]+)"
    r"|[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)


@dataclass(frozen=True)
class RawModifier:
    """One modifier as written in the recipe, before validation.

    Attributes:
        tag: The tag without ``!`` (``"OBSPruningModifier"``).
        fields: Its keys and values.
        position: 1-based position among all modifiers of the recipe, in file order (the
            number error messages use: "modifier 4 (!OBSPruningModifier)").
        line: 1-based line of the tag in the file, when known.
        group: The group it was listed under.
        overridden: Fields whose value came from an override, not from the file.
    """

    tag: str
    fields: Mapping[str, Any]
    position: int
    line: int | None = None
    group: str = "modifiers"
    overridden: frozenset[str] = field(default_factory=frozenset)

    def label(self) -> str:
        """``"modifier 4 (!OBSPruningModifier, line 21)"``."""
        line = f", line {self.line}" if self.line is not None else ""
        return f"modifier {self.position} (!{self.tag}{line})"


@dataclass(frozen=True)
class _Tagged:
    tag: str
    value: Mapping[str, Any]
    line: int | None = None


class _Loader(yaml.SafeLoader):
    """Safe loader with modifier tags, dot-less exponent floats and duplicate-key errors."""

    variable_nodes: dict[int, str] = {}  # noqa: RUF012 - replaced per instance in _load_root
    """``id`` of the value node of each top-level variable -> its name (aliases share it)."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        """Build a mapping, refusing a key that appears twice."""
        if isinstance(node, MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # merged keys may be overridden by keys written next to them
                key = self.construct_object(key_node, deep=deep)
                if isinstance(key, Hashable):
                    if key in seen:
                        raise ConstructorError(
                            "while reading a mapping",
                            node.start_mark,
                            f"found the key {key!r} twice; keep one",
                            key_node.start_mark,
                        )
                    seen.add(key)
            self.flatten_mapping(node)
        return super().construct_mapping(node, deep=deep)


def _construct_tagged(loader: _Loader, suffix: str, node: Node) -> _Tagged:
    line = node.start_mark.line + 1
    if isinstance(node, MappingNode):
        value = loader.construct_mapping(node, deep=True)
        for key_node, value_node in node.value:  # a field written as an alias of a variable
            name = loader.variable_nodes.get(id(value_node))
            if name is not None and isinstance(key_node, ScalarNode):
                value[key_node.value] = Expr(f"eval({name})", key_node.start_mark.line + 1)
    elif isinstance(node, ScalarNode) and node.value == "":
        value = {}
    else:
        raise ConstructorError(
            None, None, f"modifier !{suffix} must be a mapping of fields", node.start_mark
        )
    return _Tagged(suffix, {str(k): v for k, v in value.items()}, line)


def _construct_str(loader: _Loader, node: Node) -> str:
    value = loader.construct_scalar(node)  # type: ignore[arg-type]
    if is_expr_text(value):
        return Expr(str(value).strip(), node.start_mark.line + 1)
    return str(value)


_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag not in (_INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_INT, _INT_RE, list("-+0123456789"))
_Loader.add_implicit_resolver(_FLOAT, _FLOAT_RE, list("-+0123456789."))
_Loader.add_multi_constructor("!", _construct_tagged)
_Loader.add_constructor("tag:yaml.org,2002:str", _construct_str)


class _Dumper(yaml.SafeDumper):
    """Safe dumper writing modifiers as tagged mappings, lists indented under their key."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        """Indent block sequences under their key, as the SparseML recipes do."""
        super().increase_indent(flow, False)


def _represent_tagged(dumper: _Dumper, data: _Tagged) -> Node:
    return dumper.represent_mapping("!" + data.tag, list(data.value.items()))


_Dumper.add_representer(_Tagged, _represent_tagged)
_Dumper.add_representer(Expr, lambda dumper, data: dumper.represent_str(str(data)))


def _yaml_error(exc: yaml.YAMLError, where: str) -> RecipeError:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "invalid YAML"
        return RecipeError(f"{where}: invalid recipe YAML{at}: {problem}; fix the syntax")
    return RecipeError(f"{where}: invalid recipe YAML: {exc}; fix the syntax")


def is_group(key: object) -> bool:
    """Whether a top-level key is a modifier group (``modifiers`` or ``*_modifiers``)."""
    return isinstance(key, str) and (key == "modifiers" or key.endswith("_modifiers"))


def parse_value(text: str, where: str) -> Any:
    """Read one value (an override from the command line) the way the recipe loader does.

    Args:
        text: YAML text of a single value, e.g. ``"0.9"``, ``"1e-7"``, ``"true"``, ``"[logits]"``.
        where: What the value is, for the error message.

    Raises:
        RecipeError: If the text is not valid YAML.
    """
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, where) from None


def _modifier_item(item: object, group: str, number: int, position: int, where: str) -> RawModifier:
    if isinstance(item, _Tagged):
        return RawModifier(item.tag, dict(item.value), position, item.line, group)
    if isinstance(item, Mapping) and len(item) == 1:
        ((key, value),) = item.items()
        if isinstance(key, str) and (value is None or isinstance(value, Mapping)):
            fields = {str(k): v for k, v in (value or {}).items()}
            return RawModifier(key.removeprefix("!"), fields, position, None, group)
    raise RecipeError(
        f"{where}: item {number} of '{group}' is not a modifier ({item!r}); write it as a "
        "tagged mapping, e.g. '- !OBSPruningModifier' followed by its fields"
    )


@dataclass(frozen=True)
class Variable:
    """A top-level recipe variable as written (SparseML's ``num_epochs: 30``).

    Attributes:
        name: Its name.
        value: Its value as read: a number, an ``eval(...)`` :class:`Expr`, or any other YAML
            value (a list of params, a mask type).
        line: 1-based line of its key in the file.
    """

    name: str
    value: Any
    line: int | None = None


@dataclass(frozen=True)
class RecipeDocument:
    """A recipe file as read, before variables are evaluated and modifiers validated.

    Attributes:
        modifiers: The modifiers in file order (fields may hold ``eval(...)`` expressions).
        variables: The top-level variables in file order.
        version: SparseML's top-level ``version`` (``"1.1.0"``), if given.
    """

    modifiers: list[RawModifier]
    variables: list[Variable] = field(default_factory=list)
    version: str | None = None


def _load_root(text: str, where: str) -> tuple[Any, dict[str, int]]:
    """The YAML data and the line of every top-level key."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        lines: dict[str, int] = {}
        loader.variable_nodes = {}
        if isinstance(node, MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, ScalarNode):
                    lines.setdefault(str(key_node.value), key_node.start_mark.line + 1)
                    if not is_group(key_node.value) and key_node.value != "version":
                        loader.variable_nodes[id(value_node)] = str(key_node.value)
        data = loader.construct_document(node) if node is not None else None
        return data, lines
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, where) from None
    finally:
        loader.dispose()


def _version(value: Any, where: str, line: int | None) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        at = f", line {line}" if line is not None else ""
        raise RecipeError(
            f"{where}{at}: version = {value!r} must be a version such as 1.1.0 (SparseML's "
            "recipe version); fix or remove it"
        )
    return str(value)


def parse_recipe_text(text: str, where: str) -> RecipeDocument:
    """The modifiers, variables and version of a recipe's YAML.

    Args:
        text: The recipe YAML (a Markdown recipe's front matter already extracted).
        where: The file (or ``"recipe text"``) for error messages.

    Returns:
        The modifiers, unvalidated, numbered 1, 2, ... in file order; the top-level variables;
        the version.

    Raises:
        RecipeError: If the text is not YAML, not a mapping of modifier groups and variables,
            a staged recipe, or a group is not a list of modifiers.
    """
    data, lines = _load_root(text, where)
    if data is None:
        raise RecipeError(f"{where}: the recipe is empty; add an EpochRangeModifier and others")
    if not isinstance(data, Mapping):
        raise RecipeError(
            f"{where}: a recipe must be a mapping of modifier groups such as 'modifiers:' "
            f"or 'training_modifiers:', got {type(data).__name__}"
        )
    raws: list[RawModifier] = []
    variables: list[Variable] = []
    version: str | None = None
    for key, items in data.items():
        line = lines.get(str(key))
        if key == "version":
            version = _version(items, where, line)
            continue
        if not is_group(key):
            if isinstance(items, Mapping) and any(is_group(k) for k in items):
                raise RecipeError(
                    f"{where}, line {line}: {key!r} is a stage of a staged recipe (its own "
                    "modifier groups); staged recipes are not supported: run each stage as its "
                    "own recipe"
                )
            if not isinstance(key, str) or not key.isidentifier():
                raise RecipeError(
                    f"{where}, line {line}: top-level key {key!r} is neither a modifier group "
                    "('modifiers' or a key ending in '_modifiers') nor a recipe variable (a "
                    "name such as num_epochs); rename it"
                )
            variables.append(Variable(key, items, line))
            continue
        if items is None:
            continue
        if not isinstance(items, list):
            raise RecipeError(
                f"{where}: group '{key}' must be a list of modifiers ('- !TagName' items), "
                f"got {type(items).__name__}"
            )
        for number, item in enumerate(items, start=1):
            raws.append(_modifier_item(item, str(key), number, len(raws) + 1, where))
    return RecipeDocument(raws, variables, version)


def dump_groups(groups: Mapping[str, Sequence[tuple[str, Mapping[str, Any]]]]) -> str:
    """SparseML-format YAML of modifier groups.

    Args:
        groups: ``{group: [(tag, fields), ...]}``; empty groups are left out.

    Returns:
        One block per group, separated by blank lines; floats are written so that any YAML
        loader reads them back exactly (``1.0e-07``).
    """
    blocks = []
    for group, items in groups.items():
        if not items:
            continue
        data = {group: [_Tagged(tag, dict(fields)) for tag, fields in items]}
        blocks.append(
            yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100)
        )
    return "\n".join(blocks)
