"""Worker of the signaling service: `python -m workers.signaling [celery worker options]`."""

from workers._entry import app_for, run

app = app_for("signaling")

if __name__ == "__main__":
    run("signaling")
