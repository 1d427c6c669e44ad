"""`make bench`: capacity of the rendered MLflow server on one CPU (`python -m mlflow_gitops.bench`).

Modules: configs (sizes, configurations, settings), runs (a stack per configuration and its
phases), overload (the shipped settings past capacity, with the kubelet's probes), load, watch and
artifacts (the load generator run inside the pod), probes (the kubelet's probe semantics, replayed), serverlog (each
4xx/5xx explained from the server's log), stats, host (/proc and the disk), report and chart
(bench/README.md's blocks, the PNGs).
"""
