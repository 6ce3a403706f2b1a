"""Tests for charts/monoship and examples/.

Run: python3 tests/chart/test_chart.py   (deps: helm-sdkpy, pyyaml, jsonschema;
tests/chart/run.sh installs them). Prints "N passed, M failed"; exits 1 on a failure.

Helm is the real Helm library bundled in helm-sdkpy: `Lint` for the lint, and `Install`
into the in-memory API server of render.py for the rendered manifests.
"""

from __future__ import annotations

import asyncio
import copy
import re
import sys
import traceback
from pathlib import Path

import helm_sdkpy
import jsonschema
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from render import install, render  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "monoship"
CRD = ROOT / "crds" / "servicebuild.yaml"
MONOREPO_CRD = ROOT / "crds" / "monorepo.yaml"
EXAMPLES = ROOT / "examples"
RELEASE_NS = "monoship-system"

# The controller's permissions, exactly (see the chart's "monoship.rules").
RULES = [
    (["monoship.dev"], ["servicebuilds", "monorepos"], ["get", "list", "watch"]),
    (["monoship.dev"], ["servicebuilds/status", "monorepos/status"], ["get", "patch", "update"]),
    (["batch"], ["jobs"], ["get", "list", "watch", "create", "delete"]),
    ([""], ["pods"], ["list"]),
    ([""], ["secrets"], ["get"]),
    (["apps"], ["deployments", "statefulsets", "daemonsets"], ["get", "patch"]),
    (["batch"], ["cronjobs"], ["get", "patch"]),
    (["events.k8s.io"], ["events"], ["create", "patch"]),
    ([""], ["events"], ["list"]),
]
# Cluster-wide only: the accept-targets-from annotation of a target's namespace.
NAMESPACE_RULES = [([""], ["namespaces"], ["get"])]
LEASE_RULES = [(["coordination.k8s.io"], ["leases"], ["get", "create", "update"])]

TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


# ---------------------------------------------------------------- helpers

_renders: dict[str, list[dict]] = {}


def rendered(values: dict | None = None) -> list[dict]:
    key = repr(sorted((values or {}).items()))
    if key not in _renders:
        _renders[key] = render(str(CHART), values, namespace=RELEASE_NS)
    return _renders[key]


def find(objs, kind, name=None):
    found = [o for o in objs if o["kind"] == kind
             and (name is None or o["metadata"]["name"] == name)]
    return found


