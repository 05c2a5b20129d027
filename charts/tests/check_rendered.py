#!/usr/bin/env python3
"""Checks on the manifests `charts/test.sh` rendered: what a cluster would receive.

    check_rendered.py OUT_DIR

OUT_DIR holds `<chart>-<case>.yaml` files rendered by `helm template`. Every file must parse,
hold only well-formed objects without duplicates, and pass the checks registered for it below.
Exits 1 with every failure listed.
"""

import base64
import json
import sys
from pathlib import Path

import yaml

FAILURES = []
CHECKED = []


def fail(case, msg):
    FAILURES.append(f"{case}: {msg}")


def expect(case, cond, msg):
    if not cond:
        fail(case, msg)
    return cond


class Manifest:
    def __init__(self, case, docs):
        self.case = case
        self.docs = docs

    def all(self, kind):
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind, name):
        found = [d for d in self.docs if d["kind"] == kind and d["metadata"]["name"] == name]
        if len(found) != 1:
            fail(self.case, f"expected one {kind} {name}, found {len(found)}")
            return None
        return found[0]

    def has(self, kind, name=None):
        return any(d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
                   for d in self.docs)


def load(path):
    case = path.stem
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as e:
        fail(case, f"not YAML: {e}")
        return None
    seen = set()
    for d in docs:
        if not isinstance(d, dict) or not d.get("apiVersion") or not d.get("kind"):
            fail(case, f"not a Kubernetes object: {str(d)[:120]}")
            continue
        meta = d.get("metadata") or {}
        if not meta.get("name"):
            fail(case, f"{d['kind']} without metadata.name")
            continue
        key = (d["apiVersion"].split("/")[0], d["kind"], meta.get("namespace"), meta["name"])
        expect(case, key not in seen, f"duplicate object {key}")
        seen.add(key)
        for k, v in (meta.get("labels") or {}).items():
            expect(case, isinstance(v, str), f"{d['kind']} {meta['name']}: label {k} is not a string")
        for k, v in (meta.get("annotations") or {}).items():
            expect(case, isinstance(v, str), f"{d['kind']} {meta['name']}: annotation {k} is not a string")
    return Manifest(case, docs)


def container(workload, name=None):
    cs = workload["spec"]["template"]["spec"]["containers"]
    return cs[0] if name is None else next(c for c in cs if c["name"] == name)


def env(c):
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def pod_spec(workload):
    return workload["spec"]["template"]["spec"]


def volume(workload, name):
    return next((v for v in pod_spec(workload).get("volumes", []) if v["name"] == name), None)


def mount(c, name):
    return next((m for m in c.get("volumeMounts", []) if m["name"] == name), None)


# ------------------------------------------------------------------------------ per component

def check_crds(m, storage_version="v1"):
    crds = {d["metadata"]["name"]: d for d in m.all("CustomResourceDefinition")}
    for name, kind in [("authorizationpolicies.security.istio.io", "AuthorizationPolicy"),
                       ("peerauthentications.security.istio.io", "PeerAuthentication")]:
        crd = crds.get(name)
        if not expect(m.case, crd is not None, f"CRD {name} missing"):
            continue
        spec = crd["spec"]
        expect(m.case, spec["names"]["kind"] == kind and spec["scope"] == "Namespaced", f"{name}: names/scope")
        versions = {v["name"]: v for v in spec["versions"]}
        expect(m.case, set(versions) == {"v1", "v1beta1"}, f"{name}: versions {sorted(versions)}")
        expect(m.case, [v for v in versions if versions[v]["storage"]] == [storage_version], f"{name}: storage version")
        for v in versions.values():
            expect(m.case, v["served"] is True, f"{name} {v['name']}: not served")
            schema = v["schema"]["openAPIV3Schema"]
            expect(m.case, "spec" in schema["properties"] and schema["properties"]["spec"].get("type") == "object",
                   f"{name} {v['name']}: spec schema")
            expect(m.case, schema["properties"]["status"].get("x-kubernetes-preserve-unknown-fields") is True,
                   f"{name} {v['name']}: open status")
            expect(m.case, v.get("subresources", {}).get("status") == {}, f"{name} {v['name']}: status subresource")
        spec_schema = versions["v1"]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        if kind == "AuthorizationPolicy":
            expect(m.case, spec_schema["action"]["enum"] == ["ALLOW", "DENY", "AUDIT", "CUSTOM"], "AP action enum")
            src = spec_schema["rules"]["items"]["properties"]["from"]["items"]["properties"]["source"]["properties"]
            for field in ["principals", "notPrincipals", "namespaces", "notNamespaces", "ipBlocks", "notIpBlocks",
                          "remoteIpBlocks", "notRemoteIpBlocks", "requestPrincipals", "notRequestPrincipals",
                          "serviceAccounts", "notServiceAccounts"]:
                expect(m.case, field in src, f"AP source.{field} missing")
            op = spec_schema["rules"]["items"]["properties"]["to"]["items"]["properties"]["operation"]["properties"]
            for field in ["hosts", "notHosts", "ports", "notPorts", "methods", "notMethods", "paths", "notPaths"]:
                expect(m.case, field in op, f"AP operation.{field} missing")
            expect(m.case, "targetRefs" in spec_schema and "selector" in spec_schema, "AP targetRefs/selector")
        else:
            expect(m.case, spec_schema["mtls"]["properties"]["mode"]["enum"] == ["UNSET", "DISABLE", "PERMISSIVE", "STRICT"],
                   "PA mode enum")
            expect(m.case, "portLevelMtls" in spec_schema, "PA portLevelMtls")


