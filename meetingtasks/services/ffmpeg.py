"""ffmpeg for the media and ai services: find the binary, probe a file, convert and filter.

The binary is ``MeetingSettings.ffmpeg_path`` if set, else ``ffmpeg`` on ``PATH``, else the one inside the
``imageio-ffmpeg`` wheel (``pip install 'meetingtasks[media]'``), so pip alone brings one. Without any,
:class:`FfmpegMissing` says so in one line; it is an infrastructure failure (retried, then dead-lettered,
replayable once ffmpeg is installed), not a domain refusal. Input that ffmpeg cannot decode is a domain
refusal: :class:`UndecodableMedia` (a :class:`~meetingtasks.PermanentError`) with ffmpeg's own last line.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from meetingtasks.core.errors import MeetingTasksError, PermanentError
from meetingtasks.services.settings import MeetingSettings

#: Longest a single ffmpeg run may take before it is killed (the task's own time limit is usually lower).
RUN_TIMEOUT_S = 900
_DURATION = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")
_STREAM = re.compile(r"Stream #\d+:\d+.*?: (Audio|Video):")


class FfmpegMissing(MeetingTasksError):
    """No ffmpeg binary: set MEETINGTASKS_FFMPEG_PATH, put ffmpeg on PATH, or install meetingtasks[media]."""


class UndecodableMedia(PermanentError):
    """ffmpeg could not read the input (not media, or a format it does not know)."""


@functools.cache
def _find(explicit: str | None) -> str | None:
    if explicit:
        return explicit if Path(explicit).is_file() else shutil.which(explicit)
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    try:
        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except RuntimeError:
        return None


def ffmpeg_binary(settings: MeetingSettings) -> str:
    found = _find(settings.ffmpeg_path)
    if found is None and settings.ffmpeg_path:
        raise FfmpegMissing(f"MEETINGTASKS_FFMPEG_PATH={settings.ffmpeg_path}: no such program; point it at an "
                            "ffmpeg binary or unset it")
    if found is None:
        raise FfmpegMissing("no ffmpeg found: install ffmpeg (apt-get install ffmpeg) or "
                            "pip install 'meetingtasks[media]' (the imageio-ffmpeg wheel ships one)")
    return found


@dataclass(frozen=True)
class Probe:
    duration_s: float | None
    has_audio: bool
    has_video: bool


def _last_line(stderr: bytes) -> str:
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


class Ffmpeg:
    """One ffmpeg binary; every call works on temporary files that are removed afterwards."""

    def __init__(self, settings: MeetingSettings) -> None:
        self.binary = ffmpeg_binary(settings)

    def run(self, args: list[str], *, timeout_s: float = RUN_TIMEOUT_S) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([self.binary, "-hide_banner", "-nostdin", "-y", *args], capture_output=True,
                              timeout=timeout_s, check=False)

    def probe(self, data: bytes, *, what: str = "input") -> Probe:
        with tempfile.TemporaryDirectory(prefix="mt-ffmpeg-") as tmp:
            src = Path(tmp) / "in"
            src.write_bytes(data)
            proc = self.run(["-i", str(src)])  # no output named: ffmpeg describes the input and exits 1
        text = proc.stderr.decode(errors="replace")
        kinds = set(_STREAM.findall(text))
        if not kinds:
            raise UndecodableMedia(f"{what} is not audio or video ffmpeg can read: {_last_line(proc.stderr)}")
        match = _DURATION.search(text)
        duration = None
        if match:
            h, m, s = match.groups()
            duration = int(h) * 3600 + int(m) * 60 + float(s)
        return Probe(duration, "Audio" in kinds, "Video" in kinds)

    def convert(self, data: bytes, out_args: list[str], *, suffix: str, what: str = "input",
                in_args: list[str] | None = None) -> bytes:
        """Run ``ffmpeg [in_args] -i <data> <out_args> <out.suffix>`` and return the output file's bytes."""
        with tempfile.TemporaryDirectory(prefix="mt-ffmpeg-") as tmp:
            src, dst = Path(tmp) / "in", Path(tmp) / f"out.{suffix}"
            src.write_bytes(data)
            proc = self.run([*(in_args or []), "-i", str(src), *out_args, str(dst)])
            if proc.returncode != 0 or not dst.exists() or dst.stat().st_size == 0:
                raise UndecodableMedia(f"ffmpeg could not convert the {what}: {_last_line(proc.stderr)}")
            return dst.read_bytes()

    def to_wav(self, data: bytes, *, rate_hz: int = 16_000, what: str = "audio") -> bytes:
        """Any audio (or a video's sound) as mono 16-bit PCM WAV at ``rate_hz``."""
        return self.convert(data, ["-vn", "-ac", "1", "-ar", str(rate_hz), "-c:a", "pcm_s16le", "-f", "wav"],
                            suffix="wav", what=what)
