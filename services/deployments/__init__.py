"""Deployments service: artifacts, deployments and the device update flow."""
