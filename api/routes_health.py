"""Liveness and readiness (no API key: load balancers and orchestrators call them)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.routes_deps import pool, temporal
from store.db import ping

router = APIRouter(tags=["health"])

CHECK_TIMEOUT_SECONDS = 2.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive and serving."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "PostgreSQL or Temporal is not reachable"}})
async def readyz(request: Request) -> JSONResponse:
    """Ready when PostgreSQL and Temporal both answer."""

    async def postgres() -> Any:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            return await ping(pool(request))

    async def temporal_ok() -> Any:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            return await temporal(request).service_client.check_health(timeout=timedelta(seconds=CHECK_TIMEOUT_SECONDS))

    checks: dict[str, str] = {}
    for name, check in (("postgres", postgres), ("temporal", temporal_ok)):
        try:
            checks[name] = "ok" if await check() else "unavailable"
        except Exception as exc:
            checks[name] = f"unavailable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks}, status_code=200 if ready else 503
    )
