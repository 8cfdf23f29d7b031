"""Deployments use-cases: artifacts, releases, deployments, downloads and background jobs."""
