# The worker image used by docker-compose.yml. CPU-only: torch (added by the CamemBERT issue)
# must be pinned to its CPU build there.
FROM python:3.11-slim
RUN useradd --system --create-home --home-dir /var/lib/mairie-triage triage
WORKDIR /opt/mairie-triage
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY classifiers ./classifiers
COPY config ./config
# The model registry (shipped default, retrained versions, the `current` pointer) lives in the
# state volume, writable by `triage retrain` / `triage model promote`; a named volume is filled
# with the image's copy on first use.
COPY --chown=triage:triage models /var/lib/mairie-triage/models
RUN pip install --no-cache-dir .
USER triage
ENV TRIAGE_STATE_DIR=/var/lib/mairie-triage TRIAGE_LOG_FORMAT=json \
    TRIAGE_CONFIG_DIR=/opt/mairie-triage/config TRIAGE_MODELS_ROOT=/var/lib/mairie-triage/models
EXPOSE 9108
ENTRYPOINT ["triage"]
CMD ["worker"]
