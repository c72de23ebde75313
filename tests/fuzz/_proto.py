"""A hypothesis strategy for any protobuf message, built from its descriptor.

Every field gets values of its wire type, including the edges (empty and long strings, odd
unicode, integer limits, nested messages a few levels deep, map entries)::

    st_messages(admin_pb2.CreateEntryRequest)     # -> CreateEntryRequest instances
"""

from __future__ import annotations

from typing import Any

from google.protobuf import message as pb_message
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import strategies as st

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1), FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1), FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1), FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1), FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1), FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}

# Strings that reach the interesting branches of our validators more often than random text.
_HINT_STRINGS = st.sampled_from([
    "", "spiffe://example.org/web", "spiffe://example.org", "spiffe://example.org/spire/agent/x",
    "spiffe://other.org/x", "example.org", "unix", "uid:0", "0x1f", "deadbeef", "\x1b[31m", "a" * 300, "é",
])


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind in _INT_RANGES:
        low, high = _INT_RANGES[kind]
        return st.one_of(st.integers(low, high), st.sampled_from([0, 1, -1 if low < 0 else 2, low, high]))
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(width=32 if kind == FieldDescriptor.TYPE_FLOAT else 64)
    if kind == FieldDescriptor.TYPE_STRING:
        return st.one_of(st.text(max_size=40), _HINT_STRINGS)
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if kind == FieldDescriptor.TYPE_ENUM:
        return st.sampled_from([v.number for v in field.enum_type.values])
    raise TypeError(f"no strategy for field type {kind}")


def _fill(draw: st.DrawFn, msg: pb_message.Message, descriptor: Descriptor, depth: int) -> None:
    for field in descriptor.fields:
        if not draw(st.booleans()):
            continue
        if field.containing_oneof is not None and msg.WhichOneof(field.containing_oneof.name) is not None:
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key_f, value_f = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
            target = getattr(msg, field.name)
            for key in draw(st.lists(_scalar(key_f), max_size=3)):
                if value_f.message_type is None:
                    target[key] = draw(_scalar(value_f))
                elif depth > 0:
                    _fill(draw, target[key], value_f.message_type, depth - 1)
        elif field.message_type is not None:
            if depth <= 0:
                continue
            if field.is_repeated:
                for _ in range(draw(st.integers(0, 3))):
                    _fill(draw, getattr(msg, field.name).add(), field.message_type, depth - 1)
            else:
                sub = getattr(msg, field.name)
                sub.SetInParent()
                _fill(draw, sub, field.message_type, depth - 1)
        elif field.is_repeated:
            getattr(msg, field.name).extend(draw(st.lists(_scalar(field), max_size=4)))
        else:
            setattr(msg, field.name, draw(_scalar(field)))


def st_messages(cls: type[pb_message.Message], depth: int = 3) -> st.SearchStrategy[Any]:
    """Instances of ``cls`` with any subset of fields set to edge-heavy values."""

    @st.composite
    def build(draw: st.DrawFn) -> pb_message.Message:
        msg = cls()
        _fill(draw, msg, cls.DESCRIPTOR, depth)
        return msg

    return build()


def request_classes(module: Any) -> list[type[pb_message.Message]]:
    """Every ``*Request`` message class of a generated ``_pb2`` module."""
    return [message_factory.GetMessageClass(d) for name, d in sorted(module.DESCRIPTOR.message_types_by_name.items())
            if name.endswith("Request")]
