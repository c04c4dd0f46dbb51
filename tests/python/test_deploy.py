"""The deployment files in deploy/ checked against a running Hearth (stdlib unittest + PyYAML).

Run by tests/integration/deploy.rs against a live default server; by hand:
    HEARTH_BASE_URL=http://127.0.0.1:8080 .venv/bin/python tests/python/test_deploy.py -v

The Kubernetes manifests (one replica on SQLite; N replicas on PostgreSQL and Redis) are parsed
and their wiring checked (selectors, ports, volumes, secrets, probes, a non-root, read-only
container, a grace period longer than Hearth's shutdown grace), and every HTTP probe they declare
is requested from the real server, which must answer 200.
"""

import os
import pathlib
import unittest
import urllib.request

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# server.shutdown_grace_secs's default.
SHUTDOWN_GRACE_SECS = 10


def _get(path):
    base = os.environ["HEARTH_BASE_URL"].rstrip("/")
    with urllib.request.urlopen(base + path, timeout=10) as r:
        return r.status


class SqliteManifest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        text = (DEPLOY / "kubernetes" / "hearth-sqlite.yaml").read_text()
        cls.docs = [d for d in yaml.safe_load_all(text) if d]
        cls.by_kind = {d["kind"]: d for d in cls.docs}

    def test_it_holds_a_claim_a_deployment_and_a_service(self):
        self.assertEqual(sorted(self.by_kind), ["Deployment", "PersistentVolumeClaim", "Service"])
        for d in self.docs:
            self.assertIn("apiVersion", d)
            self.assertTrue(d["metadata"]["name"])

    def test_one_writer_for_the_sqlite_file(self):
        spec = self.by_kind["Deployment"]["spec"]
        self.assertEqual(spec["replicas"], 1)
        self.assertEqual(spec["strategy"]["type"], "Recreate")
        claim = self.by_kind["PersistentVolumeClaim"]
        self.assertEqual(claim["spec"]["accessModes"], ["ReadWriteOnce"])

    def test_selectors_ports_and_volumes_line_up(self):
        deployment = self.by_kind["Deployment"]["spec"]
        pod = deployment["template"]
        labels = pod["metadata"]["labels"]
        for selector in (deployment["selector"]["matchLabels"], self.by_kind["Service"]["spec"]["selector"]):
            self.assertTrue(selector.items() <= labels.items(), (selector, labels))
        (container,) = pod["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        env = {e["name"]: e.get("value") for e in container["env"]}
        self.assertEqual(ports["http"], int(env["HEARTH__SERVER__PORT"]))
        self.assertEqual(env["HEARTH__SERVER__HOST"], "0.0.0.0")
        for port in self.by_kind["Service"]["spec"]["ports"]:
            self.assertIn(port["targetPort"], ports)
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        data = volumes[mounts[env["HEARTH__STORAGE__DATA_DIR"]]]
        self.assertEqual(data["persistentVolumeClaim"]["claimName"],
                         self.by_kind["PersistentVolumeClaim"]["metadata"]["name"])
        self.assertTrue(env["HEARTH_MODELS_DIR"].startswith(env["HEARTH__STORAGE__DATA_DIR"]))

    def test_the_container_runs_unprivileged_and_stops_gracefully(self):
        pod = self.by_kind["Deployment"]["spec"]["template"]["spec"]
        self.assertTrue(pod["securityContext"]["runAsNonRoot"])
        self.assertNotEqual(pod["securityContext"]["runAsUser"], 0)
        (container,) = pod["containers"]
        sc = container["securityContext"]
        self.assertFalse(sc["allowPrivilegeEscalation"])
        self.assertTrue(sc["readOnlyRootFilesystem"])
        self.assertEqual(sc["capabilities"]["drop"], ["ALL"])
        # Read-only root: everything Hearth or the model fetch writes is a mounted volume.
        self.assertEqual({m["mountPath"] for m in container["volumeMounts"]}, {"/data", "/tmp"})
        self.assertGreater(pod["terminationGracePeriodSeconds"], SHUTDOWN_GRACE_SECS)

    def test_every_probe_answers_on_a_real_server(self):
        (container,) = self.by_kind["Deployment"]["spec"]["template"]["spec"]["containers"]
        probes = {k: container[k] for k in ("startupProbe", "readinessProbe", "livenessProbe")}
        self.assertEqual(probes["readinessProbe"]["httpGet"]["path"], "/ready")
        for name, probe in probes.items():
            with self.subTest(name):
                self.assertEqual(probe["httpGet"]["port"], "http")
                self.assertEqual(_get(probe["httpGet"]["path"]), 200)
        annotations = self.by_kind["Deployment"]["spec"]["template"]["metadata"]["annotations"]
        self.assertEqual(_get(annotations["prometheus.io/path"]), 200)


class ReplicasManifest(unittest.TestCase):
    """deploy/kubernetes/hearth-replicas.yaml: N replicas on PostgreSQL and Redis."""

    @classmethod
    def setUpClass(cls):
        cls.text = (DEPLOY / "kubernetes" / "hearth-replicas.yaml").read_text()
        cls.docs = [d for d in yaml.safe_load_all(cls.text) if d]
        cls.by_kind = {d["kind"]: d for d in cls.docs}
        cls.pod = cls.by_kind["Deployment"]["spec"]["template"]
        (cls.container,) = cls.pod["spec"]["containers"]

    def test_it_holds_a_deployment_a_service_and_a_disruption_budget(self):
        self.assertEqual(sorted(self.by_kind), ["Deployment", "PodDisruptionBudget", "Service"])
        labels = self.pod["metadata"]["labels"]
        for selector in (
            self.by_kind["Deployment"]["spec"]["selector"]["matchLabels"],
            self.by_kind["Service"]["spec"]["selector"],
            self.by_kind["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
        ):
            self.assertTrue(selector.items() <= labels.items(), (selector, labels))
        ports = {p["name"] for p in self.container["ports"]}
        for port in self.by_kind["Service"]["spec"]["ports"]:
            self.assertIn(port["targetPort"], ports)

    def test_several_replicas_roll_without_a_gap_and_share_no_volume(self):
        spec = self.by_kind["Deployment"]["spec"]
        self.assertGreater(spec["replicas"], 1)
        self.assertEqual(spec["strategy"]["type"], "RollingUpdate")
        self.assertEqual(spec["strategy"]["rollingUpdate"]["maxUnavailable"], 0)
        self.assertLess(self.by_kind["PodDisruptionBudget"]["spec"]["minAvailable"], spec["replicas"])
        # Everything shared is in PostgreSQL and Redis: each pod's volumes are its own.
        for volume in self.pod["spec"]["volumes"]:
            self.assertEqual(set(volume) - {"name"}, {"emptyDir"}, volume)

    def test_the_store_and_the_cache_come_from_the_secret_the_header_creates(self):
        env = {e["name"]: e for e in self.container["env"]}
        created = {
            line.split("--from-literal=", 1)[1].split("=", 1)[0]
            for line in self.text.splitlines()
            if "--from-literal=" in line
        }
        for name, scheme in (("HEARTH__STORAGE__URL", "postgres://"), ("HEARTH__CACHE__URL", "redis://")):
            ref = env[name]["valueFrom"]["secretKeyRef"]
            self.assertEqual(ref["name"], "hearth")
            self.assertIn(ref["key"], created)
            self.assertFalse(ref.get("optional", False))
            self.assertIn(f"--from-literal={ref['key']}='{scheme}", self.text)

    def test_the_container_runs_unprivileged_and_stops_gracefully(self):
        pod = self.pod["spec"]
        self.assertTrue(pod["securityContext"]["runAsNonRoot"])
        sc = self.container["securityContext"]
        self.assertFalse(sc["allowPrivilegeEscalation"])
        self.assertTrue(sc["readOnlyRootFilesystem"])
        self.assertEqual(sc["capabilities"]["drop"], ["ALL"])
        env = {e["name"]: e.get("value") for e in self.container["env"]}
        mounts = {m["mountPath"] for m in self.container["volumeMounts"]}
        self.assertEqual(mounts, {"/data", "/tmp"})
        self.assertEqual(env["HEARTH__STORAGE__DATA_DIR"], "/data")
        self.assertGreater(pod["terminationGracePeriodSeconds"], SHUTDOWN_GRACE_SECS)

    def test_every_probe_answers_on_a_real_server(self):
        probes = {k: self.container[k] for k in ("startupProbe", "readinessProbe", "livenessProbe")}
        self.assertEqual(probes["readinessProbe"]["httpGet"]["path"], "/ready")
        for name, probe in probes.items():
            with self.subTest(name):
                self.assertEqual(probe["httpGet"]["port"], "http")
                self.assertEqual(_get(probe["httpGet"]["path"]), 200)


if __name__ == "__main__":
    unittest.main()
