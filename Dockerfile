# spiffe-server and spiffe-agent images (docs/operations.md, "Containers"):
#
#   docker build --target server -t spiffe-server .
#   docker build --target agent  -t spiffe-agent  .
#
# The build stage installs the package and its runtime dependencies (versions from the CI lock)
# into a virtualenv; the runtime stages copy only that virtualenv onto the same slim base, so no
# compiler, pip cache or source tree ships. The server runs unprivileged; the agent runs as root
# because workload attestation reads /proc/<pid> of other users' processes.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY requirements/ci.txt requirements/ci.txt
COPY spiffe_py/ spiffe_py/
COPY server/ server/
COPY agent/ agent/
RUN python -m venv /opt/spiffe-py \
    && /opt/spiffe-py/bin/pip install --no-compile -c requirements/ci.txt ".[server,agent]" \
    && /opt/spiffe-py/bin/spiffe-server --help > /dev/null \
    && /opt/spiffe-py/bin/spiffe-agent --help > /dev/null

FROM ${PYTHON_IMAGE} AS runtime
COPY --from=build /opt/spiffe-py /opt/spiffe-py
ENV PATH=/opt/spiffe-py/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
STOPSIGNAL SIGTERM

FROM runtime AS server
RUN groupadd --system --gid 10001 spiffe \
    && useradd --system --uid 10001 --gid spiffe --home-dir /var/lib/spiffe-server --shell /usr/sbin/nologin spiffe \
    && install -d -o spiffe -g spiffe -m 0700 /var/lib/spiffe-server
ENV SPIFFE_SERVER_SOCKET=/var/lib/spiffe-server/api.sock
USER 10001:10001
WORKDIR /var/lib/spiffe-server
VOLUME ["/var/lib/spiffe-server"]
EXPOSE 8081
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s CMD ["spiffe-server", "healthcheck"]
ENTRYPOINT ["spiffe-server"]
CMD ["run", "--config", "/etc/spiffe-py/server.toml", "--data-dir", "/var/lib/spiffe-server"]

FROM runtime AS agent
RUN install -d -m 0755 /run/spiffe-py-agent \
    && install -d -m 0700 /var/lib/spiffe-agent
ENV SPIFFE_ENDPOINT_SOCKET=unix:///run/spiffe-py-agent/public/api.sock
WORKDIR /var/lib/spiffe-agent
VOLUME ["/var/lib/spiffe-agent"]
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s CMD ["spiffe-agent", "healthcheck"]
ENTRYPOINT ["spiffe-agent"]
CMD ["run", "--config", "/etc/spiffe-py/agent.toml", "--data-dir", "/var/lib/spiffe-agent", "--socket-path", "/run/spiffe-py-agent/public/api.sock"]
