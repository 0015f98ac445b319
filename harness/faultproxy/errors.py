"""API errors with an HTTP status, rendered as upstream's JSON body ``{"error": ..., "status": ...}``.

Why a separate exception from ``harness.errors``: these travel over HTTP to any Toxiproxy client, so their wording
and status codes follow upstream's ``api.go`` (``proxy not found`` 404, ``proxy already exists`` 409, ...),
not the harness's error/fix convention.
"""

from __future__ import annotations


class ApiError(Exception):
    """An error the API reports to its client with an HTTP status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def to_json(self) -> dict[str, object]:
        return {"error": self.message, "status": self.status}


def bad_request(detail: str) -> ApiError:
    return ApiError(f"bad request body: {detail}", 400)


def missing_field(detail: str) -> ApiError:
    return ApiError(f"missing required field: {detail}", 400)


PROXY_NOT_FOUND = "proxy not found"
PROXY_EXISTS = "proxy already exists"
TOXIC_NOT_FOUND = "toxic not found"
TOXIC_EXISTS = "toxic already exists"
