"""The kind provider's machinery: the Docker engine, the node image built offline, component images,
the charts. Facts and the errors met on the way: shared/reference/kind-offline.md."""
