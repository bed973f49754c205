FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY xds_server ./xds_server
COPY sources ./sources
COPY translators ./translators
RUN pip install --no-cache-dir .
EXPOSE 18000
ENTRYPOINT []
CMD ["xds-server", "--xds-address", "0.0.0.0:18000"]