def check_istiod(m, ns="istio-system", replicas=2, image="ambient-mesh/istiod:0.1.0", audience="istio-ca"):
    d = m.get("Deployment", "istiod")
    if d is None:
        return
    expect(m.case, d["metadata"]["namespace"] == ns, "istiod namespace")
    expect(m.case, d["spec"]["replicas"] == replicas, f"istiod replicas {d['spec']['replicas']} != {replicas}")
    c = container(d, "discovery")
    expect(m.case, c["image"] == image, f"istiod image {c['image']} != {image}")
    e = env(c)
    expect(m.case, "CONFIG_DIR" not in e and e.get("CONFIG_SOURCE") == "kubernetes", "istiod reads the API server")
    expect(m.case, e.get("ROOT_NAMESPACE") == ns, "ROOT_NAMESPACE")
    expect(m.case, e.get("POD_NAMESPACE") == {"fieldRef": {"fieldPath": "metadata.namespace"}}, "POD_NAMESPACE")
    expect(m.case, e.get("ISTIOD_SERVICE") == "istiod" and m.has("Service", "istiod"), "ISTIOD_SERVICE names the Service")
    expect(m.case, e.get("CA_TOKEN_AUDIENCE") == audience, f"CA_TOKEN_AUDIENCE {audience}")
    role = m.get("Role", "istiod")
    if role:
        expect(m.case, any("leases" in r["resources"] and e.get("LEADER_ELECTION_LEASE") in r.get("resourceNames", [])
                           and "update" in r["verbs"] for r in role["rules"]), "istiod may hold its Lease")
    ports = {p["containerPort"] for p in c["ports"]}
    expect(m.case, ports == {15010, 15012, 15014, 15017}, f"istiod ports {ports}")
    expect(m.case, c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 15014}, "istiod readiness")
    sc = c["securityContext"]
    expect(m.case, sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"], "istiod hardening")
    expect(m.case, pod_spec(d)["serviceAccountName"] == "istiod", "istiod service account")
    labels = d["spec"]["template"]["metadata"]["labels"]
    expect(m.case, labels.get("app") == "istiod", "meshctl finds istiod by app=istiod")
    expect(m.case, labels.get("istio.io/dataplane-mode") == "none", "istiod never enrolled")
    svc = m.get("Service", "istiod")
    if svc:
        expect(m.case, {p["port"] for p in svc["spec"]["ports"]} == {15010, 15012, 15014, 15017}, "istiod Service ports")
        expect(m.case, svc["spec"]["selector"].items() <= labels.items(), "Service selects the pods")
    cr = m.get("ClusterRole", f"istiod-{ns}")
    if cr:
        rules = cr["rules"]

        def allowed(group, resource, verb, name=None):
            return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"]
                       and (name is None or not r.get("resourceNames") or name in r["resourceNames"]) for r in rules)

        for group, resources in [("", ["namespaces", "pods", "services", "nodes"]),
                                 ("discovery.k8s.io", ["endpointslices"]),
                                 ("gateway.networking.k8s.io", ["gateways", "gatewayclasses", "httproutes", "grpcroutes"]),
                                 ("security.istio.io", ["authorizationpolicies", "peerauthentications"])]:
            for res in resources:
                for verb in ["list", "watch"]:
                    expect(m.case, allowed(group, res, verb), f"istiod may {verb} {res}")
        expect(m.case, allowed("authentication.k8s.io", "tokenreviews", "create"), "istiod may create tokenreviews")
        for res in ["serviceaccounts", "services"]:
            expect(m.case, allowed("", res, "patch") and allowed("", res, "create"), f"istiod may apply {res}")
        expect(m.case, allowed("apps", "deployments", "patch"), "istiod may apply deployments")
        for res in ["gateways/status", "httproutes/status", "authorizationpolicies/status"]:
            group = "security.istio.io" if res.startswith("authorization") else "gateway.networking.k8s.io"
            expect(m.case, allowed(group, res, "patch"), f"istiod may patch {res}")
        expect(m.case, not allowed("", "secrets", "get"), "istiod reads no Secret cluster-wide")
        expect(m.case, e.get("OWNER_CLUSTER_ROLE") == f"istiod-{ns}"
               and allowed("rbac.authorization.k8s.io", "clusterroles", "get", f"istiod-{ns}")
               and not allowed("rbac.authorization.k8s.io", "clusterroles", "get", "cluster-admin"),
               "istiod reads only its own ClusterRole, the owner of what it creates at run time")
        for r in rules:
            expect(m.case, "*" not in r["verbs"] and "*" not in r["resources"], f"wildcard rule {r}")


