"""The one module that touches lxml: hardened parsing, a tracking reader, and a small builder.

Everything else in `model/` sees `Node` (reading) and `build`/`serialise` (writing), so the XML
library could be swapped without touching the domain code.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from model.errors import Issue

MAX_BYTES = 1024 * 1024
"""Largest domain file accepted; real libvirt domains are a few KiB."""

_PROLOG = re.compile(rb"(?:\xef\xbb\xbf)?(?:<\?.*?\?>|<!--.*?-->|\s)*", re.DOTALL)
"""What may precede a DOCTYPE: a BOM, the XML declaration, comments, processing instructions."""


class XmlError(Exception):
    """The document is not well-formed or not acceptable XML; carries one `Issue`."""

    def __init__(self, issue: Issue) -> None:
        self.issue = issue
        super().__init__(issue.message)


def _parser() -> etree.XMLParser:
    """Build a parser that never expands entities, never loads DTDs and never touches the network."""
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_blank_text=False,
        collect_ids=False,
    )


def load(data: bytes) -> Node:
    """Parse bytes into a root `Node`; raise `XmlError` with the line for anything unacceptable.

    Guarantees: at most `MAX_BYTES`, no DOCTYPE (so no entity tricks), well-formed.
    """
    if len(data) > MAX_BYTES:
        raise XmlError(Issue(None, f"file is {len(data)} bytes; the limit is {MAX_BYTES} bytes"))
    if not data.strip():
        raise XmlError(Issue(None, "file is empty; a domain file holds one <domain> element"))
    prolog = _PROLOG.match(data)
    if prolog is not None and data.startswith(b"<!DOCTYPE", prolog.end()):
        # refused before libxml2 sees it: its entities are never parsed, let alone expanded
        at = data.count(b"\n", 0, prolog.end()) + 1
        raise XmlError(Issue(at, "a DOCTYPE is not allowed in domain files; remove it"))
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        line = exc.lineno if exc.lineno and exc.lineno > 0 else None
        message = str(exc.msg or exc).rsplit(", line ", 1)[0].strip()
        raise XmlError(Issue(line, f"not well-formed XML: {message}")) from exc
    except (ValueError, TypeError) as exc:  # lxml rejects some encodings and declarations this way
        raise XmlError(Issue(None, f"not acceptable XML: {exc}")) from exc
    tree = root.getroottree()
    docinfo: Any = tree.docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        at = data.find(b"<!DOCTYPE")
        line = data.count(b"\n", 0, at) + 1 if at >= 0 else 1
        raise XmlError(Issue(line, "a DOCTYPE is not allowed in domain files; remove it"))
    return Node(root)


class Node:
    """An element being read; it remembers which attributes and children were looked at.

    `leftover_attrs()` and `leftover_children()` then list what no reader consumed, so
    unsupported settings are reported instead of silently dropped. Name, namespace and the
    index of children by name are computed once per element: parsing is a hot path.
    """

    __slots__ = ("_by_name", "_index", "_kids", "_seen_attrs", "_seen_children", "element",
                 "namespace", "tag")

    def __init__(self, element: etree._Element, index: int = 0) -> None:
        self.element = element
        raw = element.tag
        text = raw if isinstance(raw, str) else ""
        if text.startswith("{"):
            uri, _, local = text[1:].partition("}")
            self.namespace: str | None = uri
            self.tag: str = local
        else:
            self.namespace = None
            self.tag = text
        self._index = index
        self._seen_attrs: set[str] = set()
        self._seen_children: set[int] = set()
        self._kids: list[Node] | None = None
        self._by_name: dict[tuple[str, str | None], list[Node]] | None = None

    @property
    def line(self) -> int | None:
        """The line where the element starts, or None when lxml does not know it."""
        line = self.element.sourceline
        return line if isinstance(line, int) and line > 0 else None

    @property
    def text(self) -> str | None:
        """The element's direct text, stripped, or None when there is none."""
        text = self.element.text
        return text.strip() if text is not None and text.strip() else None

    def attr(self, name: str) -> str | None:
        """Read (and mark as consumed) an unqualified attribute; None when absent."""
        self._seen_attrs.add(name)
        value = self.element.get(name)
        return None if value is None else str(value)

    def ignore_attrs(self, *names: str) -> None:
        """Mark attributes as consumed without reading them (accepted and irrelevant)."""
        self._seen_attrs.update(names)

    def kids(self) -> list[Node]:
        """All child elements (comments and processing instructions skipped), in order."""
        if self._kids is None:
            elements = [e for e in self.element if isinstance(e.tag, str)]
            self._kids = [Node(e, i) for i, e in enumerate(elements)]
        return self._kids

    def _named(self) -> dict[tuple[str, str | None], list[Node]]:
        """Children grouped by (local name, namespace), in document order."""
        if self._by_name is None:
            groups: dict[tuple[str, str | None], list[Node]] = {}
            for kid in self.kids():
                groups.setdefault((kid.tag, kid.namespace), []).append(kid)
            self._by_name = groups
        return self._by_name

    def children(self, tag: str, namespace: str | None = None) -> Iterator[Node]:
        """Yield (and mark as consumed) the children with this local name and namespace."""
        for kid in self._named().get((tag, namespace), ()):
            self._seen_children.add(kid._index)
            yield kid

    def child(self, tag: str, namespace: str | None = None) -> Node | None:
        """Return (and mark as consumed) the first child with this name, or None."""
        return next(self.children(tag, namespace), None)

    def consume(self, node: Node) -> None:
        """Mark one child as consumed (used when iterating over `kids()` directly)."""
        self._seen_children.add(node._index)

    def ignore(self, *tags: str) -> None:
        """Mark children with these names (any namespace) as consumed without reading them."""
        for (tag, _), kids in self._named().items():
            if tag in tags:
                self._seen_children.update(k._index for k in kids)

    def leftover_attrs(self) -> list[str]:
        """Unqualified attributes nobody read; namespaced attributes are never reported."""
        seen = self._seen_attrs
        return [str(a) for a in self.element.attrib
                if not str(a).startswith("{") and str(a) not in seen]

    def leftover_children(self) -> list[Node]:
        """Child elements nobody consumed, in document order."""
        if len(self._seen_children) == len(self.kids()):
            return []
        return [k for k in self.kids() if k._index not in self._seen_children]


@dataclass(frozen=True)
class Element:
    """A tree to serialise: tag, attributes (None values dropped), children and text."""

    tag: str
    attrs: Mapping[str, str | None] = field(default_factory=dict)
    children: Sequence[Element | None] = ()
    text: str | None = None
    namespace: str | None = None
    prefix: str | None = None


def _build(spec: Element) -> etree._Element:
    """Turn an `Element` spec into an lxml element, recursively."""
    if spec.namespace is not None:
        nsmap: Any = {spec.prefix: spec.namespace}
        element = etree.Element(f"{{{spec.namespace}}}{spec.tag}", nsmap=nsmap)
    else:
        element = etree.Element(spec.tag)
    for key, value in spec.attrs.items():
        if value is not None:
            element.set(key, value)
    if spec.text is not None:
        element.text = spec.text
    for child in spec.children:
        if child is not None:
            element.append(_build(child))
    return element


def serialise(spec: Element) -> bytes:
    """Serialise an `Element` tree as pretty-printed UTF-8 XML without an XML declaration."""
    element = _build(spec)
    etree.indent(element, space="  ")
    return etree.tostring(element, encoding="utf-8", pretty_print=True)
