"""Event Grid, locally: subscriptions kept in the store, a storage watcher that turns new or
changed blobs into `Microsoft.Storage.BlobCreated` events (Event Grid schema), and delivery
with retries and back-off (at-least-once, like Event Grid). Events can also be posted by hand
to `/runtime/webhooks/eventgrid?functionName=NAME`.

What the watcher has seen is stored, so a blob created while the host was down produces one
event after restart, and the watcher itself never emits a blob version twice.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
import uuid
from dataclasses import asdict, dataclass, field
from urllib.parse import quote, urlparse

import azure.functions as func
from aiohttp import web
from azure.functions import meta
from azure.functions.eventgrid import EventGridEventInConverter
from azure.storage.blob import BlobServiceClient

from fedfunc.host import events as ev
from fedfunc.host.app_loader import App, Function, resolve_settings
from fedfunc.host.http import MASTER_KEY_SETTING, auth_error
from fedfunc.host.invoke import Invoker, background, logged
from fedfunc.host.store import Store

log = logging.getLogger("fedfunc.host")

BLOB_CREATED = "Microsoft.Storage.BlobCreated"
TOPIC = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/local/providers/Microsoft.Storage/storageAccounts/{}"
SUBJECT = "/blobServices/default/containers/{}/blobs/{}"
MAX_ATTEMPTS = 30
MAX_BACKOFF = 60.0
WEBHOOK = "/runtime/webhooks/eventgrid"
_SECRET = re.compile(r"(AccountKey=|SharedAccessSignature=|sig=)[^;&]+", re.IGNORECASE)


class SubscriptionError(ValueError):
    """A subscription spec that cannot work; the message names the field."""


@dataclass
class Subscription:
    name: str
    function: str
    connection: str  # a connection string, or an account blob URL carrying a SAS token
    container: str
    subject_begins_with: str | None = None
    subject_ends_with: str | None = None
    included_event_types: list[str] = field(default_factory=lambda: [BLOB_CREATED])

    def matches(self, subject: str) -> bool:
        return (subject.startswith(self.subject_begins_with or "")
                and subject.endswith(self.subject_ends_with or ""))

    def redacted(self) -> dict:
        out = asdict(self)
        out["connection"] = _SECRET.sub(r"\1***", self.connection)
        return out


def parse_subscription(name: str, body: dict, app: App) -> Subscription:
    if not isinstance(body, dict):
        raise SubscriptionError("subscription body must be a JSON object")
    if name.startswith("blobtrigger-") or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}", name):
        raise SubscriptionError(f"subscription name {name!r}: use letters, digits, '_', '.', ':', '-' "
                                "(names starting 'blobtrigger-' are the host's own)")
    for key in ("function", "connection", "container"):
        if not isinstance(body.get(key), str) or not body[key]:
            raise SubscriptionError(f"field '{key}' is required (a non-empty string)")
    unknown = set(body) - {f for f in Subscription.__dataclass_fields__} - {"name"}
    if unknown:
        raise SubscriptionError(f"unknown field(s): {sorted(unknown)}")
    f = app.functions.get(body["function"])
    if f is None or f.trigger_type not in ("eventGridTrigger", "blobTrigger"):
        raise SubscriptionError(f"field 'function': no Event Grid-triggered function named {body['function']!r}")
    types = body.get("included_event_types") or [BLOB_CREATED]
    if not isinstance(types, list) or BLOB_CREATED not in types:
        raise SubscriptionError(f"field 'included_event_types' must include {BLOB_CREATED} (the only event the watcher emits)")
    sub = Subscription(name=name, function=body["function"], connection=body["connection"], container=body["container"],
                       subject_begins_with=body.get("subject_begins_with"),
                       subject_ends_with=body.get("subject_ends_with"), included_event_types=types)
    blob_service(sub.connection)  # fails now, naming the field, rather than in the watcher
    return sub


def blob_service(connection: str) -> BlobServiceClient:
    try:
        if connection.startswith(("http://", "https://")):
            return BlobServiceClient(account_url=connection)
        return BlobServiceClient.from_connection_string(connection)
    except ValueError as exc:
        raise SubscriptionError(f"field 'connection': not a storage connection string or account URL: {exc}") from exc


def account_name(client: BlobServiceClient) -> str:
    if client.account_name:
        return client.account_name
    parsed = urlparse(client.url)
    return parsed.path.strip("/").split("/")[0] or parsed.hostname.split(".")[0]


def blob_created_event(client: BlobServiceClient, container: str, blob) -> dict:
    endpoint = client.primary_endpoint.split("?")[0].rstrip("/")
    return {
        "id": str(uuid.uuid4()),
        "topic": TOPIC.format(account_name(client)),
        "subject": SUBJECT.format(container, blob.name),
        "eventType": BLOB_CREATED,
        "eventTime": ev.iso(ev.utcnow()),
        "dataVersion": "",
        "metadataVersion": "1",
        "data": {"api": "PutBlob", "clientRequestId": str(uuid.uuid4()), "requestId": str(uuid.uuid4()),
                 "eTag": blob.etag, "contentType": blob.content_settings.content_type,
                 "contentLength": blob.size, "blobType": "BlockBlob",
                 "url": f"{endpoint}/{container}/{quote(blob.name)}",
                 "sequencer": f"{time.time_ns():032x}", "storageDiagnostics": {"batchId": str(uuid.uuid4())}},
    }


def blob_trigger_subscription(f: Function) -> Subscription:
    """A blob trigger with source=EventGrid is fed by watching its container."""
    path = resolve_settings(f.trigger["path"], f"blob trigger '{f.name}' path")
    container, _, pattern = path.partition("/")
    setting = f.trigger.get("connection") or "AzureWebJobsStorage"
    connection = os.environ.get(setting)
    if not connection:
        raise SubscriptionError(f"blob trigger '{f.name}': connection setting {setting!r} is not set")
    prefix = pattern.split("{")[0]
    suffix = pattern.rsplit("}", 1)[1] if "}" in pattern else ""
    return Subscription(name=f"blobtrigger-{f.name}", function=f.name, connection=connection, container=container,
                        subject_begins_with=SUBJECT.format(container, prefix), subject_ends_with=suffix or None)


class EventGrid:
    def __init__(self, app: App, store: Store, invoker: Invoker, poll_interval: float = 0.5):
        self.app, self.store, self.invoker = app, store, invoker
        self.poll_interval = poll_interval
        self._tasks: list[asyncio.Task] = []
        self._inflight: set[int] = set()
        self._wake = asyncio.Event()
        self._problems: dict[str, str] = {}

    # ---- subscriptions ---------------------------------------------------------------------
    def put(self, sub: Subscription) -> None:
        """Create or replace. A new subscription sees only blobs written after it exists."""
        with self.store.tx() as db:
            old = db.execute("SELECT spec FROM eg_subscriptions WHERE name=?", (sub.name,)).fetchone()
            spec = asdict(sub)
            spec["created"] = json.loads(old["spec"])["created"] if old else time.time()
            db.execute("INSERT OR REPLACE INTO eg_subscriptions VALUES (?, ?)", (sub.name, json.dumps(spec)))

    def delete(self, name: str) -> bool:
        with self.store.tx() as db:
            db.execute("DELETE FROM eg_seen WHERE subscription=?", (name,))
            return db.execute("DELETE FROM eg_subscriptions WHERE name=?", (name,)).rowcount > 0

    def all(self) -> list[tuple[Subscription, float]]:
        out = []
        for row in self.store.query("SELECT spec FROM eg_subscriptions ORDER BY name"):
            spec = json.loads(row["spec"])
            created = spec.pop("created")
            out.append((Subscription(**spec), created))
        return out

    # ---- service lifecycle ------------------------------------------------------------------------
    def add_routes(self, web_app: web.Application) -> None:
        web_app.router.add_post(WEBHOOK, self.webhook)
        web_app.router.add_post("/runtime/webhooks/blobs", self.webhook)
        web_app.router.add_get(WEBHOOK + "/subscriptions", self.list_route)
        web_app.router.add_get(WEBHOOK + "/subscriptions/{name}", self.get_route)
        web_app.router.add_put(WEBHOOK + "/subscriptions/{name}", self.put_route)
        web_app.router.add_delete(WEBHOOK + "/subscriptions/{name}", self.delete_route)

    async def start(self) -> None:
        wanted = {f"blobtrigger-{f.name}": f for f in self.app.of_type("blobTrigger")
                  if f.trigger.get("source") == "EventGrid" and not f.disabled}
        for sub, _ in self.all():
            if sub.name.startswith("blobtrigger-") and sub.name not in wanted:
                self.delete(sub.name)  # the app no longer has (or disabled) that blob trigger
        for f in wanted.values():
            self.put(blob_trigger_subscription(f))
        from fedfunc.host import subscriptions
        subscriptions.ACTIVE = self
        self._tasks = [background(self._watch(), "event grid watcher"), background(self._deliver(), "event grid delivery")]

    async def stop(self) -> None:
        from fedfunc.host import subscriptions
        subscriptions.ACTIVE = None
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---- watcher ---------------------------------------------------------------------------------
    async def _watch(self) -> None:
        while True:
            try:
                await asyncio.get_running_loop().run_in_executor(None, self.poll_once)
            except Exception:
                log.exception("event grid watcher: poll failed")
            await asyncio.sleep(self.poll_interval)

    def poll_once(self) -> int:
        """List each subscribed container once; queue an event per new blob version. Returns
        how many events were queued."""
        groups: dict[tuple[str, str], list[tuple[Subscription, float]]] = {}
        for sub, created in self.all():
            groups.setdefault((sub.connection, sub.container), []).append((sub, created))
        queued = 0
        for (connection, container), subs in groups.items():
            try:
                client = blob_service(connection)
                blobs = list(client.get_container_client(container).list_blobs())
            except Exception as exc:
                problem = f"{container}: {exc}"
                if "ContainerNotFound" not in str(exc) and self._problems.get(connection) != problem:
                    self._problems[connection] = problem  # once per distinct problem, not every poll
                    log.warning("event grid watcher: cannot list %s in %s: %s", container,
                                _SECRET.sub(r"\1***", connection), exc)
                continue
            for sub, created in subs:
                queued += self._record(client, sub, created, container, blobs)
        if queued:
            self._wake.set()
        return queued

    def _record(self, client, sub: Subscription, created: float, container: str, blobs: list) -> int:
        seen = dict(self.store.query("SELECT blob, etag FROM eg_seen WHERE subscription=?", (sub.name,)))
        queued = 0
        with self.store.tx() as db:
            for blob in blobs:
                if seen.get(blob.name) == blob.etag:
                    continue
                db.execute("INSERT OR REPLACE INTO eg_seen VALUES (?,?,?)", (sub.name, blob.name, blob.etag))
                event = blob_created_event(client, container, blob)
                before = blob.last_modified.timestamp() < int(created)
                if before or not sub.matches(event["subject"]):
                    continue
                db.execute("INSERT INTO eg_outbox (subscription, function, event, next_at) VALUES (?,?,?,?)",
                           (sub.name, sub.function, json.dumps(event), time.time()))
                queued += 1
        return queued

    # ---- delivery --------------------------------------------------------------------------------
    async def _deliver(self) -> None:
        while True:
            rows = self.store.query("SELECT * FROM eg_outbox WHERE next_at <= ? ORDER BY seq", (time.time(),))
            for row in rows:
                if row["seq"] not in self._inflight:
                    self._inflight.add(row["seq"])
                    asyncio.create_task(self._deliver_one(dict(row)))
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=min(self.poll_interval, 0.5))
            except asyncio.TimeoutError:
                pass

    async def _deliver_one(self, row: dict) -> None:
        try:
            f = self.app.functions.get(row["function"])
            event = json.loads(row["event"])
            if f is None or f.disabled:
                raise LookupError(f"function {row['function']!r} is missing or disabled")
            await self.invoke(f, event, connection=self._connection_for(row["subscription"]))
            with self.store.tx() as db:
                db.execute("DELETE FROM eg_outbox WHERE seq=?", (row["seq"],))
        except Exception as exc:
            attempts = row["attempts"] + 1
            with self.store.tx() as db:
                if attempts >= MAX_ATTEMPTS:
                    log.error("event grid: dropping event for %s after %d attempts: %s", row["function"], attempts, exc)
                    db.execute("DELETE FROM eg_outbox WHERE seq=?", (row["seq"],))
                else:
                    delay = min(MAX_BACKOFF, 0.5 * 2 ** (attempts - 1))
                    db.execute("UPDATE eg_outbox SET attempts=?, next_at=? WHERE seq=?",
                               (attempts, time.time() + delay, row["seq"]))
        finally:
            self._inflight.discard(row["seq"])
            self._wake.set()

    def _connection_for(self, subscription: str) -> str | None:
        row = self.store.one("SELECT spec FROM eg_subscriptions WHERE name=?", (subscription,))
        return json.loads(row["spec"])["connection"] if row else None

    async def invoke(self, f: Function, event: dict, connection: str | None = None) -> None:
        """Event Grid trigger: the event; blob trigger: the blob's content as an InputStream."""
        with logged("eventgrid" if f.trigger_type == "eventGridTrigger" else "blob", f.name):
            if f.trigger_type == "eventGridTrigger":
                value = EventGridEventInConverter.decode(meta.Datum(json.dumps(event), "json"), trigger_metadata=None)
            else:
                value = await asyncio.get_running_loop().run_in_executor(None, self._read_blob, f, event, connection)
            await self.invoker.call_async(f, value)

    @staticmethod
    def _read_blob(f: Function, event: dict, connection: str | None) -> func.blob.InputStream:
        connection = connection or os.environ.get(f.trigger.get("connection") or "AzureWebJobsStorage")
        if not connection:
            raise SubscriptionError(f"blob trigger '{f.name}': no connection to read the blob with")
        container, name = event["subject"].split("/containers/", 1)[1].split("/blobs/", 1)
        data = blob_service(connection).get_blob_client(container, name).download_blob().readall()
        return func.blob.InputStream(data=data, name=f"{container}/{name}", uri=event["data"]["url"], length=len(data))

    # ---- routes ----------------------------------------------------------------------------------
    @staticmethod
    def _denied(request: web.Request) -> web.Response | None:
        return auth_error(request, "admin") if os.environ.get(MASTER_KEY_SETTING) else None

    async def webhook(self, request: web.Request) -> web.Response:
        """Event Grid's webhook delivery: an array of events (or one) for `?functionName=`."""
        denied = self._denied(request)
        if denied:
            return denied
        name = request.query.get("functionName", "").removeprefix("Host.Functions.")
        f = self.app.functions.get(name)
        if f is None or f.trigger_type not in ("eventGridTrigger", "blobTrigger") or f.disabled:
            return web.json_response({"error": f"no enabled Event Grid or blob triggered function named {name!r}"},
                                     status=404)
        try:
            body = json.loads(await request.text())
        except json.JSONDecodeError as exc:
            return web.json_response({"error": f"request body is not valid JSON: {exc}"}, status=400)
        events = body if isinstance(body, list) else [body]
        if not all(isinstance(e, dict) and "subject" in e and "eventType" in e for e in events):
            return web.json_response({"error": "each event needs at least 'subject' and 'eventType'"}, status=400)
        if request.headers.get("aeg-event-type") == "SubscriptionValidation":
            return web.json_response({"validationResponse": events[0].get("data", {}).get("validationCode")})
        try:
            for event in events:
                await self.invoke(f, event)
        except Exception as exc:
            return web.json_response({"error": f"function '{name}' failed: {exc}"}, status=500)
        return web.json_response({}, status=200)

    async def list_route(self, request: web.Request) -> web.Response:
        return self._denied(request) or web.json_response([s.redacted() for s, _ in self.all()])

    async def get_route(self, request: web.Request) -> web.Response:
        denied = self._denied(request)
        if denied:
            return denied
        found = [s for s, _ in self.all() if s.name == request.match_info["name"]]
        if not found:
            return web.json_response({"error": f"no subscription named {request.match_info['name']!r}"}, status=404)
        return web.json_response(found[0].redacted())

    async def put_route(self, request: web.Request) -> web.Response:
        denied = self._denied(request)
        if denied:
            return denied
        try:
            sub = parse_subscription(request.match_info["name"], json.loads(await request.text()), self.app)
        except json.JSONDecodeError as exc:
            return web.json_response({"error": f"request body is not valid JSON: {exc}"}, status=400)
        except SubscriptionError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        self.put(sub)
        return web.json_response(sub.redacted(), status=200)

    async def delete_route(self, request: web.Request) -> web.Response:
        denied = self._denied(request)
        if denied:
            return denied
        deleted = self.delete(request.match_info["name"])
        return web.json_response({"deleted": deleted}, status=200 if deleted else 404)
