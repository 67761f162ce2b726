"""Text of the generated system message and of the developer message (instructions + tools).

The layout follows openai-harmony's renderer, character for character: the tools become a
TypeScript-like `namespace functions { ... }` block built from each tool's JSON schema. The tests
compare the rendered ids with openai-harmony over many schemas.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

DEFAULT_IDENTITY = "You are ChatGPT, a large language model trained by OpenAI."
DEFAULT_KNOWLEDGE_CUTOFF = "2024-06"
REASONING_EFFORTS = ("low", "medium", "high")
VALID_CHANNELS = ("analysis", "commentary", "final")


@dataclass(frozen=True)
class ToolSpec:
    """One function tool: OpenAI's `{"type": "function", "function": {...}}` unwrapped."""

    name: str
    description: str = ""
    parameters: Any = None  # a JSON schema (usually an object schema) or None for no arguments


def rust_lines(text: str) -> list[str]:
    """Rust's `str::lines`: split on \\n, drop one trailing \\r per line and a final empty line."""
    if not text:
        return []
    parts = text.split("\n")
    if parts[-1] == "":
        parts.pop()
    return [p[:-1] if p.endswith("\r") else p for p in parts]


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _get(schema: Any, key: str) -> Any:
    return schema.get(key) if isinstance(schema, dict) else None


def _is_enum(schema: Any) -> bool:
    values = _get(schema, "enum")
    return isinstance(values, list) and len(values) > 0


def _default_text(schema: Any, default: Any, quote_enum: bool) -> str:
    """A default value as harmony writes it: strings quoted unless the schema is an enum."""
    if isinstance(default, str):
        if not _is_enum(schema) or quote_enum:
            return f'"{default}"'
        return default
    return _json(default)


def _nullable(schema: Any, type_str: str) -> str:
    if _get(schema, "nullable") is True and "null" not in type_str:
        return f"{type_str} | null"
    return type_str


def _variant_comments(variant: Any, skip_description: bool, property_desc: str | None,
                      quote_enum: bool) -> str:
    comments: list[str] = []
    desc = _get(variant, "description")
    if not skip_description and isinstance(desc, str) and desc != property_desc:
        comments.append(desc)
    if isinstance(variant, dict) and "default" in variant:
        comments.append("default: " + _default_text(variant, variant["default"], quote_enum))
    return f" // {' '.join(comments)}" if comments else ""


def schema_to_typescript(schema: Any, indent: str = "") -> str:
    """A JSON schema as the TypeScript-like type harmony shows the model."""
    one_of = _get(schema, "oneOf")
    if isinstance(one_of, list):
        out = []
        for variant in one_of:
            type_str = _nullable(variant, schema_to_typescript(variant, indent + "   "))
            out.append(f"\n{indent} | {type_str}"
                       + _variant_comments(variant, False, None, quote_enum=True))
        return "".join(out)

    kind = _get(schema, "type")
    if isinstance(kind, list):
        names = [("number" if t == "integer" else t) for t in kind if isinstance(t, str)]
        if names:
            return " | ".join(names)
    if not isinstance(kind, str):
        return "any"
    if kind == "object":
        return _object_to_typescript(schema, indent)
    if kind == "string":
        values = _get(schema, "enum")
        if isinstance(values, list):
            names = [f'"{v}"' for v in values if isinstance(v, str)]
            if names:
                return " | ".join(names)
        return "string"
    if kind in ("number", "integer"):
        return "number"
    if kind == "boolean":
        return "boolean"
    if kind == "array":
        if isinstance(schema, dict) and "items" in schema:
            return schema_to_typescript(schema["items"], indent) + "[]"
        return "Array<any>"
    return "any"


