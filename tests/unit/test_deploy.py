"""The deployment files are valid and say what the README promises."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.conftest import ROOT

def _load(relative: str) -> tuple[list[dict], dict]:
    docs = list(yaml.safe_load_all((ROOT / "deploy" / "k8s" / relative).read_text()))
    return docs, {(d["kind"], d["metadata"]["name"]): d for d in docs}


K8S, BY_NAME = _load("vision-serve.yaml")  # PostgreSQL job store: one Deployment serves every route
SQLITE, SQLITE_BY_NAME = _load("sqlite/vision-serve.yaml")  # SQLite variant: a single jobs pod
RUNNERS = {"SpeciesRunner", "AestheticRunner", "ClipL14Runner", "OpenClipB32Runner", "OpenClipB32Laion2bRunner"}
JOB_ROUTES = {"/api", "/submit_zero_shot", "/submit_zero_shot_batch", "/zero_shot_job"}


@pytest.mark.parametrize("doc", K8S + SQLITE, ids=[f'{"sqlite/" if i >= len(K8S) else ""}{d["kind"]}/'
                                                    f'{d["metadata"]["name"]}' for i, d in enumerate(K8S + SQLITE)])
def test_manifest_validates_against_kubernetes_schema(doc: dict) -> None:
    kubernetes_validate.validate(doc, "1.30", strict=True)


def _container(by_name: dict, name: str) -> dict:
    (container,) = by_name[("Deployment", name)]["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize(("by_name", "name"), [(BY_NAME, "vision-serve"), (SQLITE_BY_NAME, "vision-serve-jobs"),
                                               (SQLITE_BY_NAME, "vision-serve-inference")])
def test_pods_request_a_gpu_and_probe_bentoml_health_routes(by_name: dict, name: str) -> None:
    container = _container(by_name, name)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["ports"][0]["containerPort"] == 3000


def test_one_autoscaled_deployment_serves_every_route_with_the_store_url_from_a_secret() -> None:
    (deployment,) = [d for d in K8S if d["kind"] == "Deployment"]
    hpa = BY_NAME[("HorizontalPodAutoscaler", "vision-serve")]["spec"]
    assert hpa["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["minReplicas"] >= 2 and hpa["maxReplicas"] > hpa["minReplicas"]
    sources = _container(BY_NAME, "vision-serve")["envFrom"]
    (secret,) = [s["secretRef"]["name"] for s in sources if "secretRef" in s]
    url = BY_NAME[("Secret", secret)]["stringData"]["JOB_STORE_URL"]
    assert url.startswith("postgresql://")
    assert not any(d["kind"] == "PersistentVolumeClaim" for d in K8S)
    (ingress,) = [d for d in K8S if d["kind"] == "Ingress"]
    backends = {p["backend"]["service"]["name"] for p in ingress["spec"]["rules"][0]["http"]["paths"]}
    assert backends == {BY_NAME[("Service", "vision-serve")]["metadata"]["name"]}  # no route splitting


def test_sqlite_variant_keeps_the_job_store_on_a_persistent_volume_of_a_single_pod() -> None:
    jobs = SQLITE_BY_NAME[("Deployment", "vision-serve-jobs")]["spec"]
    assert jobs["replicas"] == 1 and jobs["strategy"]["type"] == "Recreate"
    url = SQLITE_BY_NAME[("ConfigMap", "vision-serve-config")]["data"]["JOB_STORE_URL"]
    assert url.startswith("sqlite:////")
    store = Path(url.removeprefix("sqlite:///"))
    (mount,) = _container(SQLITE_BY_NAME, "vision-serve-jobs")["volumeMounts"]
    volumes = {v["name"]: v for v in jobs["template"]["spec"]["volumes"]}
    assert store.parent == Path(mount["mountPath"])
    claims = {n for k, n in SQLITE_BY_NAME if k == "PersistentVolumeClaim"}
    assert volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] in claims
    hpa = SQLITE_BY_NAME[("HorizontalPodAutoscaler", "vision-serve-inference")]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "vision-serve-inference"
    paths = SQLITE_BY_NAME[("Ingress", "vision-serve")]["spec"]["rules"][0]["http"]["paths"]
    assert {p["path"] for p in paths if p["backend"]["service"]["name"] == "vision-serve-jobs"} == JOB_ROUTES


def test_bentocloud_config_parses_and_scales_gpu_runners_apart_from_the_gateway() -> None:
    from bentoml._internal.cloud.schemas.modelschemas import DeploymentServiceConfig
    from bentoml._internal.cloud.schemas.schemasv2 import DeploymentConfigSchema
    from bentoml._internal.cloud.schemas.utils import schema_from_object

    raw = yaml.safe_load((ROOT / "deploy" / "bentocloud.yaml").read_text())
    config = schema_from_object({k: v for k, v in raw.items() if k != "name"}, DeploymentConfigSchema)
    assert set(config.services) == RUNNERS | {"VisionGateway"}
    assert all(isinstance(s, DeploymentServiceConfig) for s in config.services.values())
    assert config.services["VisionGateway"].instance_type.startswith("cpu")
    assert config.services["VisionGateway"].scaling.max_replicas > 1  # the job store is PostgreSQL
    assert config.secrets == ["vision-serve-job-store"]
    for runner in RUNNERS:
        assert config.services[runner].instance_type.startswith("gpu")


def test_bentoml_config_example_loads_into_bentoml() -> None:
    from bentoml._internal.configuration.containers import BentoMLConfiguration

    path = ROOT / "deploy" / "bentoml-config.yaml"
    merged = BentoMLConfiguration(override_config_file=str(path)).to_dict()["services"]
    raw = yaml.safe_load(path.read_text())["services"]
    assert set(raw) <= RUNNERS | {"VisionGateway"}  # BentoML ignores unknown service names silently
    assert merged["VisionGateway"]["workers"] == raw["VisionGateway"]["workers"]
    assert merged["VisionGateway"]["traffic"]["max_concurrency"] == raw["VisionGateway"]["traffic"]["max_concurrency"]
