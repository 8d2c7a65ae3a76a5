# edgecnn inference service, CPU: the runtime-only install (onnxruntime, LiteRT, OpenVINO, FastAPI;
# no TensorFlow). The same image runs the CI gate: `--entrypoint edgecnn ... check /models budgets.yaml`.
#
#   docker build -t edgecnn-serve .
#   docker run --rm -p 8000:8000 -v "$PWD/export/defects-mobilenetv2:/models:ro" edgecnn-serve
#
# The run directory (manifest.json + artifacts) is mounted at /models, read-only; only artifacts
# whose sha256 matches the manifest are served. Extra flags go after the image name and replace
# CMD, e.g. `... edgecnn-serve /models --host 0.0.0.0 --threads 2 --max-concurrency 8`.
# The service writes nothing, so the container can run `--read-only`. Pass an API key for the
# repository routes (`-e EDGECNN_API_KEY=...`, or mount a key file and add --api-key-file), and
# TLS with --ssl-certfile/--ssl-keyfile, or terminate TLS in front of it. See docs/serving.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin edgecnn

WORKDIR /opt/edgecnn
# Only what the package needs: never the local .venv, export/ or data/.
COPY pyproject.toml README.md ./
COPY edgecnn ./edgecnn
# `.[serve]`, not `.[train]`: artifacts only, without the ~1.9 GB training stack.
RUN pip install ".[serve]" && rm -rf /root/.cache

USER edgecnn
# Models come from a read-only bind mount (`-v RUN_DIR:/models:ro`), never from the image.
VOLUME ["/models"]
EXPOSE 8000
# Ready = models verified, loaded and warmed. urlopen raises on 503, so the exit status is non-zero.
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=2)"]
# SIGTERM (docker stop) closes the listener and lets accepted requests finish (--graceful-timeout,
# 30 s by default; keep `docker stop -t` above it).
STOPSIGNAL SIGTERM
ENTRYPOINT ["edgecnn", "serve"]
CMD ["/models", "--host", "0.0.0.0", "--port", "8000"]