def _object_to_typescript(schema: dict[str, Any], indent: str) -> str:
    out: list[str] = []
    desc = schema.get("description")
    if isinstance(desc, str):
        out.append(f"{indent}// {desc}\n")
    out.append("{\n")
    props = schema.get("properties")
    if isinstance(props, dict):
        required_list = schema.get("required")
        required = {r for r in required_list if isinstance(r, str)} if isinstance(
            required_list, list) else set()
        for key, val in props.items():
            mark = "" if key in required else "?"
            title = _get(val, "title")
            if isinstance(title, str):
                out.append(f"{indent}// {title}\n{indent}//\n")
            has_one_of = isinstance(val, dict) and "oneOf" in val
            val_desc = _get(val, "description")
            if not has_one_of and isinstance(val_desc, str):
                out.append(f"{indent}// {val_desc}\n")
            examples = _get(val, "examples")
            if isinstance(examples, list) and examples:
                out.append(f"{indent}// Examples:\n")
                out.extend(f'{indent}// - "{ex}"\n' for ex in examples if isinstance(ex, str))
            variants = _get(val, "oneOf")
            if isinstance(variants, list):
                out.append(_one_of_property(key, mark, val, variants, indent))
                continue
            type_str = _nullable(val, schema_to_typescript(val, indent + "    "))
            line = f"{indent}{key}{mark}: {type_str},"
            if not has_one_of and isinstance(val, dict) and "default" in val:
                line += " // default: " + _default_text(val, val["default"], quote_enum=False)
            out.append(line + "\n")
    out.append(f"{indent}}}")
    return "".join(out)


def _one_of_property(key: str, mark: str, val: dict[str, Any], variants: list[Any],
                     indent: str) -> str:
    out: list[str] = []
    prop_desc = val.get("description") if isinstance(val.get("description"), str) else None
    first_desc = _get(variants[0], "description") if variants else None
    desc_above = prop_desc is not None and prop_desc != first_desc
    if desc_above:
        out.append(f"{indent}// {prop_desc}\n")
    if "default" in val:
        out.append(f"{indent}// default: "
                   + _default_text(val, val["default"], quote_enum=False) + "\n")
    out.append(f"{indent}{key}{mark}:\n")
    for i, variant in enumerate(variants):
        type_str = _nullable(variant, schema_to_typescript(variant, indent + "   "))
        comments = _variant_comments(variant, i == 0 and desc_above, prop_desc, quote_enum=False)
        out.append(f"{indent} | {type_str}{comments}\n")
    out.append(f"{indent},\n")
    return "".join(out)


def tools_section(tools: list[ToolSpec]) -> str:
    lines = ["## functions\n", "namespace functions {\n"]
    for tool in tools:
        lines.extend(f"// {line}" for line in rust_lines(tool.description))
        if tool.parameters is None:
            lines.append(f"type {tool.name} = () => any;\n")
        else:
            params = schema_to_typescript(tool.parameters)
            lines.append(f"type {tool.name} = (_: {params}) => any;\n")
    lines.append("} // namespace functions")
    return "# Tools\n\n" + "\n".join(lines)


def system_text(
    *,
    model_identity: str | None = DEFAULT_IDENTITY,
    knowledge_cutoff: str | None = DEFAULT_KNOWLEDGE_CUTOFF,
    conversation_start_date: str | None = None,
    reasoning_effort: str | None = "medium",
    has_function_tools: bool = False,
) -> str:
    sections: list[str] = []
    top = [model_identity] if model_identity is not None else []
    if knowledge_cutoff is not None:
        top.append(f"Knowledge cutoff: {knowledge_cutoff}")
    if conversation_start_date is not None:
        top.append(f"Current date: {conversation_start_date}")
    if top:
        sections.append("\n".join(top))
    if reasoning_effort is not None:
        sections.append(f"Reasoning: {reasoning_effort}")
    channels = (f"# Valid channels: {', '.join(VALID_CHANNELS)}. "
                "Channel must be included for every message.")
    if has_function_tools:
        channels += "\nCalls to these tools must go to the commentary channel: 'functions'."
    sections.append(channels)
    return "\n\n".join(sections)


_TOOLS_CACHE: dict[str, str] = {}


def _cached_tools_section(tools: list[ToolSpec]) -> str:
    """Datasets repeat the same tool list on many rows; render each distinct list once."""
    key = _json([[t.name, t.description, t.parameters] for t in tools])
    text = _TOOLS_CACHE.get(key)
    if text is None:
        if len(_TOOLS_CACHE) >= 1024:
            _TOOLS_CACHE.clear()
        text = _TOOLS_CACHE[key] = tools_section(tools)
    return text


def developer_text(instructions: str | None, tools: list[ToolSpec]) -> str:
    sections: list[str] = []
    if instructions is not None:
        sections += ["# Instructions", instructions]
    if tools:
        sections.append(_cached_tools_section(tools))
    return "\n\n".join(sections)
