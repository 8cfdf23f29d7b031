"""Tests of the deployments service."""
