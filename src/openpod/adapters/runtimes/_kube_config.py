"""The Kubernetes runtime's settings: where the cluster is and how pods are laid out in it."""

from __future__ import annotations

from dataclasses import dataclass, field

from lightkube import KubeConfig

from openpod.adapters.runtimes import _kube_manifests as manifests


@dataclass(frozen=True)
class KubernetesConfig:
    """Where the cluster is and how pods are laid out in it.

    One of: `kubeconfig` (a path; `context` or its current context); `service_account`
    (the agent runs in the cluster: the mounted service account directory, usually
    /var/run/secrets/kubernetes.io/serviceaccount, and KUBERNETES_SERVICE_HOST/PORT; the
    token file is read again as it rotates); or `server` with a bearer `token` and, for
    https, `ca_file`. The token never appears in repr or logs. `namespace` is always this
    config's, whatever the kubeconfig or service account says.
    """

    server: str | None = None
    token: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    service_account: str | None = None
    namespace: str = "openpod"
    gpu_type_label: str = "openpod.io/gpu-type"
    storage_class: str | None = None
    workspace_size: str = "20Gi"
    meter_image: str = "openpod/meter:latest"
    meter_python: str = "python3"
    image_pull_policy: str = "IfNotPresent"
    grace_seconds: int = 30  # the Pods' terminationGracePeriodSeconds
    probe_pods: bool = True  # False where the agent cannot reach Pod IPs
    probe_timeout: float = 0.2
    request_seconds: float = 15.0  # deadline of one start/stop/remove step
    watch_seconds: int = 240  # server-side timeout of one watch request
    sync_seconds: float = 15.0  # how long a call waits for the first list

    def kube_config(self) -> KubeConfig:
        if self.service_account:
            try:
                return KubeConfig.from_service_account(self.service_account)
            except KeyError as exc:
                raise ValueError(f"in-cluster config: {exc.args[0]} is not set") from exc
        if self.kubeconfig:
            try:
                config = KubeConfig.from_file(self.kubeconfig)
            except (KeyError, TypeError, AttributeError) as exc:
                raise ValueError(f"{self.kubeconfig} is not a kubeconfig ({exc!r})") from exc
            return config
        if not self.server:
            raise ValueError("set kubeconfig, service_account or server for the Kubernetes runtime")
        cluster: dict[str, str] = {"server": self.server}
        if self.ca_file:
            cluster["certificate-authority"] = self.ca_file
        user = {"token": self.token} if self.token else {}
        return KubeConfig.from_dict(
            {
                "clusters": [{"name": "openpod", "cluster": cluster}],
                "users": [{"name": "openpod", "user": user}],
                "contexts": [
                    {
                        "name": "openpod",
                        "context": {
                            "cluster": "openpod", "user": "openpod", "namespace": self.namespace
                        },
                    }
                ],
                "current-context": "openpod",
            }
        )  # fmt: skip

    def layout(self) -> manifests.KubeLayout:
        return manifests.KubeLayout(
            namespace=self.namespace,
            gpu_type_label=self.gpu_type_label,
            storage_class=self.storage_class,
            workspace_size=self.workspace_size,
            meter_image=self.meter_image,
            meter_python=self.meter_python,
            image_pull_policy=self.image_pull_policy,
            grace_seconds=self.grace_seconds,
        )
