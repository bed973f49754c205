# xds-server and xdsctl. docker-compose.yml builds it; on its own:
#   docker build -t xds-server .
#   docker run -p 127.0.0.1:18000:18000 xds-server xds-server --consul --consul-address http://HOST:8500
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY xds_server ./xds_server
COPY sources ./sources
COPY translators ./translators
RUN pip install --no-cache-dir . \
 && useradd --system --no-create-home xds
USER xds
EXPOSE 18000 19000
ENTRYPOINT []
CMD ["xds-server", "--xds-address", "0.0.0.0:18000"]
