"""The API contract: facts taken from Mender's OpenAPI documents, and the checks on them."""
