# vlm-monitor in a container. Config at /etc/vlm-monitor/config.yaml, state in /var/lib/vlm-monitor.
#   docker build -t vlm-monitor .
#   docker run -d -v ./config.yaml:/etc/vlm-monitor/config.yaml:ro -v vlm-state:/var/lib/vlm-monitor \
#     -p 9108:9108 -e VLM_API_KEY vlm-monitor

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/vlm-monitor
COPY pyproject.toml README.md ./
COPY monitor ./monitor
RUN /opt/vlm-monitor/bin/pip install .

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="vlm-monitor" \
      org.opencontainers.image.description="Watch cameras with a vision-language model"
RUN groupadd --system --gid 10001 vlm \
 && useradd --system --uid 10001 --gid vlm --home-dir /var/lib/vlm-monitor --shell /usr/sbin/nologin vlm \
 && install -d -o vlm -g vlm -m 0750 /var/lib/vlm-monitor /etc/vlm-monitor
COPY --from=build /opt/vlm-monitor /opt/vlm-monitor
ENV PATH=/opt/vlm-monitor/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    STATE_DIRECTORY=/var/lib/vlm-monitor \
    VLM_MONITOR_LISTEN=0.0.0.0:9108
USER 10001:10001
VOLUME ["/var/lib/vlm-monitor"]
EXPOSE 9108
# /healthz answers while the event loop runs; a wedged loop fails it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('VLM_MONITOR_LISTEN', ':9108').rsplit(':', 1)[1] + '/healthz', timeout=4)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["vlm-monitor"]
CMD ["run", "--config", "/etc/vlm-monitor/config.yaml"]
