module mlflow-gitops.local/tools/node/pause

go 1.26.0
