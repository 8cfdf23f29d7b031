"""deviceconnect: remote terminal, file transfer, port forwarding and session playback."""