def check_root_ca(m, ns="istio-system"):
    """Secret, root ConfigMap and webhook caBundle carry the same root."""
    sec = m.get("Secret", "istio-ca-secret")
    cm = m.get("ConfigMap", "istio-ca-root-cert")
    wh = m.get("ValidatingWebhookConfiguration", f"istio-validator-{ns}")
    if not (sec and cm and wh):
        return
    cert = base64.b64decode(sec["data"]["ca-cert.pem"]).decode()
    key = base64.b64decode(sec["data"]["ca-key.pem"]).decode()
    expect(m.case, cert.startswith("-----BEGIN CERTIFICATE-----"), "root certificate PEM")
    expect(m.case, "PRIVATE KEY-----" in key, "root key PEM")
    expect(m.case, cm["data"]["root-cert.pem"].strip() == cert.strip(), "ConfigMap root == Secret root")
    hook = wh["webhooks"][0]
    expect(m.case, base64.b64decode(hook["clientConfig"]["caBundle"]).decode().strip() == cert.strip(),
           "webhook caBundle == Secret root")
    expect(m.case, hook["clientConfig"]["service"] == {"name": "istiod", "namespace": ns, "path": "/validate", "port": 15017},
           "webhook service on 15017")
    expect(m.case, hook["rules"][0]["apiGroups"] == ["security.istio.io"], "webhook rules")
    d = m.get("Deployment", "istiod")
    if d:
        items = volume(d, "ca")["secret"]["items"]
        expect(m.case, {i["path"] for i in items} == {"root-cert.pem", "root-key.pem"}, "CA files istiod reads")


