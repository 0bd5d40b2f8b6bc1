"""Push devices of a customer: ``PUT``/``GET``/``DELETE /v1/customers/{id}/devices/{device_id}`` and the list.

A device is what the app registered on one install: ``platform`` ``fcm`` (an FCM registration token), ``apns``
(an APNs device token, hex) or ``web`` (a Web Push subscription as the browser's ``PushSubscription.toJSON()``
gives it: ``endpoint`` and ``keys.p256dh``/``keys.auth``), with the ``app`` and ``locale`` it runs. Registering a
device again replaces it and makes it active again (a provider may have deactivated its old token).
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import asyncpg
from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from api.openapi_links import device_links, linked
from api.routes_deps import READ, WRITE, ResolvedCustomer, pool, read_model
from api.schemas import ApiError
from store import customers as customer_store
from store import devices as device_store
from store.devices import Device

router = APIRouter(tags=["devices"])
Pool = Annotated[asyncpg.Pool, Depends(pool)]
DeviceId = Annotated[
    str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:=-]{0,199}$", description="The app's id of the install")
]


def _b64url(value: str, size: int | None, name: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise ValueError(f"{name}: not base64url") from None
    if size is not None and len(raw) != size:
        raise ValueError(f"{name}: must decode to {size} bytes, not {len(raw)}")
    return value


class SubscriptionKeys(BaseModel):
    p256dh: str = Field(max_length=200)
    auth: str = Field(max_length=100)

    @field_validator("p256dh")
    @classmethod
    def _point(cls, value: str) -> str:
        return _b64url(value, 65, "p256dh")  # an uncompressed P-256 point

    @field_validator("auth")
    @classmethod
    def _auth(cls, value: str) -> str:
        return _b64url(value, 16, "auth")


class WebSubscription(BaseModel):
    endpoint: str = Field(max_length=2000)
    keys: SubscriptionKeys
    expirationTime: int | None = None

    @field_validator("endpoint")
    @classmethod
    def _https(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            raise ValueError("endpoint: must be an absolute https URL")
        return value


class DeviceAddress(BaseModel):
    """Where a push goes: ``platform`` and its ``token``, or for ``web`` the ``subscription``. Also the device of a
    push test send (``api.previews``), checked by the same rules."""

    model_config = ConfigDict(extra="forbid")

    platform: Literal["fcm", "apns", "web"]
    token: str | None = Field(default=None, min_length=1, max_length=4096)
    subscription: WebSubscription | None = None

    @property
    def recipient(self) -> str:
        """Where the push goes, as one string: the token, or the Web Push subscription's endpoint."""
        return self.token or (self.subscription.endpoint if self.subscription is not None else "")

    @model_validator(mode="after")
    def _address(self) -> DeviceAddress:
        if self.platform == "web":
            if self.subscription is None:
                raise ValueError("subscription: required for platform 'web'")
            if self.token is not None:
                raise ValueError("token: not used for platform 'web' (give subscription)")
        else:
            if not self.token:
                raise ValueError(f"token: required for platform '{self.platform}'")
            if self.subscription is not None:
                raise ValueError(f"subscription: only for platform 'web', not '{self.platform}'")
            if self.platform == "apns" and not all(c in "0123456789abcdefABCDEF" for c in self.token):
                raise ValueError("token: an APNs device token is hexadecimal")
        return self


class DeviceIn(DeviceAddress):
    app: str | None = Field(default=None, max_length=200)
    locale: str | None = Field(default=None, max_length=35)


class DeviceOut(BaseModel):
    device_id: str
    platform: str
    token: str | None
    subscription: dict[str, Any] | None
    app: str | None
    locale: str | None
    active: bool
    deactivated_at: Any
    deactivated_reason: str | None
    created_at: Any
    updated_at: Any


def _out(device: Device) -> DeviceOut:
    return DeviceOut.model_validate(device, from_attributes=True)


@router.put(
    "/v1/customers/{customer_id}/devices/{device_id}",
    dependencies=[WRITE],
    response_model=DeviceOut,
    responses=linked(200, 201, **device_links()),
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": DeviceIn.model_json_schema()}}}
    },
)
async def put_device(
    customer_id: ResolvedCustomer, device_id: DeviceId, request: Request, db: Pool, response: Response
) -> DeviceOut:
    """Register (``201``) or replace (``200``) a device; it is active from now on."""
    body = await read_model(request, DeviceIn)
    if await customer_store.get_customer(db, customer_id) is None:
        raise ApiError(404, f"unknown customer '{customer_id}'", field="customer_id")
    device, created = await device_store.put_device(
        db,
        customer_id,
        device_id,
        platform=body.platform,
        token=body.token,
        subscription=body.subscription.model_dump(exclude_none=True) if body.subscription else None,
        app=body.app,
        locale=body.locale,
    )
    response.status_code = 201 if created else 200
    return _out(device)


@router.get("/v1/customers/{customer_id}/devices", dependencies=[READ], response_model=list[DeviceOut])
async def list_devices(customer_id: ResolvedCustomer, db: Pool) -> list[DeviceOut]:
    """Every device of the customer, active or not, oldest first."""
    return [_out(d) for d in await device_store.devices_of(db, customer_id)]


@router.get("/v1/customers/{customer_id}/devices/{device_id}", dependencies=[READ], response_model=DeviceOut)
async def get_device(customer_id: ResolvedCustomer, device_id: DeviceId, db: Pool) -> DeviceOut:
    device = await device_store.get_device(db, customer_id, device_id)
    if device is None:
        raise ApiError(404, f"no device '{device_id}' for customer '{customer_id}'", field="device_id")
    return _out(device)


@router.delete("/v1/customers/{customer_id}/devices/{device_id}", dependencies=[WRITE], status_code=204)
async def delete_device(customer_id: ResolvedCustomer, device_id: DeviceId, db: Pool) -> Response:
    if not await device_store.delete_device(db, customer_id, device_id):
        raise ApiError(404, f"no device '{device_id}' for customer '{customer_id}'", field="device_id")
    return Response(status_code=204)
