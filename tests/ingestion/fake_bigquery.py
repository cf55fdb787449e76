"""FAKE BigQuery REST endpoint for tests — NOT BigQuery, and no emulator exists here.

A tiny HTTP server on 127.0.0.1 that answers the few REST calls the REAL
``google.cloud.bigquery.Client`` makes for :class:`saip_ingestion.backends.gcp.BigQueryObjectStore`:

* ``POST .../datasets/{d}/tables`` and ``GET .../tables/{t}`` (``create_table(exists_ok=True)``),
* ``POST .../tables/{t}/insertAll`` (``insert_rows``): checks REQUIRED columns, unknown columns,
  base64 of BYTES, and drops rows whose ``insertId`` was already seen (BigQuery does this on a
  best-effort, ~1 minute basis; the fake does it always — a difference to keep in mind),
* ``POST /projects/{p}/queries`` (``query_and_wait``): ONLY the two parameterised SQL statements
  the store issues are understood (matched by regular expression, not parsed); anything else
  gets HTTP 400 so a new query cannot pass unnoticed.

What it proves: the real client's wire behaviour (request paths, JSON row encoding, BYTES as
base64, query parameters, insertErrors handling). What it does not: SQL semantics, streaming
buffer visibility delays, quotas, IAM, CMEK. The ``live`` test covers the real service.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_SELECT_KEY = re.compile(r"^SELECT data, sha256 FROM `([^`]+)` WHERE key = @key$")
_LIST_KEYS = re.compile(
    r"^SELECT DISTINCT key FROM `([^`]+)` WHERE STARTS_WITH\(key, @prefix\) ORDER BY key$"
)


class FakeBigQuery:
    """FAKE BigQuery (see module docstring). Use as a context manager; ``url`` is the root."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, Any]] = {}  # "p.d.t" -> {"schema": [...], "rows": []}
        self.insert_ids: set[str] = set()
        self.requests: list[tuple[str, str]] = []
        self.fail_next_insert: str | None = None
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeBigQuery:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- request handling ---------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                return

            def _reply(self, code: int, body: dict[str, Any]) -> None:
                raw = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _body(self) -> dict[str, Any]:
                n = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(n) or b"{}")

            def do_GET(self) -> None:
                fake.requests.append(("GET", self.path))
                m = re.match(
                    r"^/bigquery/v2/projects/([^/]+)/datasets/([^/]+)/tables/([^/?]+)", self.path
                )
                if m and ".".join(m.groups()) in fake.tables:
                    self._reply(200, fake._table_resource(".".join(m.groups())))
                else:
                    self._reply(404, _error(404, "Not found: Table"))

            def do_POST(self) -> None:
                fake.requests.append(("POST", self.path))
                path = self.path.split("?")[0]
                body = self._body()
                if m := re.match(r"^/bigquery/v2/projects/([^/]+)/datasets/([^/]+)/tables$", path):
                    self._reply(*fake._create_table(body))
                elif m := re.match(
                    r"^/bigquery/v2/projects/([^/]+)/datasets/([^/]+)/tables/([^/]+)/insertAll$",
                    path,
                ):
                    self._reply(*fake._insert_all(".".join(m.groups()), body))
                elif m := re.match(r"^/bigquery/v2/projects/([^/]+)/queries$", path):
                    self._reply(*fake._query(m.group(1), body))
                else:
                    self._reply(400, _error(400, f"FAKE BigQuery does not serve {path}"))

        return Handler

    def _table_resource(self, name: str) -> dict[str, Any]:
        p, d, t = name.split(".")
        return {
            "kind": "bigquery#table",
            "id": f"{p}:{d}.{t}",
            "tableReference": {"projectId": p, "datasetId": d, "tableId": t},
            "schema": {"fields": self.tables[name]["schema"]},
            "numRows": str(len(self.tables[name]["rows"])),
        }

    def _create_table(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        ref = body["tableReference"]
        name = f"{ref['projectId']}.{ref['datasetId']}.{ref['tableId']}"
        if name in self.tables:
            return 409, _error(409, f"Already Exists: Table {name}")
        self.tables[name] = {"schema": body.get("schema", {}).get("fields", []), "rows": []}
        return 200, self._table_resource(name)

    def _insert_all(self, name: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if name not in self.tables:
            return 404, _error(404, f"Not found: Table {name}")
        fields = {f["name"]: f for f in self.tables[name]["schema"]}
        errors = []
        accepted = []
        for index, row in enumerate(body.get("rows", [])):
            data = row["json"]
            problem = None
            for fname, field in fields.items():
                if field.get("mode") == "REQUIRED" and data.get(fname) is None:
                    problem = f"Missing required field: {fname}."
            for fname, value in data.items():
                if fname not in fields:
                    problem = f"no such field: {fname}."
                elif fields[fname]["type"] == "BYTES" and value is not None:
                    try:
                        base64.b64decode(value, validate=True)
                    except binascii.Error:
                        problem = f"Could not decode base64 in field {fname}."
            if self.fail_next_insert is not None:
                problem, self.fail_next_insert = self.fail_next_insert, None
            if problem:
                errors.append(
                    {"index": index, "errors": [{"reason": "invalid", "message": problem}]}
                )
            else:
                accepted.append(row)
        if errors:  # BigQuery rejects the whole request when a row is invalid (no skipInvalid)
            return 200, {"kind": "bigquery#tableDataInsertAllResponse", "insertErrors": errors}
        for row in accepted:
            insert_id = row.get("insertId")
            if insert_id and insert_id in self.insert_ids:
                continue
            if insert_id:
                self.insert_ids.add(insert_id)
            self.tables[name]["rows"].append(row["json"])
        return 200, {"kind": "bigquery#tableDataInsertAllResponse"}

    def _query(self, project: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        sql = " ".join(body["query"].split())
        params = {p["name"]: p["parameterValue"]["value"] for p in body.get("queryParameters", [])}
        if m := _SELECT_KEY.match(sql):
            rows = [r for r in self._rows(m.group(1)) if r["key"] == params["key"]]
            fields = [{"name": "data", "type": "BYTES"}, {"name": "sha256", "type": "STRING"}]
            values = [[r["data"], r["sha256"]] for r in rows]
        elif m := _LIST_KEYS.match(sql):
            keys = sorted(
                {r["key"] for r in self._rows(m.group(1)) if r["key"].startswith(params["prefix"])}
            )
            fields = [{"name": "key", "type": "STRING"}]
            values = [[k] for k in keys]
        else:
            return 400, _error(400, f"FAKE BigQuery does not understand: {sql}")
        return 200, {
            "kind": "bigquery#queryResponse",
            "jobComplete": True,
            "schema": {"fields": fields},
            "rows": [{"f": [{"v": v} for v in row]} for row in values],
            "totalRows": str(len(values)),
            "jobReference": {"projectId": project, "jobId": "fake-job", "location": "US"},
        }

    def _rows(self, name: str) -> list[dict[str, Any]]:
        return list(self.tables.get(name, {"rows": []})["rows"])


def _error(code: int, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "errors": [{"message": message}]}}