def check_ztunnel(m, image="ambient-mesh/ztunnel:0.1.0", xds="https://istiod.istio-system.svc:15012",
                  root_cm="istio-ca-root-cert"):
    ds = m.get("DaemonSet", "ztunnel")
    if ds is None:
        return
    spec = pod_spec(ds)
    expect(m.case, not spec.get("hostNetwork", False), "ztunnel runs in its own network namespace")
    expect(m.case, spec["serviceAccountName"] == "ztunnel", "ztunnel service account")
    expect(m.case, ds["spec"]["template"]["metadata"]["labels"].get("app") == "ztunnel", "meshctl finds ztunnel by app=ztunnel")
    c = container(ds)
    expect(m.case, c["image"] == image, f"ztunnel image {c['image']} != {image}")
    caps = c["securityContext"]["capabilities"]
    expect(m.case, sorted(caps["add"]) == ["NET_ADMIN", "NET_RAW", "SYS_ADMIN"] and caps["drop"] == ["ALL"], f"ztunnel caps {caps}")
    expect(m.case, c["securityContext"].get("privileged") is False, "ztunnel not privileged")
    e = env(c)
    expect(m.case, e.get("NODE_NAME") == {"fieldRef": {"fieldPath": "spec.nodeName"}}, "NODE_NAME from the downward API")
    expect(m.case, e.get("XDS_ADDRESS") == xds, f"XDS_ADDRESS {e.get('XDS_ADDRESS')} != {xds}")
    token = volume(ds, "istio-token")["projected"]["sources"][0]["serviceAccountToken"]
    expect(m.case, token["audience"] == "istio-ca", "token audience istio-ca")
    tm = mount(c, "istio-token")
    expect(m.case, e.get("TOKEN_FILE") == f"{tm['mountPath']}/{token['path']}", "TOKEN_FILE is the projected token")
    root = mount(c, "istiod-ca-cert")
    expect(m.case, e.get("CA_ROOT_FILE") == f"{root['mountPath']}/root-cert.pem", "CA_ROOT_FILE is the root ConfigMap")
    expect(m.case, volume(ds, "istiod-ca-cert")["configMap"]["name"] == root_cm, f"root from {root_cm}")
    zds = mount(c, "cni-ztunnel-sock-dir")
    expect(m.case, e.get("ZDS_SOCKET") == f"{zds['mountPath']}/ztunnel.sock", "ZDS socket in the shared directory")
    expect(m.case, c["readinessProbe"]["httpGet"] == {"path": "/healthz/ready", "port": 15021}, "ztunnel readiness")


def check_cni(m, image="ambient-mesh/cni:0.1.0"):
    ds = m.get("DaemonSet", "istio-cni-node")
    if ds is None:
        return
    spec = pod_spec(ds)
    expect(m.case, spec.get("hostNetwork") is True, "cni agent on the host network")
    expect(m.case, ds["spec"]["template"]["metadata"]["labels"].get("k8s-app") == "istio-cni-node",
           "meshctl finds the agent by k8s-app=istio-cni-node")
    c = container(ds)
    expect(m.case, c["image"] == image, f"cni image {c['image']} != {image}")
    expect(m.case, c["securityContext"]["privileged"] is True, "cni agent privileged")
    e = env(c)
    expect(m.case, e.get("MESH_CNI_KUBERNETES") == "true", "Kubernetes mode")
    for var, vol in [("CNI_BIN_DIR", "cni-bin-dir"), ("CNI_CONF_DIR", "cni-net-dir"), ("NETNS_DIR", "cni-netns-dir"),
                     ("MESH_CNI_STATE_DIR", "cni-state-dir")]:
        expect(m.case, e.get(var) == mount(c, vol)["mountPath"], f"{var} is the {vol} mount")
    netns = mount(c, "cni-netns-dir")
    expect(m.case, netns.get("mountPropagation") == "HostToContainer", "netns mount propagation")
    expect(m.case, netns["mountPath"] == volume(ds, "cni-netns-dir")["hostPath"]["path"], "netns paths as on the host")
    state = mount(c, "cni-state-dir")
    expect(m.case, state["mountPath"] == volume(ds, "cni-state-dir")["hostPath"]["path"],
           "the plugin's socket path is the same on the host")
    expect(m.case, e.get("MESH_CNI_AGENT_SOCKET") == state["mountPath"] + "/agent.sock", "agent socket in the state dir")
    zds = mount(c, "cni-ztunnel-sock-dir")
    expect(m.case, e.get("ZDS_SOCKET") == f"{zds['mountPath']}/ztunnel.sock", "ZDS socket in the shared directory")
    for ref in ["NODE_NAME", "POD_NAME", "POD_NAMESPACE"]:
        expect(m.case, isinstance(e.get(ref), dict), f"{ref} from the downward API")
    cr = m.get("ClusterRole", "istio-cni-istio-system")
    if cr:
        expect(m.case, any("pods" in r["resources"] and "patch" in r["verbs"] for r in cr["rules"]), "agent may annotate pods")
        expect(m.case, all("create" not in r["verbs"] and "delete" not in r["verbs"] for r in cr["rules"]),
               "agent creates and deletes nothing")
    role = m.get("Role", "istio-cni")
    if role:
        expect(m.case, role["rules"] == [{"apiGroups": ["apps"], "resources": ["daemonsets"],
                                          "resourceNames": ["istio-cni-node"], "verbs": ["get"]}],
               "agent reads only its own DaemonSet")


