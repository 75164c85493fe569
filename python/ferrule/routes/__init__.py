"""Route handlers. Each takes ``(app, ctx, scope, receive, send)`` and raises ``ProxyError`` for
failures; ``ferrule.app`` renders those in the route's own error format."""
