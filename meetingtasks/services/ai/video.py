"""Video enhancement with ffmpeg filters: temporal/spatial denoise (``hqdn3d``), contrast, brightness and
saturation (``eq``), then a light sharpen (``unsharp``); H.264 in MP4, sound re-encoded as AAC."""

from __future__ import annotations

from typing import Any

from meetingtasks.services.ffmpeg import Ffmpeg
from meetingtasks.settings import Settings

FILTERS = "hqdn3d=4:3:6:4.5,eq=contrast=1.15:brightness=0.02:saturation=1.1,unsharp=5:5:0.6:5:5:0.0"


def enhance_video(data: bytes, settings: Settings, *, what: str = "video") -> tuple[bytes, dict[str, Any]]:
    ffmpeg = Ffmpeg(settings)
    probe = ffmpeg.probe(data, what=what)
    if not probe.has_video:
        from meetingtasks.services.ffmpeg import UndecodableMedia

        raise UndecodableMedia(f"{what} has no video stream to enhance")
    out = ffmpeg.convert(data, ["-vf", FILTERS, "-c:v", "libx264", "-preset", "veryfast", "-crf", "20",
                                "-pix_fmt", "yuv420p", "-c:a", "aac", "-movflags", "+faststart", "-f", "mp4"],
                         suffix="mp4", what=what)
    return out, {"filters": FILTERS, "duration_s": probe.duration_s, "engine": "ffmpeg"}
