"""The /docs page: the OpenAPI document rendered as one self-contained HTML page.

Design rule: everything on the page is read from the document (never from the routes or
types directly), so the page and /openapi.json cannot disagree; no script, no stylesheet or
font from elsewhere, so it works offline and behind any proxy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from html import escape
from typing import Any

_REF = "#/components/schemas/"
_CONSTRAINTS = (
    ("minimum", "≥ {}"),
    ("exclusiveMinimum", "> {}"),
    ("maximum", "≤ {}"),
    ("exclusiveMaximum", "< {}"),
    ("minLength", "length ≥ {}"),
    ("maxLength", "length ≤ {}"),
    ("minItems", "items ≥ {}"),
    ("maxItems", "items ≤ {}"),
    ("maxProperties", "keys ≤ {}"),
    ("pattern", "matches <code>{}</code>"),
    ("default", "default <code>{}</code>"),
)
_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:70rem;padding:1rem 2rem;
color:#1b1f24}
h1{margin-bottom:.2rem}h2{border-bottom:2px solid #d0d7de;padding-bottom:.2rem;margin-top:2.5rem}
h3{margin:1.8rem 0 .3rem}code{background:#f3f4f6;padding:0 .25rem;border-radius:3px}
table{border-collapse:collapse;margin:.4rem 0 .8rem;width:100%}
td,th{border:1px solid #d0d7de;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}.m{display:inline-block;min-width:4.2rem;font-weight:700;
font-family:monospace}.get{color:#0969da}.post{color:#1a7f37}.put{color:#9a6700}
.patch{color:#8250df}.delete{color:#cf222e}.scope{color:#57606a;font-size:.9em}
ul.toc{list-style:none;padding-left:0}ul.toc li{margin:.1rem 0}
"""


def render(doc: Mapping[str, Any]) -> str:
    """The whole page for an OpenAPI document."""
    info = doc["info"]
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        '<meta name=viewport content="width=device-width,initial-scale=1">',
        f"<title>{escape(info['title'])} {escape(info['version'])}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{escape(info['title'])} <small>{escape(info['version'])}</small></h1>",
        f"<p>{_text(info.get('description', ''))}</p>",
        f"<p>OpenAPI {escape(doc['openapi'])}: <a href=/openapi.json>/openapi.json</a>.</p>",
    ]
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            by_tag.setdefault(op["tags"][0], []).append((method, path, op))
    tags = [t["name"] for t in doc.get("tags", [])] + sorted(set(by_tag) - {
        t["name"] for t in doc.get("tags", [])
    })  # fmt: skip
    descriptions = {t["name"]: t.get("description", "") for t in doc.get("tags", [])}
    parts.append("<h2>Operations</h2><ul class=toc>")
    for tag in tags:
        for method, path, op in by_tag.get(tag, []):
            parts.append(
                f"<li><a href=#{_anchor(op['operationId'])}>{_method(method)} "
                f"<code>{escape(path)}</code></a> {escape(op['summary'])}</li>"
            )
    parts.append("</ul>")
    for tag in tags:
        if tag not in by_tag:
            continue
        parts.append(f"<h2 id=tag-{_anchor(tag)}>{escape(tag)}</h2>")
        parts.append(f"<p>{_text(descriptions.get(tag, ''))}</p>")
        for method, path, op in by_tag[tag]:
            parts.append(_operation(method, path, op))
    parts.append("<h2 id=schemas>Schemas</h2>")
    for name, schema in doc.get("components", {}).get("schemas", {}).items():
        parts.append(_schema_section(name, schema))
    parts.append("</body></html>")
    return "\n".join(parts)