def check_shared_dirs(m):
    """ztunnel and the agent meet at the same host directory."""
    z, c = m.get("DaemonSet", "ztunnel"), m.get("DaemonSet", "istio-cni-node")
    if z and c:
        expect(m.case, volume(z, "cni-ztunnel-sock-dir")["hostPath"]["path"] == volume(c, "cni-ztunnel-sock-dir")["hostPath"]["path"],
               "ztunnel and the CNI agent share the ZDS socket directory")


def check_scrape(m, kind, name, port):
    w = m.get(kind, name)
    if w:
        a = w["spec"]["template"]["metadata"].get("annotations", {})
        expect(m.case, a.get("prometheus.io/scrape") == "true" and a.get("prometheus.io/port") == str(port)
               and a.get("prometheus.io/path") == "/metrics", f"{name}: scrape annotations on {port}")


def check_no_optional(m):
    for kind in ["ServiceMonitor", "PodMonitor", "GatewayClass"]:
        expect(m.case, not m.has(kind), f"no {kind} by default")
    expect(m.case, not [d for d in m.all("ConfigMap") if "grafana_dashboard" in (d["metadata"].get("labels") or {})],
           "no dashboards by default")


def check_dashboards(m, names):
    want_metrics = {"ztunnel": ["istio_tcp_connections_opened_total", "istio_tcp_sent_bytes_total", "connection_security_policy"],
                    "waypoint": ["istio_requests_total", "istio_request_duration_milliseconds_bucket", 'reporter=\\"waypoint\\"'],
                    "istiod": ["pilot_xds", "pilot_xds_pushes_total", "citadel_server_csr_count_total"]}
    for n in names:
        cm = m.get("ConfigMap", f"ambient-mesh-dashboard-{n}")
        if not cm:
            continue
        expect(m.case, cm["metadata"]["labels"].get("grafana_dashboard") == "1", f"dashboard {n} label")
        raw = cm["data"][f"{n}.json"]
        try:
            dash = json.loads(raw)
        except ValueError as e:
            fail(m.case, f"dashboard {n}: not JSON: {e}")
            continue
        expect(m.case, dash.get("uid") == f"ambient-mesh-{n}" and dash.get("panels"), f"dashboard {n}: uid and panels")
        exprs = json.dumps([t["expr"] for p in dash["panels"] for t in p.get("targets", [])])
        for metric in want_metrics[n]:
            expect(m.case, metric in exprs, f"dashboard {n} queries {metric}")


# ------------------------------------------------------------------------------ cases

def case_ambient_default(m):
    check_crds(m)
    check_istiod(m)
    check_root_ca(m)
    check_ztunnel(m)
    check_cni(m)
    check_shared_dirs(m)
    check_scrape(m, "Deployment", "istiod", 15014)
    check_scrape(m, "DaemonSet", "ztunnel", 15020)
    check_no_optional(m)
    hook = m.get("ValidatingWebhookConfiguration", "istio-validator-istio-system")
    if hook:
        expect(m.case, hook["webhooks"][0]["failurePolicy"] == "Ignore", "webhook failurePolicy Ignore by default")
    expect(m.case, m.has("PodDisruptionBudget", "istiod"), "PDB with 2 replicas")
    expect(m.case, {d["metadata"]["name"] for d in m.all("ServiceAccount")} == {"istiod", "ztunnel", "istio-cni"},
           "service accounts")
    for d in m.docs:
        ns = d["metadata"].get("namespace")
        expect(m.case, ns in (None, "istio-system"), f"{d['kind']} {d['metadata']['name']} in namespace {ns}")


def case_ambient_local(m):
    check_istiod(m)
    check_ztunnel(m, xds="https://$(ISTIOD_SERVICE_HOST):15012")
    check_cni(m)
    d = m.get("Deployment", "istiod")
    if d:
        expect(m.case, env(container(d))["WAYPOINT_XDS_ADDRESS"] == "https://$(ISTIOD_SERVICE_HOST):15012",
               "waypoints get istiod's cluster IP")


