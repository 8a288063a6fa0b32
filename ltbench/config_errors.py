"""Config mistakes in one line: which file or key, what was expected, the closest valid keys.

jsonargparse reports a bad key or value as a nested, multi-line account of every Union alternative
it tried, after a 65-line usage text, and a YAML syntax error without the file's name. The parser
here raises ``LTBenchError`` with one line instead; YAML files are checked before parsing.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import re
import typing
from pathlib import Path
from typing import Any, Iterable, Optional

import yaml
from lightning.pytorch.cli import LightningArgumentParser

from ltbench.errors import LTBenchError

_CLASS = re.compile(r"Problem with given class_path '([^']+)':")
_KEY = re.compile(r'Parser key "([^"]+)":')
_UNKNOWN = re.compile(r"Option '([^']+)' is not accepted|unrecognized arguments: --([^\s=]+)|does not accept option '([^']+)'")
_EXPECTED = re.compile(r"Expected a (.+?)\. Got value: (.*)")


def check_yaml_files(argv: Iterable[str]) -> None:
    """Every ``--config`` file, and the YAML pieces it names, parses; else the file, line and problem."""
    args = list(argv)
    files = [a.split("=", 1)[1] for a in args if a.startswith("--config=")]
    files += [b for a, b in zip(args, args[1:]) if a in ("--config", "-c")]
    seen: set[Path] = set()
    todo = [Path(f) for f in files]
    while todo:
        path = todo.pop()
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise LTBenchError(f"{where}: YAML syntax error: {problem}; expected a YAML mapping of config keys") from None
        except UnicodeDecodeError as e:
            raise LTBenchError(f"{path}: not UTF-8 text (byte {e.start}); expected a YAML config") from None
        todo += [path.parent / p for p in _strings(data) if p.endswith((".yaml", ".yml")) and (path.parent / p).is_file()]


def _strings(obj: Any) -> Iterable[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def _type_name(text: str) -> str:
    text = re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", text).replace("NoneType", "None")
    m = re.fullmatch(r"typing\.Literal\[(.*)\]", text)
    return f"one of {m.group(1)}" if m else text.replace("typing.", "")


def _init_params(cls: type) -> dict[str, Any]:
    """Constructor parameters of ``cls`` through ``**kwargs`` to its bases, with their annotations;
    a dataclass-typed parameter also offers its fields (``optimizer.lr``)."""
    out: dict[str, Any] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        try:
            hints = typing.get_type_hints(init)
        except Exception:  # noqa: BLE001 - unresolvable annotations: names without types
            hints = {}
        params = inspect.signature(init).parameters
        for name, p in params.items():
            if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                out.setdefault(name, hints.get(name, p.annotation))
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            break
    for name, hint in list(out.items()):
        if dataclasses.is_dataclass(hint):
            for f in dataclasses.fields(hint):
                out.setdefault(f"{name}.{f.name}", f.type)
    return out


def _annotation(hint: Any) -> str:
    if hint is inspect.Parameter.empty:
        return "?"
    return _type_name(hint if isinstance(hint, str) else hint.__name__ if isinstance(hint, type) else str(hint))


def _class_keys(class_path: str) -> dict[str, str]:
    try:
        module, name = class_path.rsplit(".", 1)
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return {}
    return {k: _annotation(v) for k, v in _init_params(cls).items()}


def _parser_keys(parser: Any) -> dict[str, str]:
    keys = {}
    for action in getattr(parser, "_actions", []):
        dest = getattr(action, "dest", None)
        if dest and dest not in ("help", "config", "print_config"):
            keys[dest] = _type_name(str(getattr(action, "_typehint", None) or getattr(action.type, "__name__", "") or "?"))
    return keys


def _closest(key: str, valid: dict[str, str], prefix: str) -> str:
    close = difflib.get_close_matches(key, list(valid), n=3, cutoff=0.6)
    if not close:  # a wrong last part: offer the keys that share everything before it
        head = key.rsplit(".", 1)[0] if "." in key else ""
        close = [k for k in valid if head and k.startswith(head + ".")][:3]
    if not close and valid:
        return "valid keys: " + ", ".join(f"{prefix}{k}" for k in list(valid)[:8]) + (" ..." if len(valid) > 8 else "")
    return ", ".join(f"{prefix}{k} ({valid[k]})" for k in close)


def one_line(message: str, subcommand_parser: Any = None) -> str:
    """jsonargparse's account of a parse error as one line naming the full key."""
    keys = _KEY.findall(message)
    class_path = (_CLASS.search(message) or [None, None])[1]
    outer = keys[0] if keys and not message.startswith("Subcommand") else ""
    prefix = f"{outer}.init_args." if class_path else (f"{outer}." if outer else "")
    unknown = _UNKNOWN.search(message)
    if unknown:
        key = next(g for g in unknown.groups() if g)
        valid = _class_keys(class_path) if class_path else _parser_keys(subcommand_parser)
        where = f" of {class_path}" if class_path else ""
        near = _closest(key, valid, prefix)
        near = near if near.startswith("valid keys") else f"closest valid keys: {near}" if near else ""
        return f"unknown key {prefix}{key}{where}" + (f"; {near}" if near else "")
    expected = _EXPECTED.search(message)
    inner = [k for k in keys[1:]] if class_path else []
    full = prefix + inner[-1] if inner else (outer or "?")
    if expected:
        return f"{full}: expected {_type_name(expected.group(1))}, got {expected.group(2).strip()!r}"
    subtypes = re.search(r"Subtypes: \[(.*)\]", message)
    given = re.search(r"Given value: (.*)", message)
    if subtypes and given and not class_path:
        types = " or ".join(_type_name(t.strip()) for t in re.split(r",\s*(?=<|typing)", subtypes.group(1)))
        return f"{full}: expected {types}, got {given.group(1).strip()!r}"
    lines = [ln.strip(" -") for ln in message.splitlines() if ln.strip()]
    detail = next((ln for ln in lines[1:] if not ln.startswith(("Does not validate", "Subtypes", "Errors", "Given value"))), "")
    return f"{full}: {detail}" if outer and detail else " ".join(lines[:2])


class ConfigParser(LightningArgumentParser):
    """LightningCLI's parser whose errors are one ``LTBenchError`` line instead of usage and a nested report.

    Nested parsers (a class's ``init_args``) keep jsonargparse's own errors, which it collects while
    trying each alternative of a Union; only the top-level parser, the one that would exit, reports.
    """

    def error(self, message: str, ex: Optional[Exception] = None) -> typing.NoReturn:
        if not self.exit_on_error:
            super().error(message, ex)
        parsers = getattr(getattr(self, "_subcommands_action", None), "_name_parser_map", {})
        m = re.match(r"Subcommand '(\w+)'", message)
        sub = parsers.get(m.group(1)) if m else (next(iter(parsers.values())) if len(parsers) == 1 else self)
        raise LTBenchError(one_line(message, sub)) from None
