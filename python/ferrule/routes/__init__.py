"""Route handlers. Each takes ``(svc, ctx, body, send)``, ``svc`` being the worker's
``ferrule.services.Services``, and raises ``ProxyError`` for failures; ``ferrule.app`` renders
those in the route's own error format."""
