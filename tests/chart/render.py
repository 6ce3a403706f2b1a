"""Render the chart with the real Helm library, without a cluster.

helm-sdkpy exposes Helm's install action but no `helm template`. So this module
runs a small in-memory Kubernetes API server (discovery, create, get, list) on
127.0.0.1 and lets Helm install the chart into it with wait=False. Every object
Helm creates is recorded exactly as Helm sent it; the release Secret Helm writes
for its own bookkeeping is left out. Rendering, values schema validation and
the CRD handling are Helm's own.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import helm_sdkpy

# Discovery: group/version -> [(plural, kind, namespaced, subresources...)]
RESOURCES = {
    "v1": [
        ("namespaces", "Namespace", False),
        ("secrets", "Secret", True),
        ("configmaps", "ConfigMap", True),
        ("services", "Service", True),
        ("serviceaccounts", "ServiceAccount", True),
        ("pods", "Pod", True),
        ("events", "Event", True),
    ],
    "apps/v1": [
        ("deployments", "Deployment", True),
        ("statefulsets", "StatefulSet", True),
        ("daemonsets", "DaemonSet", True),
    ],
    "batch/v1": [("jobs", "Job", True), ("cronjobs", "CronJob", True)],
    "rbac.authorization.k8s.io/v1": [
        ("clusterroles", "ClusterRole", False),
        ("clusterrolebindings", "ClusterRoleBinding", False),
        ("roles", "Role", True),
        ("rolebindings", "RoleBinding", True),
    ],
    "coordination.k8s.io/v1": [("leases", "Lease", True)],
    "events.k8s.io/v1": [("events", "Event", True)],
    "apiextensions.k8s.io/v1": [
        ("customresourcedefinitions", "CustomResourceDefinition", False)
    ],
    "monitoring.coreos.com/v1": [("servicemonitors", "ServiceMonitor", True)],
    "monoship.dev/v1alpha1": [("servicebuilds", "ServiceBuild", True)],
}


def _resource_list(gv: str) -> dict:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": [
            {
                "name": plural,
                "singularName": kind.lower(),
                "namespaced": namespaced,
                "kind": kind,
                "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
            }
            for plural, kind, namespaced in RESOURCES[gv]
        ],
    }


def _group_list() -> dict:
    groups = []
    for gv in RESOURCES:
        if "/" not in gv:
            continue
        group, version = gv.split("/")
        ref = {"groupVersion": gv, "version": version}
        groups.append({"name": group, "versions": [ref], "preferredVersion": ref})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


class _Api:
    def __init__(self) -> None:
        self.objects: dict[str, dict] = {}
        self.created: list[dict] = []
        self.lock = threading.Lock()


def _handler(api: _Api):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output quiet
            pass

        def _send(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _not_found(self, path: str) -> None:
            self._send(404, {
                "kind": "Status", "apiVersion": "v1", "status": "Failure",
                "reason": "NotFound", "code": 404, "message": f"{path} not found",
            })

        def _body(self) -> dict | None:
            """The JSON body, or None for protobuf (Helm's release Secret)."""
            length = int(self.headers.get("Content-Length") or 0)
            data = self.rfile.read(length)
            if "json" not in (self.headers.get("Content-Type") or ""):
                return None
            return json.loads(data or b"{}")

        @staticmethod
        def _parse(path: str):
            """Split a resource path into (gv, namespace, plural, name)."""
            parts = [p for p in path.split("/") if p]
            if parts[:1] == ["api"]:
                gv, rest = parts[1], parts[2:]
            elif parts[:1] == ["apis"] and len(parts) >= 3:
                gv, rest = f"{parts[1]}/{parts[2]}", parts[3:]
            else:
                return None
            ns = None
            if len(rest) >= 3 and rest[0] == "namespaces":
                ns, rest = rest[1], rest[2:]
            plural = rest[0] if rest else None
            name = rest[1] if len(rest) > 1 else None
            return gv, ns, plural, name

        def do_GET(self):
            path = urlsplit(self.path).path.rstrip("/")
            if path == "/version":
                return self._send(200, {
                    "major": "1", "minor": "33", "gitVersion": "v1.33.0",
                    "platform": "linux/amd64",
                })
            if path == "/api":
                return self._send(200, {"kind": "APIVersions", "versions": ["v1"]})
            if path == "/apis":
                return self._send(200, _group_list())
            if path == "/api/v1":
                return self._send(200, _resource_list("v1"))
            parts = [p for p in path.split("/") if p]
            if len(parts) == 3 and parts[0] == "apis":
                gv = f"{parts[1]}/{parts[2]}"
                if gv in RESOURCES:
                    return self._send(200, _resource_list(gv))
                return self._not_found(path)
            parsed = self._parse(path)
            if parsed is None:
                return self._not_found(path)
            gv, ns, plural, name = parsed
            if name is None:  # list: nothing pre-exists
                with api.lock:
                    items = [
                        o for k, o in api.objects.items()
                        if k.startswith(f"{gv}/{ns}/{plural}/")
                    ]
                return self._send(200, {
                    "kind": "List", "apiVersion": "v1",
                    "metadata": {"resourceVersion": "1"}, "items": items,
                })
            with api.lock:
                obj = api.objects.get(f"{gv}/{ns}/{plural}/{name}")
            if obj is None:
                return self._not_found(path)
            return self._send(200, obj)

        def _store(self, created: bool) -> None:
            path = urlsplit(self.path).path.rstrip("/")
            parsed = self._parse(path)
            if parsed is None:
                return self._not_found(path)
            gv, ns, plural, name = parsed
            obj = self._body()
            record = obj is not None
            if obj is None:
                # Helm's typed client writes its release record as protobuf. Its
                # content does not matter here: answer with an empty object of the kind.
                obj = {"apiVersion": "v1", "kind": "Secret",
                       "metadata": {"name": name or f"release-{uuid.uuid4().hex[:8]}"}}
            meta = obj.setdefault("metadata", {})
            name = name or meta.get("name")
            if ns:
                meta["namespace"] = ns
            meta.setdefault("uid", str(uuid.uuid4()))
            meta["resourceVersion"] = "1"
            meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
            if obj.get("kind") == "CustomResourceDefinition":
                obj["status"] = {"conditions": [
                    {"type": "Established", "status": "True"},
                    {"type": "NamesAccepted", "status": "True"},
                ]}
            with api.lock:
                api.objects[f"{gv}/{ns}/{plural}/{name}"] = obj
                if created and record:
                    api.created.append(json.loads(json.dumps(obj)))
            self._send(201 if created else 200, obj)

        def do_POST(self):
            self._store(created=True)

        def do_PUT(self):
            self._store(created=False)

        def do_PATCH(self):
            self._store(created=False)

    return Handler


def render(chart: str, values: dict | None = None, namespace: str = "monoship-system",
           release: str = "monoship") -> list[dict]:
    """Install `chart` into an in-memory API server; return the objects Helm created."""
    return install(chart, values, namespace, release)[0]


def install(chart: str, values: dict | None = None, namespace: str = "monoship-system",
            release: str = "monoship") -> tuple[list[dict], dict]:
    """Like render, and also return Helm's release record (manifest, info.notes)."""
    api = _Api()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        kubeconfig = f"""apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: http://127.0.0.1:{server.server_address[1]}
contexts:
- name: fake
  context: {{cluster: fake, user: fake, namespace: {namespace}}}
current-context: fake
users:
- name: fake
  user: {{token: fake}}
"""
        config = helm_sdkpy.Configuration(namespace=namespace, kubeconfig=kubeconfig)
        result = asyncio.run(helm_sdkpy.Install(config).run(
            release, chart, values=values, wait=False, timeout=60,
        ))
    finally:
        server.shutdown()
        server.server_close()
    objects = [
        o for o in api.created
        if not (o.get("kind") == "Secret"
                and o.get("metadata", {}).get("labels", {}).get("owner") == "helm")
    ]
    return objects, result


if __name__ == "__main__":
    import sys

    import yaml

    vals = json.loads(sys.argv[2]) if len(sys.argv) > 2 else None
    for o in render(sys.argv[1], vals):
        if o.get("kind") != "CustomResourceDefinition":
            print("---")
            print(yaml.safe_dump(o, sort_keys=False), end="")
