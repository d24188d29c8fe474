# One image for every part of meetingtasks: workers, beat, bridge, gateway, exporter and Flower.
# docker-compose.yml picks the part with its `command`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# The README is optional (a wildcard that matches nothing is fine beside pyproject.toml).
COPY pyproject.toml README.md* ./
COPY meetingtasks ./meetingtasks
COPY beat ./beat
COPY workers ./workers
RUN pip install '.[otel]' \
    && useradd --create-home --uid 10001 meetingtasks

USER meetingtasks
# Parts write nothing but logs; the data directory is only used by `meetingtasks up`.
ENV MEETINGTASKS_DATA_DIR=/tmp/meetingtasks
CMD ["meetingtasks", "--help"]
