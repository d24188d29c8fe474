"""The media service's handlers on a real Redis and a real ffmpeg: streams, recordings, transcoding."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from meetingtasks import PermanentError
from meetingtasks.services.blobs import BlobStore
from meetingtasks.services.ffmpeg import Ffmpeg, FfmpegMissing, ffmpeg_binary
from meetingtasks.services.media.store import MediaStore
from meetingtasks.services.settings import MeetingSettings, meeting_settings
from meetingtasks.store.platform import Platform
from tests.services.conftest import Published, Run
from tests.support.processes import ROOT


def make_clip(settings: MeetingSettings, path: Path, *, noise: int = 0) -> bytes:
    """Two seconds of a 440 Hz tone over a moving test pattern (with ``noise`` added), as MP4 (H.264 + AAC)."""
    video = "testsrc=size=160x120:rate=10:duration=2" + (f",noise=alls={noise}:allf=t" if noise else "")
    proc = Ffmpeg(settings).run(["-f", "lavfi", "-i", video, "-f", "lavfi", "-i", "sine=frequency=440:duration=2",
                                 "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)])
    assert proc.returncode == 0, proc.stderr[-500:]
    return path.read_bytes()


@pytest.fixture
def clip(platform: Platform, tmp_path: Path) -> bytes:
    return make_clip(meeting_settings(platform), tmp_path / "clip.mp4")


def test_stream_process_sets_up_the_stream_once(run: Run, platform: Platform, published: Published) -> None:
    payload = {"meeting_id": "m1", "user_id": "bob", "kind": "audio"}
    first = run("media_stream_process", payload, task_id="s-1")
    assert run("media_stream_process", payload, task_id="s-1") == first  # redelivery
    run("media_stream_process", payload, task_id="s-2")  # the same stream again: already live

    assert first["stream_id"] == "m1:bob:audio"
    assert MediaStore(platform).stream("m1:bob:audio")["state"] == "live"
    assert len(published("media_events", "stream.started")) == 1


def test_stream_process_extracts_the_sound_of_a_media_chunk(run: Run, platform: Platform, clip: bytes,
                                                            published: Published) -> None:
    ref = BlobStore(platform).put(clip, content_type="video/mp4")

    result = run("media_stream_process", {"meeting_id": "m1", "user_id": "bob", "media_ref": ref})

    audio = BlobStore(platform).get(result["audio_ref"])
    assert audio.content_type == "audio/wav" and audio.data[:4] == b"RIFF"
    probe = Ffmpeg(meeting_settings(platform)).probe(audio.data)
    assert probe.has_audio and not probe.has_video and abs((probe.duration_s or 0) - 2.0) < 0.2
    processed = published.payloads("media_events", "stream.processed")
    assert len(processed) == 1 and processed[0]["audio_ref"] == result["audio_ref"]


def test_stream_process_refuses_undecodable_media(run: Run, platform: Platform, published: Published) -> None:
    ref = BlobStore(platform).put(b"this is not a video", content_type="video/mp4")
    with pytest.raises(PermanentError, match="not audio or video ffmpeg can read"):
        run("media_stream_process", {"meeting_id": "m1", "user_id": "bob", "media_ref": ref})
    with pytest.raises(PermanentError, match="not found"):
        run("media_stream_process", {"meeting_id": "m1", "user_id": "bob", "media_ref": "blob:gone"})
    assert published("media_events", "stream.processed") == []


def test_recording_starts_and_stops_with_the_meeting(run: Run, platform: Platform, published: Published) -> None:
    # given a meeting being recorded with one participant's stream live
    started = run("media_recording_start", {"meeting_id": "m1"}, task_id="r-1")
    assert run("media_recording_start", {"meeting_id": "m1"}, task_id="r-1") == started  # redelivery
    run("media_stream_process", {"meeting_id": "m1", "user_id": "bob"})
    # a second "record this meeting" finds it recording
    assert run("media_recording_start", {"meeting_id": "m1"})["already_recording"] is True

    # when the meeting's media ends (meeting.ended -> media_recording_stop without a recording id)
    stopped = run("media_recording_stop", {"meeting_id": "m1"}, task_id="stop-1")
    assert run("media_recording_stop", {"meeting_id": "m1"}, task_id="stop-1") == stopped  # redelivery

    # then the recording and the stream stopped, each announced once
    media = MediaStore(platform)
    assert stopped["recording_id"] == started["recording_id"] and stopped["streams_stopped"] == ["m1:bob:video"]
    assert media.recording(started["recording_id"])["state"] == "stopped"
    assert media.active_recording("m1") is None and media.stream("m1:bob:video")["state"] == "stopped"
    assert published.types("media_events") == ["recording.started", "stream.started", "recording.stopped",
                                                "stream.stopped"]


def test_recording_refusals(run: Run) -> None:
    run("media_recording_start", {"meeting_id": "m1", "recording_id": "r1"})
    with pytest.raises(PermanentError, match="already being recorded"):
        run("media_recording_start", {"meeting_id": "m1", "recording_id": "r2"})
    with pytest.raises(PermanentError, match="no recording 'nope'"):
        run("media_recording_stop", {"meeting_id": "m1", "recording_id": "nope"})
    with pytest.raises(PermanentError, match="not one of meeting 'm2'"):
        run("media_recording_stop", {"meeting_id": "m2", "recording_id": "r1"})
    # nothing recording: stopping "the meeting's media" is a quiet no-op, not a refusal
    assert run("media_recording_stop", {"meeting_id": "m3"})["recording_id"] is None


@pytest.mark.parametrize("target,content_type", [("mp4", "video/mp4"), ("webm", "video/webm"),
                                                 ("ogg", "audio/ogg"), ("mp3", "audio/mpeg")])
def test_transcode_runs_ffmpeg_on_the_blob(run: Run, platform: Platform, clip: bytes, published: Published,
                                           target: str, content_type: str) -> None:
    source = BlobStore(platform).put(clip, content_type="video/mp4")

    result = run("media_transcode", {"source_ref": source, "target_format": target, "meeting_id": "m1"},
                 task_id="t-1")
    assert run("media_transcode", {"source_ref": source, "target_format": target}, task_id="t-1") == result

    output = BlobStore(platform).get(result["output_ref"])
    probe = Ffmpeg(meeting_settings(platform)).probe(output.data)
    assert output.content_type == content_type and probe.has_audio
    assert probe.has_video is content_type.startswith("video/")
    assert [p["output_ref"] for p in published.payloads("media_events", "transcode.completed")] == [
        result["output_ref"]]


def test_transcode_refuses_what_ffmpeg_cannot_read(run: Run, platform: Platform) -> None:
    source = BlobStore(platform).put(b"\x00" * 1000)
    with pytest.raises(PermanentError, match="not audio or video ffmpeg can read"):
        run("media_transcode", {"source_ref": source, "target_format": "mp4"})


def test_a_wrong_ffmpeg_path_is_named() -> None:
    with pytest.raises(FfmpegMissing, match="MEETINGTASKS_FFMPEG_PATH=/nonexistent/ffmpeg: no such program"):
        ffmpeg_binary(MeetingSettings(ffmpeg_path="/nonexistent/ffmpeg"))


def test_without_any_ffmpeg_the_error_says_how_to_get_one(tmp_path: Path) -> None:
    # given a process with no ffmpeg on PATH and no imageio-ffmpeg wheel importable
    script = ("import sys; sys.modules['imageio_ffmpeg'] = None\n"
              "from meetingtasks.services.ffmpeg import ffmpeg_binary\n"
              "from meetingtasks.services.settings import MeetingSettings\n"
              "ffmpeg_binary(MeetingSettings())\n")
    env = {"PATH": str(tmp_path), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "FfmpegMissing: no ffmpeg found: install ffmpeg (apt-get install ffmpeg) or pip install " \
           "'meetingtasks[media]'" in proc.stderr
