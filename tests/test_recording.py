"""Recording file format and record → replay over real sockets."""
import threading
import time

import numpy as np
import pytest
import zmq
from conftest import gray_frame

from usnst_io import protocol
from usnst_io.recording import RecordingError, RecordingReader, RecordingWriter
from usnst_stream.publisher import open_publisher, publish
from usnst_stream.recorder import record
from usnst_stream.sources import limited, looped, open_source, phantom_stream


def _write(path, n=5):
    msgs = []
    with RecordingWriter(path) as w:
        for i in range(n):
            parts = [bytes(p) for p in protocol.encode(gray_frame(i))]
            w.write(1_000_000_000 + i * 33_000_000, parts)
            msgs.append(parts)
    return msgs


def test_recording_reads_back_every_message_byte_for_byte(tmp_path):
    msgs = _write(tmp_path / "r.usrec")
    reader = RecordingReader(tmp_path / "r.usrec")
    got = list(reader)
    assert [m.parts for m in got] == msgs
    assert got[1].recv_ns - got[0].recv_ns == 33_000_000
    assert reader.status == "complete"


@pytest.mark.parametrize("cut", [1, 7, 100, 400])
def test_truncated_recording_replays_up_to_its_last_whole_frame(tmp_path, cut):
    path = tmp_path / "r.usrec"
    msgs = _write(path)
    data = path.read_bytes()
    path.write_bytes(data[:-cut])
    reader = RecordingReader(path)
    got = [m.parts for m in reader]
    assert got == msgs[:len(got)] and len(got) < len(msgs)
    assert "truncated" in reader.status


def test_corrupted_record_is_detected_by_its_checksum(tmp_path):
    path = tmp_path / "r.usrec"
    msgs = _write(path, 3)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # flip bits inside the last frame's pixels
    path.write_bytes(bytes(data))
    reader = RecordingReader(path)
    assert [m.parts for m in reader] == msgs[:2]
    assert "checksum" in reader.status


def test_a_file_that_is_not_a_recording_is_refused(tmp_path):
    path = tmp_path / "x.usrec"
    path.write_bytes(b"hello world, not a recording")
    with pytest.raises(RecordingError, match="not a usnst recording"):
        RecordingReader(path)


def test_record_then_replay_sends_identical_bytes(tmp_path):
    ctx = zmq.Context.instance()
    # 1. A simulator stream recorded live.
    sim, (sim_ep,) = open_publisher("@tcp://127.0.0.1:*", ctx)
    path = tmp_path / "live.usrec"
    ready, stop = threading.Event(), threading.Event()
    result = {}
    t = threading.Thread(target=lambda: result.update(record(">" + sim_ep, path, stop, frames=12, ready=ready)))
    t.start()
    ready.wait(5)
    time.sleep(0.3)
    publish(limited(phantom_stream(32, 40, fps=100), frames=12), sim)
    t.join(10)
    sim.close()
    assert result["written"] == 12 and result["missing_by_seq"] == 0
    recorded = [m.parts for m in RecordingReader(path)]
    assert [protocol.decode(p).seq for p in recorded] == list(range(12))

    # 2. Replayed to a subscriber: the same bytes, in order, at the recorded pace.
    pub, (pub_ep,) = open_publisher("@tcp://127.0.0.1:*", ctx)
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(pub_ep)
    time.sleep(0.3)
    t0 = time.monotonic()
    counts = publish(open_source(path), pub)
    elapsed = time.monotonic() - t0
    got = [sub.recv_multipart() for _ in range(counts["sent"])]
    pub.close()
    sub.close()
    assert got == recorded
    assert elapsed >= 0.8 * 11 / 100  # 12 frames recorded at 100 fps take ≈ 0.11 s to replay


def test_replay_options_restamp_retime_and_loop(tmp_path):
    path = tmp_path / "r.usrec"
    msgs = _write(path, 3)
    before = protocol.now_ns()
    restamped = list(open_source(path, restamp=True))
    assert all(protocol.decode(p).capture_ns >= before for _, p in restamped)
    assert [bytes(p[2]) for _, p in restamped] == [m[2] for m in msgs]
    retimed = [t for t, _ in open_source(path, fps=10)]
    assert retimed == pytest.approx([0.0, 0.1, 0.2])
    looped_times = [t for t, _ in looped(lambda: open_source(path, fps=10), times=2)]
    assert looped_times == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])