def case_ambient_kind(m):
    for kind, name in [("Deployment", "istiod"), ("DaemonSet", "ztunnel"), ("DaemonSet", "istio-cni-node")]:
        w = m.get(kind, name)
        if w:
            expect(m.case, container(w)["imagePullPolicy"] == "Never", f"{name} never pulls")
    d = m.get("Deployment", "istiod")
    if d:
        expect(m.case, env(container(d))["WAYPOINT_IMAGE_PULL_POLICY"] == "Never", "waypoints never pull")


def case_ambient_observability(m):
    expect(m.case, m.has("ServiceMonitor", "istiod"), "istiod ServiceMonitor")
    expect(m.case, m.has("PodMonitor", "ztunnel"), "ztunnel PodMonitor")
    expect(m.case, m.has("PodMonitor", "waypoints"), "waypoint PodMonitor")
    sm = m.get("ServiceMonitor", "istiod")
    if sm:
        expect(m.case, sm["spec"]["endpoints"][0]["port"] == "http-monitoring", "ServiceMonitor port")
    check_dashboards(m, ["ztunnel", "waypoint", "istiod"])


def case_ambient_control_plane_only(m):
    expect(m.case, not m.has("DaemonSet"), "no data plane")
    expect(m.case, m.has("Deployment", "istiod") and m.has("CustomResourceDefinition"), "CRDs and istiod")


def case_ambient_gatewayclass(m):
    gc = m.get("GatewayClass", "istio-waypoint")
    expect(m.case, gc is not None, "the chart renders the GatewayClass")
    if gc:
        expect(m.case, gc["spec"]["controllerName"] == "istio.io/mesh-controller", "GatewayClass controller")
    d = m.get("Deployment", "istiod")
    if d:
        expect(m.case, env(container(d))["CREATE_GATEWAY_CLASS"] == "false",
               "istiod leaves creating the GatewayClass to the chart (no race with helm install)")


def case_ambient_global(m):
    check_istiod(m, image="registry.example.com/mesh/istiod:1.0.0-dev")
    check_ztunnel(m, image="registry.example.com/mesh/ztunnel:1.0.0-dev")
    check_cni(m, image="registry.example.com/mesh/cni:1.0.0-dev")
    d = m.get("Deployment", "istiod")
    if d:
        e = env(container(d))
        expect(m.case, e["WAYPOINT_IMAGE"] == "registry.example.com/mesh/waypoint:1.0.0-dev", "waypoint image from global")
        expect(m.case, e["TRUST_DOMAIN"] == "mesh.example", "trust domain")
    z = m.get("DaemonSet", "ztunnel")
    if z:
        expect(m.case, env(container(z))["ISTIOD_IDENTITY"] == "spiffe://mesh.example/ns/istio-system/sa/istiod",
               "ztunnel expects istiod's identity in the trust domain")
    for w in m.all("Deployment") + m.all("DaemonSet"):
        expect(m.case, pod_spec(w).get("imagePullSecrets") == [{"name": "regcred"}], f"{w['metadata']['name']} pull secret")


def case_base_default(m):
    check_crds(m)
    expect(m.case, len(m.docs) == 2, "only the two mesh CRDs")


def case_base_keep(m):
    check_crds(m)
    for d in m.docs:
        expect(m.case, d["metadata"]["annotations"].get("helm.sh/resource-policy") == "keep", "kept on uninstall")
        expect(m.case, d["metadata"]["labels"].get("team") == "platform", "commonLabels")


def case_base_gatewayapi(m):
    check_crds(m)
    names = {d["metadata"]["name"] for d in m.all("CustomResourceDefinition")}
    for n in ["gateways", "gatewayclasses", "httproutes", "grpcroutes", "referencegrants"]:
        expect(m.case, f"{n}.gateway.networking.k8s.io" in names, f"Gateway API CRD {n}")
    for d in m.all("CustomResourceDefinition"):
        if d["spec"]["group"] == "gateway.networking.k8s.io":
            a = d["metadata"]["annotations"]
            expect(m.case, a.get("helm.sh/resource-policy") == "keep", f"{d['metadata']['name']} kept")
            expect(m.case, a.get("gateway.networking.k8s.io/bundle-version", "").startswith("v1."), "upstream bundle version")


