# Training: the `ranker` command with the versions python/pyproject.toml pins.
# Build from the repository root: docker build -f deploy/docker/train.Dockerfile .
FROM python:3.11-slim
RUN useradd --create-home --uid 10001 ranker
COPY python/ /src/python/
# The client distribution first, from its directory: the training package
# requires it, and it is not on any index.
RUN pip install --no-cache-dir /src/python/client /src/python && rm -rf /src/python
USER 10001
WORKDIR /home/ranker
ENTRYPOINT ["ranker"]
