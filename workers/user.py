"""Worker of the user service: `python -m workers.user [celery worker options]`."""

from workers._entry import app_for, run

app = app_for("user")

if __name__ == "__main__":
    run("user")
