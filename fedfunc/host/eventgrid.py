"""Event Grid, locally: subscriptions kept in the store, two sources — the storage watcher
(`Microsoft.Storage.BlobCreated` for new blob versions in a container) and local custom topics
(events posted by `azure.eventgrid.EventGridPublisherClient`, CloudEvents or Event Grid schema) —
and delivery to a function of the app or to a webhook outside it, from a store-backed outbox with
retries and back-off (at-least-once, like Event Grid). Events can also be posted by hand to
`/runtime/webhooks/eventgrid?functionName=NAME`.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
import azure.functions as func
from aiohttp import web
from azure.functions import meta
from azure.functions.eventgrid import EventGridEventInConverter

from fedfunc.host.app_loader import App, Function, resolve_settings
from fedfunc.host.auth import HostRoutes, master, system, topic_key
from fedfunc.host.invoke import Invoker, background, logged
from fedfunc.host.keys import HostKeys
from fedfunc.host.storage_watch import (BLOB_CREATED, SUBJECT, Changes, StorageWatcher, SubscriptionError,
                                        account_name, blob_created_event, blob_service)
from fedfunc.host.store import Store
from fedfunc.host.topics import TOPICS, check_topic_name, event_kind, parse_published, topic_endpoint, topic_resource

log = logging.getLogger("fedfunc.host")

MAX_ATTEMPTS = 30
MAX_BACKOFF = 60.0
NOT_RETRIED = (400, 413)  # a webhook's answers Event Grid does not retry
WEBHOOK = "/runtime/webhooks/eventgrid"
_SECRET = re.compile(r"(AccountKey=|SharedAccessSignature=|sig=)[^;&]+", re.IGNORECASE)

__all__ = ["BLOB_CREATED", "WEBHOOK", "EventGrid", "Subscription", "SubscriptionError", "parse_subscription"]


@dataclass
class Subscription:
    """Source: a storage container (`connection` + `container`) or a local custom `topic`.
    Target: an Event Grid- or blob-triggered `function` of the app, or a `webhook` URL."""
    name: str
    function: str | None = None
    connection: str | None = None  # a connection string, or an account blob URL carrying a SAS token
    container: str | None = None
    subject_begins_with: str | None = None
    subject_ends_with: str | None = None
    included_event_types: list[str] | None = field(default_factory=lambda: [BLOB_CREATED])
    topic: str | None = None
    webhook: str | None = None

    def matches(self, subject: str, event_type: str = BLOB_CREATED) -> bool:
        return (subject.startswith(self.subject_begins_with or "") and subject.endswith(self.subject_ends_with or "")
                and (not self.included_event_types or event_type in self.included_event_types))

    def blob_prefix(self) -> str:
        """The blob-name prefix the subject filter implies (listing only those is cheaper)."""
        head = SUBJECT.format(self.container, "")
        begins = self.subject_begins_with or ""
        return begins[len(head):] if begins.startswith(head) else ""

    def redacted(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if v is not None}
        if self.connection:
            out["connection"] = _SECRET.sub(r"\1***", self.connection)
        return out


_FIELDS = {f for f in Subscription.__dataclass_fields__} - {"name"}


def _text(body: dict, key: str) -> str | None:
    value = body.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise SubscriptionError(f"field '{key}' must be a non-empty string")
    return value


def parse_subscription(name: str, body: dict, app: App, topics=None) -> Subscription:
    """Validate a subscription spec; `topics` (names of local topics) is checked when given."""
    if not isinstance(body, dict):
        raise SubscriptionError("subscription body must be a JSON object")
    if name.startswith("blobtrigger-") or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}", name):
        raise SubscriptionError(f"subscription name {name!r}: use letters, digits, '_', '.', ':', '-' "
                                "(names starting 'blobtrigger-' are the host's own)")
    unknown = set(body) - _FIELDS - {"name"}
    if unknown:
        raise SubscriptionError(f"unknown field(s): {sorted(unknown)}")
    spec = {k: _text(body, k) for k in ("function", "webhook", "connection", "container", "topic",
                                         "subject_begins_with", "subject_ends_with")}
    if not spec["function"] and not spec["webhook"]:
        raise SubscriptionError("field 'function' is required (a non-empty string), or 'webhook' (a URL)")
    if spec["function"] and spec["webhook"]:
        raise SubscriptionError("give 'function' or 'webhook', not both")
    if spec["topic"]:
        if spec["connection"] or spec["container"]:
            raise SubscriptionError("a subscription has one source: 'topic', or 'connection' + 'container'")
        if topics is not None and spec["topic"] not in topics:
            raise SubscriptionError(f"field 'topic': no local topic named {spec['topic']!r} "
                                    f"(create it with PUT {TOPICS}/{spec['topic']})")
    else:
        for key in ("connection", "container"):
            if not spec[key]:
                raise SubscriptionError(f"field '{key}' is required (a non-empty string)")
    if spec["function"]:
        f = app.functions.get(spec["function"])
        allowed = ("eventGridTrigger",) if spec["topic"] else ("eventGridTrigger", "blobTrigger")
        if f is None or f.trigger_type not in allowed:
            raise SubscriptionError(f"field 'function': no {' or '.join(allowed)} function named {spec['function']!r}")
    if spec["webhook"] and not re.match(r"https?://[^/]+", spec["webhook"]):
        raise SubscriptionError("field 'webhook' must be an http(s) URL")
    types = body.get("included_event_types")
    if types is not None and (not isinstance(types, list) or not all(isinstance(t, str) and t for t in types)):
        raise SubscriptionError("field 'included_event_types' must be a list of event type names")
    if not spec["topic"]:
        types = types or [BLOB_CREATED]
        if BLOB_CREATED not in types:
            raise SubscriptionError(f"field 'included_event_types' must include {BLOB_CREATED} "
                                    "(the only event the storage watcher emits)")
    sub = Subscription(name=name, included_event_types=types or None, **spec)
    if sub.connection:
        blob_service(sub.connection)  # fails now, naming the field, rather than in the watcher
    return sub


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
    def __init__(self, app: App, store: Store, invoker: Invoker, keys: HostKeys, origin: str = "",
                 poll_interval: float | None = None, watch: tuple[Path, ...] = (), access_logs: tuple[Path, ...] = ()):
        """`poll_interval`: the safety poll (default 0.5 s; 5 s when `watch` folders or storage
        `access_logs` tell of changes)."""
        self.app, self.store, self.invoker, self.keys, self.origin = app, store, invoker, keys, origin
        told = bool(watch or access_logs)
        self.poll_interval = poll_interval if poll_interval is not None else (5.0 if told else 0.5)
        self.watcher = StorageWatcher(self.poll_once, self.poll_interval, tuple(watch), tuple(access_logs))
        self._clients: dict[str, object] = {}  # connection → BlobServiceClient (keeps its HTTP connections)
        self._lister = ThreadPoolExecutor(4, thread_name_prefix="eg-list")
        self._tasks: list[asyncio.Task] = []
        self._inflight: set[int] = set()
        self._wake = asyncio.Event()
        self._problems: dict[str, str] = {}
        self._session: aiohttp.ClientSession | None = None

    # ---- subscriptions ---------------------------------------------------------------------
    def parse(self, name: str, body: dict) -> Subscription:
        return parse_subscription(name, body, self.app, topics=self.keys.topics)

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

    def get(self, name: str) -> Subscription | None:
        row = self.store.one("SELECT spec FROM eg_subscriptions WHERE name=?", (name,))
        if row is None:
            return None
        spec = json.loads(row["spec"])
        spec.pop("created")
        return Subscription(**spec)

    # ---- service lifecycle ------------------------------------------------------------------------
    def add_routes(self, routes: HostRoutes) -> None:
        routes.add("POST", WEBHOOK, self.webhook, system("eventgrid_extension"))
        routes.add("POST", "/runtime/webhooks/blobs", self.webhook, system("blobs_extension"))
        # managing subscriptions is an ARM operation on Azure, not a webhook call: master key only
        routes.add("GET", WEBHOOK + "/subscriptions", self.list_route, master)
        routes.add("GET", WEBHOOK + "/subscriptions/{name}", self.get_route, master)
        routes.add("PUT", WEBHOOK + "/subscriptions/{name}", self.put_route, master)
        routes.add("DELETE", WEBHOOK + "/subscriptions/{name}", self.delete_route, master)
        routes.add("GET", TOPICS, self.topics_route, master)
        routes.add("GET", TOPICS + "/{topic}", self.topic_route, master)
        routes.add("PUT", TOPICS + "/{topic}", self.topic_route, master)
        routes.add("POST", "/eventgrid/topics/{topic}/api/events", self.publish_route, topic_key("topic"))

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
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        self._tasks = [background(self.watcher.run(), "event grid watcher"),
                       background(self._deliver(), "event grid delivery")]

    async def stop(self) -> None:
        from fedfunc.host import subscriptions
        subscriptions.ACTIVE = None
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session:
            await self._session.close()
        self._lister.shutdown(wait=False)

    # ---- storage source ----------------------------------------------------------------------------
    def poll_once(self, only: Changes | None = None) -> int:
        """List each subscribed container (or, given `only`, just the blobs named there); queue an
        event per new blob version. Returns how many events were queued."""
        groups: dict[tuple[str, str], list[tuple[Subscription, float]]] = {}
        for sub, created in self.all():
            if sub.connection:
                groups.setdefault((sub.connection, sub.container), []).append((sub, created))
        work = []
        for (connection, container), subs in groups.items():
            try:
                client = self._client(connection)
            except SubscriptionError:
                continue
            if only is None:
                work.append((client, container, subs, [os.path.commonprefix([s.blob_prefix() for s, _ in subs])]))
            elif (account_name(client), container) in only:
                names = only[(account_name(client), container)]
                work.append((client, container, subs, sorted(names) if names is not None else [""]))
        queued = 0
        for (client, container, subs, _), blobs in zip(work, self._lister.map(self._list, work)):
            for sub, created in subs if blobs is not None else ():
                queued += self._record(client, sub, created, container, blobs)
        if queued:
            self.invoker.loop.call_soon_threadsafe(self._wake.set)
        return queued

    def _client(self, connection: str):
        if connection not in self._clients:
            self._clients[connection] = blob_service(connection)
        return self._clients[connection]

    def _list(self, item) -> list | None:
        """The blobs under each prefix (an exact name from the access log lists that name and any
        name it begins); None when the container cannot be listed."""
        client, container, _, prefixes = item
        try:
            listed = {}
            for prefix in prefixes:
                for blob in client.get_container_client(container).list_blobs(name_starts_with=prefix or None):
                    listed[blob.name] = blob
            return list(listed.values())
        except Exception as exc:
            problem = f"{container}: {exc}"
            where = client.url.split("?")[0]
            if "ContainerNotFound" not in str(exc) and self._problems.get(where) != problem:
                self._problems[where] = problem  # once per distinct problem, not every poll
                log.warning("event grid watcher: cannot list %s in %s: %s", container, where, exc)
            return None

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
                self._enqueue(db, sub, event)
                queued += 1
        return queued

    @staticmethod
    def _enqueue(db, sub: Subscription, event: dict) -> None:
        db.execute("INSERT INTO eg_outbox (subscription, function, event, next_at) VALUES (?,?,?,?)",
                   (sub.name, sub.function or "", json.dumps(event), time.time()))

    # ---- topic source ------------------------------------------------------------------------------
    def publish(self, topic: str, events: list[dict]) -> int:
        """Queue `events` (already validated) for every subscription of `topic`, all or nothing."""
        subs = [s for s, _ in self.all() if s.topic == topic]
        queued = 0
        with self.store.tx() as db:
            for event in events:
                event_type, subject = event_kind(event)
                for sub in subs:
                    if sub.matches(subject, event_type):
                        self._enqueue(db, sub, event)
                        queued += 1
        if queued:
            self._wake.set()
        return queued

    # ---- delivery --------------------------------------------------------------------------------
    async def _deliver(self) -> None:
        """Deliver what is due; then sleep until the next retry is due or something is queued."""
        while True:
            self._wake.clear()
            now = time.time()
            for row in self.store.query("SELECT * FROM eg_outbox WHERE next_at <= ? ORDER BY seq", (now,)):
                if row["seq"] not in self._inflight:
                    self._inflight.add(row["seq"])
                    asyncio.create_task(self._deliver_one(dict(row)))
            pending = self.store.one("SELECT MIN(next_at) AS t FROM eg_outbox WHERE next_at > ?", (now,))["t"]
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=None if pending is None else max(0.0, pending - now))
            except asyncio.TimeoutError:
                pass

    async def _deliver_one(self, row: dict) -> None:
        try:
            event = json.loads(row["event"])
            sub = self.get(row["subscription"])
            if sub is not None and sub.webhook:
                await self._post(sub, event, row["attempts"] + 1)
            else:
                f = self.app.functions.get(row["function"])
                if f is None or f.disabled:
                    raise LookupError(f"function {row['function']!r} is missing or disabled")
                await self.invoke(f, event, connection=sub.connection if sub else None)
            self._forget(row["seq"])
        except _Refused as exc:
            log.error("event grid: %s; not retried", exc)
            self._forget(row["seq"])
        except Exception as exc:
            attempts = row["attempts"] + 1
            with self.store.tx() as db:
                if attempts >= MAX_ATTEMPTS:
                    log.error("event grid: dropping event for %s after %d attempts: %s", row["subscription"], attempts, exc)
                    db.execute("DELETE FROM eg_outbox WHERE seq=?", (row["seq"],))
                else:
                    delay = min(MAX_BACKOFF, 0.5 * 2 ** (attempts - 1))
                    db.execute("UPDATE eg_outbox SET attempts=?, next_at=? WHERE seq=?",
                               (attempts, time.time() + delay, row["seq"]))
        finally:
            self._inflight.discard(row["seq"])
            self._wake.set()

    def _forget(self, seq: int) -> None:
        with self.store.tx() as db:
            db.execute("DELETE FROM eg_outbox WHERE seq=?", (seq,))

    async def _post(self, sub: Subscription, event: dict, attempt: int) -> None:
        """Webhook delivery as Event Grid does it: CloudEvents one per request (structured mode),
        Event Grid schema as a one-event array; 200-204 count as delivered."""
        cloud = "specversion" in event
        headers = {"aeg-event-type": "Notification", "aeg-subscription-name": sub.name.upper(),
                   "aeg-delivery-count": str(attempt - 1),
                   "Content-Type": "application/cloudevents+json; charset=utf-8" if cloud else "application/json"}
        body = json.dumps(event if cloud else [event])
        async with self._session.post(sub.webhook, data=body, headers=headers) as response:
            if 200 <= response.status <= 204:
                return
            text = (await response.text())[:300]
            if response.status in NOT_RETRIED:
                raise _Refused(f"webhook {sub.webhook} of {sub.name} answered {response.status}: {text}")
            raise RuntimeError(f"webhook {sub.webhook} of {sub.name} answered {response.status}: {text}")

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
    async def webhook(self, request: web.Request) -> web.Response:
        """Event Grid's webhook delivery: an array of events (or one) for `?functionName=`."""
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
        return web.json_response([s.redacted() for s, _ in self.all()])

    async def get_route(self, request: web.Request) -> web.Response:
        found = self.get(request.match_info["name"])
        if found is None:
            return web.json_response({"error": f"no subscription named {request.match_info['name']!r}"}, status=404)
        return web.json_response(found.redacted())

    async def put_route(self, request: web.Request) -> web.Response:
        try:
            sub = self.parse(request.match_info["name"], json.loads(await request.text()))
        except json.JSONDecodeError as exc:
            return web.json_response({"error": f"request body is not valid JSON: {exc}"}, status=400)
        except SubscriptionError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        self.put(sub)
        return web.json_response(sub.redacted(), status=200)

    async def delete_route(self, request: web.Request) -> web.Response:
        deleted = self.delete(request.match_info["name"])
        return web.json_response({"deleted": deleted}, status=200 if deleted else 404)

    async def topics_route(self, request: web.Request) -> web.Response:
        return web.json_response([{"name": t, "endpoint": topic_endpoint(self.origin, t)} for t in sorted(self.keys.topics)])

    async def topic_route(self, request: web.Request) -> web.Response:
        """GET: a topic's endpoint and key; PUT: the same, creating the topic (and its key) if new."""
        name = request.match_info["topic"]
        if request.method == "PUT":
            try:
                self.keys.topic_key(check_topic_name(name))
            except ValueError as exc:
                return web.json_response({"error": str(exc)}, status=400)
        elif name not in self.keys.topics:
            return web.json_response({"error": f"no topic named {name!r}"}, status=404)
        return web.json_response({"name": name, "endpoint": topic_endpoint(self.origin, name),
                                  "key": self.keys.topics[name], "id": topic_resource(name)})

    async def publish_route(self, request: web.Request) -> web.Response:
        """A custom topic's `/api/events`: validate the whole batch, then queue it in one transaction."""
        topic = request.match_info["topic"]
        try:
            events = parse_published(topic, request.headers.get("Content-Type", ""), await request.read())
        except ValueError as exc:
            status = 413 if "too large" in str(exc) else 400
            return web.json_response({"error": {"code": "BadRequest", "message": str(exc)}}, status=status)
        self.publish(topic, events)
        return web.Response(status=200)


class _Refused(Exception):
    """A webhook answer that Event Grid does not retry."""