def case_istiod_default(m):
    check_istiod(m)
    check_root_ca(m)
    role = m.get("Role", "istiod")
    if role:
        expect(m.case, not any("secrets" in r["resources"] for r in role["rules"]), "no Secret access with a chart-made root")
    d = m.get("Deployment", "istiod")
    if d:
        e = env(container(d))
        expect(m.case, e["CA_SECRET"] == "", "the root is in CA_DIR, not in a Secret istiod manages")
        expect(m.case, e["ZTUNNEL_SERVICE_ACCOUNTS"] == "istio-system/ztunnel", "ztunnel is the node proxy")
        expect(m.case, e["VALIDATION_WEBHOOK_CONFIG_NAME"] == "istio-validator-istio-system", "webhook to patch")
        expect(m.case, e["WAYPOINT_IMAGE"] == "ambient-mesh/waypoint:0.1.0", "waypoint image")
        expect(m.case, "WAYPOINT_XDS_ADDRESS" not in e, "waypoints use istiod's default address")


def case_istiod_full(m):
    check_istiod(m, replicas=3, image="registry.example.com/mesh/istiod:dev", audience="mesh-ca")
    expect(m.case, not m.has("Secret") and not m.has("ConfigMap", "istio-ca-root-cert"), "istiod makes the root itself")
    d = m.get("Deployment", "istiod")
    if d:
        e = env(container(d))
        expect(m.case, e["ZTUNNEL_SERVICE_ACCOUNTS"] == "istio-system/ztunnel,istio-system/ztunnel-canary", "node accounts")
        expect(m.case, e["CA_SECRET"] == "istio-ca-secret", "istiod keeps the root in its Secret")
        expect(m.case, e["WAYPOINT_CONTROLLER"] == "false", "no waypoint controller")
        expect(m.case, e["LEADER_ELECTION_LEASE"] == "mesh-leader", "lease name")
        expect(m.case, e["WAYPOINT_IMAGE"] == "registry.example.com/mesh/waypoint:waypoint-dev", "waypoint image")
        expect(m.case, e["EXTRA_SETTING"] == "1", "extra env")
        expect(m.case, "emptyDir" in volume(d, "ca"), "writable CA dir")
        expect(m.case, "prometheus.io/scrape" not in d["spec"]["template"]["metadata"]["annotations"], "no scrape annotations")
    role = m.get("Role", "istiod")
    if role:
        expect(m.case, any("secrets" in r["resources"] for r in role["rules"]), "istiod stores its root")
    hook = m.get("ValidatingWebhookConfiguration", "istio-validator-istio-system")
    if hook:
        expect(m.case, hook["webhooks"][0]["failurePolicy"] == "Fail", "failurePolicy Fail")
        expect(m.case, "caBundle" not in hook["webhooks"][0]["clientConfig"], "istiod patches the caBundle")
    pdb = m.get("PodDisruptionBudget", "istiod")
    if pdb:
        expect(m.case, pdb["spec"]["minAvailable"] == 2, "PDB minAvailable")
    check_dashboards(m, ["istiod", "waypoint"])
    expect(m.case, m.has("ServiceMonitor") and m.has("PodMonitor"), "monitors")


def case_istiod_single(m):
    check_istiod(m, replicas=1)
    for kind in ["PodDisruptionBudget", "ValidatingWebhookConfiguration", "Secret", "GatewayClass"]:
        expect(m.case, not m.has(kind), f"no {kind}")
    expect(m.case, not m.has("ConfigMap", "istio-ca-root-cert"), "no root ConfigMap (and none read from a cluster)")
    d = m.get("Deployment", "istiod")
    if d:
        expect(m.case, env(container(d))["CREATE_GATEWAY_CLASS"] == "true",
               "without the chart's GatewayClass istiod creates it")
    if d:
        expect(m.case, volume(d, "ca")["secret"]["secretName"] == "cacerts", "user's CA Secret")
        e = env(container(d))
        expect(m.case, e["VALIDATION_WEBHOOK_CONFIG_NAME"] == "", "no webhook configuration to patch")
        expect(m.case, e["CA_SECRET"] == "", "the root is in CA_DIR")


def case_ztunnel_default(m):
    check_ztunnel(m)
    check_scrape(m, "DaemonSet", "ztunnel", 15020)
    check_no_optional(m)


