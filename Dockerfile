# The Parcours image: one image, three roles (migrate, worker, api), chosen by the command.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY config config
COPY journeys journeys
COPY contracts contracts
COPY orchestration orchestration
COPY workflows workflows
COPY activities activities
COPY store store
COPY api api
COPY workers workers
COPY cli cli
COPY parcours parcours
RUN pip install --no-cache-dir .
USER nobody
ENTRYPOINT ["parcours"]
CMD ["worker"]
