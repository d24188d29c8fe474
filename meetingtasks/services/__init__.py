"""The meeting system: the platform's first application, registered the way any application of yours is.

Importing this package declares its five services (their task and subscription modules are imported only when
needed: a worker imports its own service's alone) and its five event channels, and defines its own settings
section (:mod:`meetingtasks.services.settings`). ``meetingtasks.services.<svc>:app`` is each service's Celery
app. The platform loads it as a built-in application (:data:`meetingtasks.core.applications.BUILTIN`).
"""

from meetingtasks.core.registry import declare_service
from meetingtasks.events.channels import channel
from meetingtasks.services.settings import MeetingSettings, meeting_settings

#: The meeting system's services, in the order tools list them.
SERVICES: tuple[str, ...] = ("user", "meeting", "media", "signaling", "ai")

#: service -> the task types its task module registers. Declared so that an application's type named like one of
#: them is refused at its registration without importing the five task modules in every process (a test checks
#: this index against the modules; a type missing from it is refused at its module's import).
TASK_TYPES: dict[str, tuple[str, ...]] = {
    "user": ("user_register", "user_login", "user_profile_update", "user_status_change", "user_sessions_expire"),
    "meeting": ("meeting_create", "meeting_start", "meeting_end", "meeting_user_join", "meeting_user_leave",
                "meeting_ai_result", "meeting_notify", "meeting_overdue_end"),
    "media": ("media_stream_process", "media_recording_start", "media_recording_stop", "media_transcode"),
    "signaling": ("signaling_webrtc_offer", "signaling_webrtc_answer", "signaling_ice_candidate",
                  "signaling_connection_manage", "signaling_stale_close"),
    "ai": ("speech_recognition", "emotion_detection", "audio_denoising", "video_enhancement"),
}

for _service in SERVICES:
    declare_service(_service, tasks=f"meetingtasks.services.{_service}.tasks",
                    events=f"meetingtasks.services.{_service}.events", types=TASK_TYPES[_service])

channel("user_events", ["user.registered", "user.logged_in", "user.profile_updated", "user.status_changed"],
        owner="user")
channel("meeting_events", ["meeting.created", "meeting.started", "meeting.ended", "meeting.user_joined",
                           "meeting.user_left"], owner="meeting")
channel("media_events", ["stream.started", "stream.stopped", "stream.processed", "recording.started",
                         "recording.stopped", "transcode.completed"], owner="media")
channel("ai_events", ["speech_recognition.completed", "emotion_detection.completed", "audio_denoising.completed",
                      "video_enhancement.completed"], owner="ai")
channel("signaling_events", ["webrtc.offer", "webrtc.answer", "webrtc.ice_candidate", "webrtc.connected",
                             "webrtc.disconnected"], owner="signaling")

#: channel -> the services that subscribe to it (the "subscribed by" column of docs/events.md; a test checks
#: the subscriptions the services declare against it).
SUBSCRIBERS: dict[str, tuple[str, ...]] = {
    "user_events": ("meeting",),
    "meeting_events": ("user", "ai", "media", "signaling"),
    "media_events": ("meeting", "ai", "signaling"),
    "ai_events": ("meeting", "media", "user"),
    "signaling_events": ("meeting", "media"),
}

__all__ = ["SERVICES", "SUBSCRIBERS", "MeetingSettings", "meeting_settings"]
