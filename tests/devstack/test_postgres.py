"""The embedded PostgreSQL of the local stack (devstack.postgres): restarts keep data and port; failures say why."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import pytest

from devstack.postgres import EmbeddedPostgres, EmbeddedPostgresError


def test_embedded_postgres_restart_keeps_data_and_port(tmp_path: Path) -> None:
    async def write(url: str) -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('still here')")
        finally:
            await conn.close()

    async def read(url: str) -> str:
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetchval("SELECT v FROM kept")
        finally:
            await conn.close()

    server = EmbeddedPostgres(tmp_path / "pg", fsync=False)
    try:
        server.start()
        port = server.port
        url = server.ensure_database("keep")
        asyncio.run(write(url))

        server.stop()
        assert not server.is_running()
        began = time.monotonic()
        server.start()
        restart_seconds = time.monotonic() - began
        assert server.is_running()
        assert server.port == port
        assert asyncio.run(read(url)) == "still here"
        assert restart_seconds < 5, restart_seconds

        # A new handle on the same directory (how `parcours dev` resumes) adopts the running server...
        assert EmbeddedPostgres(tmp_path / "pg").start().port == port
        server.stop("immediate")
        # ...and after a crash-like stop, starts it again on the remembered port with the data recovered.
        with EmbeddedPostgres(tmp_path / "pg", fsync=False) as resumed:
            assert resumed.port == port
            assert resumed.ensure_database("keep") == url
            assert asyncio.run(read(url)) == "still here"
        assert not server.is_running()
    finally:
        server.stop()


def test_start_failure_reports_the_server_log(postgres: EmbeddedPostgres, tmp_path: Path) -> None:
    clash = EmbeddedPostgres(tmp_path / "pg", port=postgres.port, fsync=False)
    with pytest.raises(EmbeddedPostgresError, match=r"(?s)did not start.*Address already in use"):
        clash.start()
    assert not clash.is_running()
