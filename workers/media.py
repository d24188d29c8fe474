"""Worker of the media service: `python -m workers.media [celery worker options]`."""

from workers._entry import app_for, run

app = app_for("media")

if __name__ == "__main__":
    run("media")
