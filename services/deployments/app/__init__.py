"""Deployments use-cases and the artifact parser they rely on."""
