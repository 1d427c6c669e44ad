"""A one-node Kubernetes cluster assembled from Kubernetes' own components, as a node is.

* build: the pinned binaries into ./bin and the Debian packages (`make node-build`);
* host: the network namespace, the host sysctls it records and restores, leftover checks;
* config: identities, kubeconfigs, containerd, CNI, kubelet and kube-proxy configuration;
* images: pause, CoreDNS and busybox images built with umoci and imported into containerd;
* render_images: the render's MLflow and busybox images under its exact references, cached;
* homelab: the homelab's storage classes (static volumes), the Secrets External Secrets would write;
* dns: CoreDNS's Deployment and Service;
* api: a client of the API server from inside the node's network namespace;
* node: `Node`, start and stop (a context manager); `python -m mlflow_gitops.node` (`make node`).
"""