def _operation(method: str, path: str, op: Mapping[str, Any]) -> str:
    out = [
        f"<h3 id={_anchor(op['operationId'])}>{_method(method)} <code>{escape(path)}</code></h3>",
        f"<p><b>{escape(op['summary'])}</b>. {_text(op.get('description', ''))}</p>",
        f"<p class=scope>Security: {_security(op.get('security', []))}</p>",
    ]
    if op.get("parameters"):
        out.append("<table><tr><th>parameter</th><th>in</th><th>type</th><th>description</th></tr>")
        for p in op["parameters"]:
            required = " <b>required</b>" if p.get("required") else ""
            out.append(
                f"<tr><td><code>{escape(p['name'])}</code>{required}</td>"
                f"<td>{escape(p['in'])}</td><td>{_type(p['schema'])}</td>"
                f"<td>{_text(p.get('description', ''))}</td></tr>"
            )
        out.append("</table>")
    body = op.get("requestBody")
    if body:
        for media, item in body["content"].items():
            out.append(
                f"<p>Request body <code>{escape(media)}</code>: {_type(item['schema'])}. "
                f"{_text(body.get('description', ''))}</p>"
            )
    out.append("<table><tr><th>status</th><th>body</th><th>description</th></tr>")
    for status, response in op["responses"].items():
        bodies = [
            f"<code>{escape(media)}</code> {_type(item.get('schema', {}))}"
            for media, item in response.get("content", {}).items()
        ] or ["none"]
        headers = "".join(
            f"<br>header <code>{escape(name)}</code>: {_text(h.get('description', ''))}"
            for name, h in response.get("headers", {}).items()
        )
        out.append(
            f"<tr><td>{escape(status)}</td><td>{'<br>'.join(bodies)}</td>"
            f"<td>{_text(response['description'])}{headers}</td></tr>"
        )
    out.append("</table>")
    return "\n".join(out)


def _schema_section(name: str, schema: Mapping[str, Any]) -> str:
    out = [f"<h3 id=schema-{_anchor(name)}>{escape(name)}</h3>"]
    if schema.get("description"):
        out.append(f"<p>{_text(schema['description'])}</p>")
    properties = schema.get("properties")
    if not properties:
        out.append(f"<p>{_type(schema)}</p>")
        return "\n".join(out)
    required = set(schema.get("required", ()))
    out.append("<table><tr><th>field</th><th>type</th></tr>")
    for field, sub in properties.items():
        mark = " <b>required</b>" if field in required else ""
        out.append(f"<tr><td><code>{escape(field)}</code>{mark}</td><td>{_type(sub)}</td></tr>")
    out.append("</table>")
    return "\n".join(out)


def _type(schema: Mapping[str, Any]) -> str:
    """A schema in a few words, with links to the named ones."""
    if "$ref" in schema:
        name = schema["$ref"].removeprefix(_REF)
        return f"<a href=#schema-{_anchor(name)}>{escape(name)}</a>"
    if "anyOf" in schema:
        text = " | ".join(_type(s) for s in schema["anyOf"])
    elif "enum" in schema:
        text = "one of " + ", ".join(f"<code>{escape(_plain(v))}</code>" for v in schema["enum"])
    elif "const" in schema:
        text = f"<code>{escape(_plain(schema['const']))}</code>"
    elif schema.get("type") == "array":
        if "prefixItems" in schema:
            text = "[" + ", ".join(_type(s) for s in schema["prefixItems"]) + "]"
        else:
            text = f"array of {_type(schema.get('items', {}))}"
    elif schema.get("type") == "object" and isinstance(schema.get("additionalProperties"), dict):
        text = f"object of {_type(schema['additionalProperties'])}"
    elif "type" in schema:
        kind = schema["type"]
        text = escape(" | ".join(kind) if isinstance(kind, list) else str(kind))
        if "format" in schema:
            text += f" ({escape(schema['format'])})"
    else:
        text = "any"
    limits = [
        template.format(escape(_plain(schema[key])))
        for key, template in _CONSTRAINTS
        if key in schema
    ]
    return text + (f" <small>({'; '.join(limits)})</small>" if limits else "")


def _security(requirements: list[Mapping[str, list[str]]]) -> str:
    if not requirements:
        return "none (public)"
    options = []
    for requirement in requirements:
        if not requirement:
            options.append("anonymous")
        for scheme, scopes in requirement.items():
            need = f" with scope {', '.join(scopes)} or above" if scopes else ""
            options.append(f"{escape(scheme)}{escape(need)}")
    return " or ".join(options)


def _method(method: str) -> str:
    return f"<span class='m {escape(method)}'>{escape(method.upper())}</span>"


def _anchor(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text)


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _text(text: str) -> str:
    """Description text: escaped, with `code` spans kept."""
    pieces = escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces))
