"""Formats on disk and on the wire, shared by every other package and importing none of them: media (suffixes,
listing inputs, reading any frame sequence with timestamps, atomic PNG/video/file writes), the wire frame
(protocol), the recording file (recording) and DICOM (dicom)."""
