"""deploy/: what can be checked without a container runtime or a cluster (there is neither here).

The manifests parse and agree with the voicecall config they carry (ports, probes, env, drain
timings, the records and LLM services they name); the systemd unit and the container config
agree with it too; every metric the Grafana dashboard queries is one /metrics really exports
(the exposition built by the telephony process's own collectors; tests/test_two_boxes.py also
checks it against a running box). Nothing here builds an image or applies a manifest.
"""

from __future__ import annotations

import configparser
import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML (the dev extra) parses the manifests")

from voicecall.config import Config, config_from_toml, load_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
METRIC = re.compile(r"\b((?:voicecall|ipc|records)_[a-z_]+)\b")


def manifests() -> dict[tuple[str, str], dict]:
    docs = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs[(doc["kind"], doc["metadata"]["name"])] = doc
    return docs


def k8s_config(docs: dict) -> Config:
    return config_from_toml(docs[("ConfigMap", "voicecall-config")]["data"]["voicecall.toml"], "voicecall-config")


def container(deployment: dict) -> dict:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


def service_port(docs: dict, name: str) -> int:
    (port,) = docs[("Service", name)]["spec"]["ports"]
    return int(port["port"])


def drain_budget_s(cfg: Config) -> float:
    """Longest SIGTERM -> exit: drain deadline, 2 s to end the calls cut, two stop graces per child."""
    return cfg.supervisor.drain_deadline_s + 2.0 + 2 * cfg.supervisor.stop_grace_s


def test_voicecall_deployment_matches_its_config() -> None:
    docs = manifests()
    cfg = k8s_config(docs)
    dep = docs[("Deployment", "voicecall")]
    c = container(dep)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": cfg.server.port}
    assert cfg.server.host == "0.0.0.0"
    assert c["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert "httpGet" not in c["livenessProbe"]  # /healthz is 503 while draining: liveness must not kill that
    assert c["resources"]["requests"]["nvidia.com/gpu"] == 1 == c["resources"]["limits"]["nvidia.com/gpu"]
    env = {e["name"]: e for e in c["env"]}
    for needed in (cfg.server.auth_token_env, cfg.server.account_sid_env, cfg.records.password_env):
        assert "secretKeyRef" in env[needed]["valueFrom"], needed
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": str(cfg.server.port),
                           "prometheus.io/path": "/metrics"}
    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= int(pre_stop[1]) + drain_budget_s(cfg), (grace, pre_stop, drain_budget_s(cfg))
    assert grace <= int(pre_stop[1]) + drain_budget_s(cfg) + 30  # and not so long a dead pod lingers
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert {"/etc/voicecall", "/dev/shm"} <= mounts and c["args"][-1] == "/etc/voicecall/voicecall.toml"
    assert service_port(docs, "voicecall") == 80 and docs[("Service", "voicecall")]["spec"]["ports"][0]["targetPort"] == "http"


def test_llm_and_records_urls_name_the_services_in_the_manifests() -> None:
    docs = manifests()
    cfg = k8s_config(docs)
    assert cfg.llm.backend == "openai" and cfg.llm.base_urls
    for url in cfg.llm.base_urls:
        parts = urlsplit(url)
        assert ("Service", parts.hostname) in docs and parts.port == service_port(docs, parts.hostname)
    vllm = container(docs[("Deployment", "vllm")])
    assert any(a == "--port=8000" for a in vllm["args"]) and vllm["ports"][0]["containerPort"] == 8000
    assert vllm["readinessProbe"]["httpGet"]["path"] == "/health"
    assert vllm["resources"]["requests"]["nvidia.com/gpu"] == 1
    db = urlsplit(cfg.records.resolved_url())
    assert db.scheme == "postgresql" and db.password is None  # the password comes from the environment
    assert ("Service", db.hostname) in docs and db.port == service_port(docs, db.hostname)
    pg = container(docs[("StatefulSet", "postgres")])
    pg_env = {e["name"]: e for e in pg["env"]}
    assert pg_env["POSTGRES_USER"]["value"] == db.username and pg_env["POSTGRES_DB"]["value"] == db.path.strip("/")
    voicecall_env = {e["name"]: e for e in container(docs[("Deployment", "voicecall")])["env"]}
    assert pg_env["POSTGRES_PASSWORD"]["valueFrom"] == voicecall_env[cfg.records.password_env]["valueFrom"]


