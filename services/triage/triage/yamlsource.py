"""Reads a YAML file into a pydantic model and names the file, line and path of every problem in it."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

Model = TypeVar("Model", bound=BaseModel)
Location = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a file, said so that a person can find and fix it."""

    line: int
    path: str
    message: str


class InvalidYamlFile(Exception):
    """A YAML file that cannot be used; the message lists `file:line: path: problem` for each problem."""

    def __init__(self, file: Path, problems: Sequence[Problem]) -> None:
        self.file = file
        self.problems = tuple(problems)
        super().__init__("\n".join(f"{file}:{p.line}: {p.path or '(top level)'}: {p.message}" for p in self.problems))


@dataclass(frozen=True)
class YamlSource:
    """A parsed YAML file: its bytes (for the content hash), its node tree (for line numbers) and its data."""

    file: Path
    content: bytes
    root: yaml.Node | None
    data: Any

    @property
    def content_hash(self) -> str:
        return "sha256:" + hashlib.sha256(self.content).hexdigest()

    def problem(self, loc: Location, message: str) -> Problem:
        return Problem(line=self.line_of(loc), path=format_path(loc), message=message)

    def line_of(self, loc: Location) -> int:
        """The line of the deepest node of `loc` present in the file (1-based)."""
        node = self.root
        if node is None:
            return 1
        for index, part in enumerate(loc):
            child = _child(node, part, wants_key=loc[index + 1 : index + 2] == ("[key]",))
            if child is None:
                break
            node = child
        return int(node.start_mark.line) + 1


def _child(node: yaml.Node, part: str | int, *, wants_key: bool) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                return key if wants_key else value
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
        return node.value[part]  # type: ignore[no-any-return]
    return None


def format_path(loc: Location) -> str:
    """`('chains', 'illegal', 'levels', 1, 'roles', 0)` -> `chains.illegal.levels[1].roles[0]`."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part != "[key]":
            path += f".{part}" if path else part
    return path


def read_yaml(file: Path, error: type[InvalidYamlFile]) -> YamlSource:
    """Parse `file` once, keeping both the node tree and the data; refuse bad YAML and repeated keys."""
    content = file.read_bytes()
    try:
        loader = yaml.SafeLoader(content.decode("utf-8"))
        try:
            root = loader.get_single_node()
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except UnicodeDecodeError:
        raise error(file, [Problem(1, "", "the file is not UTF-8 text")]) from None
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark is not None else 1
        raise error(file, [Problem(line, "", f"not valid YAML: {exc.problem}")]) from None
    source = YamlSource(file=file, content=content, root=root, data=data)
    repeated = _repeated_keys(root, ())
    if repeated:
        raise error(file, [Problem(line, format_path(loc), "given more than once") for loc, line in repeated])
    return source


def _repeated_keys(node: yaml.Node | None, loc: Location) -> list[tuple[Location, int]]:
    found: list[tuple[Location, int]] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = str(key.value)
            if name in seen:
                found.append(((*loc, name), int(key.start_mark.line) + 1))
            seen.add(name)
            found.extend(_repeated_keys(value, (*loc, name)))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found.extend(_repeated_keys(item, (*loc, index)))
    return found


def validate(source: YamlSource, model: type[Model], error: type[InvalidYamlFile]) -> Model:
    """Validate the file's data into `model`; every pydantic error is mapped back to its line."""
    try:
        return model.model_validate(source.data)
    except ValidationError as exc:
        errors = exc.errors()
        problems = [source.problem(tuple(e["loc"]), _message(e)) for e in errors if not _echo(e, errors)]
        raise error(source.file, problems) from None


def _echo(error: ErrorDetails, errors: list[ErrorDetails]) -> bool:
    """A list 'too short' only because one of its items was refused: the item's error says it all."""
    loc = tuple(error["loc"])
    return error["type"] == "too_short" and any(tuple(e["loc"])[: len(loc)] == loc and e is not error for e in errors)


def _message(error: ErrorDetails) -> str:
    loc = error["loc"]
    if error["type"] == "missing":
        return f"missing required field '{loc[-1]}'"
    if error["type"] == "extra_forbidden":
        return f"unknown field '{loc[-1]}'"
    return str(error["msg"]).removeprefix("Value error, ")
