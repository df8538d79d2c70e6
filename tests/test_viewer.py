"""`usnst view` headless: pairs input and stylized frames by seq and writes a playable side-by-side video."""
import os
import threading
import time

import cv2
import numpy as np
import pytest
import zmq

from usnst_io import protocol
from usnst_stream.viewer import ViewConfig, Viewer, compose
from usnst_stream.window import GuiUnavailable


def test_compose_puts_input_left_stylized_right_and_stats_below():
    a = np.zeros((20, 30, 1), np.uint8)
    b = np.full((20, 30, 1), 200, np.uint16) * 256
    picture = compose(a, b, ["line one", "line two"])
    assert picture.shape == (20 + 18 * 2 + 8, 60, 3)
    assert picture[:20, :30].max() == 0 and picture[:20, 30:].min() == 200
    assert picture[20:].max() > 0  # the text was drawn
    assert compose(None, b, ["x"])[:20, :30].max() == 0  # input not (yet) seen: a black panel


def test_viewer_writes_a_side_by_side_video_of_the_live_stream(harness_factory, tiny_engine, tmp_path):
    h = harness_factory(tiny_engine)
    h.handshake()
    out = tmp_path / "view.mp4"
    in_ep = h.pub.getsockopt_string(zmq.LAST_ENDPOINT)
    viewer = Viewer(ViewConfig(input=">" + in_ep, styled=">" + h.node.endpoints["output"][0], window=False,
                               out=str(out), frames=10, duration=20, fps=100), h.ctx)
    result = {}
    thread = threading.Thread(target=lambda: result.update(viewer.run()))
    thread.start()
    time.sleep(0.5)  # the viewer's subscriptions reach both publishers
    for _ in range(60):
        h.send_frame(h=32, w=48)
        time.sleep(0.03)
        if not thread.is_alive():
            break
    thread.join(20)
    assert result["shown"] == 10 and result["unpaired"] <= 2
    video = cv2.VideoCapture(str(out))
    count = int(video.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, first = video.read()
    video.release()
    assert ok and first.shape[1] == 96 and first.shape[0] > 32
    # Frames ≥ 30 ms apart in a 100 fps file: each is held for its own time, so the video lasts as long as the
    # session (one file frame per received frame would give 10).
    assert count == result["video_frames"] and count >= 25


@pytest.mark.skipif(bool(os.environ.get("DISPLAY")), reason="a display is available: the window would open")
def test_window_mode_without_a_display_says_what_to_do_instead(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    with pytest.raises(GuiUnavailable, match="--out run.mp4 --no-window"):
        Viewer(ViewConfig(window=True))


def test_the_window_needs_no_second_opencv_build():
    from importlib.metadata import PackageNotFoundError, distribution

    with pytest.raises(PackageNotFoundError):  # the GUI build of OpenCV would shadow the headless one's cv2
        distribution("opencv-python")


def test_view_plays_a_recording_of_both_streams_side_by_side_at_its_timing(tmp_path):
    import subprocess
    import sys

    from usnst_io.recording import RecordingWriter

    rec = tmp_path / "both.usrec"
    with RecordingWriter(rec) as writer:
        for i in range(5):  # each input frame, then its stylized answer 10 ms later; 0.25 s apart
            t = 1_000_000_000 + i * 250_000_000
            pixels = np.full((24, 32), 40 * i, np.uint8)
            writer.write(t, protocol.encode(protocol.Frame(i, t, pixels, topic=protocol.INPUT_TOPIC)))
            writer.write(t + 10_000_000, protocol.encode(protocol.Frame(i, t, 255 - pixels,
                                                                        topic=protocol.OUTPUT_TOPIC)))
    out = tmp_path / "both.avi"
    done = subprocess.run([sys.executable, "-m", "usnst.cli", "view", str(rec), "--no-window", "--out", str(out),
                           "--fps", "20"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "showed 5 stylized frames (0 without their input)" in done.stdout
    video = cv2.VideoCapture(str(out))
    count = int(video.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, first = video.read()
    assert ok and count == 21  # 1 s at 20 fps + the last frame
    assert first[:24, :32].mean() < 8 and first[:24, 32:64].mean() > 245  # input 0 | stylized 255


def test_a_recording_of_one_stream_is_shown_alone_not_beside_a_black_half(tmp_path):
    """Issue 25, item 14: a recording of stylized frames only gave a video whose left half was black."""
    import subprocess
    import sys

    from usnst_io.recording import RecordingWriter

    rec = tmp_path / "styled.usrec"
    with RecordingWriter(rec) as writer:
        for i in range(3):
            t = 1_000_000_000 + i * 100_000_000
            writer.write(t, protocol.encode(protocol.Frame(i, t, np.full((24, 32), 200, np.uint8),
                                                           topic=protocol.OUTPUT_TOPIC)))
    out = tmp_path / "styled.avi"
    done = subprocess.run([sys.executable, "-m", "usnst", "view", str(rec), "--no-window", "--out", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    ok, first = cv2.VideoCapture(str(out)).read()
    assert ok and first.shape[1] == 32 and first[:24].mean() > 190 and "0 without their input" in done.stdout