def test_systemd_unit_and_containers_agree_with_the_config() -> None:
    unit = configparser.ConfigParser(strict=True, interpolation=None)
    unit.read(DEPLOY / "systemd" / "voicecall.service")
    service = unit["Service"]
    assert "run.py --config" in service["ExecStart"] and service["KillSignal"] == "SIGTERM"
    cfg = k8s_config(manifests())  # the unit documents the same 60 s drain deadline
    assert int(service["TimeoutStopSec"]) >= drain_budget_s(cfg)
    container_cfg = load_config(DEPLOY / "docker" / "container.toml")
    assert container_cfg.records.resolved_url().startswith("sqlite:////data/")
    assert int(service["TimeoutStopSec"]) >= drain_budget_s(container_cfg)
    for name in ("Dockerfile.cpu", "Dockerfile.cuda"):
        text = (DEPLOY / "docker" / name).read_text()
        assert f"EXPOSE {container_cfg.server.port}" in text and '"run.py", "--config", "/etc/voicecall/voicecall.toml"' in text
        for copied in re.findall(r"^COPY (\S+) ", text, re.M):
            assert all((ROOT / p).exists() for p in copied.split()), copied
    assert "torch==2.13.0" in (DEPLOY / "docker" / "Dockerfile.cpu").read_text()


def dashboard_metrics() -> set[str]:
    dash = json.loads((DEPLOY / "grafana" / "voicecall.json").read_text())
    names = set()
    for panel in dash["panels"]:
        for target in panel["targets"]:
            names |= set(METRIC.findall(target["expr"]))
    for var in dash["templating"]["list"]:
        names |= set(METRIC.findall(str(var.get("query", ""))))
    return names


def exported_metric_names(exposition: str) -> set[str]:
    """Every series name a Prometheus text exposition declares or has samples of.

    A labelled counter with no label values yet (no fallback, no restart so far) has only its
    `# TYPE` line; a histogram's TYPE names the family, its series add _bucket/_sum/_count.
    """
    names = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names |= {name + s for s in ("_bucket", "_sum", "_count")} if kind == "histogram" else {name}
        elif line and not line.startswith("#"):
            names.add(line.split("{", 1)[0].split(" ", 1)[0])
    return names


def test_dashboard_queries_name_metrics_that_metrics_exports(tmp_path: Path) -> None:
    from prometheus_client import generate_latest

    from ipc.ring import OwnedRing
    from voicecall.conversation.metrics import CallMetrics
    from voicecall.records import CallRecords
    from voicecall.telephony.ipc_metrics import RingCollector
    from voicecall.telephony.peers import PeerRouter, RedirectCollector
    from voicecall.telephony.records_metrics import RecordsCollector

    metrics = CallMetrics()  # what the telephony process registers, as add_observability does
    ring = OwnedRing("stt_in", 1 << 16)
    records = CallRecords(tmp_path / "calls.db")
    try:
        metrics.registry.register(RingCollector(lambda: [ring.stats()]))
        metrics.registry.register(RecordsCollector(records))
        metrics.registry.register(RedirectCollector(PeerRouter([], 0.5)))
        exported = exported_metric_names(generate_latest(metrics.registry).decode())
    finally:
        records.close()
        ring.close()
    wanted = dashboard_metrics()
    assert {"voicecall_stage_seconds_bucket", "voicecall_calls_live", "voicecall_worker_restarts_total",
            "ipc_occupancy_ratio"} <= wanted
    assert wanted <= exported, sorted(wanted - exported)
    stages = set(re.findall(r'stage="(\w+)"', (DEPLOY / "grafana" / "voicecall.json").read_text()))
    from voicecall.latency import STAGES

    assert stages <= {s for s, _, _ in STAGES}
