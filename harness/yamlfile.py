"""Input files in YAML (or JSON, a subset) whose every error names ``file:line: field: message``.

Shared by the plan loader (harness/plans/loader.py) and the target loader (harness/topology/target.py).
Why compose the YAML node tree ourselves instead of ``yaml.safe_load``: pydantic reports *where* in the data a
value is wrong (``steps.2.params.attributes.latency``) but the data has forgotten its line numbers. Composing
keeps the nodes, with marks, so each error can be walked back to the line a person has to edit. Anything an
input file can contain - broken YAML, alias bombs, duplicate keys - ends as a ``FileProblems`` (an
``InputError``, exit 4), never another exception.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import yaml

from harness.errors import InputError

MAX_BYTES = 1 << 20
MAX_NODES = 50_000
MAX_FLOW_DEPTH = 64


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input file, pointing at the line to edit."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class FileProblems(InputError):
    """An input file that cannot be used; ``problems`` lists every error found, each with file and line.
    Subclasses name ``what`` the file is and the ``hint`` to fix it."""

    what: ClassVar[str] = "input file"
    hint: ClassVar[str] = "edit the lines above"

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__(f"invalid {self.what}:\n  " + "\n  ".join(map(str, self.problems)), self.hint)


def line_of(node: yaml.Node | None) -> int:
    return node.start_mark.line + 1 if node is not None and node.start_mark is not None else 1


def _check_tree(root: yaml.Node, source: str, error: type[FileProblems]) -> None:
    """Reject duplicate keys (PyYAML keeps the last silently), recursive structures and alias bombs."""
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        nid = id(node)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            children = [n for kv in node.value for n in kv]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        if done:
            on_path.discard(nid)
            size[nid] = 1 + sum(size[id(c)] for c in children)
            if size[nid] > MAX_NODES:
                raise error([Problem(source, line_of(node), "", f"more than {MAX_NODES} values "
                                         "(after expanding aliases)")])
            continue
        if nid in size:
            continue
        if nid in on_path:
            raise error([Problem(source, line_of(node), "", "recursive YAML structure (alias to itself)")])
        on_path.add(nid)
        stack.append((node, True))
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, _ in node.value:
                k = str(key.value) if isinstance(key, yaml.ScalarNode) else repr(key)
                if k in seen:
                    msg = f"duplicate key (first at line {seen[k]})"
                    raise error([Problem(source, line_of(key), k, msg)])
                seen[k] = line_of(key)
        stack.extend((c, False) for c in children if id(c) not in size)


def _flow_depthline_of(text: str, limit: int) -> int | None:
    """Line where ``[``/``{`` nesting first exceeds ``limit`` (PyYAML is slow and recursive on such input)."""
    depth, line, quote = 0, 1, ""
    for ch in text:
        if ch == "\n":
            line += 1
        elif quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return line
        elif ch in "]}":
            depth = max(0, depth - 1)
    return None


def compose(text: str, source: str, error: type[FileProblems], needs: str = "") -> tuple[Any, yaml.Node | None]:
    """Parse YAML text into (plain data, node tree with marks); every failure is an ``error`` (its problems
    with lines). ``needs``: what an empty file lacks, for its message."""
    deep = _flow_depthline_of(text, MAX_FLOW_DEPTH)
    if deep is not None:
        raise error([Problem(source, deep, "", f"YAML nested more than {MAX_FLOW_DEPTH} levels deep")])
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)
        node = loader.get_single_node()
        if node is None:
            raise error([Problem(source, 1, "", f"empty file{': ' + needs if needs else ''}")])
        _check_tree(node, source, error)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        msg = " ".join(p for p in (exc.context, exc.problem) if p) or "malformed YAML"
        raise error([Problem(source, line, "", f"YAML: {msg}")]) from None
    except yaml.reader.ReaderError as exc:  # a control character: no mark, but a position
        line = text[: exc.position].count("\n") + 1
        raise error([Problem(source, line, "", f"YAML: character #x{exc.character:04x} not allowed")]) from None
    except yaml.YAMLError as exc:
        raise error([Problem(source, 1, "", f"YAML: {exc}")]) from None
    except RecursionError:
        raise error([Problem(source, 1, "", "YAML nested too deeply")]) from None
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. an impossible date 2024-13-45
        raise error([Problem(source, 1, "", f"YAML value cannot be read: {exc}")]) from None
    finally:
        if loader is not None:
            loader.dispose()
    return data, node


def locate(root: yaml.Node | None, loc: Sequence[str | int], *, name_missing: bool = True
            ) -> tuple[yaml.Node | None, str]:
    """Walk a pydantic error location through the node tree; skip union tags, which are not in the file.

    ``name_missing``: a last element that is not in the file is a missing/unknown key - name it in the path.
    """
    node, path = root, ""
    for i, part in enumerate(loc):
        nxt: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and str(key.value) == str(part):
                    nxt = value
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            nxt = node.value[part]
        if nxt is not None:
            node = nxt
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        elif name_missing and i == len(loc) - 1 and isinstance(part, str):
            path += f".{part}" if path else part  # a missing or unknown key: name it, point at its parent
    return node, path


def merge(problems: list[Problem]) -> list[Problem]:
    """One line per place: the branches of a union (``str | list``) fail separately but mean one mistake."""
    merged: dict[tuple[int, str], list[str]] = {}
    for p in problems:
        msgs = merged.setdefault((p.line, p.field), [])
        if p.message not in msgs:
            msgs.append(p.message)
    file = problems[0].file if problems else ""
    return [Problem(file, line, fld, "; or ".join(msgs)) for (line, fld), msgs in merged.items()]




def read_text(path: str | Path, what: str, error: type[FileProblems], max_bytes: int = MAX_BYTES) -> str:
    """An input file's text: unreadable -> InputError naming it; too large or not UTF-8 -> ``error`` with the
    line (``what``: "plan", "target", for the messages)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {what} {p}: {exc.strerror or exc}", "check the path") from None
    if len(raw) > max_bytes:
        raise error([Problem(str(p), 1, "", f"file larger than {max_bytes} bytes: not a {what}")])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error([Problem(str(p), raw[: exc.start].count(b"\n") + 1, "", "not UTF-8 text")]) from None
