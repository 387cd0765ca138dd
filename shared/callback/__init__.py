"""The callback function's HTTP API (routing); the steps live in shared.callback.steps."""
