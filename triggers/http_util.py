"""JSON responses and body parsing shared by the HTTP routes."""
from __future__ import annotations

import json

import azure.functions as func


def respond(status: int, body: object, headers: dict | None = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, indent=2, default=str), status_code=status,
                             mimetype="application/json", headers=headers)


def error(status: int, message: str, **extra) -> func.HttpResponse:
    return respond(status, {"error": message, **extra})


class BadRequest(Exception):
    """Raised by parsers; the route turns it into a 400 with this message."""


def json_body(req: func.HttpRequest) -> object:
    try:
        return req.get_json()
    except ValueError:
        raise BadRequest("request body is not valid JSON") from None
    except RecursionError:
        raise BadRequest("request body is nested too deeply") from None
