"""HTTP surfaces of the deployments service: devices, management (v1, v2, v1alpha1), internal."""
