"""Inventory service: device attributes by scope, groups, tags, search and statistics."""
