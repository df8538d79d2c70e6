"""A plain on-screen window for `usnst view`, from the standard library's Tk.

Not OpenCV's highgui: usnst installs opencv-python-headless, and OpenCV's GUI build (opencv-python) would be a
second package providing the same ``cv2`` module — installed together they break each other. Tk ships with
Python (Debian/Ubuntu: the python3-tk package) and shows a frame from its PPM bytes, so no image library is needed.
"""
from __future__ import annotations

import numpy as np


class GuiUnavailable(RuntimeError):
    """No window can be opened here (no Tk, or no display); the message says what to do instead."""


class TkWindow:
    """Shows BGR frames; ``show`` returns False once the user closed it (q, Esc or the window's close button)."""

    def __init__(self, title: str):
        try:
            import tkinter
        except ImportError as exc:
            raise GuiUnavailable("this Python has no Tk (Debian/Ubuntu: apt install python3-tk); or write a video "
                                 "with --out run.mp4 --no-window") from exc
        self._tk = tkinter
        try:
            self.root = tkinter.Tk()
        except tkinter.TclError as exc:
            raise GuiUnavailable(f"cannot open a window ({exc}); write a video instead with --out run.mp4 "
                                 "--no-window") from exc
        self.root.title(title)
        self.label = tkinter.Label(self.root)
        self.label.pack()
        self.root.bind("<Key>", lambda e: self.close() if e.keysym in ("q", "Escape") else None)
        self.root.protocol("WM_DELETE_WINDOW", self.close)
        self.is_open = True
        self._photo = None

    def show(self, bgr: np.ndarray) -> bool:
        if not self.is_open:
            return False
        h, w = bgr.shape[:2]
        ppm = b"P6 %d %d 255\n" % (w, h) + np.ascontiguousarray(bgr[:, :, ::-1]).tobytes()
        self._photo = self._tk.PhotoImage(data=ppm, format="PPM")  # keep a reference, or Tk shows nothing
        self.label.configure(image=self._photo)
        self.root.update()
        return self.is_open

    def close(self) -> None:
        if self.is_open:
            self.is_open = False
            self.root.destroy()
