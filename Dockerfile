# The image runs exactly what the README runs: scripts/serve.sh (migrate, then serve).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    METERING_DATABASE_URL=sqlite+aiosqlite:////srv/metering/data/metering.db \
    METERING_REPORTS_DIR=/srv/metering/data/reports

WORKDIR /srv/metering
RUN useradd --create-home --uid 10001 metering

COPY pyproject.toml README.md ./
COPY scripts ./scripts
COPY metering ./metering
COPY migrations ./migrations
COPY config ./config
RUN scripts/bootstrap.sh "" && mkdir -p data && chown -R metering:metering /srv/metering

USER 10001
EXPOSE 8000
VOLUME ["/srv/metering/data"]
HEALTHCHECK --interval=30s --timeout=3s CMD ["/srv/metering/.venv/bin/python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health/ready').status != 200)"]
CMD ["scripts/serve.sh", "--host", "0.0.0.0", "--port", "8000"]
