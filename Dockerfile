# The worker image used by docker-compose.yml. CPU-only: torch (added by the CamemBERT issue)
# must be pinned to its CPU build there.
FROM python:3.11-slim
RUN useradd --system --create-home --home-dir /var/lib/mairie-triage triage
WORKDIR /opt/mairie-triage
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY classifiers ./classifiers
COPY config ./config
COPY models ./models
RUN pip install --no-cache-dir .
USER triage
ENV TRIAGE_STATE_DIR=/var/lib/mairie-triage TRIAGE_LOG_FORMAT=json \
    TRIAGE_CONFIG_DIR=/opt/mairie-triage/config TRIAGE_MODEL_DIR=/opt/mairie-triage/models/default
EXPOSE 9108
ENTRYPOINT ["triage"]
CMD ["worker"]
