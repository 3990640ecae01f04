"""``tf.train.Example`` without TensorFlow: :func:`parse_example` turns the bytes of one
Example (a TFRecord record, usually) into a dict of numpy arrays.

The message types are built at first use from their definition (TensorFlow's
``example.proto`` and ``feature.proto``: same field numbers, so the same wire format) in a
private protobuf descriptor pool, and parsed by the ``protobuf`` package (its C parser), so
neither TensorFlow nor generated code is needed. ``int64_list`` becomes an int64 array,
``float_list`` float32, ``bytes_list`` an object array of ``bytes``; every value is 1-D,
as ``tf.io.parse_single_example`` gives with ``VarLenFeature`` (densified).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from stoke.data.formats.base import RecordError


@functools.lru_cache(maxsize=1)
def _example_class():
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    FieldProto = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="stoke_tf_example.proto",
                                              package="stoke_tf_example", syntax="proto3")

    def message(name: str, fields: list[tuple], oneof: str | None = None, nested=()):
        proto = file.message_type.add(name=name)
        for item in nested:
            proto.nested_type.add().CopyFrom(item)
        if oneof:
            proto.oneof_decl.add(name=oneof)
        for field_name, number, kind, label, type_name, packed in fields:
            field = proto.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                field.type_name = type_name
            if packed:
                field.options.packed = True
            if oneof:
                field.oneof_index = 0
        return proto

    repeated, optional = FieldProto.LABEL_REPEATED, FieldProto.LABEL_OPTIONAL
    message("BytesList", [("value", 1, FieldProto.TYPE_BYTES, repeated, None, False)])
    message("FloatList", [("value", 1, FieldProto.TYPE_FLOAT, repeated, None, True)])
    message("Int64List", [("value", 1, FieldProto.TYPE_INT64, repeated, None, True)])
    message("Feature", [
        ("bytes_list", 1, FieldProto.TYPE_MESSAGE, optional, ".stoke_tf_example.BytesList", False),
        ("float_list", 2, FieldProto.TYPE_MESSAGE, optional, ".stoke_tf_example.FloatList", False),
        ("int64_list", 3, FieldProto.TYPE_MESSAGE, optional, ".stoke_tf_example.Int64List", False),
    ], oneof="kind")
    entry = descriptor_pb2.DescriptorProto(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=FieldProto.TYPE_STRING, label=optional)
    entry.field.add(name="value", number=2, type=FieldProto.TYPE_MESSAGE, label=optional,
                    type_name=".stoke_tf_example.Feature")
    message("Features", [("feature", 1, FieldProto.TYPE_MESSAGE, repeated,
                          ".stoke_tf_example.Features.FeatureEntry", False)], nested=[entry])
    message("Example", [("features", 1, FieldProto.TYPE_MESSAGE, optional,
                         ".stoke_tf_example.Features", False)])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("stoke_tf_example.Example"))


def parse_example(record: bytes) -> dict[str, np.ndarray]:
    """The features of one serialized ``tf.train.Example``: ``{name: 1-D numpy array}``.

    >>> sample = stoke.parse_example(record)           # doctest: +SKIP
    >>> image = simplejpeg.decode_jpeg(sample["image"][0]); label = sample["label"][0]
    """
    example = _example_class()()
    try:
        example.ParseFromString(bytes(record))
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError, said plainly
        raise RecordError(
            f"parse_example could not parse {len(record)} bytes as a tf.train.Example: {exc}. "
            "Is this record an Example (not a SequenceExample or raw data)?") from exc
    out: dict[str, Any] = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        if kind == "int64_list":
            out[name] = np.array(feature.int64_list.value, dtype=np.int64)
        elif kind == "float_list":
            out[name] = np.array(feature.float_list.value, dtype=np.float32)
        elif kind == "bytes_list":
            values = feature.bytes_list.value
            array = np.empty(len(values), dtype=object)
            array[:] = list(values)
            out[name] = array
        else:  # an empty Feature: TensorFlow treats it as a missing value
            out[name] = np.zeros(0, dtype=np.float32)
    return out


def serialize_example(features: dict[str, Any]) -> bytes:
    """The bytes of a ``tf.train.Example`` of ``features`` (name -> bytes, a list of bytes,
    or an int/float array), as TensorFlow writes it: the inverse of :func:`parse_example`,
    for writing TFRecords without TensorFlow."""
    example = _example_class()()
    for name, value in features.items():
        feature = example.features.feature[name]
        if isinstance(value, (bytes, bytearray)):
            feature.bytes_list.value.append(bytes(value))
            continue
        values = np.asarray(value)
        if values.dtype == object or values.dtype.kind == "S":
            feature.bytes_list.value.extend(bytes(v) for v in values.ravel())
        elif values.dtype.kind in "iub":
            feature.int64_list.value.extend(values.ravel().astype(np.int64).tolist())
        elif values.dtype.kind == "f":
            feature.float_list.value.extend(values.ravel().astype(np.float32).tolist())
        else:
            raise TypeError(f"serialize_example: feature {name!r} has dtype {values.dtype}; "
                            "give bytes, ints or floats.")
    return example.SerializeToString()
