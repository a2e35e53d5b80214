"""ComfyUI workflows with placeholders: the operator's graph, filled from each request.

A workflow is ComfyUI's API format ("Save (API Format)" / "Export (API)"): {node_id:
{"class_type", "inputs": {...}}}. Any string input may be, or hold, a placeholder:

  {{prompt}} {{negative_prompt}}           text; may sit inside a longer string ("photo, {{prompt}}")
  {{sampler_name}}                         text (default euler)
  {{width}} {{height}} {{seed}} {{steps}}  integers (steps default 20; seed random if not given)
  {{cfg}} {{denoise}}                      numbers (cfg default 7; denoise 1, or 0.75 for an edit)
  {{image}} {{mask}}                       the uploaded input image's and mask's file names (LoadImage)

A number placeholder must be the whole value ("{{width}}", which becomes 1024, not "1024").
{{prompt}} is required; {{image}} makes the model an editor (an image is then required), and
{{mask}} an inpainter.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson

MARK = re.compile(r"\{\{\s*([A-Za-z_]+)\s*\}\}")
TEXT = frozenset({"prompt", "negative_prompt", "sampler_name"})
WHOLE = frozenset({"width", "height", "seed", "steps", "cfg", "denoise", "image", "mask"})
"""Placeholders that must be the whole value (numbers, and file names)."""


class Workflow:
    def __init__(self, graph: dict[str, Any]) -> None:
        self.graph = graph
        self.marks = frozenset(name for text in _strings(graph) for name in MARK.findall(text))

    def fill(self, values: dict[str, Any]) -> dict[str, Any]:
        """A copy of the graph with every placeholder replaced by its value (typed, when whole)."""
        def fill(node: Any) -> Any:
            if isinstance(node, dict):
                return {k: fill(v) for k, v in node.items()}
            if isinstance(node, list):
                return [fill(v) for v in node]
            if isinstance(node, str) and "{{" in node:
                whole = MARK.fullmatch(node.strip())
                if whole:
                    return values[whole.group(1)]
                return MARK.sub(lambda m: str(values[m.group(1)]), node)
            return node
        return fill(self.graph)


def load(source: Any, where: str) -> Workflow:
    """A workflow from a file path or an object, checked; ValueError says what is wrong where."""
    if isinstance(source, str):
        try:
            graph = orjson.loads(Path(source).expanduser().read_bytes())
        except OSError as exc:
            raise ValueError(f"{where}: cannot read {source}: {exc.strerror or exc}") from None
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"{where}: {source} is not JSON: {exc}") from None
    else:
        graph = source
    if isinstance(graph, dict) and "nodes" in graph and "links" in graph:
        raise ValueError(f"{where}: this is ComfyUI's UI format; export the workflow in API format "
                         "(Workflow > Export (API))")
    if not isinstance(graph, dict) or not graph:
        raise ValueError(f"{where}: expected a workflow in ComfyUI's API format: {{node_id: {{class_type, inputs}}}}")
    for node_id, node in graph.items():
        if not (isinstance(node, dict) and isinstance(node.get("class_type"), str)
                and isinstance(node.get("inputs"), dict)):
            raise ValueError(f"{where}: node {node_id} needs a class_type and inputs (API format)")
        for text in _strings(node["inputs"]):
            for name in MARK.findall(text):
                if name not in TEXT | WHOLE:
                    raise ValueError(f"{where}: node {node_id} has an unknown placeholder {{{{{name}}}}}; known: "
                                     + ", ".join(sorted(TEXT | WHOLE)))
                if name in WHOLE and not MARK.fullmatch(text.strip()):
                    raise ValueError(f"{where}: node {node_id}: {{{{{name}}}}} must be the whole value")
    workflow = Workflow(graph)
    if "prompt" not in workflow.marks:
        raise ValueError(f"{where}: the workflow has no {{{{prompt}}}} placeholder")
    if "mask" in workflow.marks and "image" not in workflow.marks:
        raise ValueError(f"{where}: a workflow with {{{{mask}}}} needs {{{{image}}}} too")
    return workflow


def _strings(node: Any):
    if isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str):
        yield node
