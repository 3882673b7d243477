# The low-memory container job: streamagg alone, as a non-root user, meant for
#   docker run --memory 320m ... streamagg DATE --memory-limit 256MB
# (README, "Container"). Build:  docker build -t streamagg .
# With the PNG of --plot:        docker build -t streamagg --build-arg EXTRAS=plot .
FROM python:3.11-slim

ARG EXTRAS=""
# Unbuffered, so log lines reach the container log as they happen; no bytecode or pip cache
# written into the image.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed uid, so a mounted results or scratch folder can be granted to it.
RUN useradd --create-home --uid 10001 --user-group streamagg

# Only what the package needs: no tests, benchmarks or dev tools end up in the image.
WORKDIR /tmp/src
COPY pyproject.toml setup.cfg README.md LICENSE ./
COPY streamagg ./streamagg
RUN pip install ".${EXTRAS:+[$EXTRAS]}" \
    && cd / && rm -rf /tmp/src

USER streamagg
WORKDIR /home/streamagg
ENTRYPOINT ["streamagg"]
CMD ["--help"]