def case_ztunnel_full(m):
    check_ztunnel(m, image="registry.example.com/mesh/ztunnel:ztunnel-dev", xds="https://$(ISTIOD_SERVICE_HOST):15012",
                  root_cm="mesh-root")
    ds = m.get("DaemonSet", "ztunnel")
    if ds:
        e = env(container(ds))
        expect(m.case, e["CA_ADDRESS"] == "https://$(ISTIOD_SERVICE_HOST):15012", "CA address")
        expect(m.case, volume(ds, "cni-ztunnel-sock-dir")["hostPath"]["path"] == "/run/ztunnel", "socket dir")
    check_dashboards(m, ["ztunnel"])
    expect(m.case, m.has("PodMonitor", "ztunnel"), "PodMonitor")


def case_cni_default(m):
    check_cni(m)
    ds = m.get("DaemonSet", "istio-cni-node")
    if ds:
        e = env(container(ds))
        expect(m.case, e.get("CLEANUP_ON_EXIT") == "true" and e.get("KEEP_CHAINED_ON_EXIT") == "true", "clean-up on uninstall")
        expect(m.case, e.get("PROC_DIR") == "/host/proc" and mount(container(ds), "host-proc")["readOnly"] is True,
               "host /proc read-only")
        expect(m.case, volume(ds, "cni-bin-dir")["hostPath"]["path"] == "/opt/cni/bin", "CNI bin dir")
        expect(m.case, volume(ds, "cni-net-dir")["hostPath"]["path"] == "/etc/cni/net.d", "CNI conf dir")


def case_cni_full(m):
    check_cni(m, image="registry.example.com/mesh/mesh-cni-agent:dev")
    ds = m.get("DaemonSet", "istio-cni-node")
    if ds:
        e = env(container(ds))
        expect(m.case, "CLEANUP_ON_EXIT" not in e and e.get("NO_PROC_SCAN") == "true" and e["IPV6"] == "false", "flags off")
        expect(m.case, volume(ds, "host-proc") is None, "no host /proc")
        expect(m.case, e["EXCLUDE_NAMESPACES"] == "kube-system,istio-system", "excluded namespaces")
        expect(m.case, volume(ds, "cni-netns-dir")["hostPath"]["path"] == "/run/netns", "netns dir")


CASES = {
    "ambient-default": case_ambient_default,
    "ambient-local-cluster": case_ambient_local,
    "ambient-kind": case_ambient_kind,
    "ambient-observability": case_ambient_observability,
    "ambient-control-plane-only": case_ambient_control_plane_only,
    "ambient-gatewayclass": case_ambient_gatewayclass,
    "ambient-global": case_ambient_global,
    "base-default": case_base_default,
    "base-keep": case_base_keep,
    "base-gatewayapi": case_base_gatewayapi,
    "istiod-default": case_istiod_default,
    "istiod-full": case_istiod_full,
    "istiod-single": case_istiod_single,
    "ztunnel-default": case_ztunnel_default,
    "ztunnel-full": case_ztunnel_full,
    "cni-default": case_cni_default,
    "cni-full": case_cni_full,
}


def main():
    out = Path(sys.argv[1])
    files = sorted(out.glob("*.yaml"))
    rendered = {f.stem for f in files}
    for name in sorted(set(CASES) - rendered):
        fail(name, "not rendered (charts/test.sh must render every case this script checks)")
    for f in files:
        m = load(f)
        if m is None:
            continue
        expect(m.case, m.docs, "rendered nothing")
        check = CASES.get(m.case)
        if check:
            try:
                check(m)
            except (KeyError, IndexError, TypeError, AttributeError, StopIteration) as e:
                # A field the check reads is missing: report it like any other failure.
                fail(m.case, f"{type(e).__name__} {e} while checking (line {e.__traceback__.tb_next.tb_lineno if e.__traceback__.tb_next else '?'})")
        CHECKED.append(m.case)
    if FAILURES:
        print("chart rendering checks FAILED:", file=sys.stderr)
        for f in FAILURES:
            print(f"  {f}", file=sys.stderr)
        sys.exit(1)
    print(f"rendered manifests: {len(CHECKED)} cases checked ({', '.join(CHECKED)})")


if __name__ == "__main__":
    main()
