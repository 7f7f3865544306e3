# The rlops-plugin image: the policy server (KServe runtime), the feedback collector and every
# Kubeflow component run from it. Build: docker build -t rlops-plugin:0.1.0 .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false

WORKDIR /opt/rlops
COPY constraints.txt setup.cfg pyproject.toml README.md ./
COPY requirements ./requirements
COPY rlops_plugin ./rlops_plugin
COPY components ./components

# torch comes first from the CPU index so the resolver never pulls a CUDA build; KServe's OpenAI data plane
# (agent policies, the rlops-agent runtime) needs vllm's protocol modules, installed without their
# dependencies exactly as `make install` does (requirements/openai-dataplane.txt says why).
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
 && pip install -c constraints.txt ".[postgres]" \
 && pip install --no-deps -r requirements/openai-dataplane.txt

RUN useradd --create-home --uid 1000 rlops
USER 1000
EXPOSE 8080
CMD ["python", "-m", "rlops_plugin.serving", "--host", "0.0.0.0", "--http_port", "8080"]
