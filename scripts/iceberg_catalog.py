"""An Iceberg REST catalog on 127.0.0.1 for Weir's tests: the REST protocol's table and namespace endpoints,
answered by pyiceberg's SQL catalog (SQLite) with a warehouse directory on local disk.

No REST catalog server ships in PyPI, npm or Debian, so the tests run this one. Every request and every table
commit is pyiceberg's own code (its request and response models, its SqlCatalog's optimistic commit), so a table
Weir commits through it is one pyiceberg reads.

    python3 scripts/iceberg_catalog.py --port 8181 --warehouse /tmp/warehouse
"""

import argparse
import json
import re
import sys
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from pyiceberg.catalog.rest import (
    CreateTableRequest,
    ListNamespaceResponse,
    NamespaceResponse,
    TableResponse,
)
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import (
    CommitFailedException,
    NamespaceAlreadyExistsError,
    NamespaceNotEmptyError,
    NoSuchNamespaceError,
    NoSuchTableError,
    TableAlreadyExistsError,
)
from pyiceberg.partitioning import UNPARTITIONED_PARTITION_SPEC
from pyiceberg.table import CommitTableRequest

# (exception, HTTP status, the REST error type Iceberg clients map back to their own exceptions)
ERRORS = [
    (NoSuchTableError, 404, "NoSuchTableException"),
    (NoSuchNamespaceError, 404, "NoSuchNamespaceException"),
    (TableAlreadyExistsError, 409, "AlreadyExistsException"),
    (NamespaceAlreadyExistsError, 409, "AlreadyExistsException"),
    (NamespaceNotEmptyError, 409, "NamespaceNotEmptyException"),
    (CommitFailedException, 409, "CommitFailedException"),
]


def namespace_of(part):
    """A namespace as the REST path writes it: levels joined by the unit separator."""
    return tuple(unquote(part).split("\x1f"))


class Catalog(BaseHTTPRequestHandler):
    catalog = None

    def log_message(self, format, *args):
        sys.stderr.write("iceberg-catalog: " + format % args + "\n")

    def reply(self, status, body=None):
        data = b"" if body is None else body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length).decode() if length else "{}"

    def handle_any(self, method):
        url = urlparse(self.path)
        path = re.sub(r"^/v1/(?:[^/]+/)?(?=namespaces|config|tables)", "", url.path.rstrip("/"))
        try:
            status, body = self.route(method, path, parse_qs(url.query))
        except Exception as error:
            for kind, status, name in ERRORS:
                if isinstance(error, kind):
                    break
            else:
                traceback.print_exc()
                status, name = 500, "InternalServerError"
            body = {"error": {"message": str(error), "type": name, "code": status}}
        self.reply(status, body)

    def route(self, method, path, query):
        catalog = self.catalog
        parts = path.split("/")
        if path == "config":
            return 200, {"defaults": {}, "overrides": {}}
        if parts[0] != "namespaces":
            return 404, {"error": {"message": f"no endpoint {method} {path}", "type": "NotFound", "code": 404}}
        if len(parts) == 1:
            if method == "GET":
                parent = namespace_of(query["parent"][0]) if "parent" in query else ()
                names = catalog.list_namespaces(parent)
                return 200, ListNamespaceResponse(namespaces=names).model_dump_json(by_alias=True)
            request = json.loads(self.body())
            namespace = tuple(request["namespace"])
            catalog.create_namespace(namespace, request.get("properties") or {})
            return 200, NamespaceResponse(namespace=namespace, properties=request.get("properties") or {}).model_dump_json()
        namespace = namespace_of(parts[1])
        if len(parts) == 2:
            if method == "DELETE":
                catalog.drop_namespace(namespace)
                return 204, None
            properties = catalog.load_namespace_properties(namespace)
            return 200, NamespaceResponse(namespace=namespace, properties=properties).model_dump_json()
        if len(parts) == 3 and parts[2] == "tables":
            if method == "GET":
                tables = [{"namespace": list(t[:-1]), "name": t[-1]} for t in catalog.list_tables(namespace)]
                return 200, {"identifiers": tables}
            # Clients leave out the optional fields pyiceberg's model declares without a default.
            fields = {"location": None, "partition-spec": None, "write-order": None} | json.loads(self.body())
            # The protocol lets a client leave partition field ids to the catalog; pyiceberg's model wants them.
            for i, field in enumerate((fields["partition-spec"] or {}).get("fields", [])):
                field.setdefault("field-id", 1000 + i)
            request = CreateTableRequest.model_validate(fields)
            table = catalog.create_table(
                namespace + (request.name,),
                schema=request.table_schema,
                location=request.location,
                partition_spec=request.partition_spec or UNPARTITIONED_PARTITION_SPEC,
                properties=request.properties,
            )
            return 200, table_response(table)
        if len(parts) == 4 and parts[2] == "tables":
            identifier = namespace + (unquote(parts[3]),)
            if method == "DELETE":
                catalog.drop_table(identifier)
                return 204, None
            table = catalog.load_table(identifier)
            if method == "HEAD":
                return 204, None
            if method == "GET":
                return 200, table_response(table)
            body = json.loads(self.body())
            # As Iceberg's reference catalog does, a new schema gets the next free id, whatever id the client sent.
            ids = [schema.schema_id for schema in table.metadata.schemas]
            for update in body.get("updates", []):
                if update.get("action") == "add-schema":
                    update["schema"]["schema-id"] = max(ids) + 1
                    ids.append(max(ids) + 1)
            request = CommitTableRequest.model_validate(body)
            response = catalog.commit_table(table, request.requirements, request.updates)
            return 200, response.model_dump_json(by_alias=True)
        return 404, {"error": {"message": f"no endpoint {method} {path}", "type": "NotFound", "code": 404}}

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def do_DELETE(self):
        self.handle_any("DELETE")

    def do_HEAD(self):
        self.handle_any("HEAD")


def table_response(table):
    response = TableResponse(metadata_location=table.metadata_location, metadata=table.metadata)
    return response.model_dump_json(by_alias=True, exclude_none=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--warehouse", required=True, help="directory for the catalog's database and tables")
    args = parser.parse_args()
    warehouse = Path(args.warehouse).absolute()
    warehouse.mkdir(parents=True, exist_ok=True)
    Catalog.catalog = SqlCatalog(
        "weir-test",
        uri=f"sqlite:///{warehouse / 'catalog.db'}",
        warehouse=warehouse.as_uri(),
    )
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Catalog)
    print(f"iceberg catalog listening on 127.0.0.1:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
