"""Worker of the meeting service: `python -m workers.meeting [celery worker options]`."""

from workers._entry import app_for, run

app = app_for("meeting")

if __name__ == "__main__":
    run("meeting")
