# budgetwatch — one image for the Faust worker and the one-shot publisher.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY budget ./budget
COPY alerts ./alerts
COPY connectors ./connectors
COPY streams ./streams
# The image runs the Python sources: compiled_core finds no mypyc build in it (the
# slim image has no C compiler), and budget/ and alerts/ import the switch first.
COPY compiled_core.py ./
# rocksdict: the RocksDB table store of faust-streaming (BUDGETWATCH_STORE=rocksdb://).
RUN pip install . "faust-streaming[rocksdict]"

# Table state (RocksDB) lives under the working directory, in the container's own layer
# (no shared volume: replicas of `--scale` would fight over RocksDB's locks). It is a
# cache of the changelog topics: a recreated worker restores its partitions from them
# before it processes again (see README, "Sizing").
WORKDIR /data
EXPOSE 6066
ENTRYPOINT ["budgetwatch"]
CMD ["worker"]