def one(objs, kind, name=None):
    found = find(objs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def rule_tuples(role):
    return [
        (r.get("apiGroups", []), r.get("resources", []), r.get("verbs", []))
        for r in role.get("rules", [])
    ]


def no_wildcards(role):
    for groups, resources, verbs in rule_tuples(role):
        for field in (groups, resources, verbs):
            assert "*" not in field and not any("*" in x for x in field), (
                f"wildcard in {role['kind']} {role['metadata']['name']}: {field}")
    for r in role.get("rules", []):
        assert "nonResourceURLs" not in r, "nonResourceURLs are not needed"


def container(objs):
    deploy = one(objs, "Deployment")
    containers = deploy["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return deploy, containers[0]


def lint_messages():
    config = helm_sdkpy.Configuration(namespace=RELEASE_NS)
    return asyncio.run(helm_sdkpy.Lint(config).run(str(CHART)))


# ---------------------------------------------------------------- chart: lint and CRD

@test
def helm_lint_passes():
    result = lint_messages()
    assert result["TotalChartsLinted"] == 1, result
    assert not result.get("Errors"), f"helm lint errors: {result}"


@test
def helm_lint_strict_passes():
    # `helm lint --strict` fails on warnings too. The Lint action has no strict flag,
    # so check the severities it reports: 1 info, 2 warning, 3 error.
    result = lint_messages()
    bad = [m for m in result.get("Messages") or [] if m["Severity"] >= 2]
    assert not bad, f"helm lint warnings or errors: {bad}"


@test
def lint_catches_a_bad_value():
    # Make sure the lint above is not vacuous: an invalid logFormat must fail it
    # through values.schema.json.
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        chart = Path(tmp) / "monoship"
        shutil.copytree(CHART, chart)
        values = chart / "values.yaml"
        values.write_text(values.read_text().replace("logFormat: json", "logFormat: xml"))
        config = helm_sdkpy.Configuration(namespace=RELEASE_NS)
        result = asyncio.run(helm_sdkpy.Lint(config).run(str(chart)))
        assert result.get("Errors"), f"lint accepted logFormat: xml: {result}"


@test
def chart_crd_is_identical_to_generated_crd():
    for top in (CRD, MONOREPO_CRD):
        chart_crd = CHART / "crds" / top.name
        assert chart_crd.read_bytes() == top.read_bytes(), (
            f"charts/monoship/crds/{top.name} differs from crds/{top.name}; "
            "copy it: cp crds/*.yaml charts/monoship/crds/")


@test
def helm_installs_the_crds_first():
    objs = rendered()
    crds = find(objs, "CustomResourceDefinition")
    assert len(crds) == 2, [c["metadata"]["name"] for c in crds]
    assert objs[:2] == crds, "Helm installs crds/ before the templates"
    for top in (CRD, MONOREPO_CRD):
        want = yaml.safe_load(top.read_text())
        crd = one(objs, "CustomResourceDefinition", want["metadata"]["name"])
        assert crd["spec"] == want["spec"]


# ---------------------------------------------------------------- chart: RBAC

@test
def default_rbac_is_cluster_wide_with_exact_rules():
    objs = rendered()
    role = one(objs, "ClusterRole")
    assert rule_tuples(role) == RULES + NAMESPACE_RULES, rule_tuples(role)
    no_wildcards(role)
    binding = one(objs, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
        "name": role["metadata"]["name"]}
    sa = one(objs, "ServiceAccount")
    assert binding["subjects"] == [{
        "kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": RELEASE_NS}]
    # Only the lease Role is namespaced.
    assert [r["metadata"]["name"] for r in find(objs, "Role")] == ["monoship-leader-election"]


@test
def lease_role_lives_in_release_namespace():
    for values in (None, {"watchNamespace": "team-a"}):
        objs = rendered(values)
        role = one(objs, "Role", "monoship-leader-election")
        assert role["metadata"]["namespace"] == RELEASE_NS
        assert rule_tuples(role) == LEASE_RULES, rule_tuples(role)
        no_wildcards(role)
        binding = one(objs, "RoleBinding", "monoship-leader-election")
        assert binding["metadata"]["namespace"] == RELEASE_NS
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["roleRef"]["name"] == "monoship-leader-election"


@test
def watch_namespace_switches_to_role():
    objs = rendered({"watchNamespace": "team-a"})
    assert not find(objs, "ClusterRole") and not find(objs, "ClusterRoleBinding")
    role = one(objs, "Role", "monoship")
    assert role["metadata"]["namespace"] == "team-a"
    assert rule_tuples(role) == RULES, rule_tuples(role)
    no_wildcards(role)
    binding = one(objs, "RoleBinding", "monoship")
    assert binding["metadata"]["namespace"] == "team-a"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "monoship"}
    assert binding["subjects"][0]["namespace"] == RELEASE_NS
    _, c = container(objs)
    assert "--namespace=team-a" in c["args"]
    _, c = container(rendered())
    assert not any(a.startswith("--namespace") for a in c["args"])


@test
def concurrency_becomes_a_flag():
    _, c = container(rendered())
    assert "--concurrency=16" in c["args"]
    _, c = container(rendered({"concurrency": 4}))
    assert "--concurrency=4" in c["args"]


@test
def tenant_policy_values_become_flags():
    _, c = container(rendered())
    assert "--allow-cross-namespace-targets" not in c["args"]
    assert "--no-build-service-account" not in c["args"]
    objs = rendered({"allowCrossNamespaceTargets": True, "forbidBuildServiceAccount": True})
    _, c = container(objs)
    assert "--allow-cross-namespace-targets" in c["args"]
    assert "--no-build-service-account" in c["args"]
    # Every namespace allowed: the annotation is never read.
    assert rule_tuples(one(objs, "ClusterRole")) == RULES


@test
def no_lease_rbac_without_leader_election():
    objs = rendered({"leaderElection": {"enabled": False}, "replicas": 1})
    assert not find(objs, "Role") and not find(objs, "RoleBinding")
    for role in find(objs, "ClusterRole"):
        for groups, _, _ in rule_tuples(role):
            assert "coordination.k8s.io" not in groups
    _, c = container(objs)
    assert not any(a.startswith("--lease") or a == "--leader-election" for a in c["args"])


@test
def several_replicas_need_leader_election():
    try:
        rendered({"leaderElection": {"enabled": False}, "replicas": 2})
    except helm_sdkpy.HelmError as e:
        assert "leaderElection" in str(e), e
    else:
        raise AssertionError("replicas=2 without leader election was accepted")


# ---------------------------------------------------------------- chart: Deployment

@test
def deployment_is_restricted_pss():
    deploy, c = container(rendered())
    pod = deploy["spec"]["template"]["spec"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["runAsUser"] == 65532
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    csc = c["securityContext"]
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["capabilities"] == {"drop": ["ALL"]}
    assert "privileged" not in csc and "hostNetwork" not in pod
    assert pod["terminationGracePeriodSeconds"] == 30
    assert pod["serviceAccountName"] == "monoship"


@test
def deployment_probes_and_ports():
    _, c = container(rendered())
    assert c["ports"] == [{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    svc = one(rendered(), "Service")
    assert svc["spec"]["ports"][0]["targetPort"] == "metrics"
    assert svc["spec"]["selector"] == {
        "app.kubernetes.io/name": "monoship", "app.kubernetes.io/instance": "monoship"}


@test
def deployment_defaults():
    deploy, c = container(rendered())
    assert deploy["spec"]["replicas"] == 2
    assert c["image"] == "ghcr.io/monoship/monoship:0.1.0"  # appVersion
    assert c["resources"] == {
        "requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["RUST_LOG"]["value"] == "info"
    assert c["args"] == [
        "run",
        "--metrics-addr=0.0.0.0:8080",
        "--log-format=json",
        "--checkout-image=alpine/git:2.47.2",
        "--concurrency=16",
        "--git-cache-dir=/var/cache/monoship/git",
        "--git-cache-max-bytes=1073741824",
        "--parallel-fetches=4",
        "--leader-election",
        "--lease-name=monoship",
        f"--lease-namespace={RELEASE_NS}",
        "--lease-duration=15s",
        "--renew-deadline=10s",
        "--retry-period=2s",
    ]


@test
def git_cache_is_a_bounded_empty_dir_or_off():
    deploy, c = container(rendered())
    pod = deploy["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "git-cache", "emptyDir": {"sizeLimit": "2Gi"}}]
    assert c["volumeMounts"] == [{"name": "git-cache", "mountPath": "/var/cache/monoship"}]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    deploy, c = container(rendered({"gitCache": {"enabled": False}}))
    assert "volumes" not in deploy["spec"]["template"]["spec"]
    assert "volumeMounts" not in c
    assert "--no-input-keys" in c["args"]
    assert not [a for a in c["args"] if a.startswith("--git-cache")]
    _, c = container(rendered({"gitCache": {"maxBytes": 5368709120, "parallelFetches": 2,
                                            "allowedOrigins": ["https://git.example.com"]}}))
    assert "--git-cache-max-bytes=5368709120" in c["args"]
    assert "--parallel-fetches=2" in c["args"]
    assert "--git-allowed-origins=https://git.example.com" in c["args"]


@test
def args_carry_values():
    _, c = container(rendered({
        "insecureRegistries": ["registry.local:5000", "10.0.0.7:5001"],
        "nomadAllowedAddresses": ["https://nomad.example.com:4646", "http://10.0.0.9:4646"],
        "logFormat": "text",
        "checkoutImage": "mirror.example.com/alpine/git:2.47.2",
        "extraArgs": ["--some-flag=1"],
        "leaderElection": {"enabled": True, "leaseDuration": "30s",
                           "renewDeadline": "20s", "retryPeriod": "5s"},
        "image": {"repository": "registry.example.com/monoship", "tag": "v9",
                  "pullPolicy": "Always"},
        "resources": {"limits": {"memory": "1Gi"}},
        "nodeSelector": {"pool": "system"},
        "podLabels": {"team": "platform"},
    }))
    args = c["args"]
    assert [a for a in args if a.startswith("--insecure-registry")] == [
        "--insecure-registry=registry.local:5000", "--insecure-registry=10.0.0.7:5001"]
    assert [a for a in args if a.startswith("--nomad-allowed-addresses")] == [
        "--nomad-allowed-addresses=https://nomad.example.com:4646",
        "--nomad-allowed-addresses=http://10.0.0.9:4646"]
    assert "--log-format=text" in args
    assert "--checkout-image=mirror.example.com/alpine/git:2.47.2" in args
    assert args[-1] == "--some-flag=1"
    for a in ("--lease-duration=30s", "--renew-deadline=20s", "--retry-period=5s"):
        assert a in args, a
    assert c["image"] == "registry.example.com/monoship:v9"
    assert c["imagePullPolicy"] == "Always"
    # Helm merges given values over the defaults: requests stay, the limit changes.
    assert c["resources"] == {"requests": {"cpu": "50m", "memory": "64Mi"},
                              "limits": {"memory": "1Gi"}}


@test
def pod_placement_values():
    deploy, _ = container(rendered({
        "nodeSelector": {"pool": "system"},
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        "podLabels": {"team": "platform"},
        "podAnnotations": {"example.com/a": "b"},
        "serviceAccount": {"create": True, "name": "ctrl",
                           "annotations": {"iam.example.com/role": "x"}},
    }))
    pod = deploy["spec"]["template"]
    assert pod["spec"]["nodeSelector"] == {"pool": "system"}
    assert pod["spec"]["tolerations"][0]["key"] == "dedicated"
    assert pod["metadata"]["labels"]["team"] == "platform"
    assert pod["metadata"]["annotations"] == {"example.com/a": "b"}
    assert pod["spec"]["serviceAccountName"] == "ctrl"


@test
def schema_rejects_bad_values():
    for bad in ({"logFormat": "yaml"}, {"replicas": "two"},
                {"insecureRegistries": ["http://registry.local:5000"]},
                {"nomadAllowedAddresses": ["nomad.example.com:4646"]},
                {"nomadAllowedAddresses": ["https://nomad.example.com:4646/v1"]},
                {"leaderElection": {"enabled": "yes"}}, {"unknownKey": 1}):
        try:
            rendered(bad)
        except helm_sdkpy.HelmError:
            continue
        raise AssertionError(f"values.schema.json accepted {bad}")


@test
def service_monitor_is_optional():
    assert not find(rendered(), "ServiceMonitor")
    sm = one(rendered({"metrics": {"serviceMonitor": {"enabled": True}}}), "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"


@test
def notes_explain_how_to_check_and_use_it():
    objs, release = install(str(CHART), {"watchNamespace": "team-a"}, namespace=RELEASE_NS)
    notes = release["info"]["notes"]
    for want in ("rollout status deployment/monoship", "kubectl get sb",
                 "kind: ServiceBuild", "namespace: team-a", "get lease monoship"):
        assert want in notes, f"NOTES.txt lacks {want!r}"
    # The manifest Helm recorded is what it created.
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(release["manifest"]) if d)
    assert kinds == sorted(o["kind"] for o in objs
                           if o["kind"] != "CustomResourceDefinition"), kinds


# ---------------------------------------------------------------- examples

def example_documents():
    docs = []
    for path in sorted(EXAMPLES.rglob("*.y*ml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path, doc))
    return docs


def _strict(schema):
    """OpenAPI v3 (structural CRD schema) -> JSON Schema, for jsonschema.

    `nullable: true` allows null; `x-kubernetes-int-or-string` allows both; objects with
    `properties` reject unknown fields, which the API server would prune (and
    `kubectl apply --validate=strict` rejects). CEL rules are not evaluated here.
    """
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()
           if not k.startswith("x-kubernetes-") and k != "nullable"}
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if (out.get("type") == "object" and "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def servicebuild_schema():
    crd = yaml.safe_load(CRD.read_text())
    version = crd["spec"]["versions"][0]
    schema = _strict(version["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}
    schema["properties"]["apiVersion"] = {"const": f"{crd['spec']['group']}/{version['name']}"}
    schema["properties"]["kind"] = {"const": crd["spec"]["names"]["kind"]}
    schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
    return schema


def servicebuilds():
    return [(p, d) for p, d in example_documents() if d.get("kind") == "ServiceBuild"]


@test
def every_example_yaml_parses():
    docs = example_documents()
    assert len(docs) >= 8, f"only {len(docs)} documents under examples/"
    for path, doc in docs:
        assert isinstance(doc, dict) and "kind" in doc and "apiVersion" in doc, path


@test
def example_servicebuilds_match_the_crd_schema():
    schema = servicebuild_schema()
    validator = jsonschema.Draft7Validator(schema)
    sbs = servicebuilds()
    assert len(sbs) >= 3, sbs
    for path, doc in sbs:
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
        assert not errors, f"{path.relative_to(ROOT)}: " + "; ".join(
            f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


@test
def schema_check_is_not_vacuous():
    validator = jsonschema.Draft7Validator(servicebuild_schema())
    _, good = servicebuilds()[0]
    for mutate in (
        lambda d: d["spec"].pop("source"),
        lambda d: d["spec"]["image"].update(tgas=["latest"]),
        lambda d: d["spec"]["targets"][0].update(kubernetes={"kind": "Pod", "name": "x",
                                                             "container": "x"}),
        lambda d: d["spec"].update(historyLimit=0),
    ):
        doc = copy.deepcopy(good)
        mutate(doc)
        assert list(validator.iter_errors(doc)), f"schema accepted {doc['spec']}"


@test
def example_servicebuilds_follow_the_admission_rules():
    # The CRD's CEL rules that matter for examples, restated (the Rust tests evaluate
    # the rules themselves).
    for path, doc in servicebuilds():
        spec, where = doc["spec"], path.relative_to(ROOT)
        source = spec["source"]
        if "monorepoRef" in source:
            assert "repository" not in source and "revision" not in source, where
        else:
            assert re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", source["revision"]), where
        for p in source.get("paths", []):
            assert p == "." or not (p.startswith("/") or ".." in p.split("/")), where
        repo = spec["image"]["repository"]
        assert "@" not in repo and not re.search(r":[^/]*$", repo), where
        assert re.fullmatch(r"[a-z0-9]([a-z0-9._:/-]*[a-z0-9])?", repo), where
        assert spec["build"]["template"]["spec"]["containers"], where
        for t in spec.get("image", {}).get("tags", []):
            assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}", t), where
        rt = spec["image"].get("revisionTag", "{shortRevision}")
        assert re.fullmatch(r"([A-Za-z0-9_.-]|\{revision\}|\{shortRevision\})+", rt), where
        targets = spec.get("targets", [])
        assert targets, f"{where}: no targets"
        for t in targets:
            assert ("kubernetes" in t) + ("nomad" in t) == 1, where
            if "nomad" in t:
                assert re.match(r"https?://", t["nomad"]["address"]), where


@test
def example_monorepos_match_their_crd_and_have_followers():
    crd = yaml.safe_load(MONOREPO_CRD.read_text())
    schema = _strict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}
    schema["properties"]["apiVersion"] = {"const": "monoship.dev/v1alpha1"}
    schema["properties"]["kind"] = {"const": "Monorepo"}
    validator = jsonschema.Draft7Validator(schema)
    monorepos = [(p, d) for p, d in example_documents() if d.get("kind") == "Monorepo"]
    assert monorepos, "no Monorepo in examples/"
    for path, doc in monorepos:
        errors = list(validator.iter_errors(doc))
        assert not errors, f"{path}: {[e.message for e in errors]}"
        spec = doc["spec"]
        assert ("revision" in spec) != ("ref" in spec), path
        followers = [d for _, d in servicebuilds()
                     if d["spec"]["source"].get("monorepoRef", {}).get("name")
                     == doc["metadata"]["name"]
                     and d["metadata"]["namespace"] == doc["metadata"]["namespace"]]
        assert len(followers) >= 2, f"{path}: {len(followers)} followers"


@test
def example_kubernetes_targets_exist():
    deployments = {(d["metadata"]["namespace"], d["metadata"]["name"]): d
                   for _, d in example_documents() if d["kind"] == "Deployment"}
    secrets = {(d["metadata"]["namespace"], d["metadata"]["name"])
               for _, d in example_documents() if d["kind"] == "Secret"}
    for path, sb in servicebuilds():
        ns = sb["metadata"]["namespace"]
        ref = sb["spec"]["image"].get("pushSecretRef")
        if ref:
            assert (ns, ref["name"]) in secrets, f"{path}: no Secret {ref['name']}"
        for t in sb["spec"].get("targets", []):
            k = t.get("kubernetes")
            if not k:
                continue
            d = deployments.get((k.get("namespace", ns), k["name"]))
            assert d, f"{path}: no Deployment {k['name']} in examples/"
            names = [c["name"] for c in d["spec"]["template"]["spec"]["containers"]]
            assert k["container"] in names, f"{path}: no container {k['container']}"


@test
def nomad_example_matches_its_job():
    hcl = (EXAMPLES / "nomad" / "banana.nomad.hcl").read_text()
    sb = [d for _, d in servicebuilds() if any("nomad" in t for t in d["spec"]["targets"])]
    assert sb, "no ServiceBuild with a Nomad target"
    n = sb[0]["spec"]["targets"][0]["nomad"]
    assert f'job "{n["job"]}"' in hcl
    assert f'group "{n["group"]}"' in hcl
    assert f'task "{n["task"]}"' in hcl
    assert 'driver = "docker"' in hcl


@test
def example_shell_scripts_parse():
    import subprocess

    scripts = sorted(EXAMPLES.rglob("*.sh")) + [ROOT / "tests" / "chart" / "run.sh"]
    for script in scripts:
        # Parse each script with the shell its first line names.
        first = script.read_text().splitlines()[0] if script.read_text() else ""
        shell = "bash" if "bash" in first else "sh"
        subprocess.run([shell, "-n", str(script)], check=True)
    for _, sb in servicebuilds():
        for c in sb["spec"]["build"]["template"]["spec"]["containers"]:
            if c.get("command", [])[:2] == ["/bin/sh", "-c"]:
                subprocess.run(["sh", "-n", "-c", c["args"][0]], check=True)


@test
def push_secret_is_a_fake_dockerconfigjson():
    import json

    docs = [d for p, d in example_documents() if p.name == "push-secret.yaml"]
    assert len(docs) == 1
    secret = docs[0]
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    config = json.loads(secret["stringData"][".dockerconfigjson"])
    for auth in config["auths"].values():
        assert "not-a-real" in auth["password"]


def main() -> int:
    passed = failed = 0
    for fn in TESTS:
        try:
            fn()
        except Exception:  # noqa: BLE001 - report every failure and go on
            failed += 1
            print(f"FAIL {fn.__name__}")
            traceback.print_exc()
        else:
            passed += 1
            print(f"ok   {fn.__name__}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
