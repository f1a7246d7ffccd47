"""The deployment files are valid and say what the README promises."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.conftest import ROOT

K8S = list(yaml.safe_load_all((ROOT / "deploy" / "k8s" / "vision-serve.yaml").read_text()))
BY_NAME = {(d["kind"], d["metadata"]["name"]): d for d in K8S}
RUNNERS = {"SpeciesRunner", "AestheticRunner", "ClipL14Runner", "OpenClipB32Runner", "OpenClipB32Laion2bRunner"}
JOB_ROUTES = {"/api", "/submit_zero_shot", "/submit_zero_shot_batch", "/zero_shot_job"}


@pytest.mark.parametrize("doc", K8S, ids=[f'{d["kind"]}/{d["metadata"]["name"]}' for d in K8S])
def test_manifest_validates_against_kubernetes_schema(doc: dict) -> None:
    kubernetes_validate.validate(doc, "1.30", strict=True)


def _container(name: str) -> dict:
    (container,) = BY_NAME[("Deployment", name)]["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize("name", ["vision-serve-jobs", "vision-serve-inference"])
def test_pods_request_a_gpu_and_probe_bentoml_health_routes(name: str) -> None:
    container = _container(name)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["ports"][0]["containerPort"] == 3000


def test_job_store_is_on_a_persistent_volume_of_a_single_pod() -> None:
    jobs = BY_NAME[("Deployment", "vision-serve-jobs")]["spec"]
    assert jobs["replicas"] == 1 and jobs["strategy"]["type"] == "Recreate"
    store = Path(BY_NAME[("ConfigMap", "vision-serve-config")]["data"]["JOB_STORE_PATH"])
    (mount,) = _container("vision-serve-jobs")["volumeMounts"]
    volumes = {v["name"]: v for v in jobs["template"]["spec"]["volumes"]}
    assert store.parent == Path(mount["mountPath"])
    assert volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] in {n for k, n in BY_NAME if k == "PersistentVolumeClaim"}


def test_autoscaler_scales_the_inference_pods_only() -> None:
    hpa = BY_NAME[("HorizontalPodAutoscaler", "vision-serve-inference")]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "vision-serve-inference"
    assert hpa["minReplicas"] >= 1 and hpa["maxReplicas"] > hpa["minReplicas"]


def test_every_job_route_reaches_the_job_store_pod() -> None:
    paths = BY_NAME[("Ingress", "vision-serve")]["spec"]["rules"][0]["http"]["paths"]
    to_jobs = {p["path"] for p in paths if p["backend"]["service"]["name"] == "vision-serve-jobs"}
    assert to_jobs == JOB_ROUTES


def test_bentocloud_config_parses_and_scales_gpu_runners_apart_from_the_gateway() -> None:
    from bentoml._internal.cloud.schemas.modelschemas import DeploymentServiceConfig
    from bentoml._internal.cloud.schemas.schemasv2 import DeploymentConfigSchema
    from bentoml._internal.cloud.schemas.utils import schema_from_object

    raw = yaml.safe_load((ROOT / "deploy" / "bentocloud.yaml").read_text())
    config = schema_from_object({k: v for k, v in raw.items() if k != "name"}, DeploymentConfigSchema)
    assert set(config.services) == RUNNERS | {"VisionGateway"}
    assert all(isinstance(s, DeploymentServiceConfig) for s in config.services.values())
    assert config.services["VisionGateway"].instance_type.startswith("cpu")
    assert config.services["VisionGateway"].scaling.max_replicas == 1  # one SQLite job store
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