def test_image_folder_and_video_sources(tmp_path):
    import cv2

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"f{i}.png"), np.full((10, 12), i * 50, np.uint8))
    frames = [protocol.decode(p) for _, p in open_source(folder, fps=5)]
    assert [f.pixels[0, 0, 0] for f in frames] == [0, 50, 100] and frames[2].meta["source"] == "f2.png"

    video = tmp_path / "v.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 12, (32, 24))
    for i in range(4):
        writer.write(np.full((24, 32, 3), 40 * i, np.uint8))
    writer.release()
    items = list(open_source(video))
    assert len(items) == 4 and items[1][0] == pytest.approx(1 / 12)
    assert protocol.decode(items[0][1]).pixels.shape == (24, 32, 1)


def test_a_prerendered_phantom_loop_repeats_its_frames_with_counting_seq_and_time():
    items = list(limited(phantom_stream(32, 40, fps=10, loop_frames=3), frames=7))
    frames = [protocol.decode(p) for _, p in items]
    assert [f.seq for f in frames] == list(range(7)) and [t for t, _ in items][-1] == pytest.approx(0.6)
    assert np.array_equal(frames[0].pixels, frames[3].pixels) and np.array_equal(frames[1].pixels, frames[4].pixels)
    assert not np.array_equal(frames[0].pixels, frames[1].pixels)  # the probe moves within the loop


def test_a_phantom_frame_sends_its_pose_its_spacing_alone_or_nothing_with_the_same_pixels():
    """`usnst simulate|demo --sends`: what a simulator that cannot send its pose gives the node."""
    from usnst_stream.phantom import PhantomRenderer, probe

    sent = {how: [protocol.decode(p) for _, p in limited(phantom_stream(32, 40, fps=25, probe_kind="linear",
                                                                         sends=how), frames=2)]
            for how in ("pose", "spacing", "nothing")}
    renderer = PhantomRenderer(32, 40, seed=0, geometry=probe("linear"))
    posed, spaced, bare = (sent[how][1] for how in ("pose", "spacing", "nothing"))
    assert np.allclose(protocol.image_to_world(posed.meta), renderer.image_to_world(1 / 25), atol=1e-8)
    assert protocol.spacing_mm(posed.meta) == protocol.spacing_mm(spaced.meta) == (round(renderer.pixel_mm, 6),) * 2
    assert protocol.image_to_world(spaced.meta) is None and "angle_rad" not in spaced.meta["probe"]
    assert protocol.image_to_world(bare.meta) is None and protocol.spacing_mm(bare.meta) is None
    assert bare.meta["probe"]["kind"] == "linear"
    assert np.array_equal(posed.pixels, spaced.pixels) and np.array_equal(posed.pixels, bare.pixels)
    with pytest.raises(ValueError, match="sends"):
        next(phantom_stream(32, 40, fps=25, sends="everything"))


def test_a_flipped_bit_costs_one_frame_not_the_rest_of_the_file(tmp_path):
    """The reader resynchronises on the next whole record (issue 25, item 4), and says what it skipped."""
    path = tmp_path / "r.usrec"
    msgs = _write(path, 6)
    data = bytearray(path.read_bytes())
    record = len(data) // 6
    data[16 + 2 * record + 40] ^= 0x01  # inside the third record
    data[16 + 4 * record + 2] ^= 0x10  # the fifth record's marker itself
    path.write_bytes(bytes(data))
    reader = RecordingReader(path)
    got = [m.parts for m in reader]
    assert got == [msgs[0], msgs[1], msgs[3], msgs[5]]
    assert reader.damaged == 2 and not reader.truncated and "skipped" in reader.status


def test_poses_survive_a_recording_and_replay_into_stylize(tmp_path):
    """The simulator's pose (meta.image_to_world) is recorded with its frame and read back per frame; a recording
    without poses reads as frames without them."""
    from usnst_io.media import read_sequence
    from usnst_stream.phantom import PhantomRenderer

    renderer = PhantomRenderer(32, 40, seed=0)
    with RecordingWriter(tmp_path / "posed.usrec") as w:
        for seq, (t, parts) in enumerate(limited(phantom_stream(32, 40, fps=25), frames=4)):
            w.write(1_000_000_000 + seq * 40_000_000, [bytes(p) for p in parts])
    seq = read_sequence(tmp_path / "posed.usrec")
    assert len(seq.poses) == 4
    for k, pose in enumerate(seq.poses):
        assert np.allclose(pose, renderer.image_to_world(k / 25), atol=1e-8)
    assert not np.allclose(seq.poses[0], seq.poses[3])  # the probe moved
    _write(tmp_path / "plain.usrec", n=3)
    assert read_sequence(tmp_path / "plain.usrec").poses == [None, None, None]
