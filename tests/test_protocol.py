"""Wire protocol: what round-trips, and every way a message is rejected (with its reason)."""
import math

import msgpack
import numpy as np
import pytest
from conftest import gray_frame

from usnst_io import protocol
from usnst_io.protocol import Frame, Limits, Rejected, decode, encode


def _header(**overrides):
    h = {"version": 1, "seq": 7, "capture_ns": 123, "width": 4, "height": 3, "channels": 1, "dtype": "uint8"}
    h.update(overrides)
    return {k: v for k, v in h.items() if v is not _DROP}


_DROP = object()


def _parts(header, payload=None, topic=protocol.INPUT_TOPIC):
    if payload is None:
        payload = bytes(header.get("width", 4) * header.get("height", 3))
    return [topic, msgpack.packb(header), payload]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("channels", [1, 3])
def test_frames_round_trip_bit_exact_with_metadata(dtype, channels):
    meta = {"probe": {"apex_mm": [1.5, 0.0], "angle_rad": -0.1}, "style": "clinical", "tags": [1, "a"]}
    frame = gray_frame(42, h=5, w=9, dtype=dtype, channels=channels, meta=meta)
    back = decode(encode(frame))
    assert isinstance(back, Frame)
    assert back.seq == 42 and back.capture_ns == frame.capture_ns
    assert back.pixels.dtype == np.dtype(dtype) and back.pixels.shape == (5, 9, channels)
    assert back.pixels.tobytes() == frame.pixels.tobytes()
    assert back.meta == meta


def test_encoded_payload_is_raw_little_endian_row_major():
    pixels = np.arange(6, dtype="<u2").reshape(2, 3)
    parts = encode(Frame(1, 2, pixels))
    assert bytes(parts[2]) == pixels.tobytes()
    header = msgpack.unpackb(parts[1])
    assert (header["width"], header["height"], header["channels"], header["dtype"]) == (3, 2, 1, "uint16")


def test_node_timestamps_survive_the_round_trip():
    stamps = {"recv_ns": 10, "infer_start_ns": 11, "infer_end_ns": 12, "publish_ns": 13}
    frame = Frame(1, 9, np.zeros((2, 2, 1), np.uint8), stamps=stamps)
    assert decode(encode(frame)).stamps == stamps


def test_decode_is_zero_copy_over_the_received_buffer():
    payload = bytearray(12)
    frame = decode(_parts(_header(), payload))
    payload[5] = 200
    assert frame.pixels[1, 1, 0] == 200


@pytest.mark.parametrize("parts, reason", [
    ([b"t", msgpack.packb(_header())], "parts"),
    ([b"t", msgpack.packb(_header()), bytes(12), b"extra"], "parts"),
    ([b"t", b"\xc1\xc1\xc1", bytes(12)], "header_decode"),
    ([b"t", msgpack.packb([1, 2, 3]), bytes(12)], "header_type"),
    ([b"t", b"\x00" * (protocol.MAX_HEADER_BYTES + 1), bytes(12)], "header_size"),
])
def test_structurally_malformed_messages_are_rejected(parts, reason):
    result = decode(parts)
    assert isinstance(result, Rejected) and result.reason == reason


@pytest.mark.parametrize("overrides, reason", [
    ({"version": 2}, "version"),
    ({"version": "1"}, "field_type"),
    ({"seq": _DROP}, "missing_field"),
    ({"seq": -1}, "field_range"),
    ({"seq": 1.5}, "field_type"),
    ({"width": True}, "field_type"),
    ({"dtype": "int64"}, "dtype"),
    ({"dtype": 5}, "field_type"),
    ({"channels": 2}, "channels"),
    ({"width": 0}, "dimensions"),
    ({"height": 100_000}, "dimensions"),
    ({"meta": [1, 2]}, "field_type"),
])
def test_header_fields_are_validated(overrides, reason):
    header = _header(**overrides)
    result = decode(_parts(header, bytes(12)))
    assert isinstance(result, Rejected), result
    assert result.reason == reason
    assert result.detail  # a sentence for the log


def test_payload_length_must_match_the_header():
    assert decode(_parts(_header(), bytes(11))).reason == "payload_size"
    assert decode(_parts(_header(dtype="uint16"), bytes(12))).reason == "payload_size"
    assert isinstance(decode(_parts(_header(dtype="uint16"), bytes(24))), Frame)


def test_dimension_limit_is_configurable():
    limits = Limits(max_width=3, max_height=3)
    assert decode(_parts(_header()), limits).reason == "dimensions"
    assert isinstance(decode(_parts(_header(width=3)), limits), Frame)
    assert limits.max_message_bytes() >= 3 * 3 * 3 * 4


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_float_frames_are_rejected(bad):
    pixels = np.zeros((2, 2, 1), np.float32)
    pixels[1, 0, 0] = bad
    assert decode(encode(Frame(1, 1, pixels))).reason == "non_finite"


def test_unsupported_dtype_is_refused_at_encode():
    with pytest.raises(ValueError, match="unsupported dtype"):
        encode(Frame(1, 1, np.zeros((2, 2), np.int32)))


def test_restamp_rewrites_only_the_header_and_leaves_malformed_messages_alone():
    frame = protocol.Frame(7, 123, np.arange(12, dtype=np.uint8).reshape(3, 4), {"k": 1})
    parts = protocol.encode(frame)
    before = protocol.now_ns()
    again = protocol.decode(protocol.restamp(parts))
    assert again.capture_ns >= before and again.seq == 7 and again.meta == {"k": 1}
    assert np.array_equal(again.pixels[:, :, 0], frame.pixels)
    assert protocol.decode(protocol.restamp(parts, 5)).capture_ns == 5
    junk = [b"", b"\xc1not msgpack", b"x"]
    assert protocol.restamp(junk) is junk and protocol.restamp([b"one"]) == [b"one"]


def test_a_pose_round_trips_exactly_and_a_frame_without_one_has_none():
    pose = np.array([[0.3, 0.01, 0, -20.5], [-0.01, 0.3, 0, 1.25], [0, 0, 0.3, 0], [0, 0, 0, 1]])
    frame = gray_frame(3, meta={protocol.IMAGE_TO_WORLD: pose.ravel().tolist(), "probe": {"angle_rad": 0.1}})
    back = decode(encode(frame))
    assert np.array_equal(protocol.image_to_world(back.meta), pose)  # float64 on the wire: bit-exact
    assert protocol.image_to_world(decode(encode(gray_frame(4))).meta) is None


@pytest.mark.parametrize("given, problem", [
    ([1.0] * 15, "16 numbers"),
    ([1.0] * 15 + ["x"], "16 numbers"),
    ([True] + [0.0] * 15, "16 numbers"),
    ({"m": 1}, "16 numbers"),
    ([1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 2], "last row"),
    ([math.nan] + [0.0] * 14 + [1.0], "NaN"),
    ([1, 2, 0, 0, 2, 4, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1], "span a plane"),
])
def test_a_malformed_pose_is_named_not_used(given, problem):
    with pytest.raises(ValueError, match=problem):
        protocol.image_to_world({protocol.IMAGE_TO_WORLD: given})
