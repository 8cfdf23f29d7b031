"""deviceauth: device admission (auth sets, accept/reject/preauthorize), device tokens."""

__all__: list[str] = []
