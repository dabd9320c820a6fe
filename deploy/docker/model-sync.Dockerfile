# The model-sync sidecar: deploy/model-sync/sync.py with the AWS CLI it
# drives. Build from the repository root:
# docker build -f deploy/docker/model-sync.Dockerfile .
FROM python:3.11-slim
RUN pip install --no-cache-dir awscli==1.45.11
COPY deploy/model-sync/sync.py /usr/local/bin/model-sync
USER 65532:65532
EXPOSE 9465
ENTRYPOINT ["python", "/usr/local/bin/model-sync"]
