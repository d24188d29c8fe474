"""Worker of the ai service: `python -m workers.ai [celery worker options]`."""

from workers._entry import app_for, run

app = app_for("ai")

if __name__ == "__main__":
    run("ai")
