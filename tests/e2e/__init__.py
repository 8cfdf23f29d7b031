"""End-to-end tests: the real Mender tools against the whole Fleetport stack."""
